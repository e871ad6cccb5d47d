// The process_connection hook: brigade I/O between httpd and the session.
#pragma once

#include "mod_esmtp.hpp"

namespace esmtp
{

int process_connection(conn_rec *c);

} // namespace esmtp
