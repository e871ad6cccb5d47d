// Lists of client addresses in CIDR notation (ESMTPProxyTrusted,
// ESMTPXClientTrusted): "192.0.2.1", "192.0.2.0/24", "2001:db8::/32".
// httpd-free so that the engine (XCLIENT) and its tests use it too.
#pragma once

#include <array>
#include <string>
#include <string_view>
#include <vector>

namespace esmtp
{

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
    struct Entry {
        std::array<unsigned char, 16> net{}; // IPv4 as ::ffff:a.b.c.d
        unsigned prefix = 128;               // of the 128 bits
    };
    std::vector<Entry> entries_;
};

} // namespace esmtp
