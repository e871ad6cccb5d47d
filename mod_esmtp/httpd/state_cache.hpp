// ESMTPStateCache: state shared by every child, and with a network
// provider (redis, memcache) by every node, through httpd's mod_socache
// (the greylist; README, Screening clients). One cache per httpd, chosen
// with mod_socache's own syntax: `shmcb` (the default, one host),
// `shmcb:/path(bytes)`, `redis:HOST:PORT`, `memcache:HOST:PORT`.
//
// Every failure fails open: the caller treats an error as "nothing
// stored", the error is counted (ESMTPStateCacheErrors) and logged (at
// most every 10 s per child).
//
// memcache's limits are met here for every caller: keys over 100 octets
// are stored under their hash, expiries cut to 30 days (README, Shared
// state).
#pragma once

#include "httpd/mod_esmtp.hpp"

#include <apr_time.h>

#include <string>
#include <string_view>

namespace esmtp
{

// ESMTPStateCache PROVIDER[:ARGS] [OPTION=VALUE ...] (main server only;
// the options are shared_limits.hpp's).
const char *set_state_cache(cmd_parms *cmd, int argc, char *const argv[]);
// pre_config hook: the mutex type ("esmtp-state", for Mutex directives).
int state_cache_pre_config_hook(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp) noexcept;
// check_config: the provider exists (else `apache2 -t` fails naming it).
bool state_cache_check(server_rec *s, std::string &why);
// post_config, when a server needs the cache: create and initialize it.
int state_cache_post_config(apr_pool_t *pconf, server_rec *s);
void state_cache_child_init(apr_pool_t *pchild, server_rec *s);
// The configured provider (or the default, shmcb) is loaded.
bool state_cache_provider_loaded();
// post_config made the cache: state_get/state_put can be used.
bool state_cache_ready();
// ESMTPStateCache is in the configuration.
bool state_cache_configured();
// It names a provider whose data other hosts reach (not shmcb or dbm).
bool state_cache_reaches_other_hosts();
// ESMTPStateCache as written (for the log).
const char *state_cache_spec();

enum class CacheResult { found, not_found, error };

// `what` names the caller in the log ("greylist").
CacheResult state_get(conn_rec *c, std::string_view key, std::string &value, const char *what);
bool state_put(conn_rec *c, std::string_view key, std::string_view value, apr_time_t expiry, const char *what);
// Without a connection (a background task of server `s`; `p` the parent of
// the temporary pool): values up to `max` octets.
CacheResult state_get(server_rec *s, apr_pool_t *p, std::string_view key, std::string &value, std::size_t max,
                      const char *what);
bool state_put(server_rec *s, apr_pool_t *p, std::string_view key, std::string_view value, apr_time_t expiry,
               const char *what);

} // namespace esmtp
