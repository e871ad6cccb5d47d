// mod_esmtp public API: registering a handler provider from an httpd module.
#pragma once

#include <esmtp/provider.hpp>

#include <ap_provider.h>

namespace esmtp
{

// Call from your module's register_hooks. `provider` must outlive the
// process (a static object is the usual choice).
inline apr_status_t register_handler_provider(apr_pool_t *pool, const char *name, const HandlerProvider *provider)
{
    return ap_register_provider(pool, ESMTP_HANDLER_PROVIDER_GROUP, name, ESMTP_HANDLER_PROVIDER_VERSION, provider);
}

} // namespace esmtp
