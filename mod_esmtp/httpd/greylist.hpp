// ESMTPGreylist (per server): a new (client network, sender, recipient)
// triplet gets 450 4.2.0; the same triplet retried after the delay passes,
// and the network is allowlisted after a number of passes. Kept in
// ESMTPStateCache (httpd/state_cache.hpp), so every child, and with redis
// every node, sees the same state; a cache that fails lets mail pass.
#pragma once

#include "httpd/mod_esmtp.hpp"

#include <apr_time.h>

#include <string_view>

namespace esmtp
{

struct GreylistSpec {
    int on = -1;                   // -1 unset (inherited), 0 Off, 1 On
    apr_int64_t delay = 300;       // seconds before a retry passes
    apr_int64_t retry = 86400;     // how long a first attempt is remembered
    apr_int64_t allowlist = 5;     // passes after which the network skips greylisting (0: never)
    apr_int64_t keep = 35 * 86400; // how long passes and allowlisted networks are remembered
};

// ESMTPGreylist Off | On [delay=SECONDS] [retry=SECONDS] [allowlist=PASSES] [keep=DAYS]
const char *parse_greylist(apr_pool_t *p, int argc, char *const argv[], GreylistSpec &out);

enum class Greylisted { pass, wait, passed_now };

struct GreylistAnswer {
    Greylisted verdict = Greylisted::pass;
    apr_interval_time_t wait = 0; // for Greylisted::wait: until the retry passes
    bool allowlisted = false;     // the network is allowlisted
    bool cache_failed = false;    // the cache failed: passed (fail open)
};

// `scope`: the server's name (greylists are per server); `client`: the
// client's address (the connection's, or the one XCLIENT named).
GreylistAnswer greylist_check(conn_rec *c, const GreylistSpec &spec, std::string_view scope, std::string_view client,
                              std::string_view sender, std::string_view recipient);

} // namespace esmtp
