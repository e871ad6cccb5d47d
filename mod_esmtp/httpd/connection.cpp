#include "httpd/connection.hpp"

#include "httpd/config.hpp"
#include "engine/session.hpp"
#include "httpd/txlog.hpp"

#include <apr_buckets.h>
#include <apr_thread_proc.h>
#include <http_connection.h>
#include <http_core.h>
#include <http_log.h>
#include <http_main.h>
#include <ap_mpm.h>
#include <scoreboard.h>
#include <util_filter.h>

#include <algorithm>
#include <exception>
#include <memory>
#include <mutex>
#include <set>

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
// How long an async session waits in its thread for the client's next
// command before it is parked with the MPM: short, so that a burst of
// sessions cannot occupy the workers.
constexpr apr_interval_time_t kLingerBeforePark = 1000; // microseconds
// When httpd stops, an idle session waits this long for a last command.
constexpr apr_interval_time_t kStopGrace = apr_time_from_msec(200);
// ESMTPMinDataRate is enforced once a transfer has run this long.
constexpr apr_interval_time_t kDataRateGrace = apr_time_from_sec(10);

// Set in child_init: the MPM can park idle connections for us (event MPM,
// httpd >= 2.4.63), so that an idle session holds no thread.
bool g_can_waitio = false;

bool httpd_stopping()
{
    int state = AP_MPMQ_RUNNING;
    return ap_mpm_query(AP_MPMQ_MPM_STATE, &state) == APR_SUCCESS && state == AP_MPMQ_STOPPING;
}

// Sessions parked with the MPM between transactions. The event MPM does
// not wake them when the child stops (graceful restart or stop): a
// watcher thread shuts down their read side, the MPM hands them back to
// us as readable, and they end with 421.
class ParkedSessions
{
  public:
    void add(apr_socket_t *s)
    {
        std::lock_guard<std::mutex> lock(mutex_);
        sockets_.insert(s);
    }
    void remove(apr_socket_t *s)
    {
        std::lock_guard<std::mutex> lock(mutex_);
        sockets_.erase(s);
    }
    void wake_all()
    {
        std::lock_guard<std::mutex> lock(mutex_);
        for (apr_socket_t *s : sockets_)
            apr_socket_shutdown(s, APR_SHUTDOWN_READ);
        sockets_.clear();
    }

  private:
    std::mutex mutex_;
    std::set<apr_socket_t *> sockets_;
};

ParkedSessions g_parked;
volatile bool g_watcher_exit = false;

void *APR_THREAD_FUNC watch_for_stop(apr_thread_t *, void *)
{
    while (!g_watcher_exit) {
        apr_sleep(apr_time_from_msec(250));
        if (httpd_stopping())
            g_parked.wake_all();
    }
    return nullptr;
}

apr_status_t stop_watcher(void *data)
{
    g_watcher_exit = true;
    apr_status_t rv;
    apr_thread_join(&rv, static_cast<apr_thread_t *>(data));
    return APR_SUCCESS;
}

enum class ReadResult { fed, again, eof, error, timeout };

// Brigade I/O for one connection; the brigades are reused for its whole
// life (a brigade per line would grow c->pool without bound).
class Io
{
  public:
    explicit Io(conn_rec *c)
        : c_(c), in_(apr_brigade_create(c->pool, c->bucket_alloc)), out_(apr_brigade_create(c->pool, c->bucket_alloc))
    {
    }

    // Pass `data` down the output filters; with `flush`, to the client now.
    bool send(std::string &data, bool flush)
    {
        if (c_->aborted) {
            data.clear();
            return false;
        }
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

    // Read what the filters have and feed it to the session.
    ReadResult read(Session &session, apr_read_type_e block, apr_status_t &rv)
    {
        rv = ap_get_brigade(c_->input_filters, in_, AP_MODE_READBYTES, block, kReadSize);
        if (rv != APR_SUCCESS) {
            apr_brigade_cleanup(in_);
            if (APR_STATUS_IS_EAGAIN(rv))
                return ReadResult::again;
            if (APR_STATUS_IS_TIMEUP(rv))
                return ReadResult::timeout;
            return APR_STATUS_IS_EOF(rv) ? ReadResult::eof : ReadResult::error;
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
                return ReadResult::error;
            }
            if (len) {
                session.feed(std::string_view(data, len));
                fed = true;
            }
        }
        apr_brigade_cleanup(in_);
        if (fed)
            return ReadResult::fed;
        if (eos || block == APR_BLOCK_READ)
            return ReadResult::eof;
        return ReadResult::again;
    }

  private:
    conn_rec *c_;
    apr_bucket_brigade *in_;
    apr_bucket_brigade *out_;
};

// Everything one SMTP connection needs, kept in c->conn_config so that the
// event MPM can call process_connection again (on any thread) when the
// client sends more.
class SmtpConnection
{
  public:
    SmtpConnection(conn_rec *c, const ServerConfig *cfg, std::unique_ptr<Handler> handler, ConnectionInfo ci)
        : c_(c), cfg_(cfg), io_(c), txlog_(c, cfg->log_file),
          session_(*cfg->session, std::move(ci), std::move(handler), &txlog_)
    {
    }

    Session &session() { return session_; }

    // Waiting in the MPM (event) between transactions.
    void park()
    {
        parked_ = ap_get_conn_socket(c_);
        parked_stop_ = false;
        if (parked_ && idle())
            g_parked.add(parked_);
    }
    void unpark()
    {
        if (!parked_)
            return;
        g_parked.remove(parked_);
        parked_ = nullptr;
        // a wake-up by the watcher shows as EOF: tell it from a client that left
        parked_stop_ = httpd_stopping();
    }
    Io &io() { return io_; }
    bool finished() const { return finished_; }

    apr_interval_time_t phase_timeout() const
    {
        bool in_data = session_.phase() == Session::Phase::data || session_.phase() == Session::Phase::bdat;
        return apr_time_from_sec(in_data ? cfg_->session->data_timeout : cfg_->session->command_timeout);
    }

    // The client is between transactions: ending with 421 loses nothing.
    bool idle() const
    {
        return session_.phase() == Session::Phase::command && !session_.has_partial_input() &&
               !session_.in_transaction();
    }

    void timed_out()
    {
        session_.shutdown(Reply(421, cfg_->session->hostname + " Error: timeout exceeded", "4.4.2", true));
        session_.log(txlog_session, "timeout exceeded");
        ap_log_cerror(APLOG_MARK, APLOG_DEBUG, 0, c_, "esmtp: client timed out");
    }

    // ESMTPGreetingDelay: wait before the greeting; a client that talks
    // first does not wait for the server and is refused. Returns false
    // when the client was refused.
    bool greet()
    {
        const SessionConfig &sc = *cfg_->session;
        apr_bucket_brigade *bb = apr_brigade_create(c_->pool, c_->bucket_alloc);
        apr_socket_t *sock = ap_get_conn_socket(c_);
        apr_status_t rv;
        if (sc.greeting_delay_ms && sock) {
            apr_socket_timeout_set(sock, apr_time_from_msec(sc.greeting_delay_ms));
            rv = ap_get_brigade(c_->input_filters, bb, AP_MODE_SPECULATIVE, APR_BLOCK_READ, 1);
            apr_socket_timeout_set(sock, apr_time_from_sec(sc.command_timeout));
        } else {
            rv = ap_get_brigade(c_->input_filters, bb, AP_MODE_SPECULATIVE, APR_NONBLOCK_READ, 1);
        }
        bool talked = rv == APR_SUCCESS && !APR_BRIGADE_EMPTY(bb) && !APR_BUCKET_IS_EOS(APR_BRIGADE_FIRST(bb));
        apr_brigade_destroy(bb);
        if (talked) {
            session_.log(txlog_session, "client talked before the greeting");
            session_.shutdown(Reply(554, sc.hostname + " Error: SMTP protocol synchronization", "5.5.0", true));
            return false;
        }
        if (rv == APR_EOF || (rv != APR_SUCCESS && !APR_STATUS_IS_EAGAIN(rv) && !APR_STATUS_IS_TIMEUP(rv))) {
            c_->aborted = 1;
            return false;
        }
        session_.start();
        return true;
    }

    void stopping()
    {
        session_.shutdown(Reply(421, cfg_->session->hostname + " Server shutting down", "4.3.2", true));
        ap_log_cerror(APLOG_MARK, APLOG_DEBUG, 0, c_, "esmtp: httpd is stopping, session closed");
    }

    // Send what is left, fire DISCONNECT; the MPM closes the socket.
    void finish()
    {
        if (finished_)
            return;
        finished_ = true;
        io_.send(session_.output(), true);
        session_.end();
    }

    // Process input until the client has nothing more for us. Returns true
    // when the session is over, false when it waits for the client
    // (`blocking`: here, in this thread; otherwise the caller parks the
    // connection with the MPM).
    bool run(bool blocking)
    {
        apr_socket_t *sock = ap_get_conn_socket(c_);
        while (!session_.closing() && !c_->aborted) {
            // Take what is already there (pipelined commands) without
            // waiting; flush the replies only once the client has nothing
            // more queued.
            apr_status_t rv;
            ReadResult r = io_.read(session_, APR_NONBLOCK_READ, rv);
            if (r == ReadResult::fed) {
                progress();
                if (session_.output().size() >= kWriteHighWater && !io_.send(session_.output(), false))
                    return true;
                continue;
            }
            if (r != ReadResult::again) {
                input_ended(r, rv);
                return true;
            }
            apr_interval_time_t timeout = phase_timeout();
            if (sock)
                apr_socket_timeout_set(sock, timeout);
            if (!io_.send(session_.output(), true))
                return true;
            if (session_.closing())
                return true;
            // A parked session would sit in a child that is going away
            // (graceful restart or stop) until the MPM's Timeout: wait here,
            // where an idle second ends it with 421 (a prompt QUIT still
            // gets its 221).
            if (!blocking && httpd_stopping())
                blocking = true;
            apr_time_t now = apr_time_now();
            if (deadline_ == 0)
                deadline_ = now + timeout; // RFC 5321 4.5.3.2, from the last command or data
            if (!blocking) {
                if (now >= deadline() || too_slow(now)) {
                    timed_out();
                    return true;
                }
                // A client in a conversation answers within moments (tens of
                // microseconds on a LAN): wait that long here before
                // parking, which saves the MPM round trip (epoll, listener,
                // another worker) on every command of a lock-step client.
                if (sock) {
                    apr_socket_timeout_set(sock, kLingerBeforePark);
                    r = io_.read(session_, APR_BLOCK_READ, rv);
                    apr_socket_timeout_set(sock, timeout);
                    if (r == ReadResult::fed) {
                        progress();
                        continue;
                    }
                    if (r != ReadResult::timeout && r != ReadResult::again) {
                        input_ended(r, rv);
                        return true;
                    }
                }
                return false;
            }
            ap_update_child_status_from_conn(static_cast<ap_sb_handle_t *>(c_->sbh), SERVER_BUSY_READ, c_);
            // Wait in short slices: the deadline is ours to keep, and an
            // idle session must notice that httpd is stopping (421 rather
            // than a silent close).
            for (;;) {
                apr_time_t now = apr_time_now();
                apr_interval_time_t left = deadline() - now;
                if (left <= 0 || too_slow(now)) {
                    timed_out();
                    return true;
                }
                // once httpd is stopping, a short grace for a prompt QUIT,
                // then 421: a child that is going away must not wait on us
                apr_interval_time_t slice = httpd_stopping() ? kStopGrace : kWakeInterval;
                if (sock)
                    apr_socket_timeout_set(sock, std::min(left, slice));
                r = io_.read(session_, APR_BLOCK_READ, rv);
                if (r != ReadResult::timeout)
                    break;
                if (httpd_stopping() && idle()) {
                    stopping();
                    return true;
                }
            }
            if (sock)
                apr_socket_timeout_set(sock, timeout);
            if (r == ReadResult::fed) {
                progress();
                continue;
            }
            input_ended(r, rv);
            return true;
        }
        return true;
    }

  private:
    void input_ended(ReadResult r, apr_status_t rv)
    {
        if (r == ReadResult::error)
            ap_log_cerror(APLOG_MARK, APLOG_DEBUG, rv, c_, "esmtp: read failed");
        else if (r == ReadResult::eof && parked_stop_)
            stopping(); // our watcher shut the read side: the client is still there
    }

    bool in_data() const
    {
        return session_.phase() == Session::Phase::data || session_.phase() == Session::Phase::bdat;
    }

    // Input arrived. The phase timeout restarts only when it moved the
    // session on (a complete command, or message data): a client that
    // trickles a command byte by byte does not keep its session forever.
    void progress()
    {
        if (in_data()) {
            if (data_start_ == 0)
                data_start_ = apr_time_now();
            deadline_ = 0;
            return;
        }
        data_start_ = 0;
        if (session_.commands_seen() != commands_) {
            commands_ = session_.commands_seen();
            deadline_ = 0;
        }
    }

    apr_time_t deadline() const { return deadline_; }

    // ESMTPMinDataRate: after a grace period, the transfer so far must
    // average the minimum rate.
    bool too_slow(apr_time_t now) const
    {
        unsigned rate = cfg_->session->min_data_rate;
        if (!rate || !in_data() || data_start_ == 0)
            return false;
        apr_interval_time_t elapsed = now - data_start_;
        if (elapsed < kDataRateGrace)
            return false;
        double expected = static_cast<double>(rate) * static_cast<double>(elapsed) / APR_USEC_PER_SEC;
        return static_cast<double>(session_.message_size()) < expected;
    }

    conn_rec *c_;
    const ServerConfig *cfg_;
    Io io_;
    TxLog txlog_;
    Session session_;
    apr_socket_t *parked_ = nullptr;
    bool parked_stop_ = false;
    apr_time_t deadline_ = 0;
    apr_time_t data_start_ = 0;
    unsigned commands_ = 0;
    bool finished_ = false;
};

apr_status_t destroy_connection(void *data)
{
    static_cast<SmtpConnection *>(data)->unpark();
    // Normally finished already; this covers a connection torn down by
    // the MPM while parked (DISCONNECT must still fire).
    delete static_cast<SmtpConnection *>(data);
    return APR_SUCCESS;
}

SmtpConnection *get_connection(conn_rec *c)
{
    return static_cast<SmtpConnection *>(ap_get_module_config(c->conn_config, &esmtp_module));
}

// First call for a connection: greet, or refuse when no handler can be had.
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

    // Runs the TLS handshake under mod_ssl, lets mod_remoteip read a PROXY header.
    apr_bucket_brigade *init = apr_brigade_create(c->pool, c->bucket_alloc);
    apr_status_t rv = ap_get_brigade(c->input_filters, init, AP_MODE_INIT, APR_BLOCK_READ, 0);
    apr_brigade_destroy(init);
    if (rv != APR_SUCCESS && !APR_STATUS_IS_EAGAIN(rv)) {
        ap_log_cerror(APLOG_MARK, APLOG_DEBUG, rv, c, "esmtp: connection setup failed");
        return nullptr;
    }

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
        Io io(c);
        std::string refusal = "421 4.3.0 " + cfg->session->hostname + " Service temporarily unavailable\r\n";
        io.send(refusal, true);
        return nullptr;
    }

    auto owned = std::make_unique<SmtpConnection>(c, cfg, std::move(handler), std::move(ci));
    SmtpConnection *conn = owned.release();
    apr_pool_cleanup_register(c->pool, conn, destroy_connection, apr_pool_cleanup_null);
    ap_set_module_config(c->conn_config, &esmtp_module, conn);
    bool greeted = conn->greet();
    conn->io().send(conn->session().output(), true);
    if (!greeted) {
        conn->finish();
        return nullptr;
    }
    return conn;
}

// Nothing more from the client is waiting to be read.
bool input_drained(conn_rec *c)
{
    apr_bucket_brigade *bb = apr_brigade_create(c->pool, c->bucket_alloc);
    apr_status_t rv = ap_get_brigade(c->input_filters, bb, AP_MODE_SPECULATIVE, APR_NONBLOCK_READ, 1);
    bool drained = APR_STATUS_IS_EAGAIN(rv) || (rv == APR_SUCCESS && APR_BRIGADE_EMPTY(bb));
    apr_brigade_destroy(bb);
    return drained;
}

int close_connection(conn_rec *c, SmtpConnection *conn)
{
    if (conn) {
        conn->finish();
        // After QUIT (or any close we chose) with everything sent and
        // nothing unread, a lingering close only costs the MPM another poll
        // round: close at once, as an MTA does. With unread input (junk
        // after QUIT) the lingering close stays, so that the client's copy
        // of our last reply is not lost to a reset.
        if (!c->aborted && conn->session().closing() && input_drained(c))
            c->aborted = 1;
    }
    // Tell an async MPM (event) that this connection is finished.
    if (c->cs)
        c->cs->state = CONN_STATE_LINGER;
    return OK;
}

} // namespace

void child_init(apr_pool_t *pchild, server_rec *s)
{
#ifdef AP_MPMQ_CAN_WAITIO
    int can_waitio = 0;
    g_can_waitio = ap_mpm_query(AP_MPMQ_CAN_WAITIO, &can_waitio) == APR_SUCCESS && can_waitio;
#endif
    if (!g_can_waitio)
        return;
    bool smtp = false;
    for (server_rec *v = s; v; v = v->next)
        smtp = smtp || server_config(v)->enabled == 1;
    apr_thread_t *watcher = nullptr;
    if (smtp && apr_thread_create(&watcher, nullptr, watch_for_stop, nullptr, pchild) == APR_SUCCESS)
        apr_pool_pre_cleanup_register(pchild, watcher, stop_watcher);
    else if (smtp)
        g_can_waitio = false; // without the watcher parked sessions would miss a stop
}

int process_connection(conn_rec *c)
{
    const ServerConfig *cfg = server_config(c->base_server);
    if (!cfg || cfg->enabled != 1 || !cfg->factory || !cfg->session)
        return DECLINED;
    SmtpConnection *conn = get_connection(c);
    try {
        if (!conn) {
            conn = open_connection(c, cfg);
            if (!conn)
                return close_connection(c, nullptr);
        } else if (conn->finished()) {
            return close_connection(c, conn);
        } else {
            conn->unpark();
        }
        bool async = g_can_waitio && c->cs;
        // An ESMTPTimeout shorter than the MPM's wait (the main server's
        // Timeout) could not be kept while parked: wait here instead.
        if (async && conn->phase_timeout() < ap_server_conf->timeout)
            async = false;
        if (!conn->run(!async)) {
            // Park the idle connection with the MPM: no thread is held
            // until the client sends more.
            conn->park();
            c->cs->state = CONN_STATE_ASYNC_WAITIO;
            c->cs->sense = CONN_SENSE_WANT_READ;
            return OK;
        }
    } catch (const std::exception &e) {
        ap_log_cerror(APLOG_MARK, APLOG_ERR, 0, c, "esmtp: session failed: %s", e.what());
    } catch (...) {
        ap_log_cerror(APLOG_MARK, APLOG_ERR, 0, c, "esmtp: session failed");
    }
    return close_connection(c, conn);
}

int pre_close_connection(conn_rec *c)
{
    SmtpConnection *conn = get_connection(c);
    if (!conn)
        return OK;
    conn->unpark();
    if (conn->finished())
        return OK;
    // The MPM gave up waiting for a parked session (its Timeout).
    try {
        if (!conn->session().closing())
            conn->timed_out();
        conn->finish();
    } catch (...) {
    }
    return OK;
}

} // namespace esmtp
