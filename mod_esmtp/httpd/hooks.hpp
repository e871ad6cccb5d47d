// The connection-level hooks: child_init, process_connection,
// pre_close_connection (and child_stopping, in parking.hpp).
#pragma once

#include "httpd/mod_esmtp.hpp"

namespace esmtp
{

// child_init hook: learns whether the MPM can park idle connections and
// runs every SMTP server's HandlerFactory::check() as the server's user.
void child_init(apr_pool_t *p, server_rec *s);
int process_connection(conn_rec *c);
// pre_close_connection hook: ends the session (421 for a parked session
// the MPM timed out), fires DISCONNECT and destroys the handler.
int pre_close_connection(conn_rec *c);

} // namespace esmtp
