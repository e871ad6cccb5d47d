/* What a handler module built against mod_esmtp API 1 leaves in the
 * provider registry: a provider named "oldapi" in the group "esmtp_handler"
 * under version "1" (API 1 registered every provider under "1"). The
 * provider object is never used: mod_esmtp API 2 must refuse it at
 * `apache2 -t` and say why (test_config.py). */
#include <httpd.h>
#include <http_config.h>
#include <ap_provider.h>

static const int old_provider = 1; /* opaque: an API 1 HandlerProvider */

static void register_hooks(apr_pool_t *p)
{
    ap_register_provider(p, "esmtp_handler", "oldapi", "1", &old_provider);
}

AP_DECLARE_MODULE(esmtp_old_api_handler) = {STANDARD20_MODULE_STUFF, NULL, NULL, NULL, NULL, NULL, register_hooks,
#if defined(AP_MODULE_FLAG_NONE)
                                            AP_MODULE_FLAG_NONE
#endif
};
