// libFuzzer target: an esmtp::Session fed arbitrary client bytes.
//
// Input: [config byte] then the chunked payload of fuzz_util.hpp (the first
// bytes choose where the client's bytes are cut between feed() calls).
// Invariants:
//  - after every call, output() holds only complete CRLF-terminated reply
//    lines "DDD", "DDD-text" or "DDD text" (first digit 1-5, no CR or LF
//    inside a line), the lines of a multi-line reply share their code, and
//    the last line is a final one (no half-sent reply before a flush);
//  - closing() is sticky and nothing is answered once it is true;
//  - the handler sees a well-formed event sequence: connect first,
//    disconnect once and last, RCPT/DATA only inside a transaction,
//    header/eoh/body only between an accepted DATA and EOM/abort, every
//    transaction ended by exactly one eom or abort, and at EOM the content
//    it got has message_size() octets, is CRLF-clean and within the limits;
//  - a handler reply is acted on only if it is valid for its event
//    (engine/replies.hpp): a recipient is added, a transaction opened, a
//    message accepted exactly when the module's check lets the reply through;
//  - transaction-log records are one line without control characters;
//  - without ESMTPForbidUnauthPipelining (the only chunking-dependent rule)
//    the replies and handler events are the same whatever the chunking
//    (the content of a message counts only when it reaches EOM).
#include "fuzz_util.hpp"
#include "engine/replies.hpp"
#include "engine/session.hpp"

#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

using esmtp::Event;
using esmtp::Reply;
using esmtp::SessionView;

namespace
{

enum Flags : unsigned {
    f_normalize = 1u << 0,         // ESMTPBareLineFeed normalize
    f_forbid_pipelining = 1u << 1, // ESMTPForbidUnauthPipelining
    f_small_limits = 1u << 2,      // tiny limits, so that they are reached
    f_few_extensions = 1u << 3,    // no PIPELINING, CHUNKING, ENHANCEDSTATUSCODES (with
                                   // f_own_domains: TLS unavailable, a fallback certificate)
    f_noisy = 1u << 4,             // the handler answers oddly (refusals, multi-line, CR/LF in text)
    f_throw = 1u << 5,             // the handler throws in some events
    f_own_domains = 1u << 6,       // accept only a few recipient domains (else "*"); ESMTPStartTLS On
                                   // (Required with f_small_limits)
    f_shutdown = 1u << 7,          // the server ends the session at the end (timeout, stopping)
};

bool contains(std::string_view s, std::string_view what)
{
    return s.find(what) != std::string_view::npos;
}

// The module acts on a handler's reply as an acceptance: the default, or a
// positive reply that is valid for the event (an invalid one is replaced
// by 451 4.3.0 for these events).
bool accepted(Event ev, const Reply &r)
{
    return r.empty() || (r.positive() && esmtp::reply_problem(ev, r).empty());
}

bool crlf_clean(std::string_view s)
{
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '\r' && (i + 1 == s.size() || s[i + 1] != '\n'))
            return false;
        if (s[i] == '\n' && (i == 0 || s[i - 1] != '\r'))
            return false;
    }
    return true;
}

// What the handler observed, kept outside the session that owns the handler.
struct Observed {
    std::string events; // one event per line; body content only with eom
    int connects = 0;
    int disconnects = 0;
};

class FuzzHandler final : public esmtp::Handler
{
  public:
    FuzzHandler(Observed &obs, unsigned flags, const esmtp::SessionConfig &cfg) : o_(obs), flags_(flags), cfg_(cfg) {}

    Reply connect(SessionView &s) override
    {
        FUZZ_CHECK(o_.events.empty() && o_.connects == 0);
        ++o_.connects;
        event("connect");
        if (flags_ & f_noisy) {
            // a multi-line greeting
            return Reply(220, std::vector<std::string>{std::string(s.hostname()), "second\r\nline", ""});
        }
        return {};
    }
    Reply helo(SessionView &, std::string_view domain) override
    {
        event("helo " + std::string(domain));
        end_transaction_by_session(); // HELO/EHLO reset the transaction (abort came first)
        return odd(domain, "helo");
    }
    Reply ehlo(SessionView &, std::string_view domain, std::vector<std::string> &ext) override
    {
        event("ehlo " + std::string(domain));
        end_transaction_by_session();
        if ((flags_ & f_noisy) && contains(domain, "x")) {
            ext.push_back("X-FUZZ\r\n250 injected");
            ext.push_back("");
        }
        if ((flags_ & f_noisy) && contains(domain, "-")) {
            ext.clear();
        }
        return odd(domain, "ehlo");
    }
    Reply mail(SessionView &s, const esmtp::Path &from, const esmtp::Params &) override
    {
        event("mail " + from.mailbox);
        FUZZ_CHECK(!tx_); // the previous transaction was ended by eom or abort
        FUZZ_CHECK(!s.queue_id().empty());
        Reply r = odd(from.mailbox, "mail");
        if (accepted(Event::mail, r)) {
            tx_ = true;
            rcpts_ = 0;
        }
        return r;
    }
    Reply rcpt(SessionView &s, const esmtp::Path &to, const esmtp::Params &) override
    {
        event("rcpt " + to.mailbox);
        FUZZ_CHECK(tx_ && !content_);
        FUZZ_CHECK(s.envelope().recipients.size() == rcpts_);
        FUZZ_CHECK(rcpts_ < cfg_.limits.max_recipients);
        Reply r = odd(to.mailbox, "rcpt");
        if (accepted(Event::rcpt, r))
            ++rcpts_;
        return r;
    }
    Reply data(SessionView &s) override
    {
        event("data");
        FUZZ_CHECK(tx_ && rcpts_ > 0 && !content_);
        FUZZ_CHECK(!s.trace_headers().empty());
        Reply r = (flags_ & f_noisy) ? pick(s.envelope().sender.mailbox, "data") : Reply();
        if (accepted(Event::data, r)) {
            content_ = true;
            eoh_ = false;
            message_.clear();
            pending_.clear();
        }
        return r;
    }
    void header(SessionView &, const esmtp::HeaderField &f) override
    {
        FUZZ_CHECK(content_ && !eoh_);
        FUZZ_CHECK(!f.name.empty() && f.raw.size() >= f.name.size() + 3);
        FUZZ_CHECK(f.raw.substr(0, f.name.size()) == f.name && f.raw[f.name.size()] == ':');
        FUZZ_CHECK(f.raw.substr(f.raw.size() - 2) == "\r\n");
        FUZZ_CHECK(f.raw.size() <= cfg_.limits.max_header_field);
        pending("header " + std::string(f.name) + ": " + std::string(f.value));
        message_.append(f.raw);
        if ((flags_ & f_throw) && f.name == "X-Throw")
            throw std::runtime_error("header");
    }
    void eoh(SessionView &, std::string_view raw) override
    {
        FUZZ_CHECK(content_ && !eoh_);
        FUZZ_CHECK(raw.empty() || raw == "\r\n");
        eoh_ = true;
        pending("eoh " + std::to_string(raw.size()));
        message_.append(raw);
    }
    void body(SessionView &s, std::string_view chunk) override
    {
        FUZZ_CHECK(content_ && eoh_);
        FUZZ_CHECK(!chunk.empty());
        message_.append(chunk);
        FUZZ_CHECK(message_.size() <= s.message_size());
    }
    Reply eom(SessionView &s) override
    {
        FUZZ_CHECK(tx_ && content_ && eoh_);
        FUZZ_CHECK(s.message_size() == message_.size());
        FUZZ_CHECK(s.message_size() <= s.max_message_size());
        FUZZ_CHECK(s.envelope().recipients.size() == rcpts_ && rcpts_ > 0);
        FUZZ_CHECK(!s.queue_id().empty());
        if (!(flags_ & f_normalize))
            FUZZ_CHECK(crlf_clean(message_));
        event(pending_ + "eom " + fuzz::show(message_));
        pending_.clear();
        tx_ = content_ = false;
        after_eom_ = true; // a throw is answered 451, then abort
        Reply r = odd(s.envelope().sender.mailbox, "eom");
        if (r.empty())
            r = Reply(250, "Ok: queued");      // the default names the (time-dependent) queue id
        after_eom_ = !accepted(Event::eom, r); // the module then calls abort
        return r;
    }
    void abort(SessionView &) override
    {
        event("abort");
        FUZZ_CHECK(tx_ || after_eom_); // one abort per transaction, none outside one
        tx_ = content_ = after_eom_ = false;
        message_.clear();
        pending_.clear();
        if ((flags_ & f_throw) && rcpts_ == 2)
            throw std::runtime_error("abort");
    }
    Reply rset(SessionView &s) override
    {
        event("rset");
        FUZZ_CHECK(!tx_); // RSET aborted the transaction before asking
        return odd(s.helo_name(), "rset");
    }
    Reply noop(SessionView &s) override
    {
        event("noop");
        return odd(s.helo_name(), "noop");
    }
    Reply vrfy(SessionView &, std::string_view arg) override
    {
        event("vrfy " + fuzz::show(arg));
        return odd(arg, "vrfy");
    }
    Reply expn(SessionView &, std::string_view arg) override
    {
        event("expn " + fuzz::show(arg));
        return odd(arg, "expn");
    }
    Reply help(SessionView &, std::string_view arg) override
    {
        event("help " + fuzz::show(arg));
        return odd(arg, "help");
    }
    Reply quit(SessionView &s) override
    {
        event("quit");
        return odd(s.helo_name(), "quit");
    }
    Reply command(SessionView &, std::string_view name, const std::vector<std::string> &captures) override
    {
        FUZZ_CHECK(name == "XFUZZ" && !captures.empty());
        event("command " + fuzz::show(captures.front()));
        return Reply(250, "xfuzz " + captures.back());
    }
    Reply unknown(SessionView &, std::string_view line) override
    {
        event("unknown " + fuzz::show(line));
        return odd(line, "unknown");
    }
    void disconnect(SessionView &) override
    {
        FUZZ_CHECK(o_.disconnects == 0 && o_.connects == 1);
        FUZZ_CHECK(!tx_); // an open transaction was aborted first
        event("disconnect");
        ++o_.disconnects;
    }

  private:
    void event(const std::string &e)
    {
        FUZZ_CHECK(o_.disconnects == 0); // nothing after disconnect
        o_.events += e;
        o_.events += '\n';
    }
    void end_transaction_by_session() { FUZZ_CHECK(!tx_); }
    // Content events are logged with their eom only: how much of a message
    // the handler sees before an abort (a limit crossed, a bare LF) depends
    // on where the input was cut, by design (storage stops early).
    void pending(const std::string &e)
    {
        FUZZ_CHECK(o_.disconnects == 0);
        pending_ += e;
        pending_ += '\n';
    }

    // A reply chosen by the argument's bytes, so that the fuzzer explores
    // refusals, closes, exceptions and malformed replies.
    Reply pick(std::string_view arg, std::string_view event)
    {
        unsigned h = static_cast<unsigned>(event.size());
        for (char c : arg)
            h = h * 31 + static_cast<unsigned char>(c);
        switch (h % 12) {
        case 0:
            return Reply(250, "ok");
        case 1:
            return Reply(451, "try later");
        case 2:
            return Reply(550, std::vector<std::string>{"no", "", "really not"}, "5.7.1");
        case 3:
            return Reply(421, "going away");
        case 4:
            return Reply(999, "out of range");
        case 5:
            return Reply(250, "text\r\nwith CR LF\n250 injected\r");
        case 6:
            return Reply(221, "closing", "", true);
        case 7:
            return Reply(250, std::vector<std::string>{});
        case 8:
            if (flags_ & f_throw)
                throw std::runtime_error("pick");
            return {};
        case 9:
            return Reply(354, "go on");
        case 10:
            return Reply(42, "", "9.9.9");
        default:
            return {};
        }
    }
    Reply odd(std::string_view arg, std::string_view event)
    {
        if (flags_ & f_noisy)
            return pick(arg, event);
        if ((flags_ & f_throw) && contains(arg, "throw"))
            throw std::runtime_error("throw");
        return {};
    }

    Observed &o_;
    unsigned flags_;
    const esmtp::SessionConfig &cfg_;
    bool tx_ = false;        // a transaction the handler accepted is open
    bool content_ = false;   // between an accepted DATA and eom/abort
    bool eoh_ = false;       // eoh seen for this message
    bool after_eom_ = false; // eom refused: abort may follow
    std::size_t rcpts_ = 0;
    std::string message_;
    std::string pending_;
};

// AUTH: the one password the fuzz Authenticator grants.
constexpr std::string_view kSecret = "Zq9-secret";

// Grants user/Zq9-secret, "down" is a backend failure, "later" answers
// after the feed() call (the run resolves it), anything else is denied.
class FuzzAuth final : public esmtp::Authenticator
{
  public:
    std::optional<esmtp::AuthVerdict> check(const esmtp::AuthRequest &r) override
    {
        FUZZ_CHECK(!r.user.empty() && !r.password.empty());
        if (r.user == "down")
            return esmtp::AuthVerdict::unavailable;
        if (r.user == "later") {
            later = r.password == kSecret ? esmtp::AuthVerdict::granted : esmtp::AuthVerdict::denied;
            return std::nullopt;
        }
        return r.user == "user" && r.password == kSecret ? esmtp::AuthVerdict::granted : esmtp::AuthVerdict::denied;
    }
    esmtp::AuthVerdict later = esmtp::AuthVerdict::denied;
};

class CheckingLog final : public esmtp::TxLogSink
{
  public:
    // The password reaches no log unless the client sent it in plain text
    // (outside AUTH) itself.
    bool secret_in_input = false;
    void error(std::string_view) override {}
    void write(int level, std::string_view record) override
    {
        FUZZ_CHECK(secret_in_input || !contains(record, kSecret));
        FUZZ_CHECK(level >= esmtp::txlog_session && level <= esmtp::txlog_events);
        FUZZ_CHECK(!record.empty() && record.back() == '\n');
        for (std::size_t i = 0; i + 1 < record.size(); ++i) {
            auto c = static_cast<unsigned char>(record[i]);
            FUZZ_CHECK(c >= 32 && c != 127);
        }
    }
};

bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

// `out` is what one call produced: complete reply lines only.
void check_replies(std::string_view out)
{
    std::string_view code; // of the multi-line reply in progress
    while (!out.empty()) {
        std::size_t crlf = out.find("\r\n");
        if (crlf == std::string_view::npos) {
            std::fprintf(stderr, "unterminated reply line: %s\n", fuzz::show(out).c_str());
            FUZZ_CHECK(!"reply line without CRLF");
        }
        std::string_view line = out.substr(0, crlf);
        out.remove_prefix(crlf + 2);
        if (line.size() < 3 || line[0] < '1' || line[0] > '5' || !is_digit(line[1]) || !is_digit(line[2]) ||
            (line.size() > 3 && line[3] != ' ' && line[3] != '-') || line.find_first_of("\r\n") != line.npos) {
            std::fprintf(stderr, "bad reply line: %s\n", fuzz::show(line).c_str());
            FUZZ_CHECK(!"malformed reply line");
        }
        if (!code.empty())
            FUZZ_CHECK(line.substr(0, 3) == code);
        bool more = line.size() > 3 && line[3] == '-';
        code = more ? line.substr(0, 3) : std::string_view{};
    }
    FUZZ_CHECK(code.empty()); // the last line ends the reply
}

// The last reply before the handshake is STARTTLS's 220. Its RFC 2034 code
// appears only when ENHANCEDSTATUSCODES is on and the client said EHLO (a
// HELO session gets the plain form too).
bool ends_with_tls_ready(std::string_view out, bool enhanced)
{
    constexpr std::string_view with_code = "220 2.0.0 Ready to start TLS\r\n";
    constexpr std::string_view plain = "220 Ready to start TLS\r\n";
    return (enhanced && out.ends_with(with_code)) || out.ends_with(plain);
}

struct Transcript {
    std::string replies;
    std::string events;
};

Transcript run(unsigned flags, const std::vector<std::string_view> &pieces, bool secret_in_input)
{
    esmtp::SessionConfig cfg;
    cfg.hostname = "mx.example.org";
    cfg.log_level = esmtp::txlog_events;
    cfg.normalize_bare_newlines = flags & f_normalize;
    cfg.forbid_unauth_pipelining = flags & f_forbid_pipelining;
    if (flags & f_small_limits) {
        cfg.limits.max_command_line = 64;
        cfg.limits.max_text_line = 40;
        cfg.limits.max_message_size = 300;
        cfg.limits.max_recipients = 3;
        cfg.limits.max_errors = 6;
        cfg.limits.max_junk_commands = 4;
        cfg.limits.max_header_field = 60;
    }
    if (flags & f_few_extensions)
        cfg.extensions = esmtp::ext_size | esmtp::ext_8bitmime | esmtp::ext_smtputf8;
    if (flags & f_own_domains)
        cfg.accept_domains = {"example.org", "*.example.net", "d?"};
    else
        cfg.accept_domains = {"*"};
    if (flags & f_own_domains)
        cfg.starttls = (flags & f_small_limits) ? esmtp::StartTls::required : esmtp::StartTls::on;
    // AUTH always offered; over plaintext unless f_own_domains, submission
    // and the sender/login match with f_noisy and f_normalize.
    cfg.auth_mechanisms = esmtp::mech_plain | esmtp::mech_login;
    cfg.auth_require_tls = flags & f_own_domains;
    cfg.submission = (flags & f_noisy) && (flags & f_own_domains);
    cfg.sender_login_match = flags & f_normalize;
    if (flags & f_small_limits) // "user" and "later" may act as another (ESMTPAuthProxyUsers)
        cfg.auth_proxy_users = {"user", "later"};

    if (flags & f_noisy) {
        // compiled once, shared by every run, as the glue shares it between sessions
        static const std::shared_ptr<const esmtp::CommandTable> commands = [] {
            std::string error;
            auto t = esmtp::CommandTable::compile({{"XFUZZ", "^XFUZZ(?: (\\S+))?$"}}, error);
            FUZZ_CHECK(t && error.empty());
            FUZZ_CHECK(!esmtp::CommandTable::compile({{"XBAD", "(unclosed"}}, error) && !error.empty());
            return t;
        }();
        cfg.commands = commands;
    }

    Observed obs;
    CheckingLog log;
    log.secret_in_input = secret_in_input;
    FuzzAuth auth;
    esmtp::ConnectionInfo conn;
    conn.client_address = "192.0.2.7";
    conn.client_port = 40000;
    // ESMTPStartTLS on with a stand-in certificate (mod_md's fallback):
    // STARTTLS is answered 454 and the session never waits for a handshake.
    conn.tls_unavailable = (flags & f_own_domains) && (flags & f_few_extensions);
    Transcript t;
    {
        auto session =
            std::make_unique<esmtp::Session>(cfg, conn, std::make_unique<FuzzHandler>(obs, flags, cfg), &log);
        session->set_authenticator(&auth);
        session->start();
        check_replies(session->output());
        t.replies += session->output();
        session->output().clear();
        bool closed = session->closing();
        for (std::string_view piece : pieces) {
            bool in_tls = session->tls_requested();
            session->feed(piece);
            // the glue's deferred answer, before more input; the input held
            // meanwhile may hold the next deferred AUTH
            for (int n = 0; session->auth_pending(); ++n) {
                FUZZ_CHECK(n < 1000);
                session->auth_done(auth.later);
            }
            std::string &out = session->output();
            check_replies(out);
            if (conn.tls_unavailable)
                FUZZ_CHECK(!session->tls_requested());
            if (in_tls) // CVE-2011-0411: nothing after STARTTLS runs before the handshake
                FUZZ_CHECK(out.empty() && session->tls_requested());
            else if (session->tls_requested())
                FUZZ_CHECK(ends_with_tls_ready(out, cfg.extensions & esmtp::ext_enhancedstatuscodes));
            if (closed)
                FUZZ_CHECK(out.empty() && session->closing()); // sticky, and silent
            closed = session->closing();
            // whoever the session acts as is a user name the glue may log
            FUZZ_CHECK(session->auth_user().empty() || esmtp::valid_auth_user(session->auth_user()));
            t.replies += out;
            out.clear();
        }
        if (session->tls_requested()) {
            // the glue's handshake succeeded: the session starts over
            session->plaintext_discarded(0);
            esmtp::TlsInfo info;
            info.protocol = "TLSv1.3";
            session->tls_started(info);
            FUZZ_CHECK(!session->tls_requested() && session->tls().active && session->helo_name().empty());
            FUZZ_CHECK(!session->in_transaction());
            session->feed("EHLO again.example\r\n");
            check_replies(session->output());
            FUZZ_CHECK(session->output().find("STARTTLS") == std::string::npos);
            t.replies += session->output();
            session->output().clear();
            closed = session->closing();
        }
        if (flags & f_shutdown) {
            session->shutdown(Reply(421, "mx.example.org Error: timeout exceeded", "4.4.2"));
            std::string &out = session->output();
            check_replies(out);
            if (closed)
                FUZZ_CHECK(out.empty());
            else
                FUZZ_CHECK(out.substr(0, 4) == "421 " && out.find("\r\n") + 2 == out.size());
            FUZZ_CHECK(session->closing());
            out.clear();
        }
        session->end();
        FUZZ_CHECK(obs.disconnects == 1);
        FUZZ_CHECK(session->closing() && !session->in_transaction());
        session->feed("NOOP\r\n"); // after end(): nothing happens
        FUZZ_CHECK(session->output().empty());
    } // the destructor calls end() again: no second disconnect
    FUZZ_CHECK(obs.disconnects == 1);
    t.events = std::move(obs.events);
    return t;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size)
{
    std::string_view in(reinterpret_cast<const char *>(data), size);
    unsigned flags = fuzz::take_byte(in);
    fuzz::Chunked c = fuzz::split_input(in);

    bool secret = contains(c.payload, kSecret);
    Transcript whole = run(flags, {c.payload}, secret);
    Transcript pieces = run(flags, c.pieces, secret);
    if (!(flags & f_forbid_pipelining)) {
        if (whole.replies != pieces.replies) {
            std::fprintf(stderr, "replies differ with chunking:\n--- whole\n%s\n--- pieces\n%s\n",
                         fuzz::show(whole.replies).c_str(), fuzz::show(pieces.replies).c_str());
            FUZZ_CHECK(!"chunking changed the replies");
        }
        if (whole.events != pieces.events) {
            std::fprintf(stderr, "events differ with chunking:\n--- whole\n%s\n--- pieces\n%s\n",
                         fuzz::show(whole.events).c_str(), fuzz::show(pieces.events).c_str());
            FUZZ_CHECK(!"chunking changed the handler events");
        }
    }
    return 0;
}
