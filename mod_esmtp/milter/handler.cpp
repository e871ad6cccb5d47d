#include "milter/handler.hpp"

#include "engine/address.hpp"
#include "engine/forwarding_view.hpp"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <strings.h>
#include <unistd.h>

namespace esmtp::milter
{

namespace
{

// How the milter stages map onto the protocol: the command octet, the step
// bit a filter sets to skip it and the one to leave it unanswered.
struct StageInfo {
    const char *name;
    char command;
    std::uint32_t skip;
    std::uint32_t no_reply;
    bool in_tx; // part of a transaction: an ACCEPT ends the filter's part in the message
};
constexpr StageInfo kConnect{"CONNECT", cmd::connect, p_noconnect, p_nr_conn, false};
constexpr StageInfo kHelo{"HELO", cmd::helo, p_nohelo, p_nr_helo, false};
constexpr StageInfo kMail{"MAIL", cmd::mail, p_nomail, p_nr_mail, true};
constexpr StageInfo kRcpt{"RCPT", cmd::rcpt, p_norcpt, p_nr_rcpt, true};
constexpr StageInfo kData{"DATA", cmd::data, p_nodata, p_nr_data, true};
constexpr StageInfo kHeader{"HEADER", cmd::header, p_nohdrs, p_nr_hdr, true};
constexpr StageInfo kEoh{"EOH", cmd::eoh, p_noeoh, p_nr_eoh, true};
constexpr StageInfo kBody{"BODY", cmd::body, p_nobody, p_nr_body, true};
constexpr StageInfo kEob{"EOB", cmd::eob, 0, 0, true};
constexpr StageInfo kUnknown{"UNKNOWN", cmd::unknown, p_nounknown, p_nr_unkn, false};

// The action bit a modification needs.
std::uint32_t needed_action(Response::Kind k)
{
    using K = Response::Kind;
    switch (k) {
    case K::add_header:
    case K::insert_header:
        return act_addhdrs;
    case K::change_header:
        return act_chghdrs;
    case K::replace_body:
        return act_chgbody;
    case K::add_rcpt:
        return act_addrcpt;
    case K::add_rcpt_par:
        return act_addrcpt_par;
    case K::del_rcpt:
        return act_delrcpt;
    case K::change_from:
        return act_chgfrom;
    case K::quarantine:
        return act_quarantine;
    default:
        return 0;
    }
}

std::string hex(std::uint32_t v)
{
    char buf[16];
    std::snprintf(buf, sizeof buf, "0x%x", v);
    return buf;
}

// LF not preceded by CR becomes CRLF (filters fold with "\n\t").
std::string to_crlf(std::string_view v)
{
    std::string o;
    o.reserve(v.size() + 8);
    for (std::size_t i = 0; i < v.size(); ++i) {
        if (v[i] == '\n' && (i == 0 || v[i - 1] != '\r'))
            o.push_back('\r');
        o.push_back(v[i]);
    }
    return o;
}

// A header value as the filter gets it: folded lines joined by LF, as
// Postfix and sendmail send them (their queue files have LF line ends).
std::string to_lf(std::string_view v)
{
    std::string o;
    o.reserve(v.size());
    for (std::size_t i = 0; i < v.size(); ++i)
        if (!(v[i] == '\r' && i + 1 < v.size() && v[i + 1] == '\n'))
            o.push_back(v[i]);
    return o;
}

// The unfolded value (for HeaderField::value): line breaks before folding
// whitespace removed, leading whitespace removed.
std::string unfold(std::string_view v)
{
    std::string o;
    for (std::size_t i = 0; i < v.size(); ++i) {
        if (v[i] == '\r' || v[i] == '\n')
            continue;
        o.push_back(v[i]);
    }
    std::size_t b = o.find_first_not_of(" \t");
    return b == std::string::npos ? std::string() : o.substr(b);
}

// "<a@b>" or "a@b" and ESMTP args into a Recipient / sender Path; false
// when it is not an address.
bool parse_filter_path(std::string_view addr, std::string_view args, bool null_ok, Path &path, Params &params)
{
    std::string line;
    if (!addr.starts_with('<'))
        line.append("<").append(addr).append(">");
    else
        line.append(addr);
    if (!args.empty())
        line.append(" ").append(args);
    MailArgs a;
    if (parse_path_and_params(line, null_ok, true, a) != PathError::ok)
        return false;
    path = std::move(a.path);
    params = std::move(a.params);
    return true;
}

// A session view that shows the wrapped handler the message as the
// milters left it.
class View final : public ForwardingView
{
  public:
    const Envelope *env = nullptr; // modified envelope, or null
    std::uint64_t size = 0;        // modified size, or 0
    bool size_set = false;
    std::string quarantine;
    std::string trace; // set when the sender changed

    const Envelope &envelope() const override { return env ? *env : s->envelope(); }
    // After a change of sender the Return-Path names the new one.
    std::string_view trace_headers() const override { return trace.empty() ? s->trace_headers() : trace; }
    std::uint64_t message_size() const override { return size_set ? size : s->message_size(); }
    std::string_view quarantine_reason() const override { return quarantine; }
};

struct Peer {
    explicit Peer(const Spec &spec) : client(spec) {}
    Client client;
    bool dead = false;     // failed once: its default action from now on
    bool off_conn = false; // ACCEPT for the connection (or closed on purpose)
    bool off_tx = false;   // ACCEPT (or DISCARD) for the message
    bool in_tx = false;    // the filter saw MAIL and no end of message yet
    const std::string &name() const { return client.spec().name; }
};

class MilterHandler final : public Handler
{
  public:
    MilterHandler(std::unique_ptr<Handler> inner, std::shared_ptr<const Config> cfg)
        : inner_(std::move(inner)), cfg_(std::move(cfg))
    {
        for (const Spec &s : cfg_->milters)
            peers_.push_back(std::make_unique<Peer>(s));
    }

    Reply connect(SessionView &s) override
    {
        view_.s = &s;
        Reply r = inner_->connect(view_);
        if (!r.empty() && !r.positive())
            return r;
        for (auto &p : peers_) {
            if (!p->client.open()) {
                Reply d = failed(s, *p, kConnect);
                if (!d.empty())
                    return d;
                continue;
            }
            s.log(log_events, "milter " + p->name() + ": negotiated actions " + hex(p->client.actions()) + " steps " +
                                  hex(p->client.steps()));
        }
        char family = s.client_address().find(':') != std::string_view::npos ? '6' : '4';
        Macros m{{"j", std::string(s.hostname())},
                 {"_", std::string(s.remote_host()) + " [" + std::string(s.client_address()) + "]"},
                 {"{daemon_name}", "mod_esmtp"},
                 {"{daemon_addr}", std::string(s.local_address())},
                 {"{daemon_port}", std::to_string(s.local_port())},
                 {"v", "mod_esmtp"},
                 {"{client_addr}", std::string(s.client_address())},
                 {"{client_port}", std::to_string(s.client_port())},
                 {"{client_name}", std::string(s.remote_host())},
                 {"{client_ptr}", std::string(s.remote_host())}};
        std::string pk;
        encode_connect(pk, s.remote_host(), family, static_cast<std::uint16_t>(s.client_port()), s.client_address());
        Reply mr = stage(s, kConnect, m, pk);
        return mr.empty() ? r : mr;
    }

    Reply helo(SessionView &s, std::string_view domain) override
    {
        view_.s = &s;
        Reply r = inner_->helo(view_, domain);
        return r.empty() || r.positive() ? or_else(helo_stage(s, domain), r) : r;
    }
    Reply ehlo(SessionView &s, std::string_view domain, std::vector<std::string> &ext) override
    {
        view_.s = &s;
        Reply r = inner_->ehlo(view_, domain, ext);
        return r.empty() || r.positive() ? or_else(helo_stage(s, domain), r) : r;
    }

    Reply mail(SessionView &s, const Path &from, const Params &params) override
    {
        view_.s = &s;
        new_message();
        Reply r = inner_->mail(view_, from, params);
        if (!r.empty() && !r.positive())
            return r;
        for (auto &p : peers_)
            if (!p->dead && p->client.is_open())
                p->in_tx = true, p->off_tx = false;
        Macros m{{"i", std::string(s.queue_id())},
                 {"{mail_mailer}", "smtp"},
                 {"{mail_host}", from.domain},
                 {"{mail_addr}", from.mailbox}};
        // Postfix sends the SASL login with MAIL: opendkim and rspamd sign
        // (or trust) mail of authenticated senders by it
        if (!s.auth_user().empty())
            m.emplace_back("{auth_authen}", std::string(s.auth_user()));
        std::string pk;
        encode_mail(pk, from.mailbox, param_strings(params));
        Reply mr = stage(s, kMail, m, pk);
        if (!mr.empty() && !mr.positive()) {
            // the wrapped handler accepted the transaction the session now
            // refuses: the abort() rule
            inner_->abort(view_);
            end_tx(true); // the filters that took MAIL hear of its end
        }
        return mr.empty() ? r : mr;
    }

    Reply rcpt(SessionView &s, const Path &to, const Params &params) override
    {
        view_.s = &s;
        Reply r = inner_->rcpt(view_, to, params);
        if (!r.empty() && !r.positive())
            return r;
        Macros m{{"{rcpt_mailer}", "smtp"}, {"{rcpt_host}", to.domain}, {"{rcpt_addr}", to.mailbox}};
        std::string pk;
        encode_rcpt(pk, to.mailbox, param_strings(params));
        return or_else(stage(s, kRcpt, m, pk), r);
    }

    // The wrapped handler's data() waits for the end of the message: it
    // then sees the envelope as the milters left it (a handler such as
    // maildir picks its directories and writes Return-Path there).
    Reply data(SessionView &s) override
    {
        view_.s = &s;
        std::string pk;
        encode_simple(pk, cmd::data);
        Reply mr = stage(s, kData, {{"i", std::string(s.queue_id())}}, pk);
        if (!mr.empty() && !mr.positive())
            return mr;
        open_spool(s);
        return {};
    }

    void header(SessionView &, const HeaderField &f) override
    {
        // after "name:", without the final CRLF
        std::string_view v = f.raw.substr(f.name.size() + 1);
        if (v.ends_with("\r\n"))
            v.remove_suffix(2);
        headers_.push_back(Field{std::string(f.name), std::string(v), std::string(f.raw)});
    }
    void eoh(SessionView &, std::string_view raw) override { eoh_raw_.assign(raw); }
    void body(SessionView &s, std::string_view chunk) override
    {
        if (spool_failed_)
            return;
        if (!body_ || !write_all(body_.get(), chunk)) {
            spool_failed_ = true;
            if (body_) // (a spool that could not be created was logged then)
                s.error(std::string("milter: cannot write the spool file: ") + std::strerror(errno));
            return;
        }
        body_size_ += chunk.size();
    }

    Reply eom(SessionView &s) override
    {
        view_.s = &s;
        if (spool_failed_)
            return Reply(451, "Local error in processing; try again later", "4.3.0");
        std::vector<std::vector<Response>> mods(peers_.size());
        Reply verdict;
        for (std::size_t i = 0; i < peers_.size() && verdict.empty(); ++i)
            verdict = message_to(s, *peers_[i], mods[i]);
        // (a filter left before its end of body, after a refusal, gets
        // ABORT from the abort() the session then calls)
        if (!verdict.empty() && !verdict.positive())
            return verdict; // the session calls abort(): the wrapped handler's too
        if (discard_) {
            s.log(log_session, "milter: message discarded by " + discarded_by_);
            inner_->abort(view_); // nothing is delivered; the client hears 250
            end_tx(false);
            return Reply(250, "Ok: queued as " + std::string(s.queue_id()), "2.0.0");
        }
        for (std::size_t i = 0; i < peers_.size(); ++i) {
            if (mods[i].empty())
                continue;
            std::string why;
            if (!apply(s, *peers_[i], mods[i], why)) {
                Reply d = failed(s, *peers_[i], kEob, why);
                if (!d.empty())
                    return d;
            }
        }
        Reply r = deliver(s);
        end_tx(false);
        return r;
    }

    void abort(SessionView &s) override
    {
        view_.s = &s;
        end_tx(true);
        inner_->abort(view_);
    }

    Reply rset(SessionView &s) override { return inner_->rset(*(view_.s = &s, &view_)); }
    Reply noop(SessionView &s) override { return inner_->noop(*(view_.s = &s, &view_)); }
    Reply vrfy(SessionView &s, std::string_view a) override { return inner_->vrfy(*(view_.s = &s, &view_), a); }
    Reply expn(SessionView &s, std::string_view a) override { return inner_->expn(*(view_.s = &s, &view_), a); }
    Reply help(SessionView &s, std::string_view a) override { return inner_->help(*(view_.s = &s, &view_), a); }
    Reply command(SessionView &s, std::string_view n, const std::vector<std::string> &c) override
    {
        return inner_->command(*(view_.s = &s, &view_), n, c);
    }
    Reply unknown(SessionView &s, std::string_view line) override
    {
        view_.s = &s;
        Reply r = inner_->unknown(view_, line);
        std::string pk;
        encode_unknown(pk, line);
        Reply mr = stage(s, kUnknown, {}, pk);
        return !mr.empty() && !mr.positive() ? mr : r;
    }
    Reply quit(SessionView &s) override
    {
        view_.s = &s;
        quit_all();
        return inner_->quit(view_);
    }
    void disconnect(SessionView &s) override
    {
        view_.s = &s;
        quit_all();
        inner_->disconnect(view_);
    }

  private:
    struct Field {
        std::string name;
        std::string value; // after the colon, leading space and folding kept, no final CRLF
        std::string raw;   // as received; empty once a filter changed the field
    };

    static std::vector<std::string> param_strings(const Params &ps)
    {
        std::vector<std::string> v;
        for (const auto &p : ps)
            v.push_back(p.value.empty() ? p.keyword : p.keyword + "=" + p.value);
        return v;
    }

    static Reply or_else(Reply milter_reply, Reply r) { return milter_reply.empty() ? r : milter_reply; }

    Reply helo_stage(SessionView &s, std::string_view domain)
    {
        std::string pk;
        encode_helo(pk, domain);
        Macros m;
        // after STARTTLS too: the session starts over with a new HELO/EHLO
        if (const TlsInfo &tls = s.tls(); tls.active)
            m = {{"{tls_version}", tls.protocol}, {"{cipher}", tls.cipher}};
        return stage(s, kHelo, m, pk);
    }

    // The reply for a filter's verdict at a stage; empty to go on.
    Reply verdict_reply(SessionView &s, Peer &p, const StageInfo &st, const Response &r)
    {
        using K = Response::Kind;
        s.log(r.kind == K::continue_ ? log_events : log_session,
              "milter " + p.name() + ": " + st.name + ": " + kind_name(r.kind) +
                  (r.kind == K::replycode
                       ? " " + std::to_string(r.reply.code) + " " + (r.reply.lines.empty() ? "" : r.reply.lines.front())
                       : std::string()));
        switch (r.kind) {
        case K::continue_:
        case K::skip:
            return {};
        case K::accept:
            (st.in_tx ? p.off_tx : p.off_conn) = true;
            return {};
        case K::discard:
            if (st.in_tx) {
                discard_ = true;
                discarded_by_ = p.name();
                p.off_tx = true;
            }
            return {};
        case K::reject:
            return st.command == cmd::connect ? Reply(554, "Access denied", "5.7.1")
                                              : Reply(550, "Command rejected", "5.7.1");
        case K::tempfail:
        case K::connfail:
            return Reply(451, "Service unavailable - try again later", "4.7.1");
        case K::replycode:
            return r.reply;
        case K::shutdown:
            p.off_conn = true;
            p.client.close();
            return Reply(421, std::string(s.hostname()) + " Service not available - closing connection", "4.7.0", true);
        default:
            return failed(s, p, st, std::string("unexpected ") + kind_name(r.kind));
        }
    }

    // The filter failed (down, slow, garbage): it is closed, logged with its
    // name, and its default action answers from now on.
    Reply failed(SessionView &s, Peer &p, const StageInfo &st, std::string why = {})
    {
        if (!p.dead) {
            p.dead = true;
            s.error("milter " + p.name() + ": " + st.name + ": " + (why.empty() ? p.client.error() : why) +
                    "; default_action " + action_name(p.client.spec().default_action));
            p.client.close();
        }
        return dead_reply(p, st);
    }

    static Reply dead_reply(const Peer &p, const StageInfo &st)
    {
        switch (p.client.spec().default_action) {
        case DefaultAction::accept:
            return {};
        case DefaultAction::reject:
            return st.command == cmd::connect ? Reply(554, "Access denied", "5.7.1")
                                              : Reply(550, "Command rejected", "5.7.1");
        case DefaultAction::tempfail:
            break;
        }
        return Reply(451, "Service unavailable - try again later", "4.7.1");
    }

    bool skips(const Peer &p, const StageInfo &st) const
    {
        return p.off_conn || (st.in_tx && p.off_tx) || (p.client.steps() & st.skip);
    }

    // One command to every filter in order; the first refusal decides.
    Reply stage(SessionView &s, const StageInfo &st, const Macros &m, const std::string &packet)
    {
        for (auto &pp : peers_) {
            Peer &p = *pp;
            if (p.dead) {
                if (Reply d = dead_reply(p, st); !d.empty())
                    return d;
                continue;
            }
            if (skips(p, st))
                continue;
            s.log(log_events, "milter " + p.name() + ": " + st.name);
            std::string out;
            if (!m.empty())
                encode_macros(out, st.command, m);
            out += packet;
            const Spec &sp = p.client.spec();
            if (p.client.steps() & st.no_reply) {
                if (!p.client.send(out, sp.command_timeout))
                    if (Reply d = failed(s, p, st); !d.empty())
                        return d;
                continue;
            }
            Response r;
            if (!p.client.exchange(out, sp.command_timeout, r)) {
                if (Reply d = failed(s, p, st); !d.empty())
                    return d;
                continue;
            }
            if (Reply v = verdict_reply(s, p, st, r); !v.empty())
                return v;
        }
        return {};
    }

    // Send one packet of the content; false when the filter is done with the
    // message (verdict set when it refused).
    bool content_packet(SessionView &s, Peer &p, const StageInfo &st, const std::string &out, Reply &verdict,
                        bool &skip)
    {
        const Spec &sp = p.client.spec();
        if (p.client.steps() & st.no_reply) {
            if (!p.client.send(out, sp.content_timeout)) {
                verdict = failed(s, p, st);
                return false;
            }
            return true;
        }
        Response r;
        if (!p.client.exchange(out, sp.content_timeout, r)) {
            verdict = failed(s, p, st);
            return false;
        }
        if (r.kind == Response::Kind::skip && st.command == cmd::body) {
            skip = true;
            return true;
        }
        verdict = verdict_reply(s, p, st, r);
        return verdict.empty() && !p.off_tx && !p.dead && !p.off_conn;
    }

    // Header, EOH, body and end of body to one filter.
    Reply message_to(SessionView &s, Peer &p, std::vector<Response> &mods)
    {
        if (p.dead)
            return dead_reply(p, kEob);
        if (p.off_conn || p.off_tx || !p.client.is_open())
            return {};
        Reply verdict;
        bool skip = false;
        bool leadspc = p.client.steps() & p_hdr_leadspc;
        Macros mi{{"i", std::string(s.queue_id())}};
        if (!(p.client.steps() & p_nohdrs)) {
            for (const Field &f : headers_) {
                std::string_view v = f.value;
                if (!leadspc)
                    while (!v.empty() && (v.front() == ' ' || v.front() == '\t'))
                        v.remove_prefix(1);
                std::string out;
                encode_header(out, f.name, to_lf(v));
                s.log(log_events, "milter " + p.name() + ": HEADER " + f.name);
                if (!content_packet(s, p, kHeader, out, verdict, skip))
                    return verdict;
            }
        }
        if (!(p.client.steps() & p_noeoh)) {
            std::string out;
            encode_macros(out, cmd::eoh, mi);
            encode_simple(out, cmd::eoh);
            s.log(log_events, "milter " + p.name() + ": EOH");
            if (!content_packet(s, p, kEoh, out, verdict, skip))
                return verdict;
        }
        if (!(p.client.steps() & p_nobody) && body_) {
            std::string buf(kMaxBodyChunk, '\0');
            off_t off = 0;
            while (!skip) {
                ssize_t n = ::pread(body_.get(), buf.data(), buf.size(), off);
                if (n < 0 && errno == EINTR)
                    continue;
                if (n < 0) {
                    s.error(std::string("milter: cannot read the spool file: ") + std::strerror(errno));
                    return Reply(451, "Local error in processing; try again later", "4.3.0");
                }
                if (n == 0)
                    break;
                off += n;
                std::string out;
                encode_body(out, std::string_view(buf.data(), static_cast<std::size_t>(n)));
                s.log(log_events, "milter " + p.name() + ": BODY " + std::to_string(n) + " octets");
                if (!content_packet(s, p, kBody, out, verdict, skip))
                    return verdict;
            }
        }
        std::string out;
        encode_macros(out, cmd::eob, mi);
        encode_simple(out, cmd::eob);
        s.log(log_events, "milter " + p.name() + ": EOB");
        Response r;
        p.in_tx = false; // its transaction ends here, whatever comes back
        if (!p.client.exchange(out, p.client.spec().content_timeout, r, &mods)) {
            mods.clear();
            return failed(s, p, kEob);
        }
        s.log(log_session, "milter " + p.name() + ": verdict " + kind_name(r.kind) + ", " +
                               std::to_string(mods.size()) + " modification(s)");
        Reply v = verdict_reply(s, p, kEob, r);
        if (!v.empty() || discard_)
            mods.clear();
        return v;
    }

    // What one filter may add to a message: a header field (name and value)
    // of at most Postfix's header_size_limit, and so many fields. Past
    // either, none of its changes is applied and it counts as failed.
    static constexpr std::size_t kMaxFilterField = 102400;
    static constexpr std::size_t kMaxFilterFields = 1000;

    static bool within_bounds(const std::vector<Response> &mods, std::string &why)
    {
        using K = Response::Kind;
        std::size_t fields = 0;
        for (const Response &m : mods) {
            if (m.kind != K::add_header && m.kind != K::insert_header && m.kind != K::change_header)
                continue;
            if (m.name.size() + m.value.size() > kMaxFilterField) {
                why = "header " + m.name.substr(0, 64) + " of " + std::to_string(m.name.size() + m.value.size()) +
                      " octets (at most " + std::to_string(kMaxFilterField) + ")";
                return false;
            }
            if (m.kind != K::change_header && ++fields > kMaxFilterFields) {
                why = "more than " + std::to_string(kMaxFilterFields) + " header fields added";
                return false;
            }
        }
        return true;
    }

    // Apply one filter's modifications; false (with why) on one it did not
    // negotiate or that cannot be applied.
    bool apply(SessionView &s, Peer &p, const std::vector<Response> &mods, std::string &why)
    {
        using K = Response::Kind;
        if (!within_bounds(mods, why))
            return false;
        bool leadspc = p.client.steps() & p_hdr_leadspc;
        auto value_of = [&](const std::string &v) { return leadspc ? v : " " + v; };
        bool body_replaced = false;
        for (const Response &m : mods) {
            if (!(p.client.actions() & needed_action(m.kind))) {
                why = std::string(kind_name(m.kind)) + " without negotiating it";
                return false;
            }
            s.log(log_events, "milter " + p.name() + ": " + kind_name(m.kind) + " " + m.name);
            switch (m.kind) {
            case K::add_header:
                headers_.push_back(Field{m.name, value_of(m.value), {}});
                break;
            case K::insert_header: {
                std::size_t at = std::min<std::size_t>(m.index, headers_.size());
                headers_.insert(headers_.begin() + static_cast<std::ptrdiff_t>(at),
                                Field{m.name, value_of(m.value), {}});
                break;
            }
            case K::change_header: {
                std::uint32_t seen = 0;
                auto it = headers_.begin();
                for (; it != headers_.end(); ++it)
                    if (strcasecmp(it->name.c_str(), m.name.c_str()) == 0 && ++seen == m.index)
                        break;
                if (it == headers_.end()) {
                    if (!m.value.empty()) // libmilter: past the last one adds a field
                        headers_.push_back(Field{m.name, value_of(m.value), {}});
                } else if (m.value.empty()) {
                    headers_.erase(it);
                } else {
                    it->value = value_of(m.value);
                    it->raw.clear();
                }
                break;
            }
            case K::replace_body:
                if (!body_replaced) {
                    // this filter's body packets, in order, are the new body
                    body_replaced = true;
                    Fd nb = make_spool(s);
                    if (!nb) {
                        why = "cannot create a spool file for the replaced body";
                        return false;
                    }
                    body_ = std::move(nb);
                    body_size_ = 0;
                    body_cr_ = false;
                }
                if (!append_body(m.value)) {
                    why = "cannot write the replaced body";
                    return false;
                }
                break;
            case K::add_rcpt:
            case K::add_rcpt_par: {
                Recipient rc;
                if (!parse_filter_path(m.name, m.value, false, rc.path, rc.params)) {
                    why = "bad recipient <" + m.name + ">";
                    return false;
                }
                env().recipients.push_back(std::move(rc));
                break;
            }
            case K::del_rcpt: {
                std::string_view a = m.name;
                if (a.starts_with('<') && a.ends_with('>'))
                    a = a.substr(1, a.size() - 2);
                auto &rs = env().recipients;
                std::erase_if(rs, [&](const Recipient &r) {
                    return r.path.mailbox.size() == a.size() &&
                           strncasecmp(r.path.mailbox.data(), a.data(), a.size()) == 0;
                });
                break;
            }
            case K::change_from: {
                Path from;
                Params ps;
                if (!parse_filter_path(m.name, m.value, true, from, ps)) {
                    why = "bad sender <" + m.name + ">";
                    return false;
                }
                env().sender = std::move(from);
                env().mail_params = std::move(ps);
                if (std::string_view t = s.trace_headers(); t.starts_with("Return-Path:")) {
                    std::size_t eol = t.find("\r\n");
                    view_.trace = "Return-Path: <" + env().sender.mailbox + ">" +
                                  std::string(eol == std::string_view::npos ? std::string_view() : t.substr(eol));
                }
                break;
            }
            case K::quarantine:
                view_.quarantine = m.value.empty() ? "quarantined by milter " + p.name() : m.value;
                s.log(log_session, "milter " + p.name() + ": quarantine: " + view_.quarantine);
                break;
            default:
                break;
            }
        }
        if (body_replaced && body_cr_) {
            // a CR left at the end of the replaced body stands alone
            if (!write_all(body_.get(), "\n"))
                return false;
            ++body_size_;
        }
        return true;
    }

    // The replaced body with every line end made CRLF (filters may send LF).
    bool append_body(std::string_view d)
    {
        std::string o;
        o.reserve(d.size() + d.size() / 32 + 2);
        for (char c : d) {
            if (body_cr_) {
                body_cr_ = false;
                o.push_back('\n'); // CRLF, or a lone CR made one
                if (c == '\n')
                    continue;
            }
            if (c == '\r') {
                o.push_back('\r');
                body_cr_ = true;
            } else if (c == '\n') {
                o.append("\r\n");
            } else {
                o.push_back(c);
            }
        }
        if (body_size_ + o.size() > max_size_)
            return false;
        body_size_ += o.size();
        return write_all(body_.get(), o);
    }

    Envelope &env()
    {
        if (!env_) {
            env_ = std::make_unique<Envelope>(view_.s->envelope());
            view_.env = env_.get();
        }
        return *env_;
    }

    // The (modified) message to the wrapped handler, then its eom().
    Reply deliver(SessionView &s)
    {
        if (!view_.quarantine.empty())
            headers_.insert(headers_.begin(), Field{"X-Quarantine", " " + view_.quarantine, {}});
        if (env_ && env_->recipients.empty()) {
            s.log(log_session, "milter: every recipient was removed; message discarded");
            inner_->abort(view_);
            return Reply(250, "Ok: queued as " + std::string(s.queue_id()), "2.0.0");
        }
        if (Reply r = inner_->data(view_); !r.empty() && r.code != 354)
            return r.positive() ? Reply(451, "Internal error; try again later", "4.3.0") : r;
        std::uint64_t size = 0;
        for (const Field &f : headers_) {
            std::string raw = f.raw.empty() ? f.name + ":" + to_crlf(f.value) + "\r\n" : f.raw;
            std::string value = unfold(f.value);
            size += raw.size();
            inner_->header(view_, HeaderField{f.name, value, raw});
        }
        size += eoh_raw_.size();
        inner_->eoh(view_, eoh_raw_);
        if (body_) {
            std::string buf(64 * 1024, '\0');
            off_t off = 0;
            for (;;) {
                ssize_t n = ::pread(body_.get(), buf.data(), buf.size(), off);
                if (n < 0 && errno == EINTR)
                    continue;
                if (n < 0) {
                    s.error(std::string("milter: cannot read the spool file: ") + std::strerror(errno));
                    return Reply(451, "Local error in processing; try again later", "4.3.0");
                }
                if (n == 0)
                    break;
                off += n;
                size += static_cast<std::uint64_t>(n);
                inner_->body(view_, std::string_view(buf.data(), static_cast<std::size_t>(n)));
            }
        }
        view_.size = size;
        view_.size_set = true;
        return inner_->eom(view_);
    }

    Fd make_spool(SessionView &s)
    {
        std::string dir = cfg_->spool_dir;
        if (dir.empty()) {
            const char *t = std::getenv("TMPDIR");
            dir = t && *t ? t : "/tmp";
        }
        // O_TMPFILE: a file without a name, gone with its descriptor on
        // every path (and one system call); mkstemp + unlink where the file
        // system cannot do it
        int fd = ::open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
        if (fd >= 0)
            return Fd(fd);
        std::string tmpl = dir + "/esmtp-milter-XXXXXX";
        fd = ::mkstemp(tmpl.data());
        if (fd < 0) {
            s.error("milter: cannot create a spool file in " + dir + ": " + std::strerror(errno));
            return Fd();
        }
        ::unlink(tmpl.c_str());
        ::fcntl(fd, F_SETFD, FD_CLOEXEC);
        return Fd(fd);
    }

    void open_spool(SessionView &s)
    {
        body_ = make_spool(s);
        spool_failed_ = !body_;
        max_size_ = s.max_message_size() + 1024 * 1024;
    }

    void new_message()
    {
        headers_.clear();
        eoh_raw_.clear();
        body_.reset();
        body_size_ = 0;
        body_cr_ = false;
        spool_failed_ = false;
        discard_ = false;
        discarded_by_.clear();
        env_.reset();
        view_.env = nullptr;
        view_.size_set = false;
        view_.quarantine.clear();
        view_.trace.clear();
    }

    // The transaction is over: ABORT to the filters still in it (when
    // `tell`), and the message state goes.
    void end_tx(bool tell)
    {
        for (auto &p : peers_) {
            if (tell && p->in_tx && !p->dead && p->client.is_open()) {
                std::string out;
                encode_simple(out, cmd::abort);
                if (!p->client.send(out, p->client.spec().command_timeout) && view_.s)
                    failed(*view_.s, *p, StageInfo{"ABORT", cmd::abort, 0, 0, true});
            }
            p->in_tx = false;
            p->off_tx = false;
        }
        headers_.clear();
        body_.reset();
    }

    void quit_all()
    {
        for (auto &p : peers_) {
            if (p->client.is_open()) {
                std::string out;
                encode_simple(out, cmd::quit);
                p->client.send(out, p->client.spec().command_timeout);
                p->client.close();
            }
        }
    }

    std::unique_ptr<Handler> inner_;
    std::shared_ptr<const Config> cfg_;
    std::vector<std::unique_ptr<Peer>> peers_;
    View view_;
    std::vector<Field> headers_;
    std::string eoh_raw_;
    Fd body_;
    std::uint64_t body_size_ = 0;
    std::uint64_t max_size_ = 0;
    bool body_cr_ = false;
    bool spool_failed_ = false;
    bool discard_ = false;
    std::string discarded_by_;
    std::unique_ptr<Envelope> env_;
};

} // namespace

std::unique_ptr<Handler> wrap(std::unique_ptr<Handler> inner, std::shared_ptr<const Config> config)
{
    if (!config || config->milters.empty())
        return inner;
    return std::make_unique<MilterHandler>(std::move(inner), std::move(config));
}

} // namespace esmtp::milter
