#include "engine/proxy_protocol.hpp"

#include "engine/text.hpp"

#include <arpa/inet.h>
#include <sys/socket.h>

#include <cstring>
#include <vector>

namespace esmtp
{

namespace
{

constexpr std::string_view kV1Sig = "PROXY ";
constexpr std::string_view kV2Sig{"\r\n\r\n\0\r\nQUIT\n", 12};
// v2 address block sizes (proxy-protocol.txt 2.2)
constexpr std::size_t kInetLen = 12, kInet6Len = 36, kUnixLen = 216;
// What is kept of a TLV for the log.
constexpr std::size_t kTlvKeep = 255;

std::vector<std::string_view> split_spaces(std::string_view s)
{
    std::vector<std::string_view> out;
    std::size_t start = 0;
    for (std::size_t i = 0; i <= s.size(); ++i)
        if (i == s.size() || s[i] == ' ') {
            out.push_back(s.substr(start, i - start));
            start = i + 1;
        }
    return out;
}

// A decimal port: 0..65535, no sign, no leading zero (proxy-protocol.txt 2.1).
bool parse_port(std::string_view s, unsigned &port)
{
    return !(s.size() > 1 && s[0] == '0') && parse_decimal(s, 5, 65535, port);
}

bool parse_addr(std::string_view s, int family, std::array<unsigned char, 16> &bytes, std::string &text)
{
    return parse_ip(s, family == 4 ? AF_INET : AF_INET6, bytes.data(), text);
}

void set_addr(const unsigned char *p, int family, std::array<unsigned char, 16> &bytes, std::string &text)
{
    std::size_t n = family == 4 ? 4 : 16;
    std::memcpy(bytes.data(), p, n);
    char buf[INET6_ADDRSTRLEN];
    inet_ntop(family == 4 ? AF_INET : AF_INET6, p, buf, sizeof buf);
    text = buf;
}

} // namespace

std::string proxy_printable(std::string_view s, std::size_t max)
{
    static const char hex[] = "0123456789ABCDEF";
    std::string r;
    for (char ch : s.substr(0, max)) {
        auto c = static_cast<unsigned char>(ch);
        if (c >= 0x21 && c < 0x7F && c != '\\') {
            r.push_back(ch);
        } else if (c == ' ') {
            r.push_back(' ');
        } else {
            r += "\\x";
            r.push_back(hex[c >> 4]);
            r.push_back(hex[c & 15]);
        }
    }
    if (s.size() > max)
        r += "...";
    return r;
}

void ProxyParser::fail(std::string why)
{
    status_ = Status::error;
    error_ = std::move(why);
}

std::size_t ProxyParser::feed(std::string_view in)
{
    std::size_t used = 0;
    while (status_ == Status::more && used < in.size()) {
        if (version_ == 0) {
            // The first octet decides; every later one is checked against
            // the signature as it arrives, so a client that speaks SMTP
            // (or TLS) is told at once instead of waiting for the timeout.
            char c = in[used];
            if (c == kV1Sig[0] && accept_ != ProxyAccept::v2)
                version_ = 1;
            else if (c == kV2Sig[0] && accept_ != ProxyAccept::v1)
                version_ = 2;
            else if (c == kV1Sig[0])
                return fail("a PROXY v1 header, but ESMTPProxyProtocol is v2"), used;
            else if (c == kV2Sig[0])
                return fail("a PROXY v2 header, but ESMTPProxyProtocol is v1"), used;
            else
                return fail("no PROXY header (the connection began with \"" + proxy_printable(in.substr(used, 1)) +
                            "\")"),
                       used;
        }
        used += version_ == 1 ? feed_v1(in.substr(used)) : feed_v2(in.substr(used));
    }
    return used;
}

std::size_t ProxyParser::feed_v1(std::string_view in)
{
    std::size_t used = 0;
    while (used < in.size()) {
        char c = in[used++];
        buf_.push_back(c);
        std::size_t n = buf_.size();
        if (n <= kV1Sig.size() && c != kV1Sig[n - 1]) {
            fail("no PROXY header (the connection began with \"" + proxy_printable(buf_) + "\")");
            return used;
        }
        if (n >= 2 && buf_[n - 2] == '\r' && c != '\n') {
            fail("PROXY v1 header: CR not followed by LF");
            return used;
        }
        if (c == '\n') {
            if (n < 2 || buf_[n - 2] != '\r') {
                fail("PROXY v1 header: line ends with a bare LF");
                return used;
            }
            parse_v1();
            return used;
        }
        if (n >= kV1Max) {
            fail("PROXY v1 header longer than 107 octets");
            return used;
        }
    }
    return used;
}

void ProxyParser::parse_v1()
{
    std::string_view line(buf_);
    line.remove_suffix(2);
    auto f = split_spaces(line);
    header_.version = 1;
    if (f.size() >= 2 && f[1] == "UNKNOWN") {
        // The rest of the line is to be ignored (proxy-protocol.txt 2.1).
        header_.local = true;
        status_ = Status::done;
        return;
    }
    if (f.size() < 2 || (f[1] != "TCP4" && f[1] != "TCP6"))
        return fail("PROXY v1 header: unknown protocol \"" + proxy_printable(f.size() >= 2 ? f[1] : "") +
                    "\" (TCP4, TCP6 or UNKNOWN)");
    if (f.size() != 6)
        return fail("PROXY v1 header: expected PROXY " + std::string(f[1]) +
                    " SOURCE DESTINATION SPORT DPORT, single spaces");
    int family = f[1] == "TCP4" ? 4 : 6;
    if (!parse_addr(f[2], family, header_.source_bytes, header_.source))
        return fail("PROXY v1 header: bad " + std::string(f[1]) + " source address \"" + proxy_printable(f[2]) + "\"");
    if (!parse_addr(f[3], family, header_.destination_bytes, header_.destination))
        return fail("PROXY v1 header: bad " + std::string(f[1]) + " destination address \"" + proxy_printable(f[3]) +
                    "\"");
    if (!parse_port(f[4], header_.source_port))
        return fail("PROXY v1 header: bad source port \"" + proxy_printable(f[4]) + "\"");
    if (!parse_port(f[5], header_.destination_port))
        return fail("PROXY v1 header: bad destination port \"" + proxy_printable(f[5]) + "\"");
    header_.family = family;
    header_.local = false;
    status_ = Status::done;
}

std::size_t ProxyParser::feed_v2(std::string_view in)
{
    std::size_t used = 0;
    while (used < in.size() && status_ == Status::more) {
        if (buf_.size() < kV2Fixed) {
            char c = in[used++];
            buf_.push_back(c);
            std::size_t n = buf_.size();
            if (n <= kV2Sig.size() && c != kV2Sig[n - 1])
                return fail("no PROXY header (the connection began with \"" + proxy_printable(buf_) + "\")"), used;
            if (n == 13) {
                auto vc = static_cast<unsigned char>(c);
                if ((vc >> 4) != 2)
                    return fail("PROXY v2 header: version " + std::to_string(vc >> 4) + ", not 2"), used;
                if ((vc & 15) > 1)
                    return fail("PROXY v2 header: unknown command " + std::to_string(vc & 15) + " (LOCAL or PROXY)"),
                           used;
            }
            if (n == kV2Fixed) {
                auto hi = static_cast<unsigned char>(buf_[14]), lo = static_cast<unsigned char>(buf_[15]);
                v2_total_ = kV2Fixed + (std::size_t(hi) << 8 | lo);
                if (v2_total_ == kV2Fixed) {
                    parse_v2();
                    return used;
                }
                buf_.reserve(v2_total_);
            }
            continue;
        }
        // Take the rest of the announced length, no more.
        std::size_t take = std::min(in.size() - used, v2_total_ - buf_.size());
        buf_.append(in.substr(used, take));
        used += take;
        if (buf_.size() == v2_total_)
            parse_v2();
    }
    return used;
}

void ProxyParser::parse_v2()
{
    const auto *p = reinterpret_cast<const unsigned char *>(buf_.data());
    header_.version = 2;
    unsigned command = p[12] & 15;
    unsigned family = p[13] >> 4, transport = p[13] & 15;
    std::size_t len = buf_.size() - kV2Fixed;
    if (command == 0) {
        // LOCAL: the balancer's own connection (health check); the address
        // block is to be ignored.
        header_.local = true;
        status_ = Status::done;
        return;
    }
    if (transport > 2)
        return fail("PROXY v2 header: unknown transport " + std::to_string(transport));
    std::size_t addr_len = 0;
    switch (family) {
    case 0: // AF_UNSPEC: no address; the connection's own are used
        header_.local = true;
        status_ = Status::done;
        return;
    case 1:
        addr_len = kInetLen;
        break;
    case 2:
        addr_len = kInet6Len;
        break;
    case 3:
        addr_len = kUnixLen;
        break;
    default:
        return fail("PROXY v2 header: unknown address family " + std::to_string(family));
    }
    if (family != 3 && transport != 1)
        return fail("PROXY v2 header: the transport is not STREAM (TCP)");
    if (len < addr_len)
        return fail("PROXY v2 header: " + std::to_string(len) + " octets of addresses, the family needs " +
                    std::to_string(addr_len));
    const unsigned char *a = p + kV2Fixed;
    if (family == 3) {
        header_.local = true; // a UNIX socket path names no client
    } else {
        int fam = family == 1 ? 4 : 6;
        std::size_t n = fam == 4 ? 4 : 16;
        set_addr(a, fam, header_.source_bytes, header_.source);
        set_addr(a + n, fam, header_.destination_bytes, header_.destination);
        header_.source_port = unsigned(a[2 * n]) << 8 | a[2 * n + 1];
        header_.destination_port = unsigned(a[2 * n + 2]) << 8 | a[2 * n + 3];
        header_.family = fam;
        header_.local = false;
    }
    // TLVs: type, 16-bit length, value; each must fit in what is left.
    std::size_t pos = kV2Fixed + addr_len, end = buf_.size();
    while (pos < end) {
        if (end - pos < 3)
            return fail("PROXY v2 header: truncated TLV at octet " + std::to_string(pos));
        unsigned type = p[pos];
        std::size_t vlen = std::size_t(p[pos + 1]) << 8 | p[pos + 2];
        if (vlen > end - pos - 3)
            return fail("PROXY v2 header: TLV of type " + std::to_string(type) + " runs past the header");
        std::string_view value(buf_.data() + pos + 3, vlen);
        if (type == 0x02)
            header_.authority = proxy_printable(value, kTlvKeep);
        else if (type == 0x05)
            header_.unique_id = proxy_printable(value, kTlvKeep);
        pos += 3 + vlen;
    }
    status_ = Status::done;
}

} // namespace esmtp
