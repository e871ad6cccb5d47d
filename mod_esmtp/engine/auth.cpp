#include "engine/auth.hpp"

#include "engine/address.hpp"
#include "engine/text.hpp"

#include <algorithm>
#include <array>

namespace esmtp
{

namespace
{

constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

constexpr std::array<signed char, 256> make_decode_table()
{
    std::array<signed char, 256> t{};
    for (auto &v : t)
        v = -1;
    for (int i = 0; i < 64; ++i)
        t[static_cast<unsigned char>(kAlphabet[i])] = static_cast<signed char>(i);
    return t;
}
constexpr auto kDecode = make_decode_table();

} // namespace

unsigned auth_mechanism_by_name(std::string_view name)
{
    if (iequals(name, "PLAIN"))
        return mech_plain;
    if (iequals(name, "LOGIN"))
        return mech_login;
    return 0;
}

const char *auth_mechanism_name(AuthMechanism m)
{
    return m == mech_plain ? "PLAIN" : m == mech_login ? "LOGIN" : "?";
}

std::string auth_mechanism_list(unsigned mechanisms)
{
    std::string s;
    for (AuthMechanism m : {mech_plain, mech_login})
        if (mechanisms & m)
            s.append(s.empty() ? "" : " ").append(auth_mechanism_name(m));
    return s;
}

bool base64_decode(std::string_view in, std::string &out)
{
    out.clear();
    if (in.size() % 4 != 0)
        return false;
    out.reserve(in.size() / 4 * 3);
    for (std::size_t i = 0; i < in.size(); i += 4) {
        bool last = i + 4 == in.size();
        int v[4];
        int pad = 0;
        for (int k = 0; k < 4; ++k) {
            auto c = static_cast<unsigned char>(in[i + k]);
            if (c == '=' && last && k >= 2) {
                v[k] = 0;
                ++pad;
                continue;
            }
            if (pad || kDecode[c] < 0) // '=' only at the very end
                return false;
            v[k] = kDecode[c];
        }
        unsigned n = (unsigned(v[0]) << 18) | (unsigned(v[1]) << 12) | (unsigned(v[2]) << 6) | unsigned(v[3]);
        out.push_back(static_cast<char>(n >> 16));
        if (pad < 2)
            out.push_back(static_cast<char>((n >> 8) & 0xff));
        if (pad < 1)
            out.push_back(static_cast<char>(n & 0xff));
        // the bits a padded group leaves unused must be zero (canonical form)
        if ((pad == 1 && (n & 0xff)) || (pad == 2 && (n & 0xffff)))
            return false;
    }
    return true;
}

std::string base64_encode(std::string_view in)
{
    std::string out;
    out.reserve((in.size() + 2) / 3 * 4);
    for (std::size_t i = 0; i < in.size(); i += 3) {
        unsigned n = static_cast<unsigned char>(in[i]) << 16;
        if (i + 1 < in.size())
            n |= static_cast<unsigned char>(in[i + 1]) << 8;
        if (i + 2 < in.size())
            n |= static_cast<unsigned char>(in[i + 2]);
        out.push_back(kAlphabet[(n >> 18) & 63]);
        out.push_back(kAlphabet[(n >> 12) & 63]);
        out.push_back(i + 1 < in.size() ? kAlphabet[(n >> 6) & 63] : '=');
        out.push_back(i + 2 < in.size() ? kAlphabet[n & 63] : '=');
    }
    return out;
}

bool valid_auth_user(std::string_view user)
{
    if (user.empty() || user.size() > kMaxAuthUser || !valid_utf8(user))
        return false;
    for (char ch : user) {
        auto c = static_cast<unsigned char>(ch);
        if (c < 0x20 || c == 0x7f)
            return false;
    }
    return true;
}

void wipe_bytes(char *data, std::size_t size)
{
    // volatile: the compiler may not drop the stores to memory about to be freed
    volatile char *p = data;
    for (std::size_t i = 0; i < size; ++i)
        p[i] = 0;
}

void wipe_secret(std::string &s)
{
    wipe_bytes(s.data(), s.size());
    s.clear();
}

void Credentials::wipe()
{
    wipe_secret(password);
}

SaslError check_login(const Credentials &c)
{
    if (c.user.empty() || c.password.empty() || c.password.find('\0') != std::string::npos)
        return SaslError::malformed;
    if (!valid_auth_user(c.user))
        return SaslError::bad_user;
    if (c.password.size() > kMaxAuthPassword)
        return SaslError::too_long;
    return SaslError::ok;
}

SaslError parse_plain(std::string_view message, Credentials &c)
{
    std::size_t first = message.find('\0');
    if (first == std::string_view::npos)
        return SaslError::malformed;
    std::size_t second = message.find('\0', first + 1);
    if (second == std::string_view::npos)
        return SaslError::malformed;
    c.authzid.assign(message.substr(0, first));
    c.user.assign(message.substr(first + 1, second - first - 1));
    c.password.assign(message.substr(second + 1));
    if (SaslError e = check_login(c); e != SaslError::ok)
        return e;
    if (!c.authzid.empty() && c.authzid != c.user)
        return SaslError::authzid;
    return SaslError::ok;
}

} // namespace esmtp
