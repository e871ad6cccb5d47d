// ESMTPDNSBL's lookups through c-ares: every site asked at once (the lists
// cost one round trip, not their sum), one deadline for all, answers kept
// for their TTL per child and in ESMTPStateCache (shared by the children,
// and by the nodes with redis) when it is there. A site whose answer fails or comes too late
// counts as not listing the client (fail open).
#pragma once

#include "engine/dnsbl.hpp"
#include "httpd/mod_esmtp.hpp"

#include <apr_time.h>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace esmtp
{

struct DnsblSettings {
    std::shared_ptr<const std::vector<DnsblSite>> sites; // empty or null: no lookups
    int threshold = 1;
    bool at_rcpt = false;            // refuse at RCPT rather than instead of the greeting
    apr_interval_time_t timeout = 0; // for all lookups together
    std::string server;              // "127.0.0.1:5353"; empty: the system resolver
};

struct DnsblOutcome {
    DnsblScore score;
    unsigned failed = 0; // sites that did not answer in time, or failed
    std::string failure; // what went wrong first, for the log
};

// `c`: the connection (for the state cache's pool and log).
DnsblOutcome dnsbl_lookup(conn_rec *c, const DnsblSettings &settings, std::string_view address);

// post_config: c-ares's global state (once per process).
bool dnsbl_library_init(std::string &why);

} // namespace esmtp
