#include "connection.hpp"

#include "config.hpp"
#include "session.hpp"
#include "txlog.hpp"

#include <apr_buckets.h>
#include <http_connection.h>
#include <http_core.h>
#include <http_log.h>
#include <ap_mpm.h>
#include <scoreboard.h>
#include <util_filter.h>

#include <algorithm>
#include <exception>

namespace esmtp
{

namespace
{

// Bytes asked of the input filters per read: a large message streams in
// big chunks, a command batch usually fits in one.
constexpr apr_off_t kReadSize = 64 * 1024;
// Output is passed on (without flush) once this much is pending.
constexpr std::size_t kWriteHighWater = 64 * 1024;
// A blocking read wakes up this often to notice that httpd is stopping.
constexpr apr_interval_time_t kWakeInterval = apr_time_from_sec(1);

bool httpd_stopping()
{
    int state = AP_MPMQ_RUNNING;
    return ap_mpm_query(AP_MPMQ_MPM_STATE, &state) == APR_SUCCESS && state == AP_MPMQ_STOPPING;
}

class Connection
{
  public:
    Connection(conn_rec *c)
        : c_(c), in_(apr_brigade_create(c->pool, c->bucket_alloc)), out_(apr_brigade_create(c->pool, c->bucket_alloc))
    {
    }
    ~Connection()
    {
        apr_brigade_destroy(in_);
        apr_brigade_destroy(out_);
    }

    // Pass `data` down the output filters; with `flush`, to the client now.
    bool send(std::string &data, bool flush)
    {
        if (c_->aborted)
            return false;
        if (!data.empty())
            APR_BRIGADE_INSERT_TAIL(out_, apr_bucket_heap_create(data.data(), data.size(), nullptr, c_->bucket_alloc));
        data.clear();
        if (flush)
            APR_BRIGADE_INSERT_TAIL(out_, apr_bucket_flush_create(c_->bucket_alloc));
        if (APR_BRIGADE_EMPTY(out_))
            return true;
        apr_status_t rv = ap_pass_brigade(c_->output_filters, out_);
        apr_brigade_cleanup(out_);
        if (rv != APR_SUCCESS) {
            c_->aborted = 1;
            return false;
        }
        return true;
    }

    // Read what the filters have and feed it to the session. Returns
    // APR_SUCCESS when data was fed, APR_EAGAIN (non-blocking, none there),
    // APR_EOF, or an error (APR_TIMEUP...).
    apr_status_t read(Session &session, apr_read_type_e block)
    {
        apr_status_t rv = ap_get_brigade(c_->input_filters, in_, AP_MODE_READBYTES, block, kReadSize);
        if (rv != APR_SUCCESS) {
            apr_brigade_cleanup(in_);
            return rv;
        }
        bool fed = false, eos = false;
        for (apr_bucket *b = APR_BRIGADE_FIRST(in_); b != APR_BRIGADE_SENTINEL(in_); b = APR_BUCKET_NEXT(b)) {
            if (APR_BUCKET_IS_EOS(b)) {
                eos = true;
                break;
            }
            if (APR_BUCKET_IS_METADATA(b))
                continue;
            const char *data;
            apr_size_t len;
            rv = apr_bucket_read(b, &data, &len, APR_BLOCK_READ);
            if (rv != APR_SUCCESS) {
                apr_brigade_cleanup(in_);
                return rv;
            }
            if (len) {
                session.feed(std::string_view(data, len));
                fed = true;
            }
        }
        apr_brigade_cleanup(in_);
        if (fed)
            return APR_SUCCESS;
        if (eos)
            return APR_EOF;
        return block == APR_NONBLOCK_READ ? APR_EAGAIN : APR_EOF;
    }

  private:
    conn_rec *c_;
    apr_bucket_brigade *in_;
    apr_bucket_brigade *out_;
};

void run(conn_rec *c, const ServerConfig *cfg)
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
    apr_socket_t *sock = ap_get_conn_socket(c);

    Connection io(c);
    // Runs the TLS handshake under mod_ssl, lets mod_remoteip read a PROXY header.
    apr_bucket_brigade *init = apr_brigade_create(c->pool, c->bucket_alloc);
    apr_status_t rv = ap_get_brigade(c->input_filters, init, AP_MODE_INIT, APR_BLOCK_READ, 0);
    apr_brigade_destroy(init);
    if (rv != APR_SUCCESS && !APR_STATUS_IS_EAGAIN(rv)) {
        ap_log_cerror(APLOG_MARK, APLOG_DEBUG, rv, c, "esmtp: connection setup failed");
        return;
    }

    const SessionConfig &sc = *cfg->session;
    const apr_interval_time_t command_timeout = apr_time_from_sec(sc.command_timeout);
    const apr_interval_time_t data_timeout = apr_time_from_sec(sc.data_timeout);
    if (sock)
        apr_socket_timeout_set(sock, command_timeout);
    ConnectionInfo ci;
    ci.client_address = c->client_ip ? c->client_ip : "";
    ci.client_port = c->client_addr ? c->client_addr->port : 0;
    if (const char *host = ap_get_remote_host(c, s->lookup_defaults, REMOTE_NAME, nullptr))
        ci.remote_host = host;
    ci.local_address = c->local_ip ? c->local_ip : "";
    ci.local_port = c->local_addr ? c->local_addr->port : 0;

    std::unique_ptr<Handler> handler;
    try {
        handler = (*cfg->factory)->create();
    } catch (const std::exception &e) {
        ap_log_cerror(APLOG_MARK, APLOG_ERR, 0, c, "esmtp: handler %s could not be created: %s", cfg->handler_name,
                      e.what());
    } catch (...) {
        ap_log_cerror(APLOG_MARK, APLOG_ERR, 0, c, "esmtp: handler %s could not be created", cfg->handler_name);
    }
    if (!handler) {
        std::string refusal = "421 4.3.0 " + sc.hostname + " Service temporarily unavailable\r\n";
        io.send(refusal, true);
        return;
    }

    TxLog txlog(c, cfg->log_file);
    Session session(sc, std::move(ci), std::move(handler), &txlog);
    session.start();
    io.send(session.output(), true);

    while (!session.closing() && !c->aborted) {
        // Take what is already there (pipelined commands) without waiting;
        // flush the replies only when the client has nothing more queued.
        rv = io.read(session, APR_NONBLOCK_READ);
        if (APR_STATUS_IS_EAGAIN(rv)) {
            bool in_data = session.phase() == Session::Phase::data || session.phase() == Session::Phase::bdat;
            apr_interval_time_t timeout = in_data ? data_timeout : command_timeout;
            if (sock)
                apr_socket_timeout_set(sock, timeout);
            if (!io.send(session.output(), true))
                break;
            ap_update_child_status_from_conn(static_cast<ap_sb_handle_t *>(c->sbh), SERVER_BUSY_READ, c);
            // Wait in short slices: the phase's deadline (RFC 5321 4.5.3.2)
            // is ours to keep, and an idle session must notice that httpd
            // is stopping (421 rather than a silent close).
            apr_time_t deadline = apr_time_now() + timeout;
            for (;;) {
                apr_interval_time_t left = deadline - apr_time_now();
                if (sock)
                    apr_socket_timeout_set(sock, left < kWakeInterval ? std::max<apr_interval_time_t>(left, 1000)
                                                                      : kWakeInterval);
                rv = io.read(session, APR_BLOCK_READ);
                if (!APR_STATUS_IS_TIMEUP(rv) || apr_time_now() >= deadline)
                    break;
                if (httpd_stopping() && session.phase() == Session::Phase::command &&
                    !session.has_partial_input()) {
                    rv = APR_EINTR;
                    break;
                }
            }
            if (sock)
                apr_socket_timeout_set(sock, timeout);
        }
        if (rv == APR_SUCCESS) {
            if (session.output().size() >= kWriteHighWater && !io.send(session.output(), false))
                break;
            continue;
        }
        if (rv == APR_EINTR) {
            session.shutdown(Reply(421, sc.hostname + " Server shutting down", "4.3.2", true));
            ap_log_cerror(APLOG_MARK, APLOG_DEBUG, 0, c, "esmtp: httpd is stopping, session closed");
        } else if (APR_STATUS_IS_TIMEUP(rv)) {
            session.shutdown(Reply(421, sc.hostname + " Error: timeout exceeded", "4.4.2", true));
            session.log(txlog_session, "timeout exceeded");
            ap_log_cerror(APLOG_MARK, APLOG_DEBUG, rv, c, "esmtp: client timed out");
        } else if (!APR_STATUS_IS_EOF(rv)) {
            ap_log_cerror(APLOG_MARK, APLOG_DEBUG, rv, c, "esmtp: read failed");
        }
        break;
    }
    io.send(session.output(), true);
    session.end();
}

} // namespace

int process_connection(conn_rec *c)
{
    const ServerConfig *cfg = server_config(c->base_server);
    if (!cfg || cfg->enabled != 1 || !cfg->factory || !cfg->session)
        return DECLINED;
    try {
        run(c, cfg);
    } catch (const std::exception &e) {
        ap_log_cerror(APLOG_MARK, APLOG_ERR, 0, c, "esmtp: session failed: %s", e.what());
    } catch (...) {
        ap_log_cerror(APLOG_MARK, APLOG_ERR, 0, c, "esmtp: session failed");
    }
    // Tell an async MPM (event) that this connection is finished.
    if (c->cs)
        c->cs->state = CONN_STATE_LINGER;
    return OK;
}

} // namespace esmtp
