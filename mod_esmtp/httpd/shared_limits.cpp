#include "httpd/shared_limits.hpp"

#include "engine/shared_counts.hpp"
#include "httpd/client_table.hpp"
#include "httpd/guard.hpp"
#include "httpd/state_cache.hpp"

#include <apr_optional.h>
#include <apr_strings.h>
#include <http_config.h>
#include <http_log.h>
#include <http_core.h>
#include <http_main.h>
#include <mod_watchdog.h>
#include <util_cfgtree.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace esmtp
{

namespace
{

constexpr const char *kWatchdog = "esmtp-shared-limits";
constexpr const char *kWhat = "per-client counts";
// Keys: the registry of node ids and each node's snapshot.
constexpr const char *kRegistryKey = "esmtp-limits:nodes";
constexpr const char *kNodePrefix = "esmtp-limits:node:";
// A node's snapshot is bounded (every node reads every other's each
// interval): 512 KiB, at 60 to 140 octets a client some 4,000 to 8,000
// clients with sessions or running rate windows per node.
constexpr std::size_t kMaxSnapshot = 512 * 1024;
constexpr std::size_t kMaxCollected = kMaxSnapshot / 40; // more than fit in any case
// The registry outlives its nodes' snapshots; a node is dropped from it when
// its snapshot has expired.
constexpr apr_interval_time_t kRegistryKeep = apr_time_from_sec(86400);

// ESMTPStateCache's options (this generation's configuration).
struct Options {
    const char *node = nullptr;
    int interval = 1; // seconds
    int limits = -1;  // -1: shared when the cache reaches other hosts; 0: node; 1: shared
};
Options g_opt;

// Set in post_config (before the children fork); the watchdog thread of
// one child uses it.
struct Runtime {
    bool on = false;
    std::string node;
    server_rec *server = nullptr; // for the cache calls and the log; its ESMTPStateCacheErrors count failures
    apr_interval_time_t interval = 0;
    bool up = true; // the last exchange worked (log on change)
    bool truncated_logged = false;
};
Runtime g_rt;

std::string node_key(const std::string &id)
{
    return kNodePrefix + id;
}

void set_stats(bool up, std::uint32_t nodes, std::size_t published, std::size_t remote, bool exchanged = true)
{
    ClientTable::SharedStats st;
    st.exchanges = exchanged ? 1 : 0;
    st.on = true;
    st.up = up;
    st.nodes = nodes;
    st.published = static_cast<std::uint32_t>(published);
    st.remote = static_cast<std::uint32_t>(remote);
    client_table().set_shared_stats(st);
}

// One exchange: publish, read the registry and the other nodes' snapshots,
// put their sums into the table. Every failure leaves that node's counts
// out (fail open).
void exchange(apr_pool_t *pool)
{
    ClientTable table = client_table();
    if (!table.valid())
        return;
    server_rec *s = g_rt.server;
    const std::int64_t now_ms = monotonic_ms();
    const apr_time_t now = apr_time_now();

    bool more = false;
    std::vector<ClientTable::Entry> own = table.own_counts(now_ms, kMaxCollected, more);
    std::size_t published = 0;
    std::string snapshot = encode_counts(own, kMaxSnapshot, published);
    if ((more || published < own.size()) && !g_rt.truncated_logged) {
        g_rt.truncated_logged = true;
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s,
                     "esmtp: ESMTPStateCache: the per-client counts of this node exceed %" APR_SIZE_T_FMT
                     " octets: the other nodes see %" APR_SIZE_T_FMT " of its clients only",
                     kMaxSnapshot, published);
    }
    // Kept for three intervals and two seconds: a node that stops (or whose
    // thread moves to another child) is forgotten soon, a late tick is not.
    bool ok = state_put(s, pool, node_key(g_rt.node), snapshot, now + 3 * g_rt.interval + apr_time_from_sec(2), kWhat);

    std::string text;
    CacheResult reg = state_get(s, pool, kRegistryKey, text, kMaxNodes * 65, kWhat);
    std::vector<std::string> ids;
    if (reg == CacheResult::found)
        ids = parse_nodes(text);
    bool changed = reg == CacheResult::not_found;
    ok = ok && reg != CacheResult::error;

    SharedView view;
    std::vector<std::string> keep;
    std::uint32_t nodes = 0;
    for (const std::string &id : ids) {
        if (id == g_rt.node) {
            keep.push_back(id);
            continue;
        }
        std::string snap;
        CacheResult r = state_get(s, pool, node_key(id), snap, kMaxSnapshot, kWhat);
        if (r == CacheResult::found && view.add(snap)) {
            keep.push_back(id);
            ++nodes;
        } else if (r == CacheResult::not_found) {
            changed = true; // gone: its snapshot expired
        } else {
            keep.push_back(id);
            ok = false;
        }
    }
    if (reg != CacheResult::error && (changed || std::find(keep.begin(), keep.end(), g_rt.node) == keep.end())) {
        // Read, changed, written back: two nodes registering at once may
        // lose one of the two; it finds itself missing next time and adds
        // itself again.
        if (std::find(keep.begin(), keep.end(), g_rt.node) == keep.end() && keep.size() < kMaxNodes)
            keep.push_back(g_rt.node);
        ok = state_put(s, pool, kRegistryKey, nodes_text(keep), now + kRegistryKeep, kWhat) && ok;
    }

    ClientTable::RemoteStats rs = table.set_remote(view.entries(), monotonic_ms());
    set_stats(ok, nodes, published, rs.clients);
    if (ok != g_rt.up) {
        g_rt.up = ok;
        if (ok)
            ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, s,
                         "esmtp: ESMTPStateCache %s: per-client counts shared again (node %s, %u other nodes)",
                         state_cache_spec(), g_rt.node.c_str(), nodes);
        else
            ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s,
                         "esmtp: ESMTPStateCache %s: per-client counts cannot be shared: the limits count what this "
                         "node and the nodes still read see (fail open)",
                         state_cache_spec());
    }
}

apr_status_t watchdog_callback(int state, void *, apr_pool_t *pool)
{
    if (state != AP_WATCHDOG_STATE_RUNNING)
        return APR_SUCCESS;
    return guarded(
        {"shared per-client counts", nullptr, g_rt.server},
        [pool] {
            exchange(pool);
            return APR_SUCCESS;
        },
        [](const char *) { return APR_SUCCESS; });
}

} // namespace

const char *set_shared_limits_option(apr_pool_t *p, const char *arg)
{
    const char *eq = std::strchr(arg, '=');
    std::string_view name(arg, eq ? static_cast<std::size_t>(eq - arg) : std::strlen(arg));
    const char *value = eq ? eq + 1 : "";
    if (name == "node") {
        if (!valid_node_id(value))
            return "ESMTPStateCache: node= needs 1 to 64 letters, digits, '.', '-' or '_'";
        g_opt.node = apr_pstrdup(p, value);
    } else if (name == "interval") {
        char *end = nullptr;
        long v = std::strtol(value, &end, 10);
        if (!*value || *end || v < 1 || v > 60)
            return "ESMTPStateCache: interval= needs seconds from 1 to 60";
        g_opt.interval = static_cast<int>(v);
    } else if (name == "limits") {
        if (!std::strcmp(value, "shared"))
            g_opt.limits = 1;
        else if (!std::strcmp(value, "node"))
            g_opt.limits = 0;
        else
            return "ESMTPStateCache: limits= needs shared or node";
    } else {
        return apr_psprintf(p, "ESMTPStateCache: unknown option '%s' (node=, interval=, limits=)", arg);
    }
    return nullptr;
}

void shared_limits_reset()
{
    g_opt = Options{};
}

bool shared_limits_on()
{
    return g_rt.on;
}

const char *shared_limits_node()
{
    return g_rt.node.c_str();
}

bool shared_limits_wanted()
{
    return g_opt.limits == 1 || (g_opt.limits < 0 && state_cache_reaches_other_hosts());
}

int shared_limits_post_config(apr_pool_t *pconf, server_rec *main, server_rec *counted)
{
    g_rt = Runtime{};
    if (!shared_limits_wanted() || !client_table().valid() || !state_cache_ready())
        return OK;
    // mod_watchdog's second pass starts the threads; the first (the
    // configuration test) has nothing to run.
    if (ap_state_query(AP_SQ_MAIN_STATE) == AP_SQ_MS_CREATE_PRE_CONFIG)
        return OK;
    auto get_instance = APR_RETRIEVE_OPTIONAL_FN(ap_watchdog_get_instance);
    auto register_callback = APR_RETRIEVE_OPTIONAL_FN(ap_watchdog_register_callback);
    if (!get_instance || !register_callback) {
        ap_log_error(APLOG_MARK, APLOG_EMERG, 0, main,
                     "esmtp: ESMTPStateCache %s shares the per-client counts with a mod_watchdog thread, and "
                     "mod_watchdog is not loaded (LoadModule watchdog_module, or limits=node)",
                     state_cache_spec());
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    if (g_opt.node) {
        g_rt.node = g_opt.node;
    } else {
        char host[256] = "";
        gethostname(host, sizeof host - 1);
        std::string instance = std::string(ap_server_root ? ap_server_root : "") + "\n" +
                               (ap_conftree && ap_conftree->filename ? ap_conftree->filename : "");
        g_rt.node = default_node_id(host, instance);
    }
    g_rt.server = counted ? counted : main;
    g_rt.interval = apr_time_from_sec(g_opt.interval);
    ap_watchdog_t *wd = nullptr;
    apr_status_t rv = get_instance(&wd, kWatchdog, 0, 1, pconf);
    if (rv == APR_SUCCESS)
        rv = register_callback(wd, g_rt.interval, nullptr, watchdog_callback);
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_EMERG, rv, main,
                     "esmtp: ESMTPStateCache: cannot start the thread that shares the per-client counts");
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    g_rt.on = true;
    set_stats(false, 0, 0, 0, false);
    ap_log_error(APLOG_MARK, APLOG_INFO, 0, main,
                 "esmtp: per-client counts shared through ESMTPStateCache %s as node %s, every %d s",
                 state_cache_spec(), g_rt.node.c_str(), g_opt.interval);
    return OK;
}

} // namespace esmtp
