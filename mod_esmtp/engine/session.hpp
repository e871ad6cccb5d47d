// The SMTP session: a sans-I/O state machine. It is fed the bytes the client
// sent and produces the bytes to send back; it never touches a socket, so
// the httpd glue, the unit tests and the fuzzers drive it the same way.
// All replies for the input at hand are produced before the caller flushes
// (pipelining-friendly).
#pragma once

#include "engine/command_table.hpp"
#include "engine/data_reader.hpp"
#include "engine/limits.hpp"
#include "engine/line_reader.hpp"
#include "engine/txlog_format.hpp"
#include <esmtp/handler.hpp>

#include <ctime>
#include <memory>
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
    bool tls = false; // the session runs over TLS (implicit TLS, later STARTTLS)
};

// ESMTP extensions a server offers (ESMTPExtensions).
enum Extension : unsigned {
    ext_pipelining = 1u << 0,
    ext_size = 1u << 1,
    ext_8bitmime = 1u << 2,
    ext_enhancedstatuscodes = 1u << 3,
    ext_smtputf8 = 1u << 4,
    ext_chunking = 1u << 5,
    ext_all = (1u << 6) - 1,
};

// The EHLO keyword of an extension bit, and back (0 when unknown).
const char *extension_name(Extension e);
unsigned extension_by_name(std::string_view name);

struct SessionConfig {
    std::string hostname = "localhost";
    Limits limits;
    int log_level = txlog_session;
    unsigned extensions = ext_all;
    // Recipient domains this server accepts mail for: lower-case patterns
    // with the wildcards * and ? ("*" alone accepts every domain, an open
    // relay). <postmaster> and the local address literal are always accepted.
    std::vector<std::string> accept_domains;
    // ESMTPBareLineFeed: false = reject (550 5.5.2) commands and messages
    // with a bare LF or CR; true = take a bare LF or CR as CRLF.
    bool normalize_bare_newlines = false;
    // ESMTPForbidUnauthPipelining: commands sent ahead of our reply without
    // PIPELINING (HELO sessions, before EHLO) end the session.
    bool forbid_unauth_pipelining = true;
    // RFC 5321 4.5.3.2 timeouts in seconds, enforced by the I/O glue.
    unsigned command_timeout = 300;
    unsigned data_timeout = 180;
    // ESMTPGreetingDelay (milliseconds): wait this long before the 220; a
    // client that talks first is refused (554 5.5.0). Enforced by the glue.
    unsigned greeting_delay_ms = 0;
    // ESMTPMinDataRate (octets/second, 0 off): slower DATA/BDAT transfers
    // are ended with 421 4.4.2 after a grace period. Enforced by the glue.
    unsigned min_data_rate = 0;
};

// Case-insensitive match of a domain against a pattern with * and ?.
bool domain_matches(std::string_view pattern, std::string_view domain);

class Session final : public SessionView, private DataSink
{
  public:
    enum class Phase { greeting, command, data, bdat, closed };

    // `handler` must not be null. `log` may be null (no transaction log).
    // `cfg` must outlive the session.
    Session(const SessionConfig &cfg, ConnectionInfo conn, std::unique_ptr<Handler> handler, TxLogSink *log);
    ~Session();
    Session(const Session &) = delete;
    Session &operator=(const Session &) = delete;

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

    std::string &output() { return out_; }
    Phase phase() const { return phase_; }
    // Nothing more will be read: send output() and close.
    bool closing() const { return phase_ == Phase::closed; }
    // Input is buffered that does not make a complete command yet.
    bool has_partial_input() const { return lines_.has_partial(); }
    // MAIL was accepted and the transaction has not ended yet.
    bool in_transaction() const { return in_transaction_; }

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
    bool esmtp() const override { return esmtp_; }
    std::string_view protocol() const override { return !esmtp_ ? "SMTP" : env_.smtputf8 ? "UTF8ESMTP" : "ESMTP"; }
    const Envelope &envelope() const override { return env_; }
    std::string_view queue_id() const override { return queue_id_; }
    std::string_view trace_headers() const override { return trace_; }
    std::uint64_t message_size() const override { return data_.size(); }
    std::uint64_t max_message_size() const override { return cfg_.limits.max_message_size; }
    void log(int level, std::string_view text) override;
    void error(std::string_view text) override;
    bool add_command(std::string_view pattern, CommandCallback callback, std::string *error) override;

  private:
    // DataSink
    void on_header(const HeaderField &field) override;
    void on_eoh(std::string_view raw) override;
    void on_body(std::string_view chunk) override;

    void command(std::string_view line);
    void do_helo(std::string_view arg, bool extended);
    void do_mail(std::string_view arg);
    void do_rcpt(std::string_view arg);
    void do_data(std::string_view arg);
    void do_bdat(std::string_view arg);
    void finish_chunk();
    void finish_data();
    void complete_message();
    bool recipient_domain_accepted(const Path &p) const;
    bool use_enhanced() const;
    bool pipelining_allowed() const;
    void protocol_violation(std::string_view what);
    bool junk_command();
    bool content_wanted();
    void reset_transaction(bool notify_handler);

    // Send a reply; `dflt` fills what the handler left empty. `enhanced`
    // false for replies that never carry a status code (greeting, EHLO, 354).
    // A module default reply with fixed text: formatted without allocating.
    struct Canned {
        int code;
        std::string_view enhanced;
        std::string_view text;
    };
    void reply(const Reply &r);
    void reply(Reply handler_reply, const Reply &dflt, bool enhanced = true);
    void reply(Reply handler_reply, const Canned &dflt, bool enhanced = true);
    void replied(std::size_t before, int code, bool close);
    bool logs(int level) const { return log_ && level <= cfg_.log_level; }
    void reply(int code, std::string_view enh, std::string_view text);
    template <class F> Reply guarded(const char *event, F &&f);
    template <class F> void guarded_void(const char *event, F &&f);

    // Owned by the server configuration (built once in post_config): a
    // session only reads it, so it is not copied per connection.
    const SessionConfig &cfg_;
    ConnectionInfo conn_;
    std::unique_ptr<Handler> handler_;
    TxLogSink *log_;
    CommandTable commands_table_;
    LineReader lines_;
    DataReader data_;

    Phase phase_ = Phase::greeting;
    bool refused_ = false; // CONNECT refused the session: only QUIT
    bool ended_ = false;
    std::string helo_;
    bool esmtp_ = false;
    bool in_transaction_ = false;
    Envelope env_;
    std::string queue_id_;
    std::string trace_;
    bool handler_failed_ = false;  // an exception during DATA content
    bool content_aborted_ = false; // abort() already sent for this message
    std::string out_;
    unsigned accepted_ = 0;
    unsigned commands_ = 0;
    unsigned errors_ = 0;
    unsigned junk_ = 0;
    // BDAT state: bytes of the current chunk still to come, whether it is
    // the last, whether it is swallowed because the command was refused.
    std::uint64_t bdat_remaining_ = 0;
    std::uint64_t bdat_chunk_ = 0;
    bool bdat_last_ = false;
    bool bdat_discard_ = false;
    bool bdat_active_ = false; // a BDAT transfer is open in this transaction
    Reply bdat_error_;
};

} // namespace esmtp
