#include "httpd/bulkhead.hpp"

#include "httpd/config.hpp"

#include <ap_mpm.h>
#include <apr_shm.h>
#include <http_log.h>
#include <unixd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <unistd.h>

namespace esmtp
{

namespace
{

constexpr const char *kUserdataKey = "esmtp_worker_cap";

// This generation's view (post_config, inherited by the children) and this
// process's row (child_init; -1: counted in the total only).
WorkerCap g_cap;
int g_row = -1;

bool alive(std::int64_t pid)
{
    return pid > 0 && (kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM);
}

int mpm_value(int what, int fallback)
{
    int v = 0;
    return ap_mpm_query(what, &v) == APR_SUCCESS && v > 0 ? v : fallback;
}

// Web sites share the workers when a virtual host does not speak SMTP
// (README: the main server is not counted; it also serves mod_status).
bool serves_http(server_rec *main)
{
    for (server_rec *s = main->next; s; s = s->next)
        if (s->is_virtual && server_config(s)->enabled != 1)
            return true;
    return false;
}

} // namespace

// Why anonymous shared memory of its own (as client_table.cpp): one atomic
// count with a compare-and-swap against the cap needs no lock and no
// other module; the children inherit it through fork.
int bulkhead_post_config(apr_pool_t *, server_rec *main)
{
    apr_pool_t *pproc = main->process->pool;
    g_cap = WorkerCap();
    void *data = nullptr;
    apr_pool_userdata_get(&data, kUserdataKey, pproc);
    auto *shm = static_cast<apr_shm_t *>(data);
    // Old children keep their rows during a graceful restart.
    unsigned rows = static_cast<unsigned>(std::clamp(mpm_value(AP_MPMQ_HARD_LIMIT_DAEMONS, 1), 1, 20000)) * 2 + 16;
    if (shm && !WorkerCap(apr_shm_baseaddr_get(shm), apr_shm_size_get(shm)).valid())
        shm = nullptr; // laid out by another build of the module: a new block
    if (!shm) {
        apr_status_t rv = apr_shm_create(&shm, WorkerCap::bytes_for(rows), nullptr, pproc);
        if (rv != APR_SUCCESS) {
            ap_log_error(APLOG_MARK, APLOG_WARNING, rv, main,
                         "esmtp: no shared memory for the worker count; ESMTPMaxWorkers is not enforced");
            return OK;
        }
        WorkerCap::format(apr_shm_baseaddr_get(shm), apr_shm_size_get(shm), rows);
        apr_pool_userdata_set(shm, kUserdataKey, apr_pool_cleanup_null, pproc);
    }
    g_cap = WorkerCap(apr_shm_baseaddr_get(shm), apr_shm_size_get(shm));
    // After a start or a full restart no child is left: nothing is held.
    ap_unixd_mpm_retained_data *mpm = ap_unixd_mpm_get_retained_data();
    if (!mpm || !mpm->was_graceful)
        g_cap.reset_holds();
    const ServerConfig *cfg = server_config(main);
    // MaxRequestWorkers: prefork has one worker per process.
    auto workers = static_cast<std::uint32_t>(mpm_value(AP_MPMQ_MAX_DAEMONS, 1)) *
                   static_cast<std::uint32_t>(mpm_value(AP_MPMQ_MAX_THREADS, 1));
    bool http = serves_http(main);
    std::uint32_t cap = resolve_worker_cap(cfg->worker_cap, workers, http);
    g_cap.set_cap(cap);
    if (cap > workers)
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, main,
                     "ESMTPMaxWorkers %u is more than MaxRequestWorkers (%u): the web sites are not protected", cap,
                     workers);
    ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, main, "esmtp: SMTP may hold %u of %u workers (ESMTPMaxWorkers %s%s)", cap,
                 workers, cfg->worker_cap.value ? "" : "default, ",
                 cfg->worker_cap.value ? (cfg->worker_cap.percent ? "in percent" : "set")
                 : http                ? "web sites share the server"
                                       : "no web sites");
    return OK;
}

void bulkhead_child_init(server_rec *s)
{
    g_row = -1;
    if (!g_cap.valid())
        return;
    g_row = g_cap.claim_row(getpid(), alive);
    if (g_row < 0)
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s,
                     "esmtp: no free row for this child's worker holds (counted, not repaired if it dies)");
}

bool bulkhead_stats(WorkerCap::Stats &out)
{
    if (!g_cap.valid())
        return false;
    g_cap.sweep(alive); // the page shows no worker of a dead child as held
    out = g_cap.stats();
    return true;
}

WorkerHold WorkerHold::try_take()
{
    if (!g_cap.valid())
        return WorkerHold(State::uncounted);
    return g_cap.try_acquire(g_row, alive) ? WorkerHold(State::counted) : WorkerHold();
}

WorkerHold WorkerHold::take()
{
    if (!g_cap.valid())
        return WorkerHold(State::uncounted);
    g_cap.acquire(g_row);
    return WorkerHold(State::counted);
}

WorkerHold &WorkerHold::operator=(WorkerHold &&o) noexcept
{
    if (this != &o) {
        release();
        state_ = o.state_;
        o.state_ = State::none;
    }
    return *this;
}

void WorkerHold::release() noexcept
{
    if (state_ == State::counted && g_cap.valid())
        g_cap.release(g_row);
    state_ = State::none;
}

} // namespace esmtp
