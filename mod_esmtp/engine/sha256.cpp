#include "engine/sha256.hpp"

#include <algorithm>
#include <cstring>

namespace esmtp
{

namespace
{

constexpr std::uint32_t kK[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

constexpr std::uint32_t rotr(std::uint32_t x, int n)
{
    return (x >> n) | (x << (32 - n));
}

void block(std::uint32_t h[8], const std::uint8_t *p)
{
    std::uint32_t w[64];
    for (int i = 0; i < 16; ++i)
        w[i] = std::uint32_t(p[4 * i]) << 24 | std::uint32_t(p[4 * i + 1]) << 16 | std::uint32_t(p[4 * i + 2]) << 8 |
               std::uint32_t(p[4 * i + 3]);
    for (int i = 16; i < 64; ++i) {
        std::uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
        std::uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    std::uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], k = h[7];
    for (int i = 0; i < 64; ++i) {
        std::uint32_t t1 = k + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + kK[i] + w[i];
        std::uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        k = g, g = f, f = e, e = d + t1, d = c, c = b, b = a, a = t1 + t2;
    }
    h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e, h[5] += f, h[6] += g, h[7] += k;
}

} // namespace

Sha256::Sha256() : h_{0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19} {}

void Sha256::update(std::string_view data)
{
    const auto *p = reinterpret_cast<const std::uint8_t *>(data.data());
    std::size_t n = data.size();
    total_ += n;
    if (used_ > 0) {
        std::size_t take = std::min(n, sizeof buf_ - used_);
        std::memcpy(buf_ + used_, p, take);
        used_ += take, p += take, n -= take;
        if (used_ < sizeof buf_)
            return;
        block(h_, buf_);
        used_ = 0;
    }
    for (; n >= 64; n -= 64, p += 64)
        block(h_, p);
    std::memcpy(buf_, p, n);
    used_ = n;
}

std::array<std::uint8_t, 32> Sha256::finish()
{
    std::uint8_t tail[128] = {};
    std::memcpy(tail, buf_, used_);
    tail[used_] = 0x80;
    std::size_t len = used_ + 1 + 8 <= 64 ? 64 : 128;
    std::uint64_t bits = total_ * 8;
    for (int i = 0; i < 8; ++i)
        tail[len - 1 - i] = static_cast<std::uint8_t>(bits >> (8 * i));
    block(h_, tail);
    if (len == 128)
        block(h_, tail + 64);
    std::array<std::uint8_t, 32> out{};
    for (int i = 0; i < 8; ++i)
        for (int j = 0; j < 4; ++j)
            out[4 * i + j] = static_cast<std::uint8_t>(h_[i] >> (24 - 8 * j));
    return out;
}

std::array<std::uint8_t, 32> sha256(std::string_view data)
{
    Sha256 h;
    h.update(data);
    return h.finish();
}

namespace
{
std::string_view bytes_of(const std::array<std::uint8_t, 32> &a)
{
    return {reinterpret_cast<const char *>(a.data()), a.size()};
}
} // namespace

// RFC 2104 with B = 64: keys longer than a block are hashed first.
HmacSha256::HmacSha256(std::string_view key)
{
    std::uint8_t k[64] = {};
    if (key.size() > sizeof k) {
        auto d = sha256(key);
        std::memcpy(k, d.data(), d.size());
    } else {
        std::memcpy(k, key.data(), key.size());
    }
    std::uint8_t ipad[64];
    for (std::size_t i = 0; i < sizeof k; ++i) {
        ipad[i] = k[i] ^ 0x36;
        opad_[i] = k[i] ^ 0x5c;
    }
    inner_.update({reinterpret_cast<const char *>(ipad), sizeof ipad});
}

std::array<std::uint8_t, 32> HmacSha256::finish()
{
    auto inner = inner_.finish();
    Sha256 outer;
    outer.update({reinterpret_cast<const char *>(opad_), sizeof opad_});
    outer.update(bytes_of(inner));
    return outer.finish();
}

std::string hex_lower(const std::array<std::uint8_t, 32> &digest)
{
    static constexpr char kHex[] = "0123456789abcdef";
    std::string s;
    for (std::uint8_t b : digest) {
        s.push_back(kHex[b >> 4]);
        s.push_back(kHex[b & 15]);
    }
    return s;
}

std::string sha256_fingerprint(std::string_view data)
{
    static constexpr char kHex[] = "0123456789ABCDEF";
    std::string s;
    for (std::uint8_t b : sha256(data)) {
        if (!s.empty())
            s.push_back(':');
        s.push_back(kHex[b >> 4]);
        s.push_back(kHex[b & 15]);
    }
    return s;
}

} // namespace esmtp
