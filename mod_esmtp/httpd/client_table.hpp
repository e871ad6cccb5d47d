// The per-client table (engine/client_limits.hpp) in shared memory: created
// in post_config, kept in the process pool so that it survives graceful
// restarts (old and new children count in the same table), inherited by
// every child through fork.
#pragma once

#include "httpd/mod_esmtp.hpp"
#include "engine/client_limits.hpp"

namespace esmtp
{

// post_config: create the table (or reattach to the one of the previous
// generation). `entries`: ESMTPClientLimitTableSize.
int client_table_post_config(apr_pool_t *pconf, server_rec *main, std::size_t entries);
// No server limits clients in this generation.
void client_table_off();
// This process's view of the table; invalid when no server limits clients.
ClientTable client_table();

} // namespace esmtp
