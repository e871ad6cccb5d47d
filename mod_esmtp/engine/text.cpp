#include "engine/text.hpp"

#include <arpa/inet.h>
#include <sys/socket.h>

#include <cctype>

namespace esmtp
{

bool iequals(std::string_view a, std::string_view b)
{
    if (a.size() != b.size())
        return false;
    for (std::size_t i = 0; i < a.size(); ++i)
        if (std::tolower(static_cast<unsigned char>(a[i])) != std::tolower(static_cast<unsigned char>(b[i])))
            return false;
    return true;
}

bool parse_decimal(std::string_view s, std::size_t max_digits, unsigned max, unsigned &out)
{
    if (s.empty() || s.size() > max_digits)
        return false;
    unsigned long v = 0;
    for (char c : s) {
        if (c < '0' || c > '9')
            return false;
        v = v * 10 + static_cast<unsigned>(c - '0');
    }
    if (v > max)
        return false;
    out = static_cast<unsigned>(v);
    return true;
}

bool parse_seconds(std::string_view s, unsigned max, unsigned &out)
{
    unsigned v = 0;
    if (!parse_decimal(s, 10, max, v) || v == 0)
        return false;
    out = v;
    return true;
}

bool parse_ip(std::string_view s, int af, unsigned char *bytes, std::string &text)
{
    if (s.empty() || s.size() > 45)
        return false;
    std::string z(s);
    if (inet_pton(af, z.c_str(), bytes) != 1)
        return false;
    char buf[INET6_ADDRSTRLEN];
    if (!inet_ntop(af, bytes, buf, sizeof buf))
        return false;
    text = buf;
    return true;
}

std::string reply_line(std::string_view text, std::size_t max)
{
    std::string_view line = text.substr(0, text.find('\n'));
    auto blank = [](char c) { return c == ' ' || c == '\t' || c == '\r'; };
    while (!line.empty() && blank(line.front()))
        line.remove_prefix(1);
    while (!line.empty() && blank(line.back()))
        line.remove_suffix(1);
    std::string out;
    for (char ch : line.substr(0, max)) {
        auto c = static_cast<unsigned char>(ch);
        out += (c < 0x20 || c >= 0x7f) ? '?' : ch;
    }
    return out;
}

} // namespace esmtp
