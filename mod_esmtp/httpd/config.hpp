// Directives and the per-server configuration.
#pragma once

#include "httpd/mod_esmtp.hpp"
#include "engine/dnsbl.hpp"
#include "engine/session.hpp"
#include "engine/worker_cap.hpp"
#include "httpd/greylist.hpp"
#include "milter/client.hpp"
#include <esmtp/provider.hpp>

#include <apr_file_io.h>
#include <apr_tables.h>
#include <memory>
#include <set>
#include <string>
#include <vector>

namespace esmtp
{

// Allocated from the configuration pool; -1 / nullptr mean "not set here"
// so that a VirtualHost inherits what it does not set.
struct ServerConfig {
    int enabled;
    const char *handler_name;
    int handler_minor;                        // the API minor the handler was built against (for_server from 2.3)
    std::shared_ptr<HandlerFactory> *factory; // owned by a pool cleanup
    // The factory's commands(), compiled once with it (owned by a pool cleanup).
    std::shared_ptr<const CommandTable> *commands;
    const char *hostname;
    apr_int64_t max_message_size;
    apr_int64_t max_recipients;
    int log_level;
    const char *log_file_name;
    apr_file_t *log_file; // opened in open_logs
    // ESMTPExtensions: an absolute set (-1: not given) and +/- changes to it
    int ext_set;
    unsigned ext_on;
    unsigned ext_off;
    apr_array_header_t *accept_domains; // ESMTPAcceptDomains (const char *), lower case
    apr_int64_t max_errors;
    apr_int64_t command_timeout;
    apr_int64_t data_timeout;
    int bare_lf_normalize;        // ESMTPBareLineFeed: -1 unset, 0 reject, 1 normalize
    int forbid_unauth_pipelining; // -1 unset
    apr_int64_t max_junk_commands;
    apr_int64_t greeting_delay_ms;
    apr_int64_t pregreet_ms;       // ESMTPPregreet: -1 unset, -2 Off, else the wait
    const char *pregreet_teaser;   // nullptr: the default teaser; "": none
    apr_int64_t pregreet_remember; // seconds a pass or failure is kept in ESMTPStateCache (0: not)
    // ESMTPDNSBL sites (owned by a pool cleanup; an empty list: Off);
    // nullptr: inherited. ESMTPDNSBLThreshold N reject= timeout=, and
    // ESMTPDNSServer: -1 / nullptr unset.
    std::shared_ptr<const std::vector<DnsblSite>> *dnsbl_sites;
    apr_int64_t dnsbl_threshold;
    int dnsbl_at_rcpt;
    apr_int64_t dnsbl_timeout_ms;
    const char *dns_server;
    GreylistSpec greylist; // ESMTPGreylist; on == -1: inherited
    apr_int64_t min_data_rate;
    // ESMTPClient* (per-client limits): -1 / unset flags / nullptr: inherited
    apr_int64_t client_connection_limit;
    RateLimit client_rates[4]; // connection, message, recipient, auth
    int client_rates_set[4];
    apr_int64_t client_ipv6_prefix;
    apr_array_header_t *client_exceptions; // Network; empty: "none"
    apr_int64_t client_table_size;         // main server only
    WorkerCapSpec worker_cap;              // ESMTPMaxWorkers, main server only
    // ESMTPMilter lines of this server, in order (owned by a pool cleanup);
    // null: inherited. ESMTPMilterSpoolDir.
    milter::Config *milters;
    const char *milter_spool_dir;
    int starttls;                      // ESMTPStartTLS: -1 unset, else a StartTls value
    apr_int64_t tls_timeout;           // ESMTPTimeout tls=
    int proxy_protocol;                // ESMTPProxyProtocol: -1 unset, else a ProxyAccept
    apr_array_header_t *proxy_trusted; // ESMTPProxyTrusted (const char *), checked when read
    apr_int64_t proxy_timeout;         // ESMTPProxyTimeout, seconds
    apr_array_header_t *xclient_hosts; // ESMTPXClientHosts (const char *)
    // mod_ssl asked for a fallback certificate for this server in this
    // generation (httpd/tls.cpp): it has no real one yet.
    int tls_fallback;
    // AUTH (httpd/auth.cpp): -1 unset
    int auth_mechanisms;                  // ESMTPAuth: AuthMechanism bits, 0 Off
    apr_array_header_t *auth_providers;   // ESMTPAuthProvider (const char *), checked in check_config
    int auth_require_tls;                 // ESMTPAuthRequireTLS
    int submission;                       // ESMTPSubmission
    apr_int64_t max_auth_failures;        // ESMTPMaxAuthFailures
    apr_array_header_t *auth_proxy_users; // ESMTPAuthProxyUsers (const char *)
    int sender_login_match;               // ESMTPSenderLoginMatch: -1 unset, 0 Off, 1 On, 2 FILE
    std::shared_ptr<const SenderLoginMap> *sender_login_map; // FILE's map (owned by a pool cleanup)
    apr_int64_t auth_failure_delay_ms;                       // ESMTPAuthFailureDelay
    // The effective session settings, built once in post_config.
    const SessionConfig *session;
    // This server's row in the live counters (httpd/status.cpp), set in
    // post_config; 0: none.
    unsigned stats_server;
};

inline ServerConfig *server_config(const server_rec *s)
{
    return static_cast<ServerConfig *>(ap_get_module_config(s->module_config, &esmtp_module));
}

// Calls f(server, config) once per handler factory of the servers that speak
// SMTP (virtual hosts share their server's factory).
template <class F> void for_each_handler_factory(server_rec *main, F &&f)
{
    std::set<const HandlerFactory *> seen;
    for (server_rec *s = main; s; s = s->next) {
        const ServerConfig *cfg = server_config(s);
        if (cfg->enabled == 1 && cfg->factory && *cfg->factory && seen.insert(cfg->factory->get()).second)
            f(s, cfg);
    }
}

// HandlerFactory::check(), whatever it throws turned into `why`.
bool check_handler(const HandlerFactory &factory, std::string &why) noexcept;

// Effective values (defaults applied) for one server.
SessionConfig session_config(const server_rec *s, const ServerConfig *cfg);

void *create_server_config(apr_pool_t *p, server_rec *s) noexcept;
void *merge_server_config(apr_pool_t *p, void *base, void *add) noexcept;
// check_config hook: runs before `apache2 -t` reports; gives each SMTP server
// its handler's factory (HandlerFactory::for_server) and refuses incomplete servers.
int check_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp, server_rec *s);
// post_config hook: builds each server's SessionConfig.
int post_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp, server_rec *s);

extern const command_rec directives[];

} // namespace esmtp
