#include "engine/session.hpp"

#include "engine/address.hpp"
#include "engine/queue_id.hpp"
#include "engine/text.hpp"
#include "engine/reply_format.hpp"
#include "engine/sender_login.hpp"
#include "engine/trace.hpp"
#include "engine/xclient.hpp"

#include <algorithm>
#include <cctype>
#include <exception>

namespace esmtp
{

namespace
{

bool istarts_with(std::string_view s, std::string_view prefix)
{
    if (s.size() < prefix.size())
        return false;
    for (std::size_t i = 0; i < prefix.size(); ++i)
        if (std::toupper(static_cast<unsigned char>(s[i])) != prefix[i])
            return false;
    return true;
}

bool all_digits(std::string_view s)
{
    if (s.empty())
        return false;
    for (char c : s)
        if (c < '0' || c > '9')
            return false;
    return true;
}

// HELO/EHLO argument: the first word, printable ASCII. Real clients send
// names with '_' and other oddities, so the domain syntax is not enforced
// beyond that (as Postfix does by default).
bool valid_helo(std::string_view d)
{
    if (d.empty() || d.size() > 255)
        return false;
    for (char ch : d) {
        auto c = static_cast<unsigned char>(ch);
        if (c <= 32 || c >= 127)
            return false;
    }
    return true;
}

constexpr struct {
    Extension bit;
    const char *name;
} kExtensions[] = {
    {ext_pipelining, "PIPELINING"}, {ext_size, "SIZE"},
    {ext_8bitmime, "8BITMIME"},     {ext_enhancedstatuscodes, "ENHANCEDSTATUSCODES"},
    {ext_smtputf8, "SMTPUTF8"},     {ext_chunking, "CHUNKING"},
};

// BDAT SP chunk-size [ SP "LAST" ] (RFC 3030), SP or TAB between the
// words as Postfix takes them. False when the line cannot be framed.
bool parse_bdat(std::string_view arg, std::uint64_t &size, bool &last)
{
    auto word = [&arg]() {
        while (!arg.empty() && (arg.front() == ' ' || arg.front() == '\t'))
            arg.remove_prefix(1);
        std::size_t n = arg.find_first_of(" \t");
        std::string_view w = arg.substr(0, n);
        arg.remove_prefix(w.size());
        return w;
    };
    std::string_view digits = word();
    std::string_view marker = word();
    std::string_view extra = word();
    // 18 digits always fit in 64 bits; nobody sends a bigger chunk
    if (!all_digits(digits) || digits.size() > 18 || !extra.empty())
        return false;
    if (!marker.empty() && !(marker.size() == 4 && istarts_with(marker, "LAST")))
        return false;
    size = 0;
    for (char c : digits)
        size = size * 10 + static_cast<std::uint64_t>(c - '0');
    last = !marker.empty();
    return true;
}

std::string tls_summary(const TlsInfo &t)
{
    std::string s =
        t.protocol + " cipher=" + t.cipher + " bits=" + std::to_string(t.bits) + "/" + std::to_string(t.alg_bits);
    if (!t.sni.empty())
        s += " sni=" + t.sni;
    if (!t.client_verify.empty() && t.client_verify != "NONE")
        s += " client_verify=" + t.client_verify + " client_dn=\"" + t.client_subject + "\"";
    return s;
}

// What the transaction log shows of an AUTH command: the mechanism, never
// the initial response (it carries the password).
std::string masked_auth(std::string_view line)
{
    if (!istarts_with(line, "AUTH") || (line.size() > 4 && line[4] != ' ' && line[4] != '\t'))
        return {};
    std::string_view rest = line.substr(4);
    while (!rest.empty() && (rest.front() == ' ' || rest.front() == '\t'))
        rest.remove_prefix(1);
    std::size_t end = rest.find_first_of(" \t");
    std::string_view mech = rest.substr(0, end);
    std::string s = "AUTH ";
    for (char c : mech.substr(0, 20))
        s.push_back(static_cast<unsigned char>(c) > 32 && static_cast<unsigned char>(c) < 127 ? c : '?');
    if (end != std::string_view::npos)
        s += " ********";
    return s;
}

// Input held while the Authenticator has not answered: a client that sends
// more than this before the reply is not waiting for it (RFC 4954 4).
constexpr std::size_t kMaxHeldInput = 64 * 1024;

} // namespace

const char *extension_name(Extension e)
{
    for (const auto &x : kExtensions)
        if (x.bit == e)
            return x.name;
    return "";
}

unsigned extension_by_name(std::string_view name)
{
    for (const auto &x : kExtensions) {
        std::string_view n(x.name);
        if (n.size() == name.size() && istarts_with(name, n))
            return x.bit;
    }
    return 0;
}

Session::Session(const SessionConfig &cfg, ConnectionInfo conn, std::unique_ptr<Handler> handler, TxLogSink *log)
    : cfg_(cfg), conn_(std::move(conn)), handler_(std::move(handler)), log_(log), lines_(cfg_.limits.max_command_line),
      data_(cfg_.limits)
{
    data_.set_normalize(cfg_.normalize_bare_newlines);
}

Session::~Session()
{
    end();
}

std::string_view Session::remote_host() const
{
    return conn_.remote_host.empty() ? std::string_view(conn_.client_address) : std::string_view(conn_.remote_host);
}

std::string_view Session::protocol() const
{
    // The registered "with" keywords: RFC 3848 (ESMTPS) and RFC 6531 3.7.3
    // (UTF8SMTP, UTF8SMTPS). None is registered for HELO over TLS: "SMTP".
    // After AUTH: RFC 3848's ESMTPA and ESMTPSA, RFC 6531's UTF8SMTPA and
    // UTF8SMTPSA.
    bool tls = conn_.tls;
    bool a = !auth_user_.empty();
    if (state_.hello != Hello::ehlo)
        return "SMTP";
    if (env_.smtputf8)
        return tls ? (a ? "UTF8SMTPSA" : "UTF8SMTPS") : (a ? "UTF8SMTPA" : "UTF8SMTP");
    return tls ? (a ? "ESMTPSA" : "ESMTPS") : (a ? "ESMTPA" : "ESMTP");
}

void Session::log(int level, std::string_view text)
{
    if (log_ && level <= cfg_.log_level)
        log_->write(level, format_txlog(std::time(nullptr), queue_id_, text, conn_.client_address));
}

void Session::error(std::string_view text)
{
    if (log_)
        log_->error(text);
    log(log_session, std::string("error: ").append(text));
}

// ---- state

void Session::transit(State next, std::string_view why)
{
    if (next == state_)
        return;
    if (logs(log_events)) {
        auto show = [](const State &s) {
            return std::string(phase_name(s.phase)) + "/" + hello_name(s.hello) + "/" + tx_name(s.tx);
        };
        log(log_events, "transit [" + std::string(why) + "] " + show(state_) + " -> " + show(next));
    }
    if (obs_ && next.phase != state_.phase)
        obs_->phase_changed(state_.phase, next.phase);
    state_ = next;
}

void Session::transit_phase(Phase p, std::string_view why)
{
    State s = state_;
    s.phase = p;
    transit(s, why);
}

void Session::transit_tx(Tx t, std::string_view why)
{
    State s = state_;
    s.tx = t;
    transit(s, why);
}

// ---- asking the handler

template <class F> Reply Session::ask(Event ev, F &&f)
{
    const char *name = event_name(ev);
    if (logs(log_events))
        log(log_events, std::string("event ") + name);
    handler_threw_ = false;
    Reply r;
    try {
        r = f();
    } catch (const std::exception &e) {
        log(log_session, std::string("handler failed in ") + name + ": " + e.what());
        handler_threw_ = true;
        report(RejectCause::handler_error, std::string("handler failed in ") + name);
        return internal_error_reply();
    } catch (...) {
        log(log_session, std::string("handler failed in ") + name);
        handler_threw_ = true;
        report(RejectCause::handler_error, std::string("handler failed in ") + name);
        return internal_error_reply();
    }
    if (r.empty())
        return r;
    std::string problem = reply_problem(ev, r);
    if (problem.empty())
        return r;
    Reply instead = replacement_reply(ev, r);
    error("handler reply \"" + std::to_string(r.code) + (r.enhanced.empty() ? "" : " " + r.enhanced) + "\" to " + name +
          " not sent: " + problem + "; sent " +
          (instead.empty() ? std::string("the module's default")
                           : std::to_string(instead.code) + " " + instead.enhanced) +
          " instead");
    return instead;
}

template <class F> void Session::guarded_void(const char *event, F &&f)
{
    try {
        f();
    } catch (const std::exception &e) {
        handler_failed_ = true;
        log(log_session, std::string("handler failed in ") + event + ": " + e.what());
        report(RejectCause::handler_error, std::string("handler failed in ") + event);
    } catch (...) {
        handler_failed_ = true;
        log(log_session, std::string("handler failed in ") + event);
        report(RejectCause::handler_error, std::string("handler failed in ") + event);
    }
}

// ---- replies

void Session::reply(const Reply &r)
{
    reply(r, Reply{}, true);
}

void Session::reply(int code, std::string_view enh, std::string_view text)
{
    reply(Reply{}, Canned{code, enh, text}, true);
}

void Session::reply(Reply r, const Canned &dflt, bool enhanced)
{
    if (r.empty()) {
        // the common case: a fixed reply, formatted without building a Reply
        std::size_t before = out_.size();
        format_reply_line(dflt.code, dflt.enhanced, dflt.text, enhanced && use_enhanced(), out_);
        replied(before, dflt.code, dflt.code == 421);
        return;
    }
    if (r.code == dflt.code) {
        if (r.enhanced.empty())
            r.enhanced.assign(dflt.enhanced);
        if (r.lines.empty())
            r.lines.emplace_back(dflt.text);
    }
    reply(r, Reply{}, enhanced);
}

void Session::reply(Reply r, const Reply &dflt, bool enhanced)
{
    if (r.empty()) {
        r = dflt;
    } else {
        if (r.enhanced.empty() && r.code == dflt.code)
            r.enhanced = dflt.enhanced;
        if (r.lines.empty() && r.code == dflt.code)
            r.lines = dflt.lines;
    }
    std::size_t before = out_.size();
    format_reply(r, enhanced && use_enhanced(), out_);
    replied(before, r.code, r.close || r.code == 421);
}

void Session::replied(std::size_t before, int code, bool close)
{
    if (logs(log_commands)) {
        std::string_view first(out_.data() + before, out_.size() - before);
        first = first.substr(0, first.find('\r'));
        log(log_commands, std::string("> ").append(first));
    }
    bool counts = count_error_;
    count_error_ = true;
    if (close) {
        transit_phase(Phase::closed, "reply closes");
        return;
    }
    // ESMTPMaxErrors: a client that keeps failing is most likely not a
    // mail client (Postfix's smtpd_hard_error_limit).
    if (code >= 400 && counts && cfg_.limits.max_errors && ++errors_ >= cfg_.limits.max_errors) {
        log(log_session, "too many errors (" + std::to_string(errors_) + ")");
        report(RejectCause::limits, "too many errors");
        reply(Reply(421, cfg_.hostname + " Error: too many errors", "4.7.0", true));
    }
}

bool Session::use_enhanced() const
{
    // RFC 2034 codes once the client said EHLO (and before HELO/EHLO, like
    // Postfix); a HELO session gets plain RFC 5321 replies.
    return (cfg_.extensions & ext_enhancedstatuscodes) && state_.hello != Hello::helo;
}

// ---- session

void Session::start()
{
    if (state_.phase != Phase::greeting)
        return;
    transit_phase(Phase::command, "connect");
    if (logs(log_session))
        log(log_session, std::string("connect from ").append(remote_host()).append("[").append(conn_.client_address) +
                             "]:" + std::to_string(conn_.client_port) +
                             (conn_.tls ? " tls=" + tls_summary(conn_.tls_info) : std::string()) +
                             (conn_.proxied.empty() ? "" : " (" + conn_.proxied + ")"));
    Reply r = ask(Event::connect, [&] { return handler_->connect(*this); });
    if (handler_threw_) // no session without a working handler
        r = Reply(421, std::string(cfg_.hostname) + " Service not available, closing transmission channel", "4.3.2",
                  true);
    else if (r.code >= 400)
        transit({state_.phase, Hello::refused, state_.tx}, "CONNECT refused");
    reply(r, Reply(220, cfg_.hostname + " ESMTP mod_esmtp"), false);
}

void Session::shutdown(const Reply &r)
{
    if (state_.phase == Phase::closed)
        return;
    Reply c = r;
    c.close = true;
    reply(c);
}

bool Session::pipelining_allowed() const
{
    return !cfg_.forbid_unauth_pipelining || (state_.hello == Hello::ehlo && (cfg_.extensions & ext_pipelining));
}

void Session::protocol_violation(std::string_view what)
{
    log(log_session, std::string(what));
    report(RejectCause::pipelining, what);
    reply(Reply(554, "Error: SMTP protocol synchronization", "5.5.0", true));
}

void Session::feed(std::string_view in)
{
    if (state_.phase == Phase::greeting)
        start();
    if (state_.phase == Phase::tls) {
        injected_ += in.size(); // never executed (CVE-2011-0411)
        return;
    }
    if (state_.phase == Phase::auth) {
        hold(in);
        return;
    }
    if (commands_ == 0 && !lines_.has_partial() && !in.empty() && in.front() == '\x16' &&
        state_.phase == Phase::command) {
        // a TLS ClientHello: this port speaks plaintext SMTP first
        log(log_session, "TLS handshake on a plaintext SMTP port");
        transit_phase(Phase::closed, "TLS handshake on a plaintext port");
        return;
    }
    if (obs_ && !refeeding_)
        obs_->received(in.size());
    struct Feeding {
        bool &flag;
        bool was;
        ~Feeding() { flag = was; }
    } feeding{feeding_, feeding_};
    feeding_ = true;
    while (!in.empty() && state_.phase != Phase::closed) {
        if (state_.phase == Phase::data) {
            std::size_t used = data_.feed(in, *this);
            transfer_octets_ += used;
            in.remove_prefix(used);
            if (data_.done()) {
                finish_data();
                if (!in.empty() && !pipelining_allowed())
                    protocol_violation("improper command pipelining after DATA");
            }
            continue;
        }
        if (state_.phase == Phase::bdat) {
            std::size_t take = static_cast<std::size_t>(std::min<std::uint64_t>(bdat_remaining_, in.size()));
            if (bdat_refusal_.empty())
                data_.feed_raw(in.substr(0, take), *this);
            transfer_octets_ += take;
            in.remove_prefix(take);
            bdat_remaining_ -= take;
            if (bdat_remaining_ == 0)
                finish_chunk();
            continue;
        }
        std::size_t used = 0;
        LineReader::Status st = lines_.feed(in, used);
        in.remove_prefix(used);
        if (st == LineReader::Status::need_more)
            break;
        // RFC 2920: without PIPELINING a client waits for each reply. What
        // the client may do is decided by the state it was answered in: an
        // EHLO sent together with MAIL had not seen PIPELINING yet.
        bool may_pipeline = pipelining_allowed();
        // A SASL response line (after 334) is no command: a bad one ends
        // the exchange.
        bool sasl = state_.phase == Phase::sasl;
        if (st == LineReader::Status::too_long) {
            ++commands_;
            log(log_commands, "< (line too long)");
            report(RejectCause::limits, "command line too long");
            if (sasl)
                sasl_end(500, "5.5.2", "Line too long");
            else
                reply(500, "5.5.2", "Line too long");
        } else if (std::string_view line = lines_.line();
                   lines_.bare_newline() &&
                   (!cfg_.normalize_bare_newlines || line.find('\r') != std::string_view::npos)) {
            ++commands_;
            log(log_commands, "< (bare LF or CR in command)");
            report(RejectCause::bare_newline, "bare <LF> or <CR> in command");
            if (sasl)
                sasl_end(550, "5.5.2", "Error: bare <LF> or <CR> in command; use <CR><LF>");
            else
                reply(550, "5.5.2", "Error: bare <LF> or <CR> in command; use <CR><LF>");
        } else if (sasl) {
            log(log_commands, "< ******** (SASL response)");
            sasl_response(line);
        } else {
            command(line);
        }
        if (state_.phase == Phase::auth) {
            hold(in); // answered by auth_done()
            return;
        }
        if (state_.phase == Phase::tls) {
            // CVE-2011-0411: what the client sent after STARTTLS in the same
            // plaintext packet is dropped, with any partial line.
            injected_ += in.size();
            lines_.reset();
            return;
        }
        if (!in.empty() && state_.phase != Phase::closed && state_.phase != Phase::bdat && !may_pipeline)
            protocol_violation("improper command pipelining");
    }
}

bool Session::junk_limit_reached()
{
    if (!cfg_.limits.max_junk_commands || ++junk_ <= cfg_.limits.max_junk_commands)
        return false;
    log(log_session, "too many junk commands");
    report(RejectCause::limits, "too many junk commands");
    reply(Reply(421, cfg_.hostname + " Error: too many commands", "4.7.0", true));
    return true;
}

Canned Session::check(const VerbRule &rule)
{
    // Checked first, as Postfix does: an unauthorized client learns nothing more.
    if (rule.privileged && !xclient_allowed())
        return {550, "5.7.0", "Error: insufficient authorization"};
    if (state_.hello == Hello::refused && !rule.when_refused)
        return {503, "5.5.1", "Error: access denied"};
    if (rule.needs_tls && cfg_.starttls == StartTls::required && !conn_.tls)
        return conn_.tls_unavailable ? Canned{454, "4.7.0", "TLS not available due to temporary reason"}
                                     : Canned{530, "5.7.0", "Must issue a STARTTLS command first"};
    if (rule.extension && (state_.hello != Hello::ehlo || !(cfg_.extensions & rule.extension)))
        return {502, "5.5.1", "Error: command not implemented"};
    if (rule.needs_hello && (state_.hello == Hello::none))
        return {503, "5.5.1", "Error: send HELO/EHLO first"};
    if (rule.needs_auth && cfg_.submission && auth_user_.empty())
        return {530, "5.7.0", "Authentication required"};
    if (rule.refused_in_tx && state_.tx != Tx::none)
        return {503, "5.5.1",
                rule.verb == Verb::mail ? "Error: nested MAIL command" : "Error: MAIL transaction in progress"};
    if (rule.refused_in_bdat && state_.tx == Tx::bdat)
        return {503, "5.5.1", rule.verb == Verb::rcpt ? "Error: RCPT after BDAT" : "Error: DATA after BDAT"};
    if (state_.tx < rule.needs_tx)
        return {503, "5.5.1", state_.tx == Tx::none ? "Error: need MAIL command" : "Error: need RCPT command"};
    return {0, {}, {}};
}

void Session::command(std::string_view line)
{
    ++commands_;
    bool after_sasl = std::exchange(sasl_cut_short_, false);
    if (logs(log_commands)) {
        // never a password in the log, at any level
        std::string masked = masked_auth(line);
        if (masked.empty() && after_sasl && CommandTable::match(cfg_.commands.get(), line).verb == Verb::unknown)
            masked = "******** (line after an ended AUTH exchange)";
        log(log_commands, std::string("< ").append(masked.empty() ? line : std::string_view(masked)));
    }
    if (line.find('\0') != std::string_view::npos) {
        reply(500, "5.5.2", "Error: NUL character in command");
        return;
    }
    // An HTTP client on the SMTP port (or a cross-protocol attack through
    // one): answer and hang up, as Postfix does.
    for (std::string_view method : {"GET ", "POST ", "HEAD ", "PUT ", "CONNECT ", "OPTIONS "}) {
        if (line.substr(0, method.size()) == method) {
            log(log_session, "HTTP request on the SMTP port");
            reply(Reply(521, "Error: this is an SMTP server, not HTTP; closing", "5.7.0", true));
            return;
        }
    }
    CommandMatch m = CommandTable::match(cfg_.commands.get(), line);
    if (m.verb == Verb::auth && !cfg_.auth_mechanisms) {
        // without ESMTPAuth, AUTH is what it was before: an unknown command
        m.verb = Verb::unknown;
        m.argument = line;
    }
    const VerbRule &rule = verb_rule(m.verb);
    if (obs_)
        obs_->command(m.verb == Verb::custom ? m.name : std::string_view(rule.name)); // never the arguments
    if (m.verb == Verb::bdat) {
        // The chunk follows whatever the answer: the table's refusal is sent
        // after it has been swallowed.
        do_bdat(m.argument, rule);
        return;
    }
    if (rule.junk && junk_limit_reached())
        return;
    if (Canned refusal = check(rule); refusal.code) {
        reply(Reply{}, refusal);
        return;
    }
    switch (m.verb) {
    case Verb::helo:
    case Verb::ehlo:
        do_helo(m.argument, rule, m.verb == Verb::ehlo);
        break;
    case Verb::mail:
        do_mail(m.argument);
        break;
    case Verb::rcpt:
        do_rcpt(m.argument);
        break;
    case Verb::data:
        do_data(m.argument);
        break;
    case Verb::starttls:
        do_starttls(m.argument);
        break;
    case Verb::xclient:
        if (do_xclient(m.argument) && rule.restarts)
            restart("XCLIENT");
        break;
    case Verb::auth:
        do_auth(m.argument);
        break;
    default:
        do_simple(m.verb, m.argument, rule, m);
        break;
    }
}

void Session::do_starttls(std::string_view arg)
{
    if (cfg_.starttls == StartTls::off) {
        reply(502, "5.5.1", "Error: command not implemented");
        return;
    }
    if (conn_.tls) {
        reply(503, "5.5.1", "Error: TLS already active");
        return;
    }
    if (conn_.tls_unavailable) {
        // RFC 3207's reply for a server that cannot do TLS for now
        reply(454, "4.7.0", "TLS not available due to temporary reason");
        return;
    }
    if (!arg.empty()) {
        reply(501, "5.5.4", "Syntax: STARTTLS");
        return;
    }
    injected_ = 0;
    reply(220, "2.0.0", "Ready to start TLS");
    transit_phase(Phase::tls, "STARTTLS");
}

void Session::plaintext_discarded(std::size_t octets)
{
    injected_ += octets;
    if (injected_)
        log(log_session, "discarded " + std::to_string(injected_) +
                             " octets sent after STARTTLS before the TLS handshake (plaintext injection, "
                             "CVE-2011-0411)");
    injected_ = 0;
}

void Session::tls_started(TlsInfo info)
{
    if (state_.phase != Phase::tls)
        return;
    info.active = true;
    conn_.tls = true;
    conn_.tls_info = std::move(info);
    // RFC 3207 4.2: discard all knowledge from the client; it starts over
    // with EHLO. The transaction is empty (STARTTLS is refused inside one).
    helo_.clear();
    auth_user_.clear(); // RFC 3207 4.2: nothing from before TLS is kept
    lines_.reset();
    transit({Phase::command, Hello::none, Tx::none}, "TLS handshake done");
    if (logs(log_session))
        log(log_session, "STARTTLS: " + tls_summary(conn_.tls_info));
}

void Session::tls_failed(std::string_view why)
{
    if (state_.phase != Phase::tls)
        return;
    log(log_session, "TLS handshake failed: " + std::string(why));
    transit_phase(Phase::closed, "TLS handshake failed");
}

void Session::do_simple(Verb verb, std::string_view arg, const VerbRule &rule, const CommandMatch &m)
{
    switch (verb) {
    case Verb::rset:
        if (!arg.empty()) {
            reply(501, "5.5.4", "Syntax: RSET");
            return;
        }
        if (rule.resets_tx)
            reset_transaction("RSET");
        reply(ask(Event::rset, [&] { return handler_->rset(*this); }), default_reply(Event::rset));
        return;
    case Verb::noop:
        reply(ask(Event::noop, [&] { return handler_->noop(*this); }), default_reply(Event::noop));
        return;
    case Verb::vrfy:
        if (arg.empty()) {
            reply(501, "5.5.4", "Syntax: VRFY address");
            return;
        }
        reply(ask(Event::vrfy, [&] { return handler_->vrfy(*this, arg); }), default_reply(Event::vrfy));
        return;
    case Verb::expn:
        if (arg.empty()) {
            reply(501, "5.5.4", "Syntax: EXPN mailing-list");
            return;
        }
        reply(ask(Event::expn, [&] { return handler_->expn(*this, arg); }), default_reply(Event::expn));
        return;
    case Verb::help: {
        Reply r = ask(Event::help, [&] { return handler_->help(*this, arg); });
        if (r.empty())
            r = Reply(214, help_text(cfg_, state_.hello, conn_.tls || conn_.tls_unavailable), "2.0.0");
        reply(r);
        return;
    }
    case Verb::quit: {
        Reply r = ask(Event::quit, [&] { return handler_->quit(*this); });
        r.close = true; // QUIT always gets 221 and a close (RFC 5321 4.1.1.10)
        reply(r, Reply(221, "Bye", "2.0.0", true));
        return;
    }
    case Verb::custom:
        reply(ask(Event::command, [&] { return handler_->command(*this, m.name, m.captures); }),
              default_reply(Event::command));
        return;
    default:
        reply(ask(Event::unknown, [&] { return handler_->unknown(*this, m.argument); }), default_reply(Event::unknown));
        return;
    }
}

bool Session::do_xclient(std::string_view arg)
{
    XClientAttrs a;
    std::string why;
    if (!parse_xclient(arg, a, why)) {
        reply(501, "5.5.4", why);
        return false;
    }
    std::string before = std::string(remote_host()) + "[" + conn_.client_address + "]";
    if (a.addr) {
        conn_.client_address = *a.addr;
        if (!a.name)
            conn_.remote_host.clear(); // the name was the old address's
    }
    if (a.name)
        conn_.remote_host = *a.name;
    if (a.port)
        conn_.client_port = *a.port;
    if (a.destaddr)
        conn_.local_address = *a.destaddr;
    if (a.destport)
        conn_.local_port = *a.destport;
    if (a.login)
        conn_.login = *a.login;
    // Per-client limits count the client the front end named from now on.
    if (std::string limit; a.addr && limiter_ && !limiter_->rekey(conn_.client_address, limit)) {
        log(log_session, "too many connections from " + conn_.client_address + ": " + limit);
        report(RejectCause::limits, "too many connections from one client");
        reply(Reply(421, cfg_.hostname + " Error: too many connections from " + conn_.client_address, "4.7.0", true));
        return false;
    }
    // The front end's SASL login counts as this session's AUTH (Postfix).
    auth_user_ = conn_.login;
    // HELO= stands for the client's HELO/EHLO (PROTO says which); without
    // it the client says HELO/EHLO again after the 220.
    helo_ = a.helo ? *a.helo : std::string();
    Hello hello = helo_.empty() ? Hello::none : (a.esmtp.value_or(false) ? Hello::ehlo : Hello::helo);
    transit({state_.phase, hello, Tx::none}, "XCLIENT");
    if (logs(log_session))
        log(log_session, "XCLIENT from " + before + ": client " + std::string(remote_host()) + "[" +
                             conn_.client_address + "]:" + std::to_string(conn_.client_port) +
                             (helo_.empty() ? "" : " helo=" + helo_) +
                             (conn_.login.empty() ? "" : " login=" + conn_.login));
    return true;
}

void Session::restart(std::string_view why)
{
    // As at the start: the handler judges the new identity (a refusal
    // leaves only QUIT and XCLIENT), then the greeting.
    Reply r = ask(Event::connect, [&] { return handler_->connect(*this); });
    if (handler_threw_)
        r = Reply(421, std::string(cfg_.hostname) + " Service not available, closing transmission channel", "4.3.2",
                  true);
    else if (r.code >= 400)
        transit({state_.phase, Hello::refused, state_.tx}, std::string(why) + ": CONNECT refused");
    reply(r, Reply(220, cfg_.hostname + " ESMTP mod_esmtp"), false);
}

void Session::do_helo(std::string_view arg, const VerbRule &rule, bool extended)
{
    std::string_view domain = arg.substr(0, arg.find_first_of(" \t"));
    if (!valid_helo(domain)) {
        reply(501, "5.5.4", extended ? "Syntax: EHLO hostname" : "Syntax: HELO hostname");
        return;
    }
    if (rule.resets_tx)
        reset_transaction(extended ? "EHLO" : "HELO");
    // The handler sees the new name while it is asked; a refusal restores
    // the previous one.
    std::string previous = std::move(helo_);
    Hello previous_hello = state_.hello;
    helo_.assign(domain);
    transit({state_.phase, extended ? Hello::ehlo : Hello::helo, state_.tx}, extended ? "EHLO" : "HELO");
    std::vector<std::string> ext;
    Reply r;
    if (!extended) {
        r = ask(Event::helo, [&] { return handler_->helo(*this, domain); });
    } else {
        for (const auto &x : kExtensions) {
            if (!(cfg_.extensions & x.bit))
                continue;
            if (x.bit == ext_size)
                ext.push_back("SIZE " + std::to_string(cfg_.limits.max_message_size));
            else
                ext.emplace_back(x.name);
        }
        if (cfg_.starttls != StartTls::off && !conn_.tls && !conn_.tls_unavailable)
            ext.emplace_back("STARTTLS");
        if (xclient_allowed())
            ext.push_back("XCLIENT " + std::string(kXClientAttributes));
        // RFC 4954 4: not before TLS unless ESMTPAuthRequireTLS Off
        if (cfg_.auth_mechanisms && (conn_.tls || !cfg_.auth_require_tls))
            ext.push_back("AUTH " + auth_mechanism_list(cfg_.auth_mechanisms));
        r = ask(Event::ehlo, [&] { return handler_->ehlo(*this, domain, ext); });
    }
    if (!r.empty() && !r.positive()) {
        helo_ = std::move(previous);
        transit({state_.phase, previous_hello, state_.tx}, "HELO/EHLO refused");
        reply(r);
        return;
    }
    if (!extended) {
        reply(r, Reply(250, cfg_.hostname), false);
        return;
    }
    // A handler's text replaces the greeting line only.
    Reply out(250, r.lines.empty() ? cfg_.hostname : r.lines.front());
    for (auto &e : ext)
        out.lines.push_back(std::move(e));
    reply(out, Reply{}, false);
}

// "FROM:<path> params" (MAIL) or "TO:<path> params" (RCPT): false when a
// syntax reply was sent.
bool Session::parse_envelope_arg(std::string_view arg, bool mail, MailArgs &a)
{
    std::string_view prefix = mail ? "FROM:" : "TO:";
    if (!istarts_with(arg, prefix)) {
        reply(501, "5.5.4", mail ? "Syntax: MAIL FROM:<address>" : "Syntax: RCPT TO:<address>");
        return false;
    }
    switch (parse_path_and_params(arg.substr(prefix.size()), mail, !mail, a)) {
    case PathError::ok:
        return true;
    case PathError::syntax:
        if (mail)
            reply(501, "5.1.7", "Bad sender address syntax");
        else
            reply(501, "5.1.3", "Bad recipient address syntax");
        return false;
    case PathError::bad_parameter:
        reply(501, "5.5.4", "Bad parameter syntax");
        return false;
    }
    return false;
}

void Session::do_mail(std::string_view arg)
{
    MailArgs a;
    if (!parse_envelope_arg(arg, true, a))
        return;
    bool smtputf8 = false;
    std::string body_type;
    std::uint64_t declared_size = 0;
    for (const Param &p : a.params) {
        if (p.keyword == "AUTH" && state_.hello == Hello::ehlo && cfg_.auth_mechanisms)
            continue; // RFC 4954 5: accepted, kept in mail_params for the handler
        unsigned ext = extension_by_name(p.keyword == "BODY" ? "8BITMIME" : p.keyword);
        if (state_.hello != Hello::ehlo || !ext || !(cfg_.extensions & ext)) {
            reply(555, "5.5.4", "Unsupported parameter " + p.keyword);
            return;
        }
        if (p.keyword == "SMTPUTF8") {
            if (!p.value.empty()) {
                reply(501, "5.5.4", "Bad SMTPUTF8 parameter");
                return;
            }
            smtputf8 = true;
        } else if (p.keyword == "SIZE") {
            if (!all_digits(p.value)) {
                reply(501, "5.5.4", "Bad SIZE parameter");
                return;
            }
            // more than 19 digits is more than any limit (and than stoull takes)
            if (p.value.size() > 19 || std::stoull(p.value) > cfg_.limits.max_message_size) {
                report(RejectCause::limits, "declared SIZE exceeds the limit");
                reply(552, "5.3.4", "Message size exceeds fixed limit");
                return;
            }
            declared_size = std::stoull(p.value);
        } else if (p.keyword == "BODY") {
            for (char c : p.value)
                body_type.push_back(static_cast<char>(std::toupper(static_cast<unsigned char>(c))));
            if (body_type != "7BIT" && body_type != "8BITMIME") {
                reply(501, "5.5.4", "Bad BODY parameter");
                return;
            }
        } else {
            reply(555, "5.5.4", "Unsupported parameter " + p.keyword);
            return;
        }
    }
    if (!smtputf8 && has_non_ascii(a.path.mailbox)) {
        reply(553, "5.6.7", "Must declare SMTPUTF8 to send UTF-8 address");
        return;
    }
    if (cfg_.sender_login_map && !a.path.is_null() && auth_user_.empty() &&
        (is_address_literal(a.path.domain) || cfg_.sender_login_map->owners(a.path.mailbox))) {
        // Postfix's reject_sender_login_mismatch: an owned address needs its
        // login. An address literal may name this server under any of its
        // spellings, which no map lists: it counts as owned (only a login the
        // map names for that literal may use it).
        log(log_session, "sender <" + a.path.mailbox + "> needs a login");
        reply(553, "5.7.1", "<" + a.path.mailbox + ">: Sender address rejected: not logged in");
        return;
    }
    if ((cfg_.sender_login_match || cfg_.sender_login_map) && !auth_user_.empty() && !a.path.is_null() &&
        !sender_owned(a.path)) {
        log(log_session, "sender <" + a.path.mailbox + "> not owned by user=" + auth_user_);
        reply(553, "5.7.1", "<" + a.path.mailbox + ">: Sender address rejected: not owned by user " + auth_user_);
        return;
    }
    // Postfix's smtpd_client_message_rate_limit: counted at MAIL, refused
    // without closing.
    if (limiter_ && !limiter_->allow_message()) {
        log(log_session, "too much mail from " + conn_.client_address + ": " + limiter_->message_limit());
        report(RejectCause::limits, "client message rate");
        reply(450, "4.7.1", "Error: too much mail from " + conn_.client_address);
        return;
    }
    // The handler sees the envelope and queue id of the transaction it is asked about.
    env_.sender = std::move(a.path);
    env_.mail_params = std::move(a.params);
    env_.recipients.clear();
    env_.smtputf8 = smtputf8;
    env_.body_type = std::move(body_type);
    env_.declared_size = declared_size;
    queue_id_ = make_queue_id();
    overshoot_ = 0;
    transit_tx(Tx::mail, "MAIL");
    Reply r = ask(Event::mail, [&] { return handler_->mail(*this, env_.sender, env_.mail_params); });
    if (!r.empty() && !r.positive()) {
        // the transaction never began: no abort()
        env_ = Envelope{};
        queue_id_.clear();
        transit_tx(Tx::none, "MAIL refused");
    } else if (logs(log_commands)) {
        log(log_commands, "from=<" + env_.sender.mailbox + ">");
    }
    reply(r, default_reply(Event::mail));
}

void Session::do_rcpt(std::string_view arg)
{
    MailArgs a;
    if (!parse_envelope_arg(arg, false, a))
        return;
    if (!a.params.empty()) {
        reply(555, "5.5.4", "Unsupported parameter " + a.params.front().keyword);
        return;
    }
    if (!env_.smtputf8 && has_non_ascii(a.path.mailbox)) {
        reply(553, "5.6.7", "Must declare SMTPUTF8 to send UTF-8 address");
        return;
    }
    // No open relay: only our own domains, before the handler is asked.
    // Authenticated clients relay (submission).
    if (auth_user_.empty() && !recipient_domain_accepted(cfg_, conn_.local_address, a.path)) {
        log(log_session, "relay denied to=<" + a.path.mailbox + ">");
        report(RejectCause::relay, "relay denied from " + conn_.client_address);
        reply(550, "5.7.1", "Relay access denied");
        return;
    }
    if (env_.recipients.size() >= cfg_.limits.max_recipients) {
        // Overshoot is how clients learn the limit: not a client error
        // until it is far beyond it (Postfix's overshoot limit).
        count_error_ = ++overshoot_ > cfg_.limits.max_recipient_overshoot;
        report(RejectCause::limits, "too many recipients");
        reply(452, "4.5.3", "Error: too many recipients");
        return;
    }
    // smtpd_client_recipient_rate_limit
    if (limiter_ && !limiter_->allow_recipient()) {
        log(log_session, "too many recipients from " + conn_.client_address + ": " + limiter_->recipient_limit());
        report(RejectCause::limits, "client recipient rate");
        reply(450, "4.7.1", "Error: too many recipients from " + conn_.client_address);
        return;
    }
    Reply r = ask(Event::rcpt, [&] { return handler_->rcpt(*this, a.path, a.params); });
    if (r.empty() || r.positive()) {
        env_.recipients.push_back(Recipient{std::move(a.path), std::move(a.params)});
        transit_tx(Tx::rcpt, "RCPT");
    }
    reply(r, default_reply(Event::rcpt));
}

void Session::do_data(std::string_view arg)
{
    if (!arg.empty()) {
        reply(501, "5.5.4", "Syntax: DATA");
        return;
    }
    trace_ = esmtp::trace_headers(*this, std::time(nullptr));
    Reply r = ask(Event::data, [&] { return handler_->data(*this); });
    if (!r.empty() && r.code != 354) {
        data_refused(r);
        reply(r);
        return;
    }
    handler_failed_ = false;
    content_aborted_ = false;
    transfer_octets_ = 0;
    data_.reset();
    transit({Phase::data, state_.hello, Tx::data}, "DATA");
    reply(r, default_reply(Event::data), false);
}

bool Session::content_wanted()
{
    if (content_aborted_)
        return false;
    if (handler_failed_ || content_fault()) {
        // Stop storing now (bounded storage); the client is answered after
        // the end of data.
        content_aborted_ = true;
        guarded_void("ABORT", [&] { handler_->abort(*this); });
        return false;
    }
    return true;
}

void Session::on_header(const HeaderField &field)
{
    if (!content_wanted())
        return;
    if (logs(log_events))
        log(log_events, std::string("event HEADER ").append(field.name));
    guarded_void("HEADER", [&] { handler_->header(*this, field); });
}

void Session::on_eoh(std::string_view raw)
{
    if (!content_wanted())
        return;
    log(log_events, "event EOH");
    guarded_void("EOH", [&] { handler_->eoh(*this, raw); });
}

void Session::on_body(std::string_view chunk)
{
    if (!content_wanted())
        return;
    if (logs(log_events))
        log(log_events, "event BODY " + std::to_string(chunk.size()) + " octets");
    guarded_void("BODY", [&] { handler_->body(*this, chunk); });
}

void Session::finish_data()
{
    transit_phase(Phase::command, "end of data");
    complete_message();
}

void Session::do_bdat(std::string_view arg, const VerbRule &rule)
{
    std::uint64_t size = 0;
    bool last = false;
    if (!parse_bdat(arg, size, last)) {
        // Without a size the chunk's end is unknown: its octets would be
        // read as commands. Close, as Postfix does.
        log(log_session, "unparsable BDAT command");
        reply(Reply(521, "Error: BDAT command syntax; closing", "5.5.4", true));
        return;
    }
    bdat_chunk_ = bdat_remaining_ = size;
    bdat_last_ = last;
    transfer_octets_ = 0;
    // The chunk's octets follow the command whatever we answer: a refused
    // BDAT still swallows them, or they would be read as commands.
    Reply refusal;
    if (Canned c = check(rule); c.code) {
        refusal = Reply(c.code, std::string(c.text), std::string(c.enhanced));
    } else if (state_.tx != Tx::bdat) {
        trace_ = esmtp::trace_headers(*this, std::time(nullptr));
        Reply r = ask(Event::data, [&] { return handler_->data(*this); });
        if (!r.empty() && r.code != 354) {
            data_refused(r);
            refusal = r;
        } else {
            handler_failed_ = false;
            content_aborted_ = false;
            data_.reset();
            transit_tx(Tx::bdat, "first BDAT");
        }
    }
    bdat_refusal_ = std::move(refusal);
    transit_phase(Phase::bdat, "BDAT chunk");
    if (bdat_remaining_ == 0)
        finish_chunk();
}

void Session::finish_chunk()
{
    transit_phase(Phase::command, "end of chunk");
    if (!bdat_refusal_.empty()) {
        Reply r = std::move(bdat_refusal_);
        bdat_refusal_ = Reply{};
        reply(r);
        return;
    }
    content_wanted(); // aborts the handler's copy if a limit was crossed
    if (content_aborted_) {
        // RFC 3030 lets the server fail the transaction at any chunk.
        auto fault = content_fault();
        Reply r = fault ? fault->reply : internal_error_reply();
        log(log_session, "rejected during BDAT: " + std::to_string(r.code) + " " + r.lines.front());
        if (obs_) {
            content_refused();
            obs_->message(r.code, static_cast<unsigned>(env_.recipients.size()), data_.size());
        }
        reset_transaction("BDAT refused");
        reply(r);
        return;
    }
    if (!bdat_last_) {
        reply(250, "2.0.0", std::to_string(bdat_chunk_) + " octets received");
        return;
    }
    data_.finish_raw(*this);
    complete_message();
}

// What the message broke, in the order the client is told: the reply and
// the cause for the counters. The one list of content failures.
std::optional<Session::ContentFault> Session::content_fault() const
{
    if (data_.size_exceeded())
        return ContentFault{Reply(552, "Message size exceeds fixed limit", "5.3.4"), RejectCause::limits,
                            "message size exceeds the limit"};
    if (data_.bare_newline() && !cfg_.normalize_bare_newlines)
        return ContentFault{Reply(550, "Message contains bare <CR> or <LF>; use <CR><LF> line endings", "5.5.2"),
                            RejectCause::bare_newline, "bare <LF> or <CR> in message"};
    if (data_.line_too_long())
        return ContentFault{Reply(500, "Message line too long", "5.5.2"), RejectCause::limits, "message line too long"};
    return std::nullopt;
}

// The handler could not take the message (a full disk, a backend down): a
// 4xx at DATA or at its end is the operator's business ("Recent errors").
void Session::delivery_failed(std::string_view when, const Reply &r)
{
    report(RejectCause::delivery,
           std::string(when) + ": " + std::to_string(r.code) + " " + (r.lines.empty() ? "" : r.lines.front()));
}

// The handler refused DATA: the transaction's message is refused.
void Session::data_refused(const Reply &r)
{
    if (!obs_ || r.code < 400)
        return;
    if (r.code < 500)
        delivery_failed("DATA", r);
    obs_->message(r.code, static_cast<unsigned>(env_.recipients.size()), 0);
}

// A message refused for what it contained: the cause for the counters.
void Session::content_refused()
{
    if (auto fault = content_fault())
        report(fault->cause, fault->what);
}

void Session::complete_message()
{
    content_wanted(); // aborts if a limit was crossed in the last chunk
    Reply r;
    if (auto fault = content_fault()) {
        r = fault->reply;
    } else if (content_aborted_) {
        r = internal_error_reply();
    } else {
        r = ask(Event::eom, [&] { return handler_->eom(*this); });
        if (r.empty())
            r = Reply(250, "Ok: queued as " + queue_id_, "2.0.0");
        if (r.code >= 400 && r.code < 500)
            delivery_failed("end of data", r);
        if (!r.positive()) {
            // The abort() rule: a transaction that mail() accepted ends in
            // a 2xx from eom() or in one abort(); after a refused or failed
            // eom() the handler may have stored part of it.
            content_aborted_ = true;
            guarded_void("ABORT", [&] { handler_->abort(*this); });
        }
    }
    if (r.positive()) {
        ++accepted_;
        junk_ = 0; // a client that delivers is no junk client (Postfix)
    }
    if (obs_) {
        if (!r.positive())
            content_refused();
        obs_->message(r.code, static_cast<unsigned>(env_.recipients.size()), data_.size());
    }
    if (logs(log_session)) {
        std::string summary = "from=<" + env_.sender.mailbox + "> to=";
        for (std::size_t i = 0; i < env_.recipients.size(); ++i) {
            if (i)
                summary += ',';
            summary += '<' + env_.recipients[i].path.mailbox + '>';
        }
        summary += " size=" + std::to_string(data_.size());
        if (conn_.tls)
            summary += " tls=" + conn_.tls_info.protocol + " cipher=" + conn_.tls_info.cipher;
        if (!auth_user_.empty())
            summary += " user=" + auth_user_;
        std::string first = r.lines.empty() ? std::string() : r.lines.front();
        log(log_session,
            (r.positive() ? "accepted " : "rejected ") + summary + ": " + std::to_string(r.code) + " " + first);
    }
    // The transaction is over either way (RFC 5321 4.1.1.4).
    end_transaction("end of message");
    reply(r);
}

void Session::reset_transaction(std::string_view why)
{
    if (state_.tx == Tx::none)
        return;
    if (!content_aborted_)
        guarded_void("ABORT", [&] { handler_->abort(*this); });
    end_transaction(why);
}

void Session::end_transaction(std::string_view why)
{
    content_aborted_ = false;
    env_ = Envelope{};
    queue_id_.clear();
    trace_.clear();
    data_.reset();
    transit_tx(Tx::none, why);
}

void Session::end()
{
    if (ended_)
        return;
    ended_ = true;
    if (state_.phase == Phase::data || state_.phase == Phase::bdat)
        log(log_session, "lost connection during DATA after " + std::to_string(data_.size()) + " octets");
    reset_transaction("connection ends");
    transit_phase(Phase::closed, "connection ends");
    guarded_void("DISCONNECT", [&] { handler_->disconnect(*this); });
    if (logs(log_session))
        log(log_session, "disconnect from " + std::string(remote_host()) + "[" + conn_.client_address +
                             "] commands=" + std::to_string(commands_) + " accepted=" + std::to_string(accepted_));
}

// ---- AUTH (RFC 4954)

void Session::do_auth(std::string_view arg)
{
    if (state_.hello != Hello::ehlo) {
        reply(503, "5.5.1", "Error: send EHLO first");
        return;
    }
    if (!auth_user_.empty()) {
        reply(503, "5.5.1", "Error: already authenticated");
        return;
    }
    if (cfg_.auth_require_tls && !conn_.tls) {
        reply(538, "5.7.11", "Encryption required for requested authentication mechanism");
        return;
    }
    std::size_t sp = arg.find_first_of(" \t");
    std::string_view mech = arg.substr(0, sp);
    std::string_view initial = sp == std::string_view::npos ? std::string_view() : arg.substr(sp + 1);
    while (!initial.empty() && (initial.front() == ' ' || initial.front() == '\t'))
        initial.remove_prefix(1);
    if (mech.empty() || initial.find_first_of(" \t") != std::string_view::npos) {
        reply(501, "5.5.4", "Syntax: AUTH mechanism [initial-response]");
        return;
    }
    unsigned m = auth_mechanism_by_name(mech);
    if (!(m & cfg_.auth_mechanisms)) {
        reply(504, "5.5.4", "Unsupported authentication mechanism");
        return;
    }
    // Postfix's smtpd_client_auth_rate_limit: counted once the command is
    // valid, refused without closing.
    if (limiter_ && !limiter_->allow_auth()) {
        log(log_session, "too many AUTH commands from " + conn_.client_address + ": " + limiter_->auth_limit());
        report(RejectCause::limits, "client AUTH rate");
        reply(450, "4.7.1", "Error: too many AUTH commands from " + conn_.client_address);
        return;
    }
    sasl_mech_ = static_cast<AuthMechanism>(m);
    sasl_.wipe();
    sasl_.user.clear();
    sasl_.authzid.clear();
    sasl_have_user_ = false;
    transit_phase(Phase::sasl, "AUTH");
    if (!initial.empty())
        sasl_response(initial);
    else
        sasl_challenge(sasl_mech_ == mech_plain ? "" : "VXNlcm5hbWU6"); // "Username:"
}

void Session::sasl_challenge(std::string_view base64)
{
    // "334 " SP [base64]: the space even with an empty challenge (RFC 4954 4)
    std::size_t before = out_.size();
    out_.append("334 ").append(base64).append("\r\n");
    replied(before, 334, false);
}

void Session::sasl_end(int code, std::string_view enh, std::string_view text)
{
    sasl_.wipe();
    sasl_cut_short_ = true;
    transit_phase(Phase::command, "AUTH ended");
    reply(code, enh, text);
}

void Session::sasl_response(std::string_view line)
{
    if (line == "*") {
        sasl_end(501, "5.7.0", "Authentication aborted");
        return;
    }
    std::string decoded;
    // "=" is an empty initial response (RFC 4954 4)
    if (line != "=" && !base64_decode(line, decoded)) {
        wipe_secret(decoded);
        sasl_end(501, "5.5.2", "Cannot decode response");
        return;
    }
    sasl_step(decoded);
    wipe_secret(decoded);
}

void Session::sasl_step(std::string_view decoded)
{
    SaslError e = SaslError::ok;
    if (sasl_mech_ == mech_plain) {
        e = parse_plain(decoded, sasl_);
    } else if (!sasl_have_user_) {
        sasl_.user.assign(decoded);
        if (!valid_auth_user(sasl_.user)) {
            e = SaslError::bad_user;
        } else {
            sasl_have_user_ = true;
            sasl_challenge("UGFzc3dvcmQ6"); // "Password:"
            return;
        }
    } else {
        sasl_.password.assign(decoded);
        e = check_login(sasl_);
    }
    switch (e) {
    case SaslError::ok:
        verify();
        return;
    case SaslError::malformed:
        sasl_end(501, "5.5.2",
                 sasl_mech_ == mech_plain ? "Invalid PLAIN response: [authzid] NUL user NUL password"
                                          : "Invalid LOGIN response: empty or with NUL");
        return;
    case SaslError::bad_user:
        sasl_end(501, "5.5.2", "Invalid user name: UTF-8 without control characters, at most 255 octets");
        return;
    case SaslError::too_long:
        sasl_end(501, "5.5.2", "Password too long");
        return;
    case SaslError::authzid:
        if (std::find(cfg_.auth_proxy_users.begin(), cfg_.auth_proxy_users.end(), sasl_.user) !=
                cfg_.auth_proxy_users.end() &&
            valid_auth_user(sasl_.authzid)) {
            verify(); // the proxy's own password; granted, it acts as authzid
            return;
        }
        sasl_.wipe();
        transit_phase(Phase::command, "AUTH ended");
        log(log_session, "AUTH PLAIN user=" + sasl_.user + ": authorization identity refused");
        auth_failed();
        return;
    }
}

void Session::verify()
{
    transit_phase(Phase::auth, "AUTH credentials");
    std::optional<AuthVerdict> v;
    if (!authenticator_) {
        v = AuthVerdict::unavailable;
    } else {
        try {
            v = authenticator_->check(AuthRequest{sasl_mech_, sasl_.user, sasl_.password});
        } catch (...) {
            log(log_session, "AUTH: the password check failed");
            v = AuthVerdict::unavailable;
        }
    }
    sasl_.wipe(); // the Authenticator copied what a later answer needs
    if (v)
        auth_done(*v);
}

void Session::auth_failed()
{
    ++auth_failures_;
    if (cfg_.max_auth_failures && auth_failures_ >= cfg_.max_auth_failures) {
        log(log_session, "too many authentication failures (" + std::to_string(auth_failures_) + ")");
        report(RejectCause::limits, "too many authentication failures");
        reply(Reply(421, cfg_.hostname + " Error: too many authentication failures", "4.7.0", true));
        return;
    }
    reply(535, "5.7.8", "Error: authentication failed");
}

void Session::auth_done(AuthVerdict v)
{
    if (state_.phase != Phase::auth)
        return;
    transit_phase(Phase::command, "AUTH checked");
    std::string what = std::string("AUTH ") + auth_mechanism_name(sasl_mech_) + " user=" + sasl_.user;
    switch (v) {
    case AuthVerdict::granted:
        if (!sasl_.authzid.empty() && sasl_.authzid != sasl_.user) {
            auth_user_ = sasl_.authzid; // ESMTPAuthProxyUsers
            log(log_session, what + ": authenticated, acting as " + auth_user_);
        } else {
            auth_user_ = sasl_.user;
            log(log_session, what + ": authenticated");
        }
        reply(235, "2.7.0", "Authentication successful");
        break;
    case AuthVerdict::denied:
        log(log_session, what + ": authentication failed");
        auth_failed();
        break;
    case AuthVerdict::unavailable:
        log(log_session, what + ": authentication backend unavailable");
        reply(454, "4.7.0", "Temporary authentication failure");
        break;
    }
    sasl_.wipe();
    sasl_.user.clear();
    sasl_.authzid.clear();
    // an answer that came later: what the client sent meanwhile, now
    if (!feeding_ && !held_.empty() && state_.phase != Phase::closed) {
        std::string in = std::move(held_);
        held_.clear();
        refeeding_ = true;
        feed(in);
        refeeding_ = false;
    }
}

void Session::hold(std::string_view in)
{
    if (in.empty())
        return;
    if (held_.size() + in.size() > kMaxHeldInput) {
        held_.clear();
        protocol_violation("improper command pipelining after AUTH");
        return;
    }
    held_.append(in);
}

bool Session::sender_owned(const Path &from) const
{
    if (cfg_.sender_login_map)
        return cfg_.sender_login_map->owns(auth_user_, from.mailbox);
    // The login itself, or an address in the login's domain; a login
    // without a domain owns the addresses with that local part.
    // Compared in canonical form: "bob"@x is bob@x.
    std::string canon = canonical_mailbox(from.mailbox);
    std::string_view mailbox = canon;
    std::size_t fat = mailbox.rfind('@');
    std::string_view local = mailbox.substr(0, fat), domain = mailbox.substr(fat + 1);
    std::string_view login = auth_user_;
    std::size_t at = login.rfind('@');
    if (at == std::string_view::npos)
        return iequals(local, login);
    return iequals(mailbox, login) || iequals(domain, login.substr(at + 1));
}

} // namespace esmtp
