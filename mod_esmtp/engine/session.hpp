// The SMTP session: a sans-I/O state machine. It is fed the bytes the client
// sent and produces the bytes to send back; it never touches a socket, so
// the httpd glue, the unit tests and the fuzzers drive it the same way.
// All replies for the input at hand are produced before the caller flushes
// (pipelining-friendly).
//
// Its state is three enums (engine/verbs.hpp): the connection Phase, what
// the client said (Hello) and the transaction (Tx). They change only in
// transit(), which logs every change at ESMTPLogLevel 3 (events); the
// sequencing rules are the verb table's rows, checked in one place before
// a verb's own code runs.
#pragma once

#include "engine/address.hpp"
#include "engine/auth.hpp"
#include "engine/command_table.hpp"
#include "engine/data_reader.hpp"
#include "engine/defaults.hpp"
#include "engine/line_reader.hpp"
#include "engine/observer.hpp"
#include "engine/policy.hpp"
#include "engine/replies.hpp"
#include "engine/screen.hpp"
#include "engine/txlog_format.hpp"
#include "engine/verbs.hpp"
#include <esmtp/handler.hpp>

#include <ctime>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace esmtp
{

struct ConnectionInfo {
    std::string client_address = "127.0.0.1";
    unsigned client_port = 0;
    std::string remote_host; // empty: same as client_address
    std::string local_address = "127.0.0.1";
    unsigned local_port = 25;
    bool tls = false; // the session runs over TLS from the start (implicit TLS)
    TlsInfo tls_info; // its facts when tls (active set by the glue)
    // ESMTPStartTLS is on but the certificate is a stand-in (mod_md's
    // self-signed fallback before its first certificate): STARTTLS is not
    // offered and answers 454 4.7.0; Required's verbs get 454 4.7.0 too.
    bool tls_unavailable = false;
    // What a PROXY header said (ESMTPProxyProtocol), for the log.
    std::string proxied;
    // XCLIENT LOGIN: the user a front end authenticated; the session counts
    // as authenticated with it (as Postfix's XCLIENT LOGIN).
    std::string login;
};

class Session final : public SessionView, private DataSink
{
  public:
    using Phase = esmtp::Phase; // Session::Phase::data for the glue

    // The whole state: changed only by transit().
    struct State {
        Phase phase = Phase::greeting;
        Hello hello = Hello::none;
        Tx tx = Tx::none;
        bool operator==(const State &) const = default;
    };

    // `handler` must not be null. `log` may be null (no transaction log).
    // `cfg` must outlive the session.
    Session(const SessionConfig &cfg, ConnectionInfo conn, std::unique_ptr<Handler> handler, TxLogSink *log);
    ~Session();
    Session(const Session &) = delete;
    Session &operator=(const Session &) = delete;

    // The client's rate limits (per-client, shared by all sessions of the
    // client): MAIL and RCPT beyond them get 450 4.7.1. Null: none. Must
    // outlive the session.
    void set_client_limiter(ClientLimiter *l) { limiter_ = l; }
    // Checks AUTH passwords (the glue's authn providers). Null: AUTH
    // attempts get 454 4.7.0. Must outlive the session.
    void set_authenticator(Authenticator *a) { authenticator_ = a; }
    // ESMTPDNSBL, ESMTPGreylist (glue): asked at CONNECT and RCPT.
    void set_screen(Screen *s) { screen_ = s; }
    // The Authenticator deferred its answer: the session waits (input is
    // held) until the glue calls auth_done().
    bool auth_pending() const { return state_.phase == Phase::auth; }
    // The deferred answer; replies (235/535/454/421) and processes the
    // input held meanwhile. Ignored unless auth_pending().
    void auth_done(AuthVerdict v);

    // Send the greeting (CONNECT event).
    void start();
    // Process client bytes. Replies are appended to output().
    void feed(std::string_view in);
    // The server ends the session (timeout, httpd stopping): `r` is sent
    // and the session closes. Ignored once closed.
    void shutdown(const Reply &r);
    // The connection is gone or about to be closed: aborts an open
    // transaction and fires DISCONNECT (once; the destructor calls it too).
    void end();

    // The live counters' sink (may be null: nothing reported). Must outlive
    // the session; set before start().
    void set_observer(SessionObserver *o) { obs_ = o; }
    // Something outside the engine refused the client (early talker,
    // timeout): reported to the observer like the engine's own refusals.
    void report(RejectCause cause, std::string_view what)
    {
        if (obs_)
            obs_->rejected(cause, what);
    }

    std::string &output() { return out_; }
    const State &state() const { return state_; }
    Phase phase() const { return state_.phase; }
    // Nothing more will be read: send output() and close.
    bool closing() const { return state_.phase == Phase::closed; }
    // Input is buffered that does not make a complete command yet.
    bool has_partial_input() const { return lines_.has_partial(); }
    // MAIL was accepted and the transaction has not ended yet.
    bool in_transaction() const { return state_.tx != Tx::none; }
    // Octets received in the current transfer: since DATA's 354, or since
    // the current BDAT command (its chunk, taken or swallowed after a
    // refusal). For ESMTPMinDataRate; 0 outside phases data and bdat.
    std::uint64_t transfer_octets() const { return transfer_octets_; }

    // STARTTLS was answered 220: the glue sends output(), discards what the
    // client sent after STARTTLS in plaintext (plaintext_discarded()), runs
    // the handshake and calls tls_started() or tls_failed(). No input is
    // fed meanwhile.
    bool tls_requested() const { return state_.phase == Phase::tls; }
    // CVE-2011-0411: `octets` the glue drained from its own buffers after
    // STARTTLS; logged (ESMTPLogLevel 1) together with what the engine had
    // buffered, never executed.
    void plaintext_discarded(std::size_t octets);
    // The handshake succeeded: the session starts over (RFC 3207 4.2).
    void tls_started(TlsInfo info);
    // The handshake failed: closed without a reply (nothing can be sent).
    void tls_failed(std::string_view why);

    // Counters for the log and tests.
    unsigned messages_accepted() const { return accepted_; }
    unsigned commands_seen() const { return commands_; }

    // SessionView
    std::string_view client_address() const override { return conn_.client_address; }
    unsigned client_port() const override { return conn_.client_port; }
    std::string_view remote_host() const override;
    std::string_view local_address() const override { return conn_.local_address; }
    unsigned local_port() const override { return conn_.local_port; }
    std::string_view hostname() const override { return cfg_.hostname; }
    std::string_view helo_name() const override { return helo_; }
    bool esmtp() const override { return state_.hello == Hello::ehlo; }
    std::string_view protocol() const override;
    const Envelope &envelope() const override { return env_; }
    std::string_view queue_id() const override { return queue_id_; }
    std::string_view trace_headers() const override { return trace_; }
    std::uint64_t message_size() const override { return data_.size(); }
    std::uint64_t max_message_size() const override { return cfg_.limits.max_message_size; }
    void log(int level, std::string_view text) override;
    void error(std::string_view text) override;
    const TlsInfo &tls() const override { return conn_.tls_info; }
    std::string_view auth_user() const override { return auth_user_; }

  private:
    // DataSink
    void on_header(const HeaderField &field) override;
    void on_eoh(std::string_view raw) override;
    void on_body(std::string_view chunk) override;

    // The one place the state changes; logs the change at level events.
    void transit(State next, std::string_view why);
    void transit_phase(Phase p, std::string_view why);
    void transit_tx(Tx t, std::string_view why);

    void command(std::string_view line);
    // The verb table's row for the current state: a refusal, or empty.
    Canned check(const VerbRule &rule);
    bool junk_limit_reached();
    // A per-client rate refused (450, the session goes on): logged, counted.
    void rate_refused(std::string_view too_many, std::string_view limit, const char *cause);
    void do_helo(std::string_view arg, const VerbRule &rule, bool extended);
    bool parse_envelope_arg(std::string_view arg, bool mail, MailArgs &a);
    bool unique_params(const Params &params);
    void do_mail(std::string_view arg);
    void do_rcpt(std::string_view arg);
    void do_data(std::string_view arg);
    void do_bdat(std::string_view arg, const VerbRule &rule);
    void do_starttls(std::string_view arg);
    // XCLIENT: applies the attributes; false when a reply refused them.
    // `new_address`: ADDR= named an IP (not [UNAVAILABLE]).
    bool do_xclient(std::string_view arg, bool &new_address);
    // The session starts again with its new identity (the verb table's
    // `restarts` column): HELO/EHLO again, the screen (for a new address)
    // and CONNECT asked again, 220.
    void restart(std::string_view why, bool new_address);
    // AUTH (engine/auth.hpp): the verb, a SASL response line after 334,
    // and the credentials handed to the Authenticator.
    void do_auth(std::string_view arg);
    void sasl_response(std::string_view line);
    void sasl_step(std::string_view decoded);
    void sasl_end(int code, std::string_view enh, std::string_view text);
    void verify();
    void auth_failed();
    void sasl_challenge(std::string_view base64);
    void hold(std::string_view in);
    bool sender_owned(const Path &from) const;
    bool xclient_allowed() const { return cfg_.xclient_hosts.contains(conn_.client_address); }
    // What the handler carries on (esmtp::Carries) that ESMTPExtensions
    // leaves on: DSN and REQUIRETLS are offered only for these.
    unsigned carried() const
    {
        return cfg_.handler_carries & ((cfg_.extensions & ext_dsn ? carries_dsn : 0u) |
                                       (cfg_.extensions & ext_requiretls ? carries_requiretls : 0u));
    }
    void do_simple(Verb verb, std::string_view arg, const VerbRule &rule, const CommandMatch &m);
    void finish_chunk();
    void finish_data();
    void complete_message();
    void content_refused();
    void delivery_failed(std::string_view when, const Reply &r);
    void data_refused(const Reply &r);
    struct ContentFault {
        Reply reply;
        RejectCause cause;
        const char *what;
    };
    std::optional<ContentFault> content_fault() const;
    bool use_enhanced() const;
    bool pipelining_allowed() const;
    void protocol_violation(std::string_view what);
    // A refusal of the screen: logged and counted; false when it lets the
    // client go on.
    bool screened(const Screen::Verdict &v);
    bool content_wanted();
    void reset_transaction(std::string_view why);
    void end_transaction(std::string_view why);

    // Ask the handler: logs the event, catches what it throws (451 4.3.0,
    // handler_threw_ set) and replaces a reply not valid for the event
    // (replies.hpp), logging the handler's mistake.
    template <class F> Reply ask(Event ev, F &&f);
    template <class F> void guarded_void(const char *event, F &&f);
    // Handler::abort(), logged at log_events as every other event.
    void abort_handler();

    // Send a reply; `dflt` fills what the handler left empty. `enhanced`
    // false for replies that never carry a status code (greeting, EHLO, 354).
    void reply(const Reply &r);
    void reply(Reply handler_reply, const Reply &dflt, bool enhanced = true);
    void reply(Reply handler_reply, const Canned &dflt, bool enhanced = true);
    void reply(int code, std::string_view enh, std::string_view text);
    void replied(std::size_t before, int code, bool close);
    bool logs(int level) const { return log_ && level <= cfg_.log_level; }

    // Owned by the server configuration (built once in post_config): a
    // session only reads it, so it is not copied per connection.
    const SessionConfig &cfg_;
    ConnectionInfo conn_;
    std::unique_ptr<Handler> handler_;
    TxLogSink *log_;
    ClientLimiter *limiter_ = nullptr;
    Screen *screen_ = nullptr;
    SessionObserver *obs_ = nullptr;
    LineReader lines_;
    DataReader data_;

    State state_;
    bool ended_ = false;
    std::string helo_;
    // The last EHLO reply offered them (the handler carries them on and
    // did not take them out): their parameters are accepted.
    bool dsn_offered_ = false;
    bool requiretls_offered_ = false;
    Envelope env_;
    std::string queue_id_;
    std::string trace_;
    bool handler_threw_ = false;  // the last ask() caught an exception
    bool handler_failed_ = false; // an exception during DATA content: Tx::aborted at the next content event
    bool count_error_ = true;     // the reply being sent counts toward ESMTPMaxErrors
    std::string out_;
    unsigned accepted_ = 0;
    unsigned commands_ = 0;
    unsigned errors_ = 0;
    unsigned junk_ = 0;
    std::size_t overshoot_ = 0; // recipients refused 452 in this transaction
    std::uint64_t transfer_octets_ = 0;
    std::size_t injected_ = 0; // plaintext octets after STARTTLS, discarded
    // BDAT: octets of the current chunk still to come, its size, whether it
    // is the last, and the refusal to send once a refused chunk is swallowed.
    std::uint64_t bdat_remaining_ = 0;
    std::uint64_t bdat_chunk_ = 0;
    bool bdat_last_ = false;
    Reply bdat_refusal_;
    // AUTH: the exchange under way, the user once authenticated, the
    // failures so far (ESMTPMaxAuthFailures), input held while the
    // Authenticator has not answered, and whether feed() is running.
    Authenticator *authenticator_ = nullptr;
    AuthMechanism sasl_mech_ = mech_plain;
    Credentials sasl_;
    // The server ended an AUTH exchange early: the client's next line may
    // still be its answer (a password), not a command.
    bool sasl_cut_short_ = false;
    std::string auth_user_;
    unsigned auth_failures_ = 0;
    std::string held_;
    bool feeding_ = false;
    bool refeeding_ = false; // feeding held input: already counted as received
};

} // namespace esmtp
