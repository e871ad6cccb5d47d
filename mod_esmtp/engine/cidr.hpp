// Client addresses and networks in CIDR notation: "192.0.2.1",
// "192.0.2.0/24", "2001:db8::/32". One implementation for every list of
// them: ESMTPProxyTrusted and ESMTPXClientHosts (CidrList) and
// ESMTPClientLimitExceptions (client_limits.hpp). httpd-free so that the
// engine (XCLIENT, client limits) and its tests use it too.
#pragma once

#include <array>
#include <cstdint>
#include <string_view>
#include <vector>

namespace esmtp
{

// An IPv4 or IPv6 address as 16 octets (IPv4 as ::ffff:a.b.c.d).
struct IpAddress {
    std::array<std::uint8_t, 16> octets{};
    bool v4 = false;
    // Dotted quad, IPv6 text, or IPv4-mapped IPv6 (taken as IPv4).
    static bool parse(std::string_view text, IpAddress &out);
};

// A network "192.0.2.0/24", "2001:db8::/32", or one address.
struct Network {
    IpAddress base;
    unsigned prefix = 0; // over the 128-bit form (an IPv4 /24 is 96 + 24)
    // Host bits set past the prefix ("10.0.0.1/8") are cleared (ignore) or
    // make the text invalid (reject: almost always a typo for another
    // network).
    enum class HostBits { ignore, reject };
    static bool parse(std::string_view text, Network &out, HostBits host_bits = HostBits::ignore);
    // An IPv4 network also holds its addresses written as ::ffff:a.b.c.d.
    bool contains(const IpAddress &a) const;
};

// A list of networks given as text (ESMTPProxyTrusted, ESMTPXClientHosts).
class CidrList
{
  public:
    // Adds one entry; false (nothing added) when `spec` is no address or
    // CIDR block, or has host bits set past the prefix ("10.0.0.1/8").
    bool add(std::string_view spec);
    // An IPv4 address also matches as ::ffff:a.b.c.d and the other way round.
    bool contains(std::string_view address) const;
    bool empty() const { return entries_.empty(); }

  private:
    std::vector<Network> entries_;
};

} // namespace esmtp
