// The bulkhead (ESMTPMaxWorkers, README "Sharing workers with the web
// sites"): SMTP sessions share httpd's MPM workers with the web sites, and
// httpd 2.4 cannot suspend a connection on a backend socket, so every wait
// but the one for the client (parking) holds a worker. The bulkhead caps
// how many workers SMTP holds at once for such waits, across every child;
// beyond the cap a step is refused at once with a 4xx (SMTP senders retry
// later at no cost) instead of waiting.
//
// Everything that may block takes a WorkerHold for as long as it may block:
// every handler event (gated_handler.hpp, around the milters too), the AUTH
// provider call and its failure delay, ESMTPGreetingDelay. A hold lives on
// the stack of one step, so no hold is ever taken while a session is parked.
#pragma once

#include "engine/worker_cap.hpp"
#include "httpd/mod_esmtp.hpp"
#include "httpd/worker_hold.hpp"

namespace esmtp
{

// post_config: create the shared counts (or reattach to those of the
// previous generation) and set the cap from ESMTPMaxWorkers and the MPM.
int bulkhead_post_config(apr_pool_t *pconf, server_rec *main);
// child_init: this process's row (its holds are given back if it dies).
void bulkhead_child_init(server_rec *s);
// For mod_status (after giving back the holds of dead children); false
// when the bulkhead is off (no shared memory).
bool bulkhead_stats(WorkerCap::Stats &out);

} // namespace esmtp
