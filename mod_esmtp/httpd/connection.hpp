// The process_connection hook: brigade I/O between httpd and the session.
#pragma once

#include "httpd/mod_esmtp.hpp"

namespace esmtp
{

// child_init hook: learns whether the MPM can park idle connections.
void child_init(apr_pool_t *p, server_rec *s);
int process_connection(conn_rec *c);
// pre_close_connection hook: 421 for a parked session the MPM times out.
int pre_close_connection(conn_rec *c);

} // namespace esmtp
