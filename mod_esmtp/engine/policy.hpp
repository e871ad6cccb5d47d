// Recipient policy: which domains this server accepts mail for (no open
// relay), decided before the handler is asked.
#pragma once

#include <esmtp/handler.hpp>

#include <string_view>

namespace esmtp
{

struct SessionConfig;

// Case-insensitive match of a domain against a pattern with * and ?.
bool domain_matches(std::string_view pattern, std::string_view domain);

// <postmaster>, the address literal of the local address, or a domain of
// SessionConfig::accept_domains.
bool recipient_domain_accepted(const SessionConfig &cfg, std::string_view local_address, const Path &p);

} // namespace esmtp
