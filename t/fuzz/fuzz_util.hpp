// Helpers shared by the libFuzzer targets.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

// An invariant of the engine: report and abort (libFuzzer saves the input).
#define FUZZ_CHECK(cond)                                                                                               \
    do {                                                                                                               \
        if (!(cond)) {                                                                                                 \
            std::fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);                          \
            std::abort();                                                                                              \
        }                                                                                                              \
    } while (0)

namespace fuzz
{

// A printable rendering of bytes for failure messages.
inline std::string show(std::string_view s)
{
    std::string r;
    for (char ch : s) {
        auto c = static_cast<unsigned char>(ch);
        if (c == '\r')
            r += "\\r";
        else if (c == '\n')
            r += "\\n";
        else if (c < 32 || c >= 127) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\x%02x", c);
            r += buf;
        } else
            r.push_back(ch);
    }
    return r;
}

// The fuzzer's input as a header of control bytes followed by a payload.
// Layout: [n] [size_1] ... [size_n] payload, n = first byte % 16. The
// payload is cut into pieces of size_1, ..., size_n bytes (size 0 gives an
// empty piece; sizes are clamped to what is left) and a last piece with the
// rest, so that libFuzzer mutates the chunking as well as the bytes.
struct Chunked {
    std::string_view payload;
    std::vector<std::string_view> pieces;
};

inline Chunked split_input(std::string_view in)
{
    Chunked c;
    std::size_t n = in.empty() ? 0 : static_cast<unsigned char>(in[0]) % 16;
    in.remove_prefix(in.empty() ? 0 : 1);
    std::vector<std::size_t> sizes;
    for (std::size_t i = 0; i < n && !in.empty(); ++i) {
        sizes.push_back(static_cast<unsigned char>(in[0]));
        in.remove_prefix(1);
    }
    c.payload = in;
    for (std::size_t s : sizes) {
        std::size_t take = s < in.size() ? s : in.size();
        c.pieces.push_back(in.substr(0, take));
        in.remove_prefix(take);
    }
    c.pieces.push_back(in);
    return c;
}

// The next control byte of the input, or 0 when there is none.
inline unsigned char take_byte(std::string_view &in)
{
    if (in.empty())
        return 0;
    auto b = static_cast<unsigned char>(in[0]);
    in.remove_prefix(1);
    return b;
}

} // namespace fuzz
