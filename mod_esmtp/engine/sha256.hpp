// SHA-256 (FIPS 180-4) and HMAC-SHA256 (RFC 2104), for client certificate
// fingerprints and the http handler's signature: mod_esmtp links no crypto
// library of its own, and APR has no SHA-256.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace esmtp
{

// Incremental: update() any number of times, then finish() once.
class Sha256
{
  public:
    Sha256();
    void update(std::string_view data);
    std::array<std::uint8_t, 32> finish();

  private:
    std::uint32_t h_[8];
    std::uint8_t buf_[64] = {};
    std::size_t used_ = 0;
    std::uint64_t total_ = 0;
};

class HmacSha256
{
  public:
    explicit HmacSha256(std::string_view key);
    void update(std::string_view data) { inner_.update(data); }
    std::array<std::uint8_t, 32> finish();

  private:
    Sha256 inner_;
    std::uint8_t opad_[64] = {};
};

std::array<std::uint8_t, 32> sha256(std::string_view data);
// Lower-case hex, no separators (as Python's hexdigest()).
std::string hex_lower(const std::array<std::uint8_t, 32> &digest);
// "AB:CD:..." (upper-case hex, colon-separated, as openssl x509 -fingerprint).
std::string sha256_fingerprint(std::string_view data);

} // namespace esmtp
