#include "engine/cidr.hpp"

#include <arpa/inet.h>
#include <sys/socket.h>

#include <cstring>

namespace esmtp
{

namespace
{

// Any address as 16 octets, IPv4 mapped into ::ffff:0:0/96.
bool to_v6(std::string_view text, std::array<unsigned char, 16> &out, bool &v4)
{
    if (text.empty() || text.size() > 45)
        return false;
    std::string z(text);
    unsigned char b4[4];
    out.fill(0);
    if (inet_pton(AF_INET, z.c_str(), b4) == 1) {
        out[10] = out[11] = 0xFF;
        std::memcpy(out.data() + 12, b4, 4);
        v4 = true;
        return true;
    }
    v4 = false;
    return inet_pton(AF_INET6, z.c_str(), out.data()) == 1;
}

bool prefix_equal(const std::array<unsigned char, 16> &a, const std::array<unsigned char, 16> &b, unsigned bits)
{
    unsigned full = bits / 8, rest = bits % 8;
    if (std::memcmp(a.data(), b.data(), full) != 0)
        return false;
    if (rest == 0)
        return true;
    unsigned char mask = static_cast<unsigned char>(0xFF << (8 - rest));
    return (a[full] & mask) == (b[full] & mask);
}

} // namespace

bool CidrList::add(std::string_view spec)
{
    Entry e;
    std::string_view addr = spec;
    std::size_t slash = spec.find('/');
    bool v4 = false;
    if (slash != std::string_view::npos)
        addr = spec.substr(0, slash);
    if (!to_v6(addr, e.net, v4))
        return false;
    unsigned max = v4 ? 32 : 128;
    unsigned bits = max;
    if (slash != std::string_view::npos) {
        std::string_view n = spec.substr(slash + 1);
        if (n.empty() || n.size() > 3)
            return false;
        bits = 0;
        for (char c : n) {
            if (c < '0' || c > '9')
                return false;
            bits = bits * 10 + unsigned(c - '0');
        }
        if (bits > max)
            return false;
    }
    e.prefix = v4 ? bits + 96 : bits;
    // host bits set: almost always a typo for another network
    std::array<unsigned char, 16> zeroed{};
    for (unsigned i = 0; i < e.prefix; ++i)
        if (e.net[i / 8] & (0x80 >> (i % 8)))
            zeroed[i / 8] |= static_cast<unsigned char>(0x80 >> (i % 8));
    if (zeroed != e.net)
        return false;
    entries_.push_back(e);
    return true;
}

bool CidrList::contains(std::string_view address) const
{
    std::array<unsigned char, 16> a;
    bool v4;
    if (!to_v6(address, a, v4))
        return false;
    for (const Entry &e : entries_)
        if (prefix_equal(a, e.net, e.prefix))
            return true;
    return false;
}

} // namespace esmtp
