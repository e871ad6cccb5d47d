#include "httpd/state_cache.hpp"

#include "engine/sha256.hpp"
#include "httpd/shared_limits.hpp"
#include "httpd/status.hpp"

#include <ap_provider.h>
#include <ap_socache.h>
#include <apr_strings.h>
#include <http_config.h>
#include <http_log.h>
#include <util_mutex.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <string>

namespace esmtp
{

namespace
{

constexpr const char *kMutexType = "esmtp-state";
constexpr apr_interval_time_t kLogEvery = apr_time_from_sec(10);
// mod_socache_memcache names an entry "mod_esmtp-state:" and the key in hex,
// and memcached takes 250 octets: keys of up to 117 octets. Longer ones (a
// DNSBL query name) are stored under their hash.
constexpr std::size_t kMaxKey = 100;
constexpr const char *kHashedPrefix = "esmtp:h:";
// memcached takes an expiry of more than 30 days for a date (and an entry
// dated 1970 is gone at once): longer ones are cut to 30 days.
constexpr apr_interval_time_t kMemcacheMaxExpiry = apr_time_from_sec(30 * 86400);

// One per configuration generation (reset by pconf's cleanup).
struct State {
    const char *spec = nullptr; // ESMTPStateCache as written
    std::string name;           // the provider's name
    const char *args = nullptr;
    const ap_socache_provider_t *provider = nullptr;
    ap_socache_instance_t *instance = nullptr;
    apr_global_mutex_t *mutex = nullptr; // for providers that are not multi-process safe (shmcb)
    server_rec *server = nullptr;
};
State g_state;
std::atomic<apr_time_t> g_last_log{0};

// Registered after the provider's init, so it runs before the cleanups of
// what init made in pconf (shmcb's segment).
apr_status_t destroy_instance(void *)
{
    if (g_state.instance && g_state.provider)
        g_state.provider->destroy(g_state.instance, g_state.server);
    g_state.instance = nullptr;
    g_state.mutex = nullptr;
    return APR_SUCCESS;
}

// The provider's name and its arguments (mod_socache's PROVIDER:ARGS).
void split_spec()
{
    const char *spec = g_state.spec ? g_state.spec : "shmcb";
    const char *colon = std::strchr(spec, ':');
    g_state.name = colon ? std::string(spec, static_cast<std::size_t>(colon - spec)) : std::string(spec);
    g_state.args = colon ? colon + 1 : nullptr;
}

// `c` null: a background task of server `s` (no connection).
void failed(conn_rec *c, server_rec *s, apr_status_t rv, const char *op, const char *what)
{
    if (c)
        status_state_cache_error(c);
    else
        status_state_cache_error(s);
    apr_time_t now = apr_time_now();
    apr_time_t last = g_last_log.load(std::memory_order_relaxed);
    if (now - last < kLogEvery || !g_last_log.compare_exchange_strong(last, now))
        return;
    std::string msg = std::string("esmtp: ESMTPStateCache ") + (g_state.spec ? g_state.spec : "shmcb") + ": " + op +
                      " failed for the " + what + "; going on without it (fail open)";
    if (c)
        ap_log_cerror(APLOG_MARK, APLOG_WARNING, rv, c, "%s", msg.c_str());
    else
        ap_log_error(APLOG_MARK, APLOG_WARNING, rv, s, "%s", msg.c_str());
}

class Locked
{
  public:
    Locked() : held_(g_state.mutex && apr_global_mutex_lock(g_state.mutex) == APR_SUCCESS) {}
    ~Locked()
    {
        if (held_)
            apr_global_mutex_unlock(g_state.mutex);
    }
    bool ok() const { return held_ || !g_state.mutex; }
    Locked(const Locked &) = delete;
    Locked &operator=(const Locked &) = delete;

  private:
    bool held_;
};

} // namespace

const char *set_state_cache(cmd_parms *cmd, int argc, char *const argv[])
{
    if (cmd->server->is_virtual)
        return "ESMTPStateCache: only in the main server configuration (one cache for every server)";
    if (argc < 1 || !*argv[0] || *argv[0] == ':' || std::strchr(argv[0], '='))
        return "ESMTPStateCache: needs a mod_socache provider: shmcb, shmcb:/PATH(BYTES), redis:HOST:PORT, ...";
    g_state.spec = apr_pstrdup(cmd->pool, argv[0]);
    for (int i = 1; i < argc; ++i)
        if (const char *err = set_shared_limits_option(cmd->pool, argv[i]))
            return err;
    return nullptr;
}

int state_cache_pre_config_hook(apr_pool_t *pconf, apr_pool_t *, apr_pool_t *) noexcept
{
    g_state = State{}; // a new generation reads its configuration
    shared_limits_reset();
    return ap_mutex_register(pconf, kMutexType, nullptr, APR_LOCK_DEFAULT, 0) == APR_SUCCESS ? OK : !OK;
}

bool state_cache_provider_loaded()
{
    split_spec();
    return ap_lookup_provider(AP_SOCACHE_PROVIDER_GROUP, g_state.name.c_str(), AP_SOCACHE_PROVIDER_VERSION) != nullptr;
}

bool state_cache_ready()
{
    return g_state.instance != nullptr;
}

bool state_cache_configured()
{
    return g_state.spec != nullptr;
}

bool state_cache_reaches_other_hosts()
{
    split_spec();
    // shmcb and dbm live on this host; redis, memcache (and distcache) on servers every node reaches
    return g_state.spec && g_state.name != "shmcb" && g_state.name != "dbm";
}

const char *state_cache_spec()
{
    return g_state.spec ? g_state.spec : "shmcb";
}

bool state_cache_check(server_rec *s, std::string &why)
{
    g_state.server = s;
    split_spec();
    if (ap_lookup_provider(AP_SOCACHE_PROVIDER_GROUP, g_state.name.c_str(), AP_SOCACHE_PROVIDER_VERSION))
        return true;
    why = std::string("ESMTPStateCache: no mod_socache provider '") + g_state.name + "' (load mod_socache_" +
          g_state.name + ")";
    return false;
}

int state_cache_post_config(apr_pool_t *pconf, server_rec *s)
{
    g_state.server = s;
    split_spec();
    g_state.provider = static_cast<const ap_socache_provider_t *>(
        ap_lookup_provider(AP_SOCACHE_PROVIDER_GROUP, g_state.name.c_str(), AP_SOCACHE_PROVIDER_VERSION));
    if (!g_state.provider) {
        ap_log_error(APLOG_MARK, APLOG_EMERG, 0, s, "esmtp: ESMTPStateCache: no mod_socache provider '%s'",
                     g_state.name.c_str());
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    apr_pool_t *tmp = nullptr;
    apr_pool_create(&tmp, pconf);
    const char *err = g_state.provider->create(&g_state.instance, g_state.args, tmp, pconf);
    apr_pool_destroy(tmp);
    if (err) {
        g_state.instance = nullptr;
        ap_log_error(APLOG_MARK, APLOG_EMERG, 0, s, "esmtp: ESMTPStateCache %s: %s", g_state.spec ? g_state.spec : "",
                     err);
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    if (g_state.provider->flags & AP_SOCACHE_FLAG_NOTMPSAFE) {
        apr_status_t rv = ap_global_mutex_create(&g_state.mutex, nullptr, kMutexType, nullptr, s, pconf, 0);
        if (rv != APR_SUCCESS) {
            ap_log_error(APLOG_MARK, APLOG_EMERG, rv, s, "esmtp: ESMTPStateCache: cannot create its mutex");
            return HTTP_INTERNAL_SERVER_ERROR;
        }
    }
    ap_socache_hints hints{48, 32, apr_time_from_sec(60)};
    apr_status_t rv = g_state.provider->init(g_state.instance, "mod_esmtp-state", &hints, s, pconf);
    apr_pool_cleanup_register(pconf, nullptr, destroy_instance, apr_pool_cleanup_null);
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_EMERG, rv, s, "esmtp: ESMTPStateCache %s could not be initialised",
                     g_state.spec ? g_state.spec : "shmcb");
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    return OK;
}

void state_cache_child_init(apr_pool_t *pchild, server_rec *s)
{
    if (g_state.mutex) {
        apr_status_t rv = apr_global_mutex_child_init(&g_state.mutex, apr_global_mutex_lockfile(g_state.mutex), pchild);
        if (rv != APR_SUCCESS)
            ap_log_error(APLOG_MARK, APLOG_ERR, rv, s, "esmtp: ESMTPStateCache: its mutex failed in this child");
    }
}

namespace
{

// The key as stored: itself, or its hash when too long for memcache.
std::string_view stored_key(std::string_view key, std::string &hashed)
{
    if (key.size() <= kMaxKey)
        return key;
    hashed = kHashedPrefix + hex_lower(sha256(key));
    return hashed;
}

CacheResult get(conn_rec *c, server_rec *s, apr_pool_t *parent, std::string_view key, std::string &value,
                std::size_t max, const char *what)
{
    if (!g_state.instance)
        return CacheResult::error;
    std::string hashed;
    key = stored_key(key, hashed);
    apr_pool_t *p = nullptr;
    if (apr_pool_create(&p, parent) != APR_SUCCESS)
        return CacheResult::error;
    value.resize(max);
    unsigned int len = static_cast<unsigned int>(max);
    apr_status_t rv;
    {
        Locked lock;
        rv = lock.ok()
                 ? g_state.provider->retrieve(g_state.instance, s, reinterpret_cast<const unsigned char *>(key.data()),
                                              static_cast<unsigned int>(key.size()),
                                              reinterpret_cast<unsigned char *>(value.data()), &len, p)
                 : APR_EGENERAL;
    }
    apr_pool_destroy(p);
    if (rv == APR_NOTFOUND) {
        value.clear();
        return CacheResult::not_found;
    }
    if (rv != APR_SUCCESS) {
        value.clear();
        failed(c, s, rv, "retrieve", what);
        return CacheResult::error;
    }
    value.resize(len);
    return CacheResult::found;
}

bool put(conn_rec *c, server_rec *s, apr_pool_t *parent, std::string_view key, std::string_view value,
         apr_time_t expiry, const char *what)
{
    if (!g_state.instance)
        return false;
    std::string hashed;
    key = stored_key(key, hashed);
    if (g_state.name == "memcache")
        expiry = std::min(expiry, apr_time_now() + kMemcacheMaxExpiry);
    apr_pool_t *p = nullptr;
    if (apr_pool_create(&p, parent) != APR_SUCCESS)
        return false;
    std::string data(value); // the interface takes a mutable buffer
    apr_status_t rv;
    {
        Locked lock;
        rv = lock.ok()
                 ? g_state.provider->store(g_state.instance, s, reinterpret_cast<const unsigned char *>(key.data()),
                                           static_cast<unsigned int>(key.size()), expiry,
                                           reinterpret_cast<unsigned char *>(data.data()),
                                           static_cast<unsigned int>(data.size()), p)
                 : APR_EGENERAL;
    }
    apr_pool_destroy(p);
    if (rv != APR_SUCCESS) {
        failed(c, s, rv, "store", what);
        return false;
    }
    return true;
}

} // namespace

CacheResult state_get(conn_rec *c, std::string_view key, std::string &value, const char *what)
{
    return get(c, c->base_server, c->pool, key, value, 256, what);
}

bool state_put(conn_rec *c, std::string_view key, std::string_view value, apr_time_t expiry, const char *what)
{
    return put(c, c->base_server, c->pool, key, value, expiry, what);
}

CacheResult state_get(server_rec *s, apr_pool_t *p, std::string_view key, std::string &value, std::size_t max,
                      const char *what)
{
    return get(nullptr, s, p, key, value, max, what);
}

bool state_put(server_rec *s, apr_pool_t *p, std::string_view key, std::string_view value, apr_time_t expiry,
               const char *what)
{
    return put(nullptr, s, p, key, value, expiry, what);
}

} // namespace esmtp
