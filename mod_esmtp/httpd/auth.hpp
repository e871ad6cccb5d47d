// SMTP AUTH checked by httpd's authn providers (ESMTPAuthProvider): the
// engine's Authenticator, implemented with the providers' check_password(),
// as mod_auth_basic runs them.
#pragma once

#include "engine/auth.hpp"
#include "httpd/mod_esmtp.hpp"

#include <apr_tables.h>

namespace esmtp
{

struct ServerConfig;

// check_config: looks up the ESMTPAuthProvider names of every server that
// offers AUTH (fails `apache2 -t` naming the directive when one is unknown
// or cannot check a password, or when ESMTPAuth has no provider).
int auth_check_config(server_rec *main);

class ProviderAuthenticator final : public Authenticator
{
  public:
    ProviderAuthenticator(conn_rec *c, const ServerConfig *cfg) : c_(c), cfg_(cfg) {}
    // Runs the providers in order within this call (a provider that blocks,
    // e.g. LDAP, holds this thread; see the README): the first that knows
    // the user decides. Before a refusal it waits ESMTPAuthFailureDelay.
    std::optional<AuthVerdict> check(const AuthRequest &r) override;

  private:
    conn_rec *c_;
    const ServerConfig *cfg_;
};

} // namespace esmtp
