// XCLIENT (Postfix): a trusted front end hands over the client's identity.
#include "engine/session.hpp"
#include "engine/session_internal.hpp"

#include "engine/xclient.hpp"

namespace esmtp
{

bool Session::do_xclient(std::string_view arg, bool &new_address)
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
        new_address = *a.addr != "unknown"; // not [UNAVAILABLE] / [TEMPUNAVAIL]
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

void Session::restart(std::string_view why, bool new_address)
{
    // As at the start: the screen (DNSBL, for a new address) and the
    // handler judge the new identity (a refusal leaves only QUIT and
    // XCLIENT), then the greeting.
    Reply r;
    if (screen_ && new_address) {
        Screen::Verdict v = screen_->client_changed(conn_.client_address);
        if (screened(v))
            r = v.reply;
    }
    if (r.empty())
        r = ask(Event::connect, [&] { return handler_->connect(*this); });
    if (handler_threw_)
        r = Reply(421, std::string(cfg_.hostname) + " Service not available, closing transmission channel", "4.3.2",
                  true);
    else if (r.code >= 400)
        transit({state_.phase, Hello::refused, state_.tx}, std::string(why) + ": CONNECT refused");
    reply(r, Reply(220, cfg_.hostname + " ESMTP mod_esmtp"), false);
}

} // namespace esmtp
