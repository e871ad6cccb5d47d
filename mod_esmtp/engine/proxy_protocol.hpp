// The PROXY protocol header (HAProxy's proxy-protocol.txt, versions 1 and
// 2) that a load balancer sends before the client's first byte: the
// client's real address. Sans-I/O and incremental: bytes may arrive one at
// a time; the parser never takes an octet past the end of the header, so
// the caller can hand what follows (TLS, SMTP) to the next layer intact.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace esmtp
{

// ESMTPProxyProtocol: which versions a trusted peer may send.
enum class ProxyAccept { off, v1, v2, any };

struct ProxyHeader {
    int version = 0; // 1 or 2
    // No address to take: v1 UNKNOWN, v2 LOCAL, or a v2 family other than
    // INET/INET6 (the connection's own addresses stay, as the spec says).
    bool local = true;
    int family = 0;                  // 4 or 6 when !local
    std::string source, destination; // canonical text (inet_ntop)
    unsigned source_port = 0, destination_port = 0;
    std::array<unsigned char, 16> source_bytes{}, destination_bytes{}; // network order, 4 or 16 used
    // v2 TLVs kept for the transaction log (others are skipped).
    std::string authority; // PP2_TYPE_AUTHORITY (0x02): the host name the client asked for (SNI)
    std::string unique_id; // PP2_TYPE_UNIQUE_ID (0x05): the balancer's connection id
};

class ProxyParser
{
  public:
    enum class Status { more, done, error };

    // v1: "PROXY ..." CRLF, at most 107 octets.
    static constexpr std::size_t kV1Max = 107;
    // v2: 16 octets, then up to 65535 of addresses and TLVs.
    static constexpr std::size_t kV2Fixed = 16;

    explicit ProxyParser(ProxyAccept accept) : accept_(accept) {}

    // Take octets of the header from `in`; returns how many were taken
    // (never more than the header's own). status() says whether the header
    // is complete, needs more, or is malformed (error(): why).
    std::size_t feed(std::string_view in);
    Status status() const { return status_; }
    const std::string &error() const { return error_; }
    const ProxyHeader &header() const { return header_; }
    // Octets taken so far.
    std::size_t consumed() const { return buf_.size(); }

  private:
    std::size_t feed_v1(std::string_view in);
    std::size_t feed_v2(std::string_view in);
    void parse_v1();
    void parse_v2();
    void fail(std::string why);

    ProxyAccept accept_;
    Status status_ = Status::more;
    int version_ = 0; // 0 until the first octets tell
    std::string buf_;
    std::size_t v2_total_ = 0; // known once the fixed part is in
    std::string error_;
    ProxyHeader header_;
};

// A printable, bounded rendering of client octets for an error message.
std::string proxy_printable(std::string_view s, std::size_t max = 40);

} // namespace esmtp
