// Start-up checks of what would otherwise fail only later, and quietly: run
// from check_config, so at `apache2 -t` and at every (re)start, before
// httpd's parent opens the logs and before any child runs.
#pragma once

#include "httpd/mod_esmtp.hpp"

namespace esmtp
{

// Transaction log files (ESMTPLogFileName): their directory must exist and
// the file must be open-able for appending by the parent (which opens it).
// Handlers: every factory's check() runs in a process with the children's
// User/Group; a failing maildir check fails the configuration, the others
// warn (their peer, an LMTP server or a spool, may appear after httpd).
// Listeners: an ESMTP server on a Listen whose protocol has an accept
// filter (plain "Listen 25" is http, TCP_DEFER_ACCEPT) warns: clients would
// get no greeting. Returns OK or !OK; every finding is logged.
int preflight(apr_pool_t *ptemp, server_rec *main);

} // namespace esmtp
