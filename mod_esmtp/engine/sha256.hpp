// SHA-256 (FIPS 180-4), for client certificate fingerprints: mod_esmtp
// links no crypto library of its own, and APR has no SHA-256.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace esmtp
{

std::array<std::uint8_t, 32> sha256(std::string_view data);
// "AB:CD:..." (upper-case hex, colon-separated, as openssl x509 -fingerprint).
std::string sha256_fingerprint(std::string_view data);

} // namespace esmtp
