#include "engine/cidr.hpp"

#include "engine/text.hpp"

#include <arpa/inet.h>
#include <sys/socket.h>

#include <cstring>

namespace esmtp
{

bool IpAddress::parse(std::string_view text, IpAddress &out)
{
    char buf[64];
    if (text.empty() || text.size() >= sizeof buf)
        return false;
    std::memcpy(buf, text.data(), text.size());
    buf[text.size()] = '\0';
    IpAddress a;
    unsigned char raw[16];
    if (inet_pton(AF_INET, buf, raw) == 1) {
        a.octets[10] = a.octets[11] = 0xff;
        std::memcpy(a.octets.data() + 12, raw, 4);
        a.v4 = true;
    } else if (inet_pton(AF_INET6, buf, raw) == 1) {
        std::memcpy(a.octets.data(), raw, 16);
        static const std::uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        a.v4 = std::memcmp(raw, mapped, 12) == 0;
    } else {
        return false;
    }
    out = a;
    return true;
}

bool Network::parse(std::string_view text, Network &out, HostBits host_bits)
{
    std::size_t slash = text.find('/');
    Network n;
    if (!IpAddress::parse(text.substr(0, slash), n.base))
        return false;
    unsigned width = n.base.v4 ? 32 : 128;
    unsigned prefix = width;
    if (slash != std::string_view::npos) {
        if (!parse_decimal(text.substr(slash + 1), 3, width, prefix))
            return false;
    }
    n.prefix = prefix + (n.base.v4 ? 96 : 0);
    for (unsigned bit = n.prefix; bit < 128; ++bit) {
        auto mask = static_cast<std::uint8_t>(0x80u >> (bit % 8));
        if ((n.base.octets[bit / 8] & mask) && host_bits == HostBits::reject)
            return false;
        n.base.octets[bit / 8] &= static_cast<std::uint8_t>(~mask);
    }
    out = n;
    return true;
}

bool Network::contains(const IpAddress &a) const
{
    unsigned full = prefix / 8, rest = prefix % 8;
    if (std::memcmp(a.octets.data(), base.octets.data(), full) != 0)
        return false;
    if (!rest)
        return true;
    auto mask = static_cast<std::uint8_t>(0xff00u >> rest);
    return (a.octets[full] & mask) == (base.octets[full] & mask);
}

bool CidrList::add(std::string_view spec)
{
    Network n;
    if (!Network::parse(spec, n, Network::HostBits::reject))
        return false;
    entries_.push_back(n);
    return true;
}

bool CidrList::contains(std::string_view address) const
{
    IpAddress a;
    if (!IpAddress::parse(address, a))
        return false;
    for (const Network &n : entries_)
        if (n.contains(a))
            return true;
    return false;
}

} // namespace esmtp
