#include "httpd/wake_timer.hpp"

#include "httpd/guard.hpp"

#include <http_core.h>
#include <http_log.h>
#include <http_main.h>
#include <httpd.h>
#include <apr_network_io.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <thread>
#include <unordered_map>

namespace esmtp
{

namespace
{

struct Entry {
    apr_socket_t *sock = nullptr;
    apr_time_t deadline = 0; // 0: not parked, nothing to wake
    apr_time_t timer_at = 0; // the earliest wake-up pending; 0: none
    bool fired = false;
};

struct Registry {
    std::mutex mutex;
    std::condition_variable cv;
    std::unordered_map<std::uint64_t, Entry> entries;
    std::multimap<apr_time_t, std::uint64_t> due; // wake-ups, earliest first
    std::uint64_t next_id = 0;
    bool running = false;
    bool stop = false;
    std::thread thread;
    // A child that exits without destroying pchild (its cleanup joins the
    // thread) must not terminate in the static destructor.
    ~Registry()
    {
        if (thread.joinable())
            thread.detach();
    }
};

Registry &registry()
{
    static Registry r;
    return r;
}

// Under the mutex.
void schedule(Registry &r, std::uint64_t id, Entry &e)
{
    if (e.timer_at && e.timer_at <= e.deadline)
        return; // an earlier wake-up schedules the rest
    bool earliest = r.due.empty() || e.deadline < r.due.begin()->first;
    r.due.emplace(e.deadline, id);
    e.timer_at = e.deadline;
    if (earliest)
        r.cv.notify_one();
}

// Under the mutex: a wake-up for `id` is due.
void fire(Registry &r, std::uint64_t id, apr_time_t now)
{
    auto it = r.entries.find(id);
    if (it == r.entries.end())
        return; // the connection is gone
    Entry &e = it->second;
    if (e.timer_at && e.timer_at <= now)
        e.timer_at = 0; // this one
    if (!e.deadline)
        return; // back on a thread: the session checks its deadline itself
    if (now < e.deadline) {
        schedule(r, id, e);
        return;
    }
    e.deadline = 0;
    e.fired = true;
    // The MPM sees the socket readable (EOF) and hands the connection back.
    apr_socket_shutdown(e.sock, APR_SHUTDOWN_READ);
}

void timer_thread()
{
    Registry &r = registry();
    std::unique_lock<std::mutex> lock(r.mutex);
    while (!r.stop) {
        apr_time_t now = apr_time_now();
        while (!r.due.empty() && r.due.begin()->first <= now) {
            std::uint64_t id = r.due.begin()->second;
            r.due.erase(r.due.begin());
            fire(r, id, now);
        }
        if (r.due.empty())
            r.cv.wait(lock);
        else
            r.cv.wait_for(lock, std::chrono::microseconds(r.due.begin()->first - now));
    }
}

apr_status_t stop_timer_thread(void *)
{
    Registry &r = registry();
    {
        std::lock_guard<std::mutex> lock(r.mutex);
        if (!r.running)
            return APR_SUCCESS;
        r.stop = true;
        r.running = false;
        r.cv.notify_one();
    }
    if (r.thread.joinable())
        r.thread.join();
    return APR_SUCCESS;
}

} // namespace

void wake_timer_child_init(apr_pool_t *pchild)
{
    Registry &r = registry();
    std::lock_guard<std::mutex> lock(r.mutex);
    if (r.running)
        return;
    try {
        r.stop = false;
        r.thread = std::thread(timer_thread);
        r.running = true;
        apr_pool_cleanup_register(pchild, nullptr, stop_timer_thread, apr_pool_cleanup_null);
    } catch (const std::system_error &e) {
        // no thread: sessions with a deadline before the MPM's Timeout wait
        // in their threads instead
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, ap_server_conf, "esmtp: timer thread not started: %s", e.what());
    }
}

bool WakeTimer::arm(conn_rec *c, apr_time_t deadline)
{
    // The MPM's own wait ends first (and its pre_close_connection says 421).
    if (deadline >= apr_time_now() + ap_server_conf->timeout) {
        disarm();
        return true;
    }
    apr_socket_t *sock = ap_get_conn_socket(c);
    if (!sock)
        return false;
    Registry &r = registry();
    std::lock_guard<std::mutex> lock(r.mutex);
    if (!r.running)
        return false;
    if (!id_)
        id_ = ++r.next_id;
    Entry &e = r.entries[id_];
    e.sock = sock;
    e.deadline = deadline;
    e.fired = false;
    schedule(r, id_, e);
    return true;
}

bool WakeTimer::disarm()
{
    if (!id_)
        return false;
    Registry &r = registry();
    std::lock_guard<std::mutex> lock(r.mutex);
    auto it = r.entries.find(id_);
    if (it == r.entries.end())
        return false;
    bool fired = it->second.fired;
    it->second.fired = false;
    it->second.deadline = 0;
    return fired;
}

void WakeTimer::cancel()
{
    if (!id_)
        return;
    Registry &r = registry();
    std::lock_guard<std::mutex> lock(r.mutex);
    r.entries.erase(id_);
    id_ = 0;
}

} // namespace esmtp
