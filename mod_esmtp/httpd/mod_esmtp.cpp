// mod_esmtp: an ESMTP server inside Apache httpd. This file holds only the
// module record and hook registration. The glue (this directory): config
// (directives), hooks (connection hooks), smtp_connection (a session's I/O
// loop and deadlines), io (brigades), parking (event MPM, child_stopping),
// wake_timer (deadlines of parked sessions), txlog, status (live counters
// for mod_status), guard (the wrapper of every C entry point). The protocol engine is in ../engine, the built-in
// handlers in ../handlers.
#include "httpd/mod_esmtp.hpp"

#include "httpd/config.hpp"
#include "httpd/guard.hpp"
#include "httpd/hooks.hpp"
#include "httpd/state_cache.hpp"
#include "httpd/parking.hpp"
#include "httpd/status.hpp"
#include "httpd/tls.hpp"
#include "httpd/txlog.hpp"

#include <ap_mmn.h>
#include <http_connection.h>
#include <http_ssl.h>
#include <mpm_common.h>

// child_stopping and ap_create_request() (configure checks this too).
#if !AP_MODULE_MAGIC_AT_LEAST(20120211, 110)
#error "mod_esmtp needs httpd 2.4.49 or later"
#endif

namespace esmtp
{
void register_builtin_handlers(apr_pool_t *p);
}

namespace
{

void register_hooks(apr_pool_t *p)
{
    esmtp::guarded(
        {"register_hooks"}, [p] { esmtp::register_builtin_handlers(p); }, [](const char *) {});
    ap_hook_pre_config(esmtp::state_cache_pre_config_hook, nullptr, nullptr, APR_HOOK_MIDDLE);
    ap_hook_check_config(esmtp::check_config, nullptr, nullptr, APR_HOOK_MIDDLE);
    ap_hook_open_logs(esmtp::open_logs, nullptr, nullptr, APR_HOOK_MIDDLE);
    ap_hook_post_config(esmtp::post_config, nullptr, nullptr, APR_HOOK_MIDDLE);
    ap_hook_post_config(esmtp::status_post_config, nullptr, nullptr, APR_HOOK_MIDDLE);
    esmtp::status_register_hooks();
    ap_hook_child_init(esmtp::child_init, nullptr, nullptr, APR_HOOK_MIDDLE);
    ap_hook_child_stopping(esmtp::child_stopping, nullptr, nullptr, APR_HOOK_MIDDLE);
    // Before mod_ssl's: with ESMTPStartTLS its filters are unlinked before
    // its AP_MODE_INIT read would start the handshake.
    static const char *const before_ssl[] = {"mod_ssl.c", nullptr};
    ap_hook_process_connection(esmtp::process_connection, nullptr, before_ssl, APR_HOOK_MIDDLE);
    ap_hook_pre_close_connection(esmtp::pre_close_connection, nullptr, nullptr, APR_HOOK_MIDDLE);
    // First, to see every request for a fallback certificate (mod_md's
    // provider answers DONE and ends the hook).
    ap_hook_ssl_add_fallback_cert_files(esmtp::note_fallback_certificate, nullptr, nullptr, APR_HOOK_REALLY_FIRST);
}

} // namespace

extern "C" {
__attribute__((visibility("default"))) module AP_MODULE_DECLARE_DATA esmtp_module = {
    STANDARD20_MODULE_STUFF,
    nullptr,                     // per-directory config creator
    nullptr,                     // dir config merger
    esmtp::create_server_config, // server config creator
    esmtp::merge_server_config,  // server config merger
    esmtp::directives,           // command table
    register_hooks,              // hook registration
#if defined(AP_MODULE_FLAG_ALWAYS_MERGE)
    AP_MODULE_FLAG_ALWAYS_MERGE,
#endif
};
}
