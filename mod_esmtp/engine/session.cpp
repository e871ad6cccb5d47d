// The session: its state and transit(), replies, the input framing (feed)
// and the dispatch of command lines through the verb table. The verbs'
// own code is in session_<family>.cpp, one file per family of verbs.cpp.
#include "engine/session.hpp"
#include "engine/dsn.hpp"
#include "engine/session_internal.hpp"

#include "engine/reply_format.hpp"

#include <algorithm>

namespace esmtp
{

namespace
{

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

} // namespace

Session::Session(const SessionConfig &cfg, ConnectionInfo conn, std::unique_ptr<Handler> handler, TxLogSink *log)
    : cfg_(cfg), conn_(std::move(conn)), handler_(std::move(handler)), log_(log),
      lines_(cfg_.limits.max_command_line +
             (carried() & (carries_dsn | carries_requiretls) ? kDsnCommandLineExtra : 0)),
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

void Session::abort_handler()
{
    log(log_events, "event ABORT");
    guarded_void("ABORT", [&] { handler_->abort(*this); });
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
    // A screened-out client never reaches the handler's CONNECT.
    Reply r;
    if (screen_) {
        Screen::Verdict v = screen_->connect();
        if (screened(v))
            r = v.reply;
    }
    if (r.empty())
        r = ask(Event::connect, [&] { return handler_->connect(*this); });
    if (handler_threw_) // no session without a working handler
        r = Reply(421, std::string(cfg_.hostname) + " Service not available, closing transmission channel", "4.3.2",
                  true);
    else if (r.code >= 400) {
        // A greeting is 220, 554 or 421 (RFC 5321 4.3.2 and 3.8): another
        // 4xx (a milter's tempfail, a handler's 451) becomes a 421 that
        // closes, another 5xx a 554 (the session goes on, refusing).
        if (r.transient() && r.code != 421) {
            r.code = 421;
            r.enhanced.clear();
            r.close = true;
        } else if (r.permanent() && r.code != 554) {
            r.code = 554;
            r.enhanced.clear();
        }
        if (!r.close)
            transit({state_.phase, Hello::refused, state_.tx}, "CONNECT refused");
    }
    reply(r, Reply(220, cfg_.hostname + " ESMTP mod_esmtp"), false);
}

// A refusal from the screen: logged and counted; false when it lets the
// client go on.
bool Session::screened(const Screen::Verdict &v)
{
    if (v.reply.empty())
        return false;
    log(log_session, v.log);
    if (v.cause != RejectCause::count_)
        report(v.cause, v.log);
    return true;
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
        bool sasl = state_.phase == Phase::sasl || state_.phase == Phase::sasl_password;
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

// Postfix's smtpd_client_*_rate_limit: "450 4.7.1 Error: too much mail from
// ADDR", and the session goes on.
void Session::rate_refused(std::string_view too_many, std::string_view limit, const char *cause)
{
    log(log_session, std::string(too_many) + " from " + conn_.client_address + ": " + std::string(limit));
    report(RejectCause::limits, cause);
    reply(450, "4.7.1", "Error: " + std::string(too_many) + " from " + conn_.client_address);
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
        if (bool new_address = false; do_xclient(m.argument, new_address) && rule.restarts)
            restart("XCLIENT", new_address);
        break;
    case Verb::auth:
        do_auth(m.argument);
        break;
    default:
        do_simple(m.verb, m.argument, rule, m);
        break;
    }
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

} // namespace esmtp
