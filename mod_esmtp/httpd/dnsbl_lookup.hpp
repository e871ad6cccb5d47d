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

// The lookups of one client, in flight from the constructor (the queries
// are sent) to finish(): ESMTPPregreet's pause waits on the answers and on
// the client together, as postscreen does, so the lists cost no time of
// their own when the pause is longer than their answers.
class DnsblLookup
{
  public:
    // `c`: the connection (for the state cache's pool and log). `settings`
    // outlives the lookup.
    DnsblLookup(conn_rec *c, const DnsblSettings &settings, std::string_view address);
    ~DnsblLookup();
    DnsblLookup(const DnsblLookup &) = delete;
    DnsblLookup &operator=(const DnsblLookup &) = delete;

    // Whether answers are still awaited (before the deadline).
    bool running() const;
    // Takes answers in until all are in, `until` or the deadline, or until
    // `client` (a socket descriptor, -1: none) is readable: then true.
    bool wait(apr_time_t until, int client);
    // Waits for the rest up to the deadline; the outcome (kept: a second
    // call returns it again).
    DnsblOutcome finish();

  private:
    struct State;
    std::unique_ptr<State> st_;
};

// post_config: c-ares's global state (once per process).
bool dnsbl_library_init(std::string &why);

} // namespace esmtp
