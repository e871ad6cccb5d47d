#include "engine/api_version.hpp"

#include <esmtp/version.hpp>

#include <charconv>

namespace esmtp
{

namespace
{

bool parse_int(std::string_view s, int &out)
{
    if (s.empty() || s.size() > 4)
        return false;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
    return ec == std::errc() && end == s.data() + s.size();
}

std::string build_text(const ApiVersion &v)
{
    return v.library + " (" + v.standard + ")";
}

} // namespace

std::optional<ApiVersion> parse_api_version(std::string_view text)
{
    ApiVersion v;
    std::size_t sp = text.find(' ');
    std::string_view number = text.substr(0, sp);
    std::size_t dot = number.find('.');
    if (!parse_int(number.substr(0, dot), v.major))
        return std::nullopt;
    if (dot == std::string_view::npos) {
        if (sp != std::string_view::npos)
            return std::nullopt;
        v.minor = v.major == 2 ? kUntaggedMinor : 0;
        return v;
    }
    if (!parse_int(number.substr(dot + 1), v.minor) || sp == std::string_view::npos)
        return std::nullopt;
    std::string_view rest = text.substr(sp + 1);
    std::size_t sp2 = rest.find(' ');
    if (sp2 == std::string_view::npos || sp2 == 0 || sp2 + 1 == rest.size())
        return std::nullopt;
    v.library = std::string(rest.substr(0, sp2));
    v.standard = std::string(rest.substr(sp2 + 1));
    v.tagged = true;
    return v;
}

const ApiVersion &this_api_version()
{
    static const ApiVersion v = *parse_api_version(ESMTP_HANDLER_PROVIDER_VERSION);
    return v;
}

std::string api_text(const ApiVersion &v)
{
    if (!v.tagged)
        return v.major == 2 ? std::to_string(v.major) + ".0 to 2." + std::to_string(kUntaggedMinor)
                            : std::to_string(v.major);
    return std::to_string(v.major) + "." + std::to_string(v.minor);
}

std::string api_mismatch(std::string_view name, const ApiVersion &theirs, const ApiVersion &ours)
{
    std::string who = "ESMTPHandler: handler '" + std::string(name) + "' was built ";
    if (theirs.major != ours.major)
        return who + "against mod_esmtp API " + api_text(theirs) + ", this mod_esmtp has API " + api_text(ours) +
               "; rebuild it against this mod_esmtp's headers";
    if (theirs.minor > ours.minor)
        return who + "against mod_esmtp API " + api_text(theirs) + ", this mod_esmtp has API " + api_text(ours) +
               " and lacks what the handler may call; rebuild it against this mod_esmtp's headers or upgrade "
               "mod_esmtp";
    // An untagged (API 2.0-2.2) handler recorded no ABI: nothing to compare.
    // The C++ standard is shown, not compared: a library keeps one layout
    // of its types across -std modes.
    if (theirs.tagged && theirs.library != ours.library)
        return who + "with " + build_text(theirs) + ", this mod_esmtp with " + build_text(ours) +
               ": std::string and the other standard types the API passes would not match; rebuild the handler "
               "with the same C++ standard library and ABI as mod_esmtp (g++ $(pkg-config --cflags mod_esmtp))";
    return {};
}

} // namespace esmtp
