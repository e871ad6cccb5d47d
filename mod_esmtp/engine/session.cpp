#include "engine/session.hpp"

#include "engine/address.hpp"
#include "engine/queue_id.hpp"
#include "engine/reply_format.hpp"
#include "engine/trace.hpp"

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

char lower(char c)
{
    return static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
}

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

bool domain_matches(std::string_view pattern, std::string_view domain)
{
    // Iterative wildcard match with backtracking to the last '*'.
    std::size_t p = 0, d = 0, star = std::string_view::npos, mark = 0;
    while (d < domain.size()) {
        if (p < pattern.size() && (pattern[p] == '?' || lower(pattern[p]) == lower(domain[d]))) {
            ++p;
            ++d;
        } else if (p < pattern.size() && pattern[p] == '*') {
            star = p++;
            mark = d;
        } else if (star != std::string_view::npos) {
            p = star + 1;
            d = ++mark;
        } else {
            return false;
        }
    }
    while (p < pattern.size() && pattern[p] == '*')
        ++p;
    return p == pattern.size();
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

void Session::log(int level, std::string_view text)
{
    if (log_ && level <= cfg_.log_level)
        log_->write(level, format_txlog(std::time(nullptr), queue_id_, text, conn_.client_address));
}

void Session::error(std::string_view text)
{
    if (log_)
        log_->error(text);
    log(txlog_session, std::string("error: ").append(text));
}

bool Session::add_command(std::string_view pattern, CommandCallback callback, std::string *error)
{
    return commands_table_.add(pattern, std::move(callback), error);
}

template <class F> Reply Session::guarded(const char *event, F &&f)
{
    if (logs(txlog_events))
        log(txlog_events, std::string("event ") + event);
    try {
        return f();
    } catch (const std::exception &e) {
        log(txlog_session, std::string("handler failed in ") + event + ": " + e.what());
    } catch (...) {
        log(txlog_session, std::string("handler failed in ") + event);
    }
    return Reply(451, "Internal error; try again later", "4.3.0");
}

template <class F> void Session::guarded_void(const char *event, F &&f)
{
    try {
        f();
    } catch (const std::exception &e) {
        handler_failed_ = true;
        log(txlog_session, std::string("handler failed in ") + event + ": " + e.what());
    } catch (...) {
        handler_failed_ = true;
        log(txlog_session, std::string("handler failed in ") + event);
    }
}

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
    if (logs(txlog_commands)) {
        std::string_view first(out_.data() + before, out_.size() - before);
        first = first.substr(0, first.find('\r'));
        log(txlog_commands, std::string("> ").append(first));
    }
    if (close) {
        phase_ = Phase::closed;
        return;
    }
    // ESMTPMaxErrors: a client that keeps failing is most likely not a
    // mail client (Postfix's smtpd_hard_error_limit).
    if (code >= 400 && cfg_.limits.max_errors && ++errors_ >= cfg_.limits.max_errors) {
        log(txlog_session, "too many errors (" + std::to_string(errors_) + ")");
        reply(Reply(421, cfg_.hostname + " Error: too many errors", "4.7.0", true));
    }
}

bool Session::use_enhanced() const
{
    // RFC 2034 codes once the client said EHLO (and before HELO/EHLO, like
    // Postfix); a HELO session gets plain RFC 5321 replies.
    return (cfg_.extensions & ext_enhancedstatuscodes) && (esmtp_ || helo_.empty());
}

void Session::start()
{
    if (phase_ != Phase::greeting)
        return;
    phase_ = Phase::command;
    if (logs(txlog_session))
        log(txlog_session, std::string("connect from ").append(remote_host()).append("[").append(conn_.client_address) +
                               "]:" + std::to_string(conn_.client_port));
    Reply r = guarded("CONNECT", [&] { return handler_->connect(*this); });
    if (r.code == 451 && r.enhanced == "4.3.0") // the handler threw: no session
        r = Reply(421, std::string(cfg_.hostname) + " Service not available, closing transmission channel", "4.3.2",
                  true);
    if (r.code >= 400)
        refused_ = true;
    reply(r, Reply(220, cfg_.hostname + " ESMTP mod_esmtp"), false);
}

void Session::shutdown(const Reply &r)
{
    if (phase_ == Phase::closed)
        return;
    Reply c = r;
    c.close = true;
    reply(c);
}

bool Session::pipelining_allowed() const
{
    return !cfg_.forbid_unauth_pipelining || (esmtp_ && (cfg_.extensions & ext_pipelining));
}

void Session::protocol_violation(std::string_view what)
{
    log(txlog_session, std::string(what));
    reply(Reply(554, "Error: SMTP protocol synchronization", "5.5.0", true));
}

void Session::feed(std::string_view in)
{
    if (phase_ == Phase::greeting)
        start();
    if (commands_ == 0 && !lines_.has_partial() && !in.empty() && in.front() == '\x16' && phase_ == Phase::command) {
        // a TLS ClientHello: this port speaks plaintext SMTP first
        log(txlog_session, "TLS handshake on a plaintext SMTP port");
        phase_ = Phase::closed;
        return;
    }
    while (!in.empty() && phase_ != Phase::closed) {
        if (phase_ == Phase::data) {
            in.remove_prefix(data_.feed(in, *this));
            if (data_.done()) {
                finish_data();
                if (!in.empty() && !pipelining_allowed())
                    protocol_violation("improper command pipelining after DATA");
            }
            continue;
        }
        if (phase_ == Phase::bdat) {
            std::size_t take = static_cast<std::size_t>(std::min<std::uint64_t>(bdat_remaining_, in.size()));
            if (!bdat_discard_)
                data_.feed_raw(in.substr(0, take), *this);
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
        if (st == LineReader::Status::too_long) {
            ++commands_;
            log(txlog_commands, "< (line too long)");
            reply(500, "5.5.2", "Line too long");
            continue;
        }
        std::string_view line = lines_.line();
        if (lines_.bare_newline() && (!cfg_.normalize_bare_newlines || line.find('\r') != std::string_view::npos)) {
            ++commands_;
            log(txlog_commands, "< (bare LF or CR in command)");
            reply(550, "5.5.2", "Error: bare <LF> or <CR> in command; use <CR><LF>");
        } else {
            command(line);
        }
        // RFC 2920: without PIPELINING a client waits for each reply.
        if (!in.empty() && phase_ != Phase::closed && phase_ != Phase::bdat && !pipelining_allowed())
            protocol_violation("improper command pipelining");
    }
}

bool Session::junk_command()
{
    if (!cfg_.limits.max_junk_commands || ++junk_ <= cfg_.limits.max_junk_commands)
        return false;
    log(txlog_session, "too many junk commands");
    reply(Reply(421, cfg_.hostname + " Error: too many commands", "4.7.0", true));
    return true;
}

void Session::command(std::string_view line)
{
    ++commands_;
    if (logs(txlog_commands))
        log(txlog_commands, std::string("< ").append(line));
    if (line.find('\0') != std::string_view::npos) {
        reply(500, "5.5.2", "Error: NUL character in command");
        return;
    }
    // An HTTP client on the SMTP port (or a cross-protocol attack through
    // one): answer and hang up, as Postfix does.
    for (std::string_view method : {"GET ", "POST ", "HEAD ", "PUT ", "CONNECT ", "OPTIONS "}) {
        if (line.substr(0, method.size()) == method) {
            log(txlog_session, "HTTP request on the SMTP port");
            reply(Reply(521, "Error: this is an SMTP server, not HTTP; closing", "5.7.0", true));
            return;
        }
    }
    CommandMatch m = commands_table_.match(line);
    if (refused_ && m.verb != Verb::quit) {
        reply(503, "5.5.1", "Error: access denied");
        return;
    }
    std::string_view arg = m.argument;
    switch (m.verb) {
    case Verb::helo:
        do_helo(arg, false);
        break;
    case Verb::ehlo:
        do_helo(arg, true);
        break;
    case Verb::mail:
        do_mail(arg);
        break;
    case Verb::rcpt:
        do_rcpt(arg);
        break;
    case Verb::data:
        do_data(arg);
        break;
    case Verb::bdat:
        do_bdat(arg);
        break;
    case Verb::rset:
        if (junk_command())
            break;
        if (!arg.empty()) {
            reply(501, "5.5.4", "Syntax: RSET");
            break;
        }
        reset_transaction(true);
        reply(guarded("RSET", [&] { return handler_->rset(*this); }), Canned{250, "2.0.0", "Ok"});
        break;
    case Verb::noop:
        if (junk_command())
            break;
        reply(guarded("NOOP", [&] { return handler_->noop(*this); }), Canned{250, "2.0.0", "Ok"});
        break;
    case Verb::vrfy:
        if (junk_command())
            break;
        if (arg.empty()) {
            reply(501, "5.5.4", "Syntax: VRFY address");
            break;
        }
        reply(guarded("VRFY", [&] { return handler_->vrfy(*this, arg); }),
              Canned{252, "2.0.0", "Cannot VRFY user; try RCPT to attempt delivery"});
        break;
    case Verb::expn:
        if (junk_command())
            break;
        if (arg.empty()) {
            reply(501, "5.5.4", "Syntax: EXPN mailing-list");
            break;
        }
        reply(guarded("EXPN", [&] { return handler_->expn(*this, arg); }), Canned{502, "5.5.1", "EXPN not available"});
        break;
    case Verb::help:
        if (junk_command())
            break;
        reply(guarded("HELP", [&] { return handler_->help(*this, arg); }),
              Canned{214, "2.0.0", "Commands: HELO EHLO MAIL RCPT DATA RSET NOOP QUIT HELP VRFY"});
        break;
    case Verb::quit: {
        Reply r = guarded("QUIT", [&] { return handler_->quit(*this); });
        if (!r.empty() && r.code != 221)
            r = Reply{}; // QUIT always gets 221 and a close (RFC 5321 4.1.1.10)
        r.close = true;
        Reply dflt(221, "Bye", "2.0.0", true);
        reply(r, dflt);
        break;
    }
    case Verb::custom: {
        Reply r = guarded("COMMAND", [&] { return (*m.callback)(*this, m.captures); });
        reply(r, Canned{250, "2.0.0", "Ok"});
        break;
    }
    case Verb::unknown:
        reply(guarded("UNKNOWN", [&] { return handler_->unknown(*this, line); }),
              Canned{500, "5.5.2", "Command unrecognized"});
        break;
    }
}

void Session::do_helo(std::string_view arg, bool extended)
{
    std::string_view domain = arg.substr(0, arg.find_first_of(" \t"));
    if (!valid_helo(domain)) {
        reply(501, "5.5.4", extended ? "Syntax: EHLO hostname" : "Syntax: HELO hostname");
        return;
    }
    reset_transaction(true);
    std::string previous = std::move(helo_);
    bool previous_esmtp = esmtp_;
    helo_.assign(domain);
    esmtp_ = extended;
    if (!extended) {
        Reply r = guarded("HELO", [&] { return handler_->helo(*this, domain); });
        if (!r.empty() && !r.positive()) {
            helo_ = std::move(previous);
            esmtp_ = previous_esmtp;
        }
        reply(r, Reply(250, cfg_.hostname), r.code >= 400);
        return;
    }
    std::vector<std::string> ext;
    for (const auto &x : kExtensions) {
        if (!(cfg_.extensions & x.bit))
            continue;
        if (x.bit == ext_size)
            ext.push_back("SIZE " + std::to_string(cfg_.limits.max_message_size));
        else
            ext.emplace_back(x.name);
    }
    Reply r = guarded("EHLO", [&] { return handler_->ehlo(*this, domain, ext); });
    if (!r.empty() && !r.positive()) {
        helo_ = std::move(previous);
        esmtp_ = previous_esmtp;
        reply(r);
        return;
    }
    Reply out(250, r.lines.empty() ? cfg_.hostname : r.lines.front());
    for (auto &e : ext)
        out.lines.push_back(std::move(e));
    reply(out, Reply{}, false);
}

void Session::do_mail(std::string_view arg)
{
    if (helo_.empty()) {
        reply(503, "5.5.1", "Error: send HELO/EHLO first");
        return;
    }
    if (in_transaction_) {
        reply(503, "5.5.1", "Error: nested MAIL command");
        return;
    }
    if (!istarts_with(arg, "FROM:")) {
        reply(501, "5.5.4", "Syntax: MAIL FROM:<address>");
        return;
    }
    MailArgs a;
    switch (parse_path_and_params(arg.substr(5), true, false, a)) {
    case PathError::ok:
        break;
    case PathError::syntax:
        reply(501, "5.1.7", "Bad sender address syntax");
        return;
    case PathError::bad_parameter:
        reply(501, "5.5.4", "Bad parameter syntax");
        return;
    }
    bool smtputf8 = false;
    std::string body_type;
    std::uint64_t declared_size = 0;
    for (const Param &p : a.params) {
        unsigned ext = extension_by_name(p.keyword == "BODY" ? "8BITMIME" : p.keyword);
        if (!esmtp_ || !ext || !(cfg_.extensions & ext)) {
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
    // The handler sees the envelope and queue id of the transaction it is asked about.
    env_.sender = std::move(a.path);
    env_.mail_params = std::move(a.params);
    env_.recipients.clear();
    env_.smtputf8 = smtputf8;
    env_.body_type = std::move(body_type);
    env_.declared_size = declared_size;
    queue_id_ = make_queue_id();
    in_transaction_ = true;
    Reply r = guarded("MAIL", [&] { return handler_->mail(*this, env_.sender, env_.mail_params); });
    if (!r.empty() && !r.positive()) {
        in_transaction_ = false;
        env_ = Envelope{};
        queue_id_.clear();
    } else {
        if (logs(txlog_commands))
            log(txlog_commands, "from=<" + env_.sender.mailbox + ">");
    }
    reply(r, Canned{250, "2.1.0", "Ok"});
}

void Session::do_rcpt(std::string_view arg)
{
    if (!in_transaction_) {
        reply(503, "5.5.1", "Error: need MAIL command");
        return;
    }
    if (bdat_active_) {
        // the message is already being transferred (RFC 3030)
        reply(503, "5.5.1", "Error: RCPT after BDAT");
        return;
    }
    if (!istarts_with(arg, "TO:")) {
        reply(501, "5.5.4", "Syntax: RCPT TO:<address>");
        return;
    }
    MailArgs a;
    switch (parse_path_and_params(arg.substr(3), false, true, a)) {
    case PathError::ok:
        break;
    case PathError::syntax:
        reply(501, "5.1.3", "Bad recipient address syntax");
        return;
    case PathError::bad_parameter:
        reply(501, "5.5.4", "Bad parameter syntax");
        return;
    }
    if (!a.params.empty()) {
        reply(555, "5.5.4", "Unsupported parameter " + a.params.front().keyword);
        return;
    }
    if (!env_.smtputf8 && has_non_ascii(a.path.mailbox)) {
        reply(553, "5.6.7", "Must declare SMTPUTF8 to send UTF-8 address");
        return;
    }
    // No open relay: only our own domains, before the handler is asked.
    if (!recipient_domain_accepted(a.path)) {
        log(txlog_session, "relay denied to=<" + a.path.mailbox + ">");
        reply(550, "5.7.1", "Relay access denied");
        return;
    }
    if (env_.recipients.size() >= cfg_.limits.max_recipients) {
        reply(452, "4.5.3", "Error: too many recipients");
        return;
    }
    Reply r = guarded("RCPT", [&] { return handler_->rcpt(*this, a.path, a.params); });
    if (r.empty() || r.positive())
        env_.recipients.push_back(Recipient{std::move(a.path), std::move(a.params)});
    reply(r, Canned{250, "2.1.5", "Ok"});
}

void Session::do_data(std::string_view arg)
{
    if (!arg.empty()) {
        reply(501, "5.5.4", "Syntax: DATA");
        return;
    }
    if (!in_transaction_) {
        reply(503, "5.5.1", "Error: need MAIL command");
        return;
    }
    if (env_.recipients.empty()) {
        reply(503, "5.5.1", "Error: need RCPT command");
        return;
    }
    if (bdat_active_) {
        reply(503, "5.5.1", "Error: DATA after BDAT");
        return;
    }
    trace_ = esmtp::trace_headers(*this, std::time(nullptr));
    Reply r = guarded("DATA", [&] { return handler_->data(*this); });
    if (!r.empty() && r.code != 354) {
        reply(r);
        return;
    }
    handler_failed_ = false;
    content_aborted_ = false;
    data_.reset();
    phase_ = Phase::data;
    reply(r, Canned{354, "", "End data with <CR><LF>.<CR><LF>"}, false);
}

bool Session::content_wanted()
{
    if (content_aborted_)
        return false;
    if (data_.size_exceeded() || data_.line_too_long() || handler_failed_ ||
        (data_.bare_newline() && !cfg_.normalize_bare_newlines)) {
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
    if (logs(txlog_events))
        log(txlog_events, std::string("event HEADER ").append(field.name));
    guarded_void("HEADER", [&] { handler_->header(*this, field); });
}

void Session::on_eoh(std::string_view raw)
{
    if (!content_wanted())
        return;
    log(txlog_events, "event EOH");
    guarded_void("EOH", [&] { handler_->eoh(*this, raw); });
}

void Session::on_body(std::string_view chunk)
{
    if (!content_wanted())
        return;
    if (logs(txlog_events))
        log(txlog_events, "event BODY " + std::to_string(chunk.size()) + " octets");
    guarded_void("BODY", [&] { handler_->body(*this, chunk); });
}

void Session::finish_data()
{
    phase_ = Phase::command;
    complete_message();
}

bool Session::recipient_domain_accepted(const Path &p) const
{
    if (p.domain.empty()) // <postmaster>, RFC 5321 4.5.1
        return true;
    std::string_view d = p.domain;
    if (d.front() == '[') {
        std::string_view lit = d.substr(1, d.size() - 2);
        if (istarts_with(lit, "IPV6:"))
            lit.remove_prefix(5);
        return domain_matches(conn_.local_address, lit);
    }
    for (const std::string &pattern : cfg_.accept_domains)
        if (domain_matches(pattern, d))
            return true;
    return false;
}

void Session::do_bdat(std::string_view arg)
{
    // BDAT SP chunk-size [ SP end-marker ] (RFC 3030)
    std::string_view size = arg.substr(0, arg.find(' '));
    std::string_view rest = size.size() < arg.size() ? arg.substr(size.size()) : std::string_view{};
    while (!rest.empty() && rest.front() == ' ')
        rest.remove_prefix(1);
    bool last = false;
    if (!rest.empty()) {
        if (rest.size() != 4 || !istarts_with(rest, "LAST")) {
            reply(501, "5.5.4", "Syntax: BDAT chunk-size [LAST]");
            return;
        }
        last = true;
    }
    if (!all_digits(size) || size.size() > 18) {
        reply(501, "5.5.4", "Syntax: BDAT chunk-size [LAST]");
        return;
    }
    bdat_chunk_ = bdat_remaining_ = std::stoull(std::string(size));
    bdat_last_ = last;
    bdat_discard_ = false;
    // The chunk's octets follow the command whatever we answer: a refused
    // BDAT still swallows them, or they would be read as commands.
    Reply refusal;
    if (!esmtp_ || !(cfg_.extensions & ext_chunking))
        refusal = Reply(502, "Error: command not implemented", "5.5.1");
    else if (!in_transaction_)
        refusal = Reply(503, "Error: need MAIL command", "5.5.1");
    else if (env_.recipients.empty())
        refusal = Reply(503, "Error: need RCPT command", "5.5.1");
    else if (!bdat_active_) {
        trace_ = esmtp::trace_headers(*this, std::time(nullptr));
        Reply r = guarded("DATA", [&] { return handler_->data(*this); });
        if (!r.empty() && r.code != 354) {
            refusal = r;
        } else {
            bdat_active_ = true;
            handler_failed_ = false;
            content_aborted_ = false;
            data_.reset();
        }
    }
    if (!refusal.empty()) {
        bdat_discard_ = true;
        bdat_error_ = std::move(refusal);
    }
    phase_ = Phase::bdat;
    if (bdat_remaining_ == 0)
        finish_chunk();
}

void Session::finish_chunk()
{
    phase_ = Phase::command;
    if (bdat_discard_) {
        bdat_discard_ = false;
        reply(bdat_error_);
        return;
    }
    content_wanted(); // aborts the handler's copy if a limit was crossed
    if (data_.size_exceeded() || content_aborted_) {
        // RFC 3030 lets the server fail the transaction at any chunk.
        Reply r = data_.size_exceeded() ? Reply(552, "Message size exceeds fixed limit", "5.3.4")
                                        : Reply(451, "Internal error; try again later", "4.3.0");
        log(txlog_session, "rejected during BDAT: " + std::to_string(r.code) + " " + r.lines.front());
        reset_transaction(true);
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

void Session::complete_message()
{
    content_wanted(); // aborts if a limit was crossed in the last chunk
    Reply r;
    if (data_.size_exceeded()) {
        r = Reply(552, "Message size exceeds fixed limit", "5.3.4");
    } else if (data_.bare_newline() && !cfg_.normalize_bare_newlines) {
        r = Reply(550, "Message contains bare <CR> or <LF>; use <CR><LF> line endings", "5.5.2");
    } else if (data_.line_too_long()) {
        r = Reply(500, "Message line too long", "5.5.2");
    } else if (content_aborted_) {
        r = Reply(451, "Internal error; try again later", "4.3.0");
    } else {
        r = guarded("EOM", [&] { return handler_->eom(*this); });
        if (r.empty())
            r = Reply(250, "Ok: queued as " + queue_id_, "2.0.0");
        if (!r.positive() || handler_failed_) {
            // the handler may have stored part of it: let it clean up
            guarded_void("ABORT", [&] { handler_->abort(*this); });
            if (r.positive())
                r = Reply(451, "Internal error; try again later", "4.3.0");
        }
    }
    if (r.positive())
        ++accepted_;
    if (logs(txlog_session)) {
        std::string summary = "from=<" + env_.sender.mailbox + "> to=";
        for (std::size_t i = 0; i < env_.recipients.size(); ++i) {
            if (i)
                summary += ',';
            summary += '<' + env_.recipients[i].path.mailbox + '>';
        }
        summary += " size=" + std::to_string(data_.size());
        std::string first = r.lines.empty() ? std::string() : r.lines.front();
        log(txlog_session,
            (r.positive() ? "accepted " : "rejected ") + summary + ": " + std::to_string(r.code) + " " + first);
    }
    // The transaction is over either way (RFC 5321 4.1.1.4).
    in_transaction_ = false;
    content_aborted_ = false;
    bdat_active_ = false;
    env_ = Envelope{};
    queue_id_.clear();
    trace_.clear();
    data_.reset();
    reply(r);
}

void Session::reset_transaction(bool notify_handler)
{
    if (!in_transaction_)
        return;
    if (notify_handler && !content_aborted_)
        guarded_void("ABORT", [&] { handler_->abort(*this); });
    in_transaction_ = false;
    content_aborted_ = false;
    bdat_active_ = false;
    env_ = Envelope{};
    queue_id_.clear();
    trace_.clear();
    data_.reset();
}

void Session::end()
{
    if (ended_)
        return;
    ended_ = true;
    if (phase_ == Phase::data || phase_ == Phase::bdat)
        log(txlog_session, "lost connection during DATA after " + std::to_string(data_.size()) + " octets");
    reset_transaction(true);
    phase_ = Phase::closed;
    guarded_void("DISCONNECT", [&] { handler_->disconnect(*this); });
    if (logs(txlog_session))
        log(txlog_session, "disconnect from " + std::string(remote_host()) + "[" + conn_.client_address +
                               "] commands=" + std::to_string(commands_) + " accepted=" + std::to_string(accepted_));
}

} // namespace esmtp
