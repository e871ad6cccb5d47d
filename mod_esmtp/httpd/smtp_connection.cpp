#include "httpd/smtp_connection.hpp"

#include "httpd/bulkhead.hpp"
#include "httpd/gated_handler.hpp"
#include "httpd/state_cache.hpp"
#include "milter/handler.hpp"

#include <http_connection.h>
#include <http_core.h>
#include <http_log.h>
#include <http_main.h>
#include <http_ssl.h>
#include <apr_poll.h>
#include <util_filter.h>
#include <scoreboard.h>

#include <algorithm>
#include <ctime>

namespace esmtp
{

namespace
{
// Output is passed on (without flush) once this much is pending.
constexpr std::size_t kWriteHighWater = 64 * 1024;
// How long an async session waits in its thread for the client's next
// command before it is parked with the MPM: short, so that a burst of
// sessions cannot occupy the workers.
constexpr apr_interval_time_t kLingerBeforePark = 1000; // microseconds
// When the child is stopping, an idle session waits this long for a prompt
// command (QUIT gets its 221), then ends with 421.
constexpr apr_interval_time_t kStopGrace = apr_time_from_msec(200);
// ESMTPMinDataRate is enforced once a transfer has run this long.
constexpr apr_interval_time_t kDataRateGrace = apr_time_from_sec(10);
// A session waiting in a thread also wakes this often: on a hard stop the
// threaded MPMs close the sockets of busy workers before child_stopping
// runs (a poll() on a closed descriptor is not woken, and the shutdown of
// child_stopping finds it closed), and prefork runs no child_stopping on a
// graceful restart.
constexpr apr_interval_time_t kStopCheckInterval = apr_time_from_sec(1);
} // namespace

SmtpConnection::SmtpConnection(conn_rec *c, const ServerConfig *cfg, ConnectionInfo ci, ClientSlot client,
                               bool implicit_tls)
    : c_(c), cfg_(cfg), io_(c), txlog_(c, cfg->log_file), client_(std::move(client)),
      stats_(c, cfg, implicit_tls || ci.tls), auth_(c, cfg), screen_(c, cfg, stats_), ci_(std::move(ci))
{
    implicit_tls_ = implicit_tls;
    if (implicit_tls_)
        tls_deadline_ = apr_time_now() + apr_time_from_sec(cfg->session->tls_timeout);
}

SmtpConnection::~SmtpConnection()
{
    if (!finished_)
        abandon();
}

bool SmtpConnection::open_session()
{
    std::unique_ptr<Handler> handler;
    try {
        handler = (*cfg_->factory)->create();
    } catch (const std::exception &e) {
        ap_log_cerror(APLOG_MARK, APLOG_ERR, 0, c_, "esmtp: handler %s could not be created: %s", cfg_->handler_name,
                      e.what());
    } catch (...) {
        ap_log_cerror(APLOG_MARK, APLOG_ERR, 0, c_, "esmtp: handler %s could not be created", cfg_->handler_name);
    }
    if (handler && cfg_->session->milters) {
        try {
            handler = milter::wrap(std::move(handler), cfg_->session->milters);
        } catch (...) {
            handler.reset();
        }
    }
    // Outermost: the milters' waits count against ESMTPMaxWorkers too.
    if (handler) {
        try {
            handler = gate_handler(std::move(handler));
        } catch (...) {
            handler.reset();
        }
    }
    if (!handler) {
        stats_.rejected(RejectCause::handler_error, "handler could not be created");
        std::string refusal = "421 4.3.0 " + cfg_->session->hostname + " Service temporarily unavailable\r\n";
        io_.send(refusal, true);
        return false;
    }
    session_ = std::make_unique<Session>(*cfg_->session, std::move(ci_), std::move(handler), &txlog_);
    if (client_.tracking())
        session_->set_client_limiter(&client_);
    session_->set_observer(&stats_);
    session_->set_authenticator(&auth_);
    if (screen_.active())
        session_->set_screen(&screen_);
    bool greeted = greet();
    io_.send(session_->output(), true);
    return greeted;
}

apr_interval_time_t SmtpConnection::phase_timeout() const
{
    const SessionConfig &sc = *cfg_->session;
    if (session_ && session_->tls_requested())
        return apr_time_from_sec(sc.tls_timeout);
    return apr_time_from_sec(session_ && in_data() ? sc.data_timeout : sc.command_timeout);
}

bool SmtpConnection::in_data() const
{
    return session_->phase() == Session::Phase::data || session_->phase() == Session::Phase::bdat;
}

// The client is between transactions: ending with 421 loses nothing.
bool SmtpConnection::idle() const
{
    return session_->phase() == Session::Phase::command && !session_->has_partial_input() &&
           !session_->in_transaction();
}

void SmtpConnection::timed_out()
{
    session_->shutdown(Reply(421, cfg_->session->hostname + " Error: timeout exceeded", "4.4.2", true));
    session_->log(txlog_session, "timeout exceeded");
    session_->report(RejectCause::timeout, in_data() ? "timeout or too slow in data" : "timeout");
    ap_log_cerror(APLOG_MARK, APLOG_DEBUG, 0, c_, "esmtp: client timed out");
}

void SmtpConnection::failed()
{
    session_->shutdown(Reply(421, cfg_->session->hostname + " Error: internal error", "4.3.0", true));
}

void SmtpConnection::stopping()
{
    session_->shutdown(Reply(421, cfg_->session->hostname + " Server shutting down", "4.3.2", true));
    ap_log_cerror(APLOG_MARK, APLOG_DEBUG, 0, c_, "esmtp: httpd is stopping, session closed");
}

// Whether the client sent something within `wait` (0: only what is there
// already). `rv`: the read's status (EOF, an error) when it did not.
bool SmtpConnection::client_talks(apr_interval_time_t wait, apr_status_t &rv)
{
    apr_bucket_brigade *bb = apr_brigade_create(c_->pool, c_->bucket_alloc);
    apr_socket_t *sock = ap_get_conn_socket(c_);
    if (wait > 0 && sock) {
        apr_socket_timeout_set(sock, wait);
        rv = ap_get_brigade(c_->input_filters, bb, AP_MODE_SPECULATIVE, APR_BLOCK_READ, 1);
        apr_socket_timeout_set(sock, apr_time_from_sec(cfg_->session->command_timeout));
    } else {
        rv = ap_get_brigade(c_->input_filters, bb, AP_MODE_SPECULATIVE, APR_NONBLOCK_READ, 1);
    }
    bool talked = rv == APR_SUCCESS && !APR_BRIGADE_EMPTY(bb) && !APR_BUCKET_IS_EOS(APR_BRIGADE_FIRST(bb));
    apr_brigade_destroy(bb);
    return talked;
}

// client_talks() in a pause before the greeting that also takes the DNSBL
// answers in (postscreen asks the lists during its pregreet pause).
bool SmtpConnection::client_talks_in_pause(apr_interval_time_t wait, apr_status_t &rv)
{
    apr_time_t until = apr_time_now() + wait;
    apr_socket_t *sock = ap_get_conn_socket(c_);
    apr_os_sock_t fd = -1;
    if (wait > 0 && sock && apr_os_sock_get(&fd, sock) == APR_SUCCESS)
        while (apr_time_now() < until && screen_.lookups_running())
            if (screen_.wait_with_lookups(until, fd))
                break; // the client's turn: client_talks() reads what it is
    return client_talks(std::max<apr_interval_time_t>(until - apr_time_now(), 0), rv);
}

bool SmtpConnection::greet()
{
    const SessionConfig &sc = *cfg_->session;
    apr_status_t rv;
    // ESMTPGreetingDelay and ESMTPPregreet wait in this thread, on every
    // MPM (README, Security; Screening clients): a client that talks first
    // does not wait for the server and is refused. Not parked on the event
    // MPM: the wake timer ends a parked wait by shutting the read side
    // (the session could not go on), and the MPM's own timed callbacks run
    // seconds late (wake_timer.hpp).
    WorkerHold hold;
    if (sc.greeting_delay_ms || (sc.pregreet && sc.pregreet_ms)) {
        // The wait holds this worker: beyond ESMTPMaxWorkers the session
        // is refused at once instead.
        hold = WorkerHold::try_take();
        if (!hold) {
            session_->log(txlog_session, "greeting delay refused: ESMTPMaxWorkers reached (server busy)");
            session_->shutdown(Reply(421, sc.hostname + " Server busy, try again later", "4.3.2", true));
            return false;
        }
    }
    if (sc.greeting_delay_ms)
        screen_.start_lookups(); // answered during the pauses
    if (client_talks_in_pause(apr_time_from_msec(sc.greeting_delay_ms), rv)) {
        session_->log(txlog_session, "client talked before the greeting");
        session_->report(RejectCause::early_talker, "client talked before the greeting");
        session_->shutdown(Reply(554, sc.hostname + " Error: SMTP protocol synchronization", "5.5.0", true));
        return false;
    }
    // remember=: a client's last result, in ESMTPStateCache
    const bool remember = sc.pregreet && cfg_->pregreet_remember > 0 && state_cache_ready();
    const std::string remember_key = std::string("esmtp:pregreet:") + c_->client_ip;
    std::string remembered;
    if (remember && rv != APR_EOF && state_get(c_, remember_key, remembered, "pregreet") == CacheResult::found &&
        remembered == "fail") {
        session_->log(txlog_session, "pregreet: refused, talked before the end of the greeting recently");
        session_->report(RejectCause::pregreet, "talked before the end of the greeting (remembered)");
        session_->shutdown(
            Reply(554, sc.hostname + " Protocol error: talked before the end of the greeting", "5.5.1", true));
        return false;
    }
    if (sc.pregreet && remembered != "pass" && rv != APR_EOF &&
        (rv == APR_SUCCESS || APR_STATUS_IS_EAGAIN(rv) || APR_STATUS_IS_TIMEUP(rv))) {
        // postscreen's pregreet test: the teaser invites a bot to talk
        // before the greeting's last line; an SMTP client waits for it.
        screen_.start_lookups(); // answered during the pause
        if (sc.pregreet_teaser) {
            std::string teaser =
                "220-" + (sc.pregreet_text.empty() ? sc.hostname + " ESMTP" : sc.pregreet_text) + "\r\n";
            if (!io_.send(teaser, true)) {
                c_->aborted = 1;
                return false;
            }
        }
        if (client_talks_in_pause(apr_time_from_msec(sc.pregreet_ms), rv)) {
            session_->log(txlog_session, "pregreet: client talked before the end of the greeting");
            session_->report(RejectCause::pregreet, "talked before the end of the greeting");
            ap_log_cerror(APLOG_MARK, APLOG_INFO, 0, c_,
                          "esmtp: pregreet test failed: client %s talked before the end of the greeting",
                          c_->client_ip);
            if (remember)
                state_put(c_, remember_key, "fail", apr_time_now() + apr_time_from_sec(cfg_->pregreet_remember),
                          "pregreet");
            session_->shutdown(
                Reply(554, sc.hostname + " Protocol error: talked before the end of the greeting", "5.5.1", true));
            return false;
        }
        if (remember && (rv == APR_SUCCESS || APR_STATUS_IS_EAGAIN(rv) || APR_STATUS_IS_TIMEUP(rv)))
            state_put(c_, remember_key, "pass", apr_time_now() + apr_time_from_sec(cfg_->pregreet_remember),
                      "pregreet");
    }
    if (rv == APR_EOF || (rv != APR_SUCCESS && !APR_STATUS_IS_EAGAIN(rv) && !APR_STATUS_IS_TIMEUP(rv))) {
        c_->aborted = 1;
        return false;
    }
    hold.release(); // the handler's CONNECT takes its own (gated handler)
    session_->start();
    return true;
}

bool SmtpConnection::unparked()
{
    bool was = parked_;
    parked_ = false;
    stats_.parked(false);
    woken_by_stop_ = wait_.end();
    timer_fired_ = timer_.disarm();
    return was;
}

void SmtpConnection::closed_by_mpm()
{
    if (finished_)
        return;
    bool parked = unparked();
    if (handshaking()) {
        tls_failed(parked ? "timeout" : "aborted"); // nothing can be sent mid-handshake
    } else if (session_ && !session_->closing()) {
        if (parked)
            timed_out();
        else
            failed();
    }
    finish();
}

bool SmtpConnection::park_until(apr_time_t deadline, bool wake_on_stop)
{
    // Registering fails when the stop has begun: the caller loops and ends.
    if (wake_on_stop && !wait_.begin(c_))
        return false;
    if (timer_.arm(c_, deadline))
        return true;
    wait_.end();
    return false;
}

bool SmtpConnection::run(bool may_park)
{
    if (!session_) {
        if (implicit_tls_) {
            TlsStep st = handshake(may_park);
            if (st == TlsStep::wait)
                return false;
            if (st == TlsStep::closed)
                return true;
        }
        if (!open_session())
            return true;
    } else if (timer_fired_ && !session_->tls_requested()) {
        // The timer ended the wait at the deadline (the read side is shut
        // down): whatever came meanwhile came too late.
        timer_fired_ = false;
        timed_out();
        return true;
    }
    apr_socket_t *sock = ap_get_conn_socket(c_);
    while (!session_->closing() && !c_->aborted) {
        if (session_->tls_requested()) {
            TlsStep st = handshaking_ ? handshake(may_park) : start_tls();
            if (st == TlsStep::done && handshaking_)
                st = handshake(may_park);
            if (st == TlsStep::wait)
                return false;
            if (st == TlsStep::closed)
                return true;
            continue;
        }
        // Take what is already there (pipelined commands) without waiting;
        // flush the replies only once the client has nothing more queued.
        apr_status_t rv;
        ReadResult r = io_.read(*session_, APR_NONBLOCK_READ, rv);
        if (r == ReadResult::fed) {
            woken_by_stop_ = false;
            progress();
            if (session_->output().size() >= kWriteHighWater && !io_.send(session_->output(), false))
                return true;
            continue;
        }
        if (r != ReadResult::again) {
            input_ended(r, rv, woken_by_stop_);
            return true;
        }
        woken_by_stop_ = false;
        apr_interval_time_t timeout = phase_timeout();
        if (sock)
            apr_socket_timeout_set(sock, timeout);
        if (!io_.send(session_->output(), true) || session_->closing())
            return true;
        apr_time_t now = apr_time_now();
        if (deadline_ == 0)
            deadline_ = now + timeout; // RFC 5321 4.5.3.2, from the last command or data
        if (now >= deadline_ || too_slow(now)) {
            timed_out();
            return true;
        }
        bool stop = child_is_stopping();
        if (stop && idle()) {
            // A child that is going away must not wait on us: a short grace
            // for a prompt command, then 421.
            if (sock)
                apr_socket_timeout_set(sock, kStopGrace);
            r = io_.read(*session_, APR_BLOCK_READ, rv);
            if (sock)
                apr_socket_timeout_set(sock, timeout);
            if (r == ReadResult::fed) {
                progress();
                continue;
            }
            // EOF here is usually child_stopping's shutdown of the read side
            // (the client may still be there): 421 either way.
            if (r == ReadResult::timeout || r == ReadResult::again || r == ReadResult::eof)
                stopping();
            else
                input_ended(r, rv, false);
            return true;
        }
        // A parked session in a stopping child would wait for the MPM's
        // Timeout: wait here instead.
        if (may_park && !stop) {
            // A client in a conversation answers within moments (tens of
            // microseconds on a LAN): wait that long here before parking,
            // which saves the MPM round trip (epoll, listener, another
            // worker) on every command of a lock-step client.
            if (sock) {
                apr_socket_timeout_set(sock, kLingerBeforePark);
                r = io_.read(*session_, APR_BLOCK_READ, rv);
                apr_socket_timeout_set(sock, timeout);
                if (r == ReadResult::fed) {
                    progress();
                    continue;
                }
                if (r != ReadResult::timeout && r != ReadResult::again) {
                    input_ended(r, rv, false);
                    return true;
                }
            }
            // An idle session is woken by child_stopping; the phase's
            // deadline (data=, ESMTPMinDataRate, a command= shorter than the
            // MPM's Timeout) by the timer.
            if (park_until(wake_time(), idle()))
                return false;
            if (!idle() || !child_is_stopping())
                may_park = false; // no timer thread: wait in this thread
            continue;
        }
        stats_.waiting();
        bool registered = idle() && wait_.begin(c_);
        if (idle() && !registered)
            continue; // the stop has begun: the branch above ends the session
        // Wait in this thread until input, the deadline or the moment the
        // transfer becomes too slow; child_stopping ends the wait early.
        apr_interval_time_t left = std::clamp<apr_interval_time_t>(wake_time() - now, 1000, kStopCheckInterval);
        if (sock)
            apr_socket_timeout_set(sock, left);
        r = io_.read(*session_, APR_BLOCK_READ, rv);
        bool woken = wait_.end();
        if (sock)
            apr_socket_timeout_set(sock, timeout);
        if (r == ReadResult::fed) {
            progress();
            continue;
        }
        if (r == ReadResult::timeout)
            continue; // the checks above decide: deadline, rate, stop
        input_ended(r, rv, woken);
        return true;
    }
    return true;
}

// STARTTLS was answered: drop what the client sent after it in plaintext
// (CVE-2011-0411: core's buffer and the socket, read without waiting),
// send the 220, then link mod_ssl's filters back for the handshake.
SmtpConnection::TlsStep SmtpConnection::start_tls()
{
    std::size_t drained = 0;
    apr_bucket_brigade *bb = apr_brigade_create(c_->pool, c_->bucket_alloc);
    // bounded: a client still streaming plaintext fails the handshake anyway
    for (int i = 0; i < 64; ++i) {
        apr_status_t rv = ap_get_brigade(c_->input_filters, bb, AP_MODE_READBYTES, APR_NONBLOCK_READ, 64 * 1024);
        apr_off_t len = 0;
        if (rv == APR_SUCCESS)
            apr_brigade_length(bb, 1, &len);
        apr_brigade_cleanup(bb);
        if (rv != APR_SUCCESS || len <= 0)
            break;
        drained += static_cast<std::size_t>(len);
    }
    apr_brigade_destroy(bb);
    session_->plaintext_discarded(drained);
    if (!io_.send(session_->output(), true) || !tls_.detached()) {
        session_->tls_failed(tls_.detached() ? "client gone" : "mod_ssl's filters are missing");
        c_->aborted = 1;
        return TlsStep::closed;
    }
    tls_.attach(c_);
    handshaking_ = true;
    tls_deadline_ = apr_time_now() + apr_time_from_sec(cfg_->session->tls_timeout);
    return TlsStep::done;
}

SmtpConnection::TlsStep SmtpConnection::handshake(bool may_park)
{
    const char *why = "";
    TlsStep st = tls_handshake(may_park, why);
    if (st == TlsStep::closed)
        tls_failed(why);
    else if (st == TlsStep::done)
        tls_done();
    return st;
}

// Drive mod_ssl's handshake without blocking, so that the whole handshake
// has one deadline (ESMTPTimeout tls=) and, on the event MPM, a client that
// goes silent in it holds no thread. (The one place a TLS handshake runs:
// implicit TLS and STARTTLS.)
SmtpConnection::TlsStep SmtpConnection::tls_handshake(bool may_park, const char *&why)
{
    apr_socket_t *sock = ap_get_conn_socket(c_);
    // one brigade for every attempt: a client that trickles its handshake
    // wakes the session often, and c->pool never gives memory back
    if (!tls_bb_)
        tls_bb_ = apr_brigade_create(c_->pool, c_->bucket_alloc);
    bool lingered = false;
    // The handshake's steps (and its waits in this thread) count against
    // ESMTPMaxWorkers; beyond the cap the connection closes (nothing can be
    // sent in plaintext once TLS is under way).
    WorkerHold hold = WorkerHold::try_take();
    if (!hold) {
        why = "server busy (ESMTPMaxWorkers reached)";
        return TlsStep::closed;
    }
    for (;;) {
        // The deadline first: a wait the timer ended finds the read side
        // shut down.
        if (timer_fired_ || apr_time_now() >= tls_deadline_) {
            timer_fired_ = false;
            why = "timeout";
            return TlsStep::closed;
        }
        apr_status_t rv = ap_get_brigade(c_->input_filters, tls_bb_, AP_MODE_INIT, APR_NONBLOCK_READ, 0);
        apr_brigade_cleanup(tls_bb_);
        if (rv == APR_SUCCESS) {
            // mod_ssl may have given up on TLS (bytes that look like HTTP)
            // and passed the connection through: that is no success.
            if (c_->aborted || !ap_ssl_conn_is_ssl(c_)) {
                why = "not a TLS handshake";
                return TlsStep::closed;
            }
            return TlsStep::done;
        }
        if (!APR_STATUS_IS_EAGAIN(rv) || c_->aborted) {
            why = "handshake error (see mod_ssl's log at LogLevel ssl:info)";
            return TlsStep::closed;
        }
        apr_time_t now = apr_time_now();
        if (now >= tls_deadline_)
            continue; // the check above ends it
        if (child_is_stopping()) {
            why = "httpd is stopping";
            return TlsStep::closed;
        }
        if (!sock) {
            why = "no socket";
            return TlsStep::closed;
        }
        apr_interval_time_t wait = std::clamp<apr_interval_time_t>(tls_deadline_ - now, 1000, kStopCheckInterval);
        if (may_park && !lingered) {
            // the client's next flight usually comes within moments
            wait = std::min(wait, kLingerBeforePark);
            lingered = true;
        } else if (may_park) {
            // Parked like an idle session, and woken like one by a graceful
            // restart (child_stopping shuts the read side: the next read
            // fails and the handshake ends), or by the timer at tls=.
            if (park_until(tls_deadline_, true))
                return TlsStep::wait;
            if (child_is_stopping()) {
                why = "httpd is stopping";
                return TlsStep::closed;
            }
            may_park = false; // no timer thread: wait in this thread
        }
        apr_pollfd_t pfd{};
        pfd.p = c_->pool;
        pfd.desc_type = APR_POLL_SOCKET;
        pfd.reqevents = APR_POLLIN;
        pfd.desc.s = sock;
        apr_int32_t n = 0;
        apr_poll(&pfd, 1, &n, wait);
    }
}

void SmtpConnection::tls_done()
{
    handshaking_ = false;
    if (!session_) {
        // implicit TLS: the session starts inside it
        implicit_tls_ = false;
        ci_.tls = true;
        ci_.tls_info = tls_info(c_);
        return;
    }
    session_->tls_started(tls_info(c_));
    deadline_ = 0;
    commands_ = session_->commands_seen();
}

void SmtpConnection::tls_failed(const char *why)
{
    ap_log_cerror(APLOG_MARK, APLOG_DEBUG, 0, c_, "esmtp: TLS handshake %s failed: %s",
                  session_ ? "after STARTTLS" : "(implicit TLS)", why);
    handshaking_ = false;
    c_->aborted = 1; // nothing more is sent, not even in plaintext
    bool timeout = !strcmp(why, "timeout");
    if (session_) {
        session_->tls_failed(why);
        if (timeout)
            session_->report(RejectCause::timeout, "TLS handshake timeout");
        return;
    }
    implicit_tls_ = false;
    if (timeout)
        stats_.rejected(RejectCause::timeout, "TLS handshake timeout");
    if (cfg_->session->log_level >= txlog_session)
        txlog_.write(txlog_session,
                     format_txlog(std::time(nullptr), "",
                                  std::string("TLS handshake failed: ") + why + " (implicit TLS)", ci_.client_address));
}

void SmtpConnection::input_ended(ReadResult r, apr_status_t rv, bool woken_by_stop)
{

    if (r == ReadResult::error)
        ap_log_cerror(APLOG_MARK, APLOG_DEBUG, rv, c_, "esmtp: read failed");
    else if (r == ReadResult::eof && woken_by_stop && idle())
        stopping(); // child_stopping shut the read side: the client is still there
}

// Input arrived. The phase timeout restarts only when it moved the session
// on (a complete command, or message data): a client that trickles a
// command byte by byte does not keep its session forever.
void SmtpConnection::progress()
{
    if (in_data()) {
        if (data_start_ == 0)
            data_start_ = apr_time_now();
        deadline_ = 0;
        return;
    }
    data_start_ = 0;
    if (session_->commands_seen() != commands_) {
        commands_ = session_->commands_seen();
        deadline_ = 0;
    }
}

// The octets of the current DATA/BDAT transfer that ESMTPMinDataRate
// measures: a refused BDAT chunk being swallowed counts too.
std::uint64_t SmtpConnection::transfer_octets() const
{
    return session_->transfer_octets();
}

// ESMTPMinDataRate: after a grace period, the transfer so far must average
// the minimum rate.
bool SmtpConnection::too_slow(apr_time_t now) const
{
    unsigned rate = cfg_->session->min_data_rate;
    if (!rate || !in_data() || data_start_ == 0)
        return false;
    apr_interval_time_t elapsed = now - data_start_;
    if (elapsed < kDataRateGrace)
        return false;
    double expected = static_cast<double>(rate) * static_cast<double>(elapsed) / APR_USEC_PER_SEC;
    return static_cast<double>(transfer_octets()) < expected;
}

// When the wait must end at the latest: the phase deadline, or the moment
// the transfer so far falls below ESMTPMinDataRate.
apr_time_t SmtpConnection::wake_time() const
{
    apr_time_t t = deadline_;
    unsigned rate = cfg_->session->min_data_rate;
    if (rate && in_data() && data_start_) {
        double needed = static_cast<double>(transfer_octets()) * APR_USEC_PER_SEC / rate;
        apr_interval_time_t after =
            std::max<apr_interval_time_t>(kDataRateGrace, needed > 1e15 ? static_cast<apr_interval_time_t>(1e15)
                                                                        : static_cast<apr_interval_time_t>(needed));
        t = std::min(t, data_start_ + after + 1);
    }
    return t;
}

void SmtpConnection::finish()
{
    if (finished_)
        return;
    finished_ = true;
    wait_.end();
    timer_.cancel(); // before the MPM closes the socket
    if (session_) {
        io_.send(session_->output(), true);
        session_->end();  // DISCONNECT
        session_.reset(); // the handler's destructor runs here, in a hook
    }
    client_.release();
}

void SmtpConnection::abandon()
{
    // When the child is exiting this may run in prefork's SIGTERM handler
    // (hooks.cpp): only async-signal-safe steps then, no lock, no
    // allocation, no log (ap_log_* formats the time, which locks).
    const bool exiting = child_is_exiting();
    finished_ = true;
    wait_.abandon();
    // Only the event MPM has wake timers (prefork never registers one, so
    // no lock is taken there).
    timer_.cancel();
    // The client's session count goes back on every path (lock-free).
    client_.release();
    if (!session_)
        return;
    // Deliberately leaked: destroying the session would run the handler's
    // DISCONNECT and destructor (an lmtp QUIT can block) in a pool cleanup.
    if (!exiting)
        ap_log_cerror(APLOG_MARK, APLOG_WARNING, 0, c_,
                      "esmtp: connection torn down by the MPM without pre_close_connection; the session's handler "
                      "is abandoned without DISCONNECT");
    (void)session_.release();
}

} // namespace esmtp
