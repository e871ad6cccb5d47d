// The per-client limits shared by every node (docs/scale-out.md, Shared
// state): with an ESMTPStateCache other hosts reach (redis, memcache), one
// background thread per node (a singleton mod_watchdog callback in one
// child) publishes this node's own counts under the node's key every
// interval, reads the other nodes' keys and puts their sums into the
// per-client table (ClientTable::set_remote). Admission and the rate checks
// read only the table: no session waits for the cache. A cache that fails
// leaves the other nodes' counts out (fail open: limits per node), logged
// and counted as ESMTPStateCacheErrors.
#pragma once

#include "httpd/mod_esmtp.hpp"

namespace esmtp
{

// An option of ESMTPStateCache: node=ID, interval=SECONDS, limits=shared|node.
const char *set_shared_limits_option(apr_pool_t *p, const char *arg);
// pre_config: a new generation reads its options.
void shared_limits_reset();
// ESMTPStateCache asks for it: limits=shared, or a cache that reaches
// other hosts without limits=node.
bool shared_limits_wanted();
// post_config, after the per-client table and the cache exist: start
// sharing when the cache reaches other hosts. `counted`: the server whose
// ESMTPStateCacheErrors count the background failures.
int shared_limits_post_config(apr_pool_t *pconf, server_rec *main, server_rec *counted);
// This generation shares the per-client counts.
bool shared_limits_on();
// The node id (for mod_status).
const char *shared_limits_node();

} // namespace esmtp
