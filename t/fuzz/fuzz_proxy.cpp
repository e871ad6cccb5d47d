// libFuzzer target: the PROXY protocol parser (engine/proxy_protocol.hpp)
// and the XCLIENT attribute parser (engine/xclient.hpp), the two parsers of
// what a front end says about the client.
//
// Input: [mode byte] then a chunked payload (fuzz_util.hpp split_input).
// Invariants:
//  - the result (status, error, header, octets taken) is the same whether
//    the payload arrives in the fuzzer's pieces, whole, or byte by byte;
//  - the parser never takes an octet past the header: while hungry it has
//    taken everything, when done it took consumed() octets, at most 107
//    for v1 and 16 + 65535 for v2; v1 ends with CRLF, v2 with its length;
//  - an error has a message; a header with addresses has a family of 4 or
//    6 and canonical addresses that inet_pton reads back to the same bytes;
//  - XCLIENT: the payload as an argument either parses (at least one
//    attribute; NAME/HELO/LOGIN printable words of at most 255 octets,
//    addresses that inet_pton reads, ports <= 65535) or gives a 501 text
//    that is one printable line; xtext decoding agrees with a reference.
#include "engine/dsn.hpp"
#include "engine/proxy_protocol.hpp"
#include "engine/xclient.hpp"
#include "fuzz_util.hpp"

#include <arpa/inet.h>

#include <cstring>

namespace
{

struct Result {
    esmtp::ProxyParser::Status status;
    std::string error;
    esmtp::ProxyHeader header;
    std::size_t taken;
};

template <class Pieces> Result run(esmtp::ProxyAccept mode, const Pieces &pieces, std::string_view all)
{
    esmtp::ProxyParser p(mode);
    std::size_t taken = 0;
    for (std::string_view piece : pieces) {
        if (p.status() != esmtp::ProxyParser::Status::more)
            break;
        std::size_t used = p.feed(piece);
        FUZZ_CHECK(used <= piece.size());
        taken += used;
        if (p.status() == esmtp::ProxyParser::Status::more)
            FUZZ_CHECK(used == piece.size());
    }
    FUZZ_CHECK(taken <= all.size());
    return {p.status(), p.error(), p.header(), taken};
}

bool same(const esmtp::ProxyHeader &a, const esmtp::ProxyHeader &b)
{
    return a.version == b.version && a.local == b.local && a.family == b.family && a.source == b.source &&
           a.destination == b.destination && a.source_port == b.source_port &&
           a.destination_port == b.destination_port && a.authority == b.authority && a.unique_id == b.unique_id;
}

void check_addr(const std::string &text, int family, const std::array<unsigned char, 16> &bytes)
{
    unsigned char buf[16];
    FUZZ_CHECK(inet_pton(family == 4 ? AF_INET : AF_INET6, text.c_str(), buf) == 1);
    FUZZ_CHECK(std::memcmp(buf, bytes.data(), family == 4 ? 4 : 16) == 0);
}

bool reference_xtext(std::string_view in, std::string &out)
{
    out.clear();
    for (std::size_t i = 0; i < in.size(); ++i) {
        unsigned char c = static_cast<unsigned char>(in[i]);
        if (c == '+') {
            if (in.size() - i < 3)
                return false;
            unsigned v = 0;
            for (int k = 1; k <= 2; ++k) {
                char h = in[i + k];
                if (h >= '0' && h <= '9')
                    v = v * 16 + unsigned(h - '0');
                else if (h >= 'A' && h <= 'F')
                    v = v * 16 + unsigned(h - 'A' + 10);
                else
                    return false;
            }
            out.push_back(static_cast<char>(v));
            i += 2;
        } else if (c >= 33 && c <= 126 && c != '=') {
            out.push_back(static_cast<char>(c));
        } else {
            return false;
        }
    }
    return true;
}

bool word(const std::string &s)
{
    if (s.size() > 255)
        return false;
    for (char ch : s)
        if (static_cast<unsigned char>(ch) <= 32 || static_cast<unsigned char>(ch) >= 127)
            return false;
    return true;
}

bool address(const std::string &a)
{
    unsigned char buf[16];
    return a == "unknown" || inet_pton(AF_INET, a.c_str(), buf) == 1 || inet_pton(AF_INET6, a.c_str(), buf) == 1;
}

void check_xclient(std::string_view in)
{
    std::string x, y;
    bool ok = esmtp::decode_xtext(in, x);
    FUZZ_CHECK(ok == reference_xtext(in, y));
    if (ok)
        FUZZ_CHECK(x == y);
    esmtp::XClientAttrs a;
    std::string error;
    if (!esmtp::parse_xclient(in, a, error)) {
        FUZZ_CHECK(!error.empty() && error.size() < 400);
        for (char c : error)
            FUZZ_CHECK(static_cast<unsigned char>(c) >= 32 && static_cast<unsigned char>(c) < 127);
        return;
    }
    FUZZ_CHECK(a.name || a.addr || a.port || a.esmtp || a.helo || a.login || a.destaddr || a.destport);
    for (const auto *w : {&a.name, &a.helo, &a.login})
        if (*w)
            FUZZ_CHECK(word(**w));
    for (const auto *ad : {&a.addr, &a.destaddr})
        if (*ad)
            FUZZ_CHECK(address(**ad));
    for (const auto *p : {&a.port, &a.destport})
        if (*p)
            FUZZ_CHECK(**p <= 65535);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size)
{
    std::string_view in(reinterpret_cast<const char *>(data), size);
    static const esmtp::ProxyAccept modes[] = {esmtp::ProxyAccept::v1, esmtp::ProxyAccept::v2, esmtp::ProxyAccept::any};
    esmtp::ProxyAccept mode = modes[fuzz::take_byte(in) % 3];
    fuzz::Chunked c = fuzz::split_input(in);
    std::string_view all = c.payload;

    Result r = run(mode, c.pieces, all);
    Result w = run(mode, std::vector<std::string_view>{all}, all);
    std::vector<std::string_view> bytes;
    for (std::size_t i = 0; i < all.size(); ++i)
        bytes.push_back(all.substr(i, 1));
    Result b = run(mode, bytes, all);
    for (const Result *o : {&w, &b}) {
        FUZZ_CHECK(o->status == r.status);
        FUZZ_CHECK(o->error == r.error);
        FUZZ_CHECK(o->taken == r.taken);
        if (r.status == esmtp::ProxyParser::Status::done)
            FUZZ_CHECK(same(o->header, r.header));
    }
    using S = esmtp::ProxyParser::Status;
    if (r.status == S::more)
        FUZZ_CHECK(r.taken == all.size());
    if (r.status == S::error)
        FUZZ_CHECK(!r.error.empty());
    if (r.status == S::done) {
        std::string_view h = all.substr(0, r.taken);
        const esmtp::ProxyHeader &x = r.header;
        if (x.version == 1) {
            FUZZ_CHECK(mode != esmtp::ProxyAccept::v2);
            FUZZ_CHECK(h.size() <= 107 && h.substr(0, 6) == "PROXY " && h.substr(h.size() - 2) == "\r\n");
            FUZZ_CHECK(h.find('\n') == h.size() - 1);
        } else {
            FUZZ_CHECK(x.version == 2 && mode != esmtp::ProxyAccept::v1);
            FUZZ_CHECK(h.size() >= 16);
            std::size_t len = std::size_t(static_cast<unsigned char>(h[14])) << 8 | static_cast<unsigned char>(h[15]);
            FUZZ_CHECK(h.size() == 16 + len);
        }
        if (!x.local) {
            FUZZ_CHECK(x.family == 4 || x.family == 6);
            FUZZ_CHECK(x.source_port <= 65535 && x.destination_port <= 65535);
            check_addr(x.source, x.family, x.source_bytes);
            check_addr(x.destination, x.family, x.destination_bytes);
        }
        FUZZ_CHECK(x.authority.size() <= 255 * 4 + 3 && x.unique_id.size() <= 255 * 4 + 3);
    }
    check_xclient(all);
    return 0;
}
