// STARTTLS (RFC 3207): the verb and the glue's handshake outcome.
#include "engine/session.hpp"
#include "engine/session_internal.hpp"

namespace esmtp
{

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

} // namespace esmtp
