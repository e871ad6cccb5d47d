#include "httpd/auth.hpp"

#include "httpd/bulkhead.hpp"
#include "httpd/config.hpp"
#include "httpd/tls.hpp"

#include <apr_md5.h>
#include <apr_strings.h>
#include <apr_time.h>
#include <ap_provider.h>
#include <http_log.h>
#include <http_protocol.h>
#include <mod_auth.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <string>

namespace esmtp
{

namespace
{

const authn_provider *lookup(const char *name)
{
    return static_cast<const authn_provider *>(ap_lookup_provider(AUTHN_PROVIDER_GROUP, name, AUTHN_PROVIDER_VERSION));
}

// How long this process's providers took for users they know (a moving
// average): an unknown user's answer is made to take as long, so that the
// time to a 535 does not tell whether a user exists.
std::atomic<apr_interval_time_t> g_known_user_check{0};

// Before any known user was checked: the work of one bcrypt check at
// htpasswd -B's default cost (a hash of a password nobody has).
constexpr const char *kDummyHash = "$2y$05$fngJjhKMYhPmrIQ0R0OUcOk65MMyoXxi631Mo1vOwFjmaZ.YBYu6u";
// A provider that hangs (a directory server) must not slow every unknown user.
constexpr apr_interval_time_t kMaxEqualizing = apr_time_from_sec(2);

void equalize_unknown_user(const char *password, apr_interval_time_t took)
{
    apr_interval_time_t known = g_known_user_check.load(std::memory_order_relaxed);
    if (!known)
        apr_password_validate(password, kDummyHash);
    else if (known > took)
        apr_sleep(std::min(known - took, kMaxEqualizing));
}

void remember_known_user_check(apr_interval_time_t took)
{
    apr_interval_time_t old = g_known_user_check.load(std::memory_order_relaxed);
    g_known_user_check.store(old ? (old * 7 + took) / 8 : took, std::memory_order_relaxed);
}

const char *server_name(const server_rec *s)
{
    return s->server_hostname ? s->server_hostname : "?";
}

} // namespace

int auth_check_config(server_rec *main)
{
    int rv = OK;
    for (server_rec *s = main; s; s = s->next) {
        const ServerConfig *cfg = server_config(s);
        if (cfg->enabled != 1)
            continue;
        bool on = cfg->auth_mechanisms > 0;
        if (cfg->submission == 1 && !on) {
            ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_EMERG, 0, nullptr,
                         "ESMTPSubmission On for server %s (%s:%d) needs ESMTPAuth (e.g. ESMTPAuth PLAIN LOGIN) "
                         "and ESMTPAuthProvider",
                         server_name(s), s->defn_name ? s->defn_name : "?", s->defn_line_number);
            rv = !OK;
        }
        if (!on)
            continue;
        if (cfg->auth_require_tls != 0 && !ssl_engine_on(s))
            ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_WARNING, 0, nullptr,
                         "ESMTPAuth for server %s (%s:%d): no TLS here (SSLEngine is not on) and "
                         "ESMTPAuthRequireTLS is On, so AUTH is never offered",
                         server_name(s), s->defn_name ? s->defn_name : "?", s->defn_line_number);
        if (!cfg->auth_providers || cfg->auth_providers->nelts == 0) {
            ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_EMERG, 0, nullptr,
                         "ESMTPAuth for server %s (%s:%d) needs ESMTPAuthProvider: the authn providers or "
                         "<AuthnProviderAlias> names that check the passwords",
                         server_name(s), s->defn_name ? s->defn_name : "?", s->defn_line_number);
            rv = !OK;
            continue;
        }
        for (int i = 0; i < cfg->auth_providers->nelts; ++i) {
            const char *name = APR_ARRAY_IDX(cfg->auth_providers, i, const char *);
            const authn_provider *p = lookup(name);
            if (!p) {
                ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_EMERG, 0, nullptr,
                             "ESMTPAuthProvider: unknown authn provider '%s' for server %s (%s:%d): load its module "
                             "(e.g. mod_authn_file, mod_authn_dbm) or define <AuthnProviderAlias PROVIDER %s>",
                             name, server_name(s), s->defn_name ? s->defn_name : "?", s->defn_line_number, name);
                rv = !OK;
            } else if (!p->check_password) {
                ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_EMERG, 0, nullptr,
                             "ESMTPAuthProvider: the authn provider '%s' cannot check passwords", name);
                rv = !OK;
            }
        }
    }
    return rv;
}

std::optional<AuthVerdict> ProviderAuthenticator::check(const AuthRequest &req)
{
    // A request_rec of its own (and its pool) per attempt: providers need
    // one; its per-dir config is the server's defaults, which an
    // <AuthnProviderAlias> completes through AUTHN_PROVIDER_NAME_NOTE. No
    // post_read_request hooks run on it (mod_ssl would keep a pointer to it).
    // The provider may wait on a backend (LDAP, SQL) and a refused password
    // waits ESMTPAuthFailureDelay: one worker held for both, or, beyond
    // ESMTPMaxWorkers, 421 at once (no check, no delay).
    WorkerHold hold = WorkerHold::try_take();
    if (!hold) {
        ap_log_cerror(APLOG_MARK, APLOG_INFO, 0, c_, "esmtp: AUTH not checked: ESMTPMaxWorkers reached");
        return AuthVerdict::busy;
    }
    request_rec *r = ap_create_request(c_);
    r->method = "AUTH";
    r->uri = apr_pstrdup(r->pool, "/");
    r->the_request = apr_pstrdup(r->pool, "AUTH");
    const char *user = apr_pstrmemdup(r->pool, req.user.data(), req.user.size());
    char *password = apr_pstrmemdup(r->pool, req.password.data(), req.password.size());
    authn_status st = AUTH_USER_NOT_FOUND;
    const char *decided_by = "";
    apr_time_t started = apr_time_now();
    for (int i = 0; i < cfg_->auth_providers->nelts; ++i) {
        const char *name = APR_ARRAY_IDX(cfg_->auth_providers, i, const char *);
        const authn_provider *p = lookup(name);
        if (!p || !p->check_password) { // checked at start-up
            st = AUTH_GENERAL_ERROR;
            break;
        }
        apr_table_setn(r->notes, AUTHN_PROVIDER_NAME_NOTE, name);
        st = p->check_password(r, user, password);
        apr_table_unset(r->notes, AUTHN_PROVIDER_NAME_NOTE);
        decided_by = name;
        // as mod_auth_basic: the first provider that knows the user decides
        if (st != AUTH_USER_NOT_FOUND)
            break;
    }
    if (st == AUTH_USER_NOT_FOUND)
        equalize_unknown_user(password, apr_time_now() - started);
    else if (st == AUTH_DENIED || st == AUTH_GRANTED)
        remember_known_user_check(apr_time_now() - started);
    // the password's copy must not linger in the freed pool
    wipe_bytes(password, req.password.size());
    AuthVerdict v = st == AUTH_GRANTED                               ? AuthVerdict::granted
                    : st == AUTH_DENIED || st == AUTH_USER_NOT_FOUND ? AuthVerdict::denied
                                                                     : AuthVerdict::unavailable;
    switch (v) {
    case AuthVerdict::granted:
        ap_log_cerror(APLOG_MARK, APLOG_DEBUG, 0, c_, "esmtp: AUTH user %s granted by %s", user, decided_by);
        break;
    case AuthVerdict::denied:
        ap_log_cerror(APLOG_MARK, APLOG_INFO, 0, c_, "esmtp: AUTH user %s: %s", user,
                      st == AUTH_DENIED ? "password mismatch" : "user not found");
        break;
    case AuthVerdict::unavailable:
        ap_log_cerror(APLOG_MARK, APLOG_ERR, 0, c_,
                      "esmtp: AUTH user %s: authn provider %s failed (status %d); the client got 454 4.7.0", user,
                      decided_by, static_cast<int>(st));
        break;
    case AuthVerdict::busy: // answered before the providers were asked
        break;
    }
    apr_pool_destroy(r->pool);
    // Like Postfix's smtpd_error_sleep_time: a password guesser gets its
    // answer slowly. It waits in this thread, holding the worker taken
    // above (README, AUTH).
    if (v == AuthVerdict::denied && cfg_->session->auth_failure_delay_ms)
        apr_sleep(apr_time_from_msec(cfg_->session->auth_failure_delay_ms));
    return v;
}

} // namespace esmtp
