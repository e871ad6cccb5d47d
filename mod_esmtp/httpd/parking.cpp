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

// Sessions waiting for their client. `stopping` is written under the
// mutex, so that a session either registers before the stop (and is woken
// by it) or sees the stop and does not wait.
struct Waiting {
    std::mutex mutex;
    std::set<apr_socket_t *> sockets;
    std::atomic<bool> stopping{false};
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

void child_stopping(apr_pool_t *, int)
{
    guarded(
        {"child_stopping", nullptr, ap_server_conf},
        [] {
            Waiting &w = waiting();
            w.stopping.store(true, std::memory_order_release);
            // prefork and worker may run this hook from a signal handler
            // (clean_child_exit), possibly on the thread that holds the
            // mutex: never block on it there. Holders keep it for
            // microseconds, so a few tries succeed in a threaded child; a
            // child that exits from a signal handler closes every socket
            // anyway.
            std::unique_lock<std::mutex> lock(w.mutex, std::defer_lock);
            for (int i = 0; i < 100 && !lock.try_lock(); ++i)
                apr_sleep(1000);
            if (!lock.owns_lock())
                return;
            // The sessions see EOF (the client may still be there) and, when
            // idle, end with 421; the MPM hands parked ones back as readable.
            for (apr_socket_t *s : w.sockets)
                apr_socket_shutdown(s, APR_SHUTDOWN_READ);
            w.sockets.clear();
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
