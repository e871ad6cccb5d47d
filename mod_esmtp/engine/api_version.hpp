// The version string a handler provider is registered under
// (ESMTP_HANDLER_PROVIDER_VERSION, esmtp/version.hpp) and whether a
// handler registered under one can run on this mod_esmtp. Read before the
// provider object is touched: a mismatch is refused without any C++
// object crossing between the two builds.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace esmtp
{

struct ApiVersion {
    int major = 0;
    int minor = 0;
    std::string library;  // "libstdc++/_GLIBCXX_USE_CXX11_ABI=1"; empty: not recorded
    std::string standard; // "C++20"; empty: not recorded
    // API 2.0 to 2.2 registered under the bare major: no minor, no ABI tag.
    bool tagged = false;
};

// "2.3 LIBRARY STANDARD", or a bare major ("2", "1": older headers).
// nullopt: not a version string at all.
std::optional<ApiVersion> parse_api_version(std::string_view text);

// The version of these headers (what this mod_esmtp is built with).
const ApiVersion &this_api_version();

// The highest minor an untagged registration of major 2 can be.
constexpr int kUntaggedMinor = 2;

// Why a handler named `name`, registered under `theirs`, cannot run on a
// mod_esmtp of `ours`: a message for `apache2 -t` naming both sides, or
// empty when it can run. Checked in order: major, minor, library.
std::string api_mismatch(std::string_view name, const ApiVersion &theirs, const ApiVersion &ours);

// "2.3", or "2.2 or older" for an untagged major-2 registration.
std::string api_text(const ApiVersion &v);

} // namespace esmtp
