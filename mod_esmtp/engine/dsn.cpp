#include "engine/dsn.hpp"

#include "engine/text.hpp"

#include <algorithm>

namespace esmtp
{

namespace
{

int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1; // RFC 3461 4: upper case only
}

bool printable(unsigned c)
{
    return c >= 0x20 && c < 0x7f;
}

// RFC 5322 atext: what an atom (addr-type) may hold.
bool atext(char ch)
{
    auto c = static_cast<unsigned char>(ch);
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return true;
    return std::string_view("!#$%&'*+-/=?^_`{|}~").find(ch) != std::string_view::npos;
}

} // namespace

bool decode_xtext(std::string_view in, std::string &out)
{
    out.clear();
    for (std::size_t i = 0; i < in.size(); ++i) {
        auto c = static_cast<unsigned char>(in[i]);
        if (c == '+') {
            if (i + 2 >= in.size())
                return false;
            int hi = hexval(in[i + 1]), lo = hexval(in[i + 2]);
            if (hi < 0 || lo < 0)
                return false;
            out.push_back(static_cast<char>(hi << 4 | lo));
            i += 2;
        } else if (c < '!' || c > '~' || c == '=') {
            return false;
        } else {
            out.push_back(static_cast<char>(c));
        }
    }
    return true;
}

bool valid_xtext(std::string_view v)
{
    std::string decoded;
    return !v.empty() && decode_xtext(v, decoded) &&
           std::all_of(decoded.begin(), decoded.end(), [](char c) { return printable(static_cast<unsigned char>(c)); });
}

std::string_view dsn_ret(std::string_view v)
{
    if (iequals(v, "FULL"))
        return "FULL";
    if (iequals(v, "HDRS"))
        return "HDRS";
    return {};
}

bool valid_envid(std::string_view v)
{
    return v.size() <= kMaxEnvid && valid_xtext(v);
}

bool valid_notify(std::string_view v)
{
    constexpr std::string_view kinds[] = {"NEVER", "SUCCESS", "FAILURE", "DELAY"};
    unsigned seen = 0;
    for (;;) {
        std::size_t comma = v.find(',');
        std::string_view item = v.substr(0, comma);
        unsigned bit = 0;
        for (unsigned k = 0; k < 4; ++k)
            if (iequals(item, kinds[k]))
                bit = 1u << k;
        if (!bit || (seen & bit))
            return false;
        seen |= bit;
        if (comma == std::string_view::npos)
            break;
        v.remove_prefix(comma + 1);
    }
    return !(seen & 1u) || seen == 1u; // NEVER alone
}

bool valid_orcpt(std::string_view v)
{
    std::size_t semi = v.find(';');
    if (semi == 0 || semi == std::string_view::npos)
        return false;
    for (char c : v.substr(0, semi))
        if (!atext(c))
            return false;
    return valid_xtext(v.substr(semi + 1));
}

} // namespace esmtp
