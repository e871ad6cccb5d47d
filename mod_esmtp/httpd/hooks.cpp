#include "httpd/hooks.hpp"

#include "httpd/bulkhead.hpp"
#include "httpd/client_table.hpp"
#include "httpd/config.hpp"
#include "httpd/guard.hpp"
#include "httpd/io.hpp"
#include "httpd/parking.hpp"
#include "httpd/proxy.hpp"
#include "httpd/smtp_connection.hpp"
#include "httpd/state_cache.hpp"
#include "httpd/status.hpp"
#include "httpd/tls.hpp"
#include "httpd/wake_timer.hpp"

#include <ap_mpm.h>
#include <http_connection.h>
#include <http_core.h>
#include <http_log.h>
#include <http_main.h>
#include <http_ssl.h>
#include <scoreboard.h>

#include <ctime>
#include <memory>
#include <string>

namespace esmtp
{

namespace
{

// c->pool's cleanup frees the connection's C++ state and runs no handler
// code: the session is ended (DISCONNECT, handler destroyed) in
// process_connection or pre_close_connection.
//
// Which paths reach this cleanup without pre_close_connection? (read in
// httpd 2.4.x server/mpm/event/event.c and server/connection.c)
// - Every ordinary close goes through ap_start_lingering_close() (event's
//   process_lingering_close(), and ap_lingering_close() in worker and
//   prefork), which runs pre_close_connection first; so does a parked
//   connection the MPM times out (waitio_q -> defer_lingering_close).
// - event's close_connection() without lingering close: only when
//   apr_pollset_add() fails while parking (AH10503), in write completion
//   (AH03465) or keep-alive (AH03093); the child then stops gracefully.
// - When an event child exits, parked connections' pools (children of
//   pconf, not of pchild) are never cleaned up: neither hook nor cleanup
//   runs; the sockets close with the process.
// - prefork's SIGTERM handler (just_die -> clean_child_exit) destroys pchild,
//   and with it the pool of the session in progress, then exits.
// On those paths the session is abandoned (leaked, logged at warning
// level), not ended here: the process is going away or stops gracefully.
// Once the child is exiting (a hard stop) this may run in prefork's SIGTERM
// handler: abandon() is async-signal-safe then, and the connection is not
// freed (free() is not; the process takes the memory with it).
apr_status_t destroy_connection(void *data)
{
    auto *conn = static_cast<SmtpConnection *>(data);
    return guarded(
        {"connection cleanup"},
        [conn] {
            conn->abandon();
            if (!child_is_exiting())
                delete conn;
            return APR_SUCCESS;
        },
        [](const char *) { return APR_SUCCESS; });
}

SmtpConnection *get_connection(conn_rec *c)
{
    return static_cast<SmtpConnection *>(ap_get_module_config(c->conn_config, &esmtp_module));
}

// 421 and close, as Postfix's smtpd: "421 4.7.0 <host> Error: too many
// connections from <addr>" (for the connection rate too). Logged at
// ESMTPLogLevel 1 with the limit hit. `can_reply` false: before an implicit
// TLS handshake, where nothing can be said (a reply through mod_ssl would
// first run the handshake the limit is there to refuse): closed at once.
void refuse_client(conn_rec *c, const ServerConfig *cfg, const ConnectionInfo &ci, const ClientAdmission &adm,
                   bool can_reply)
{
    const SessionConfig &sc = *cfg->session;
    if (sc.log_level >= txlog_session) {
        TxLog log(c, cfg->log_file);
        log.write(txlog_session, format_txlog(std::time(nullptr), "",
                                              "too many connections from " + ci.client_address + ": " + adm.limit +
                                                  " (sessions: " + std::to_string(adm.count) + ")",
                                              ci.client_address));
    }
    if (can_reply)
        send_refusal(c, "421 4.7.0 " + sc.hostname + " Error: too many connections from " + ci.client_address + "\r\n");
    status_connection_refused(cfg, c, RejectCause::limits, "too many connections from one client");
    // nothing the client sends is read: close at once, no lingering close
    c->aborted = 1;
}

// Per-client limits (Postfix's anvil), before anything costly: the TLS
// handshake, the handler, the CONNECT event. False when refused (421 sent
// when `can_reply`). `slot` holds the client's entry.
bool admit(conn_rec *c, const ServerConfig *cfg, const ConnectionInfo &ci, bool can_reply, ClientSlot &slot)
{
    ClientTable table = client_table();
    if (!table.valid())
        return true;
    ClientAdmission adm =
        admit_client(table, cfg->session->client_limits, ci.client_address, static_cast<std::uint16_t>(ci.local_port),
                     monotonic_ms(), cfg->session->xclient_hosts.contains(ci.client_address));
    if (adm.evicted)
        ap_log_cerror(APLOG_MARK, APLOG_DEBUG, 0, c, "esmtp: per-client table: evicted an idle entry for %s",
                      ci.client_address.c_str());
    if (adm.verdict == ClientTable::Verdict::untracked)
        ap_log_cerror(APLOG_MARK, APLOG_DEBUG, 0, c,
                      "esmtp: per-client table: no free entry for %s (every entry of its bucket holds sessions); "
                      "not counted",
                      ci.client_address.c_str());
    if (adm.verdict == ClientTable::Verdict::too_many_connections ||
        adm.verdict == ClientTable::Verdict::connection_rate) {
        refuse_client(c, cfg, ci, adm, can_reply);
        return false;
    }
    slot = std::move(adm.slot);
    return true;
}

apr_status_t release_slot(void *data)
{
    delete static_cast<ClientSlot *>(data);
    return APR_SUCCESS;
}

// A peer that may not send a PROXY header (not in ESMTPProxyTrusted) is
// counted by the per-client limits like any client, then refused; it keeps
// its entry until the MPM has done the lingering close (event: without a
// thread) and the connection's pool goes.
void refuse_proxy_peer(conn_rec *c, const ServerConfig *cfg, const std::string &refusal)
{
    ConnectionInfo ci;
    ci.client_address = c->client_ip ? c->client_ip : "";
    ci.local_port = c->local_addr ? c->local_addr->port : 0;
    ClientSlot slot;
    if (!admit(c, cfg, ci, false, slot)) {
        send_raw_refusal(c, "421 4.7.0 " + cfg->session->hostname + " Error: too many connections from " +
                                ci.client_address);
        return;
    }
    send_raw_refusal(c, refusal);
    if (slot.held()) {
        auto *held = new ClientSlot(std::move(slot));
        apr_pool_cleanup_register(c->pool, held, release_slot, apr_pool_cleanup_null);
    }
}

// First call for a connection: the PROXY header, the per-client limits, and
// the connection's state; run() then does the TLS handshake (implicit TLS)
// and greets.
SmtpConnection *open_connection(conn_rec *c, const ServerConfig *cfg)
{
    server_rec *s = c->base_server;
    // HTTP's request timeouts make no sense for SMTP sessions.
    for (ap_filter_t *f = c->input_filters; f; f = f->next) {
        if (f->frec && f->frec->name && !strcasecmp(f->frec->name, "reqtimeout")) {
            ap_remove_input_filter(f);
            break;
        }
    }
    ap_update_child_status_from_conn(static_cast<ap_sb_handle_t *>(c->sbh), SERVER_BUSY_READ, c);
    if (apr_socket_t *sock = ap_get_conn_socket(c))
        apr_socket_timeout_set(sock, apr_time_from_sec(cfg->session->command_timeout));

    // The PROXY header comes before TLS: the real client address first.
    if (std::string refusal = proxy_peer_refusal(c, *cfg->session); !refusal.empty()) {
        refuse_proxy_peer(c, cfg, refusal);
        return nullptr;
    }
    std::string proxied;
    if (!accept_proxy_header(c, *cfg->session, proxied))
        return nullptr;

    // ESMTPStartTLS On|Required: mod_ssl's filters wait, unlinked, for
    // STARTTLS (this hook runs before mod_ssl's, which would handshake).
    TlsFilters tls;
    bool starttls = cfg->session->starttls != StartTls::off;
    if (starttls && !tls.detach(c)) {
        ap_log_cerror(APLOG_MARK, APLOG_ERR, 0, c,
                      "esmtp: ESMTPStartTLS is on but mod_ssl's filters are not on this connection (SSLEngine on?)");
        send_refusal(c, "421 4.3.0 " + cfg->session->hostname + " Service temporarily unavailable\r\n");
        return nullptr;
    }
    // On an SSLEngine vhost mod_ssl answers true before any handshake:
    // without STARTTLS the handshake comes first (implicit TLS), in run().
    bool implicit_tls = !starttls && ap_ssl_conn_is_ssl(c) != 0;

    ConnectionInfo ci;
    ci.client_address = c->client_ip ? c->client_ip : "";
    ci.client_port = c->client_addr ? c->client_addr->port : 0;
    if (const char *host = ap_get_remote_host(c, s->lookup_defaults, REMOTE_NAME, nullptr))
        ci.remote_host = host;
    ci.local_address = c->local_ip ? c->local_ip : "";
    ci.local_port = c->local_addr ? c->local_addr->port : 0;
    // STARTTLS with a stand-in certificate (mod_md's fallback) would be a
    // handshake no verifying sender accepts: not offered, mail goes on.
    ci.tls_unavailable = starttls && cfg->tls_fallback;
    ci.proxied = std::move(proxied);

    // A refused client costs no handshake, no handler and no CONNECT event.
    ClientSlot client;
    if (!admit(c, cfg, ci, !implicit_tls, client))
        return nullptr;

    auto owned = std::make_unique<SmtpConnection>(c, cfg, std::move(ci), std::move(client), implicit_tls);
    SmtpConnection *conn = owned.get();
    conn->set_tls_filters(tls);
    apr_pool_cleanup_register(c->pool, conn, destroy_connection, apr_pool_cleanup_null);
    owned.release(); // owned by the cleanup from here
    ap_set_module_config(c->conn_config, &esmtp_module, conn);
    return conn;
}

int close_connection(conn_rec *c, SmtpConnection *conn)
{
    if (conn && !conn->finished()) {
        bool closing = conn->closing();
        conn->finish();
        // After QUIT (or any close we chose) with everything sent and
        // nothing unread, a lingering close only costs the MPM another poll
        // round: close at once, as an MTA does. With unread input (junk
        // after QUIT) the lingering close stays, so that the client's copy
        // of our last reply is not lost to a reset.
        if (!c->aborted && closing && input_drained(c))
            c->aborted = 1;
    }
    // Tell an async MPM (event) that this connection is finished.
    if (c->cs)
        c->cs->state = CONN_STATE_LINGER;
    return OK;
}

int process(conn_rec *c, const ServerConfig *cfg)
{
    SmtpConnection *conn = get_connection(c);
    if (!conn) {
        conn = open_connection(c, cfg);
        if (!conn)
            return close_connection(c, nullptr);
    } else if (conn->finished()) {
        return close_connection(c, conn);
    } else {
        conn->unparked();
    }
    // A deadline shorter than the MPM's wait (the main server's Timeout) is
    // kept while parked by a timer (wake_timer.hpp; README, Running on the
    // event MPM).
    bool may_park = can_park() && c->cs;
    if (!conn->run(may_park)) {
        // Parked with the MPM: no thread is held until the client sends more.
        conn->parked();
        park_with_mpm(c);
        return OK;
    }
    return close_connection(c, conn);
}

void check_handlers(server_rec *main)
{
    for_each_handler_factory(main, [](server_rec *s, const ServerConfig *cfg) {
        std::string why;
        if (!check_handler(**cfg->factory, why))
            ap_log_error(APLOG_MARK, APLOG_ERR, 0, s, "esmtp: ESMTPHandler %s of %s (%s:%d) cannot work: %s",
                         cfg->handler_name, s->server_hostname ? s->server_hostname : "?",
                         s->defn_name ? s->defn_name : "?", s->defn_line_number,
                         why.empty() ? "(no reason given)" : why.c_str());
    });
}

} // namespace

void child_init(apr_pool_t *pchild, server_rec *s)
{
    guarded(
        {"child_init", nullptr, s},
        [pchild, s] {
            parking_child_init(s);
            if (can_park())
                wake_timer_child_init(pchild);
            status_child_init(nullptr, s);
            bulkhead_child_init(s);
            state_cache_child_init(pchild, s);
            check_handlers(s);
        },
        [](const char *) {});
}

int process_connection(conn_rec *c)
{
    const ServerConfig *cfg = server_config(c->base_server);
    if (!cfg || cfg->enabled != 1 || !cfg->factory || !cfg->session)
        return DECLINED;
    return guarded(
        {"process_connection", c}, [c, cfg] { return process(c, cfg); },
        [c](const char *) {
            // pre_close_connection ends the session
            if (c->cs)
                c->cs->state = CONN_STATE_LINGER;
            return OK;
        });
}

int pre_close_connection(conn_rec *c)
{
    return guarded(
        {"pre_close_connection", c},
        [c] {
            if (SmtpConnection *conn = get_connection(c))
                conn->closed_by_mpm();
            return OK;
        },
        [](const char *) { return OK; });
}

} // namespace esmtp
