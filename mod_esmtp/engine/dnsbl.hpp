// DNS block and allow lists with weights (ESMTPDNSBL, after Postfix
// postscreen's dnsbl_sites): the configured sites, the query name of a
// client address, which answers count, and the score of a client. No DNS
// here: the glue (httpd/dnsbl_lookup.cpp) asks the resolver.
#pragma once

#include <array>
#include <bitset>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace esmtp
{

using Ipv4Answer = std::array<std::uint8_t, 4>;

struct DnsblSite {
    std::string domain; // "zen.example.org", lower case, no trailing dot
    // The answers that count: per octet the values allowed; without a
    // filter any A record counts.
    bool filtered = false;
    std::array<std::bitset<256>, 4> octets;
    // Added to the score when the client is listed; negative for an allow
    // list (DNSWL).
    int weight = 1;
};

// "DOMAIN[=FILTER][*WEIGHT]", FILTER as postscreen's: four octets separated
// by dots, each a number, [N..M] or [N;M;...] (e.g. 127.0.[0..255].[1..3]).
// False with `why` on a bad spec.
bool parse_dnsbl_site(std::string_view spec, DnsblSite &out, std::string &why);

// The name to look up: the address's octets (IPv4) or nibbles (IPv6) in
// reverse, then the site's domain. Empty when `address` is no IP address.
std::string dnsbl_query_name(std::string_view address, std::string_view domain);

// Whether one of the A records answered for the site counts.
bool dnsbl_matches(const DnsblSite &site, const std::vector<Ipv4Answer> &answers);

// A client's standing after its lookups.
struct DnsblScore {
    int score = 0;
    std::string blocked_by;   // the listing site of the largest weight ("" if none)
    bool allowlisted = false; // listed by a site of negative weight (DNSWL)
    int top_weight_ = 0;      // blocked_by's weight
};

// Adds one site's result to the score.
void dnsbl_add(DnsblScore &score, const DnsblSite &site, bool listed);

} // namespace esmtp
