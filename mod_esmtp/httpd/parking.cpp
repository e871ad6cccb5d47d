#include "httpd/parking.hpp"

#include "httpd/guard.hpp"

#include <ap_mpm.h>
#include <http_core.h>
#include <http_main.h>
#include <apr_time.h>
#include <httpd.h>

#include <atomic>
#include <mutex>
#include <set>

namespace esmtp
{

namespace
{

bool g_can_park = false;
// One thread per child (prefork): its hard stop runs child_stopping and the
// pool cleanups in the SIGTERM handler. The threaded MPMs run them on a
// thread (signal_threads, clean_child_exit after the workers are joined).
bool g_single_threaded = false;

// Sessions waiting for their client. `stopping` is written under the
// mutex, so that a session either registers before the stop (and is woken
// by it) or sees the stop and does not wait.
//
// `exiting` (a hard stop of a single-threaded child began) and `waking` (a
// graceful stop walks `sockets`) let an abandoned registration go without
// the mutex: prefork's SIGTERM handler destroys the pool of the session in
// progress (hooks.cpp), and the signal may have interrupted this very
// process inside begin() or end() with the mutex held. After a hard
// stop nothing walks `sockets` again, so a stale entry is never used; the
// Dekker pair (seq_cst) makes sure a walk already under way is waited for.
struct Waiting {
    std::mutex mutex;
    std::set<apr_socket_t *> sockets;
    std::atomic<bool> stopping{false};
    std::atomic<bool> exiting{false};
    std::atomic<bool> waking{false};
};

Waiting &waiting()
{
    static Waiting w;
    return w;
}

} // namespace

void parking_child_init(server_rec *)
{
    g_can_park = false;
    int threaded = AP_MPMQ_NOT_SUPPORTED;
    g_single_threaded =
        ap_mpm_query(AP_MPMQ_IS_THREADED, &threaded) == APR_SUCCESS && threaded == AP_MPMQ_NOT_SUPPORTED;
#if ESMTP_HAVE_PARKING
    int can_waitio = 0;
    g_can_park = ap_mpm_query(AP_MPMQ_CAN_WAITIO, &can_waitio) == APR_SUCCESS && can_waitio;
#endif
}

bool can_park()
{
    return g_can_park;
}

bool child_is_stopping()
{
    if (waiting().stopping.load(std::memory_order_acquire))
        return true;
    // prefork runs child_stopping only on its way out (not on a graceful
    // restart): ask the MPM too.
    int state = AP_MPMQ_RUNNING;
    return ap_mpm_query(AP_MPMQ_MPM_STATE, &state) == APR_SUCCESS && state == AP_MPMQ_STOPPING;
}

void child_stopping(apr_pool_t *, int graceful)
{
    guarded(
        {"child_stopping", nullptr, ap_server_conf},
        [graceful] {
            Waiting &w = waiting();
            w.stopping.store(true, std::memory_order_release);
            if (!graceful && g_single_threaded)
                w.exiting.store(true);
            // On a hard stop the MPM closes the connections itself (event's
            // listener leaves, busy workers' sockets are closed), and this
            // hook may run in a signal handler (prefork's and worker's
            // clean_child_exit): set the flag only. Waking parked sessions
            // there would also hand event's listener a burst of readable
            // sockets as it leaves: httpd 2.4's ap_queue_info_wait_for_idler()
            // does not look at `terminated` before it waits, so a listener
            // still dispatching them when the workers exit waits for an idle
            // worker that never comes, until join_workers() gives up after
            // 10 x 500 ms (AH00475): a child outliving SIGTERM by 5 s. A
            // burst of clients closing at once can hit that race by itself
            // (httpd's; about 1 stop in 10 here, with or without this module).
            if (!graceful)
                return;
            // Graceful: the sessions see EOF (the client may still be there)
            // and, when idle, end with 421; the MPM hands parked ones back as
            // readable.
            std::lock_guard<std::mutex> lock(w.mutex);
            w.waking.store(true);
            if (!w.exiting.load()) { // else entries may be stale (see Waiting)
                for (apr_socket_t *s : w.sockets)
                    apr_socket_shutdown(s, APR_SHUTDOWN_READ);
                ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, ap_server_conf,
                             "esmtp: child stopping (graceful), %" APR_SIZE_T_FMT " waiting session(s) woken",
                             w.sockets.size());
                w.sockets.clear();
            }
            w.waking.store(false);
        },
        [](const char *) {});
}

bool WaitRegistration::begin(conn_rec *c)
{
    end();
    apr_socket_t *s = ap_get_conn_socket(c);
    if (!s)
        return !child_is_stopping();
    Waiting &w = waiting();
    std::lock_guard<std::mutex> lock(w.mutex);
    if (w.stopping.load(std::memory_order_relaxed))
        return false;
    w.sockets.insert(s);
    sock_ = s;
    return true;
}

bool WaitRegistration::end()
{
    if (!sock_)
        return false;
    Waiting &w = waiting();
    std::lock_guard<std::mutex> lock(w.mutex);
    w.sockets.erase(sock_);
    sock_ = nullptr;
    return w.stopping.load(std::memory_order_relaxed);
}

bool child_is_exiting()
{
    return waiting().exiting.load();
}

void WaitRegistration::abandon()
{
    Waiting &w = waiting();
    if (sock_ && w.exiting.load() && !w.waking.load()) {
        sock_ = nullptr; // no mutex: see Waiting
        return;
    }
    end();
}

void park_with_mpm(conn_rec *c)
{
#if ESMTP_HAVE_PARKING
    c->cs->state = CONN_STATE_ASYNC_WAITIO;
    c->cs->sense = CONN_SENSE_WANT_READ;
#else
    (void)c;
#endif
}

} // namespace esmtp
