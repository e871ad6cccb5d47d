// libFuzzer target: the PROXY protocol parser (engine/proxy_protocol.hpp).
//
// Input: [mode byte] then a chunked payload (fuzz_util.hpp split_input).
// Invariants:
//  - the result (status, error, header, octets taken) is the same whether
//    the payload arrives in the fuzzer's pieces, whole, or byte by byte;
//  - the parser never takes an octet past the header: while hungry it has
//    taken everything, when done it took consumed() octets, at most 107
//    for v1 and 16 + 65535 for v2; v1 ends with CRLF, v2 with its length;
//  - an error has a message; a header with addresses has a family of 4 or
//    6 and canonical addresses that inet_pton reads back to the same bytes.
#include "engine/proxy_protocol.hpp"
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
    return 0;
}
