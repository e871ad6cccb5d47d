#include "engine/policy.hpp"

#include "engine/defaults.hpp"

#include <cctype>

namespace esmtp
{

namespace
{

char lower(char c)
{
    return static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
}

} // namespace

bool domain_matches(std::string_view pattern, std::string_view domain)
{
    // Iterative wildcard match with backtracking to the last '*'.
    std::size_t p = 0, d = 0, star = std::string_view::npos, mark = 0;
    while (d < domain.size()) {
        if (p < pattern.size() && (pattern[p] == '?' || lower(pattern[p]) == lower(domain[d]))) {
            ++p;
            ++d;
        } else if (p < pattern.size() && pattern[p] == '*') {
            star = p++;
            mark = d;
        } else if (star != std::string_view::npos) {
            p = star + 1;
            d = ++mark;
        } else {
            return false;
        }
    }
    while (p < pattern.size() && pattern[p] == '*')
        ++p;
    return p == pattern.size();
}

bool recipient_domain_accepted(const SessionConfig &cfg, std::string_view local_address, const Path &p)
{
    if (p.domain.empty()) // <postmaster>, RFC 5321 4.5.1
        return true;
    std::string_view d = p.domain;
    if (d.front() == '[') {
        std::string_view lit = d.substr(1, d.size() - 2);
        if (lit.size() >= 5 && domain_matches("ipv6:", lit.substr(0, 5)))
            lit.remove_prefix(5);
        return domain_matches(local_address, lit);
    }
    for (const std::string &pattern : cfg.accept_domains)
        if (domain_matches(pattern, d))
            return true;
    return false;
}

} // namespace esmtp
