#include "engine/address.hpp"

#include "engine/text.hpp"

#include <cctype>

namespace esmtp
{

namespace
{

bool is_alpha(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}
bool is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}
bool is_letdig(unsigned char c)
{
    return is_alpha(c) || is_digit(c);
}

// RFC 5322 atext
bool is_atext(unsigned char c)
{
    if (is_letdig(c) || c >= 0x80) // UTF8-non-ascii (RFC 6531); UTF-8 is checked as a whole
        return true;
    switch (c) {
    case '!':
    case '#':
    case '$':
    case '%':
    case '&':
    case '\'':
    case '*':
    case '+':
    case '-':
    case '/':
    case '=':
    case '?':
    case '^':
    case '_':
    case '`':
    case '{':
    case '|':
    case '}':
    case '~':
        return true;
    default:
        return false;
    }
}

bool valid_dot_string(std::string_view s)
{
    if (s.empty() || s.front() == '.' || s.back() == '.')
        return false;
    char prev = 0;
    for (char ch : s) {
        auto c = static_cast<unsigned char>(ch);
        if (c == '.') {
            if (prev == '.')
                return false;
        } else if (!is_atext(c)) {
            return false;
        }
        prev = ch;
    }
    return true;
}

// Length of a quoted string at the start of s (0 if none/invalid).
std::size_t quoted_string_length(std::string_view s)
{
    if (s.empty() || s[0] != '"')
        return 0;
    for (std::size_t i = 1; i < s.size(); ++i) {
        auto c = static_cast<unsigned char>(s[i]);
        if (c == '"')
            return i + 1;
        if (c == '\\') {
            if (i + 1 >= s.size())
                return 0;
            auto n = static_cast<unsigned char>(s[i + 1]);
            if (n < 32 || n > 126)
                return 0;
            ++i;
        } else if (c < 32 || c == 127) {
            return 0;
        }
    }
    return 0;
}

bool valid_domain(std::string_view d)
{
    if (d.empty() || d.size() > 255)
        return false;
    std::size_t start = 0;
    while (start <= d.size()) {
        std::size_t dot = d.find('.', start);
        std::string_view label = d.substr(start, dot == std::string_view::npos ? d.npos : dot - start);
        if (label.empty() || label.size() > 63)
            return false;
        auto ldh = [](unsigned char c) { return is_letdig(c) || c >= 0x80; }; // U-labels (RFC 6531)
        if (!ldh(label.front()) || !ldh(label.back()))
            return false;
        for (char ch : label)
            if (!ldh(static_cast<unsigned char>(ch)) && ch != '-')
                return false;
        if (dot == std::string_view::npos)
            break;
        start = dot + 1;
    }
    return true;
}

bool valid_ipv4(std::string_view s)
{
    int parts = 0;
    std::size_t i = 0;
    while (i <= s.size()) {
        std::size_t j = i;
        int value = 0;
        while (j < s.size() && is_digit(s[j]) && j - i < 3)
            value = value * 10 + (s[j++] - '0');
        if (j == i || value > 255)
            return false;
        ++parts;
        if (j == s.size())
            break;
        if (s[j] != '.')
            return false;
        i = j + 1;
    }
    return parts == 4;
}

bool valid_ipv6(std::string_view s)
{
    // Structural check: hex groups separated by ':', at most one "::",
    // optionally an IPv4 tail.
    if (s.empty() || s.size() > 45)
        return false;
    int groups = 0;
    bool compressed = false;
    std::size_t i = 0;
    if (s.substr(0, 2) == "::") {
        compressed = true;
        i = 2;
        if (i == s.size())
            return true;
    }
    while (i < s.size()) {
        std::size_t j = i;
        while (j < s.size() && std::isxdigit(static_cast<unsigned char>(s[j])) && j - i < 4)
            ++j;
        if (j < s.size() && s[j] == '.') {
            if (!valid_ipv4(s.substr(i)))
                return false;
            groups += 2;
            break;
        }
        if (j == i)
            return false;
        ++groups;
        if (j == s.size())
            break;
        if (s[j] != ':')
            return false;
        if (j + 1 < s.size() && s[j + 1] == ':') {
            if (compressed)
                return false;
            compressed = true;
            i = j + 2;
            if (i == s.size())
                break;
        } else {
            i = j + 1;
            if (i == s.size())
                return false;
        }
    }
    return compressed ? groups <= 7 : groups == 8;
}

bool valid_keyword(std::string_view k)
{
    if (k.empty() || !is_letdig(k[0]))
        return false;
    for (char c : k)
        if (!is_letdig(c) && c != '-')
            return false;
    return true;
}

bool valid_value(std::string_view v)
{
    if (v.empty())
        return false;
    for (char ch : v) {
        auto c = static_cast<unsigned char>(ch);
        if (c < 33 || c > 126 || c == '=')
            return false;
    }
    return true;
}

} // namespace

bool valid_domain_or_literal(std::string_view d)
{
    if (d.size() >= 2 && d.front() == '[' && d.back() == ']') {
        std::string_view lit = d.substr(1, d.size() - 2);
        if (lit.size() > 5 && iequals(lit.substr(0, 5), "IPv6:"))
            return valid_ipv6(lit.substr(5));
        return valid_ipv4(lit);
    }
    return valid_domain(d);
}

bool valid_utf8(std::string_view s)
{
    std::size_t i = 0;
    while (i < s.size()) {
        auto c = static_cast<unsigned char>(s[i]);
        if (c < 0x80) {
            ++i;
            continue;
        }
        std::size_t n;
        unsigned cp;
        if (c >= 0xC2 && c <= 0xDF) {
            n = 1;
            cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            n = 2;
            cp = c & 0x0F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            n = 3;
            cp = c & 0x07;
        } else {
            return false;
        }
        if (i + n >= s.size())
            return false;
        for (std::size_t k = 1; k <= n; ++k) {
            auto cc = static_cast<unsigned char>(s[i + k]);
            if ((cc & 0xC0) != 0x80)
                return false;
            cp = (cp << 6) | (cc & 0x3F);
        }
        // no overlong forms, no surrogates, nothing past U+10FFFF
        if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF)
            return false;
        i += n + 1;
    }
    return true;
}

bool has_non_ascii(std::string_view s)
{
    for (char c : s)
        if (static_cast<unsigned char>(c) >= 0x80)
            return true;
    return false;
}

bool parse_mailbox(std::string_view in, Path &out)
{
    if (in.empty() || in.size() > 320 || !valid_utf8(in))
        return false;
    std::size_t local_len;
    if (in[0] == '"') {
        local_len = quoted_string_length(in);
        if (local_len == 0)
            return false;
    } else {
        local_len = in.rfind('@');
        if (local_len == std::string_view::npos || !valid_dot_string(in.substr(0, local_len)))
            return false;
    }
    // RFC 5321 4.5.3.1.1: 64 octets, counted as sent (a Quoted-string with
    // its quotes and backslashes: that is the grammar's Local-part).
    if (local_len >= in.size() || in[local_len] != '@' || local_len > 64)
        return false;
    std::string_view domain = in.substr(local_len + 1);
    if (!valid_domain_or_literal(domain))
        return false;
    out.mailbox.assign(in);
    out.local_part.assign(in.substr(0, local_len));
    out.domain.assign(domain);
    return true;
}

std::string canonical_mailbox(std::string_view mailbox)
{
    std::string out;
    std::string_view rest = mailbox;
    if (!mailbox.empty() && mailbox.front() == '"') {
        std::size_t len = quoted_string_length(mailbox);
        if (len >= 2) {
            std::string content;
            for (std::size_t i = 1; i + 1 < len; ++i) {
                if (mailbox[i] == '\\' && i + 2 < len)
                    ++i;
                content.push_back(mailbox[i]);
            }
            if (valid_dot_string(content)) {
                out = std::move(content);
            } else {
                out.push_back('"');
                for (char c : content) {
                    if (c == '"' || c == '\\')
                        out.push_back('\\');
                    out.push_back(c);
                }
                out.push_back('"');
            }
            rest = mailbox.substr(len);
        }
    }
    out.append(rest);
    for (char &c : out)
        c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return out;
}

PathError parse_path_and_params(std::string_view in, bool allow_null, bool allow_postmaster, MailArgs &out)
{
    out = MailArgs{};
    // Many clients send "MAIL FROM: <a@b>": tolerate spaces before the path.
    while (!in.empty() && in.front() == ' ')
        in.remove_prefix(1);
    if (in.empty() || in.front() != '<')
        return PathError::syntax;
    // Find the closing '>' outside a quoted local part.
    std::size_t close = std::string_view::npos;
    bool quoted = false;
    for (std::size_t i = 1; i < in.size(); ++i) {
        char c = in[i];
        if (quoted) {
            if (c == '\\')
                ++i;
            else if (c == '"')
                quoted = false;
        } else if (c == '"') {
            quoted = true;
        } else if (c == '>') {
            close = i;
            break;
        }
    }
    if (close == std::string_view::npos)
        return PathError::syntax;
    std::string_view path = in.substr(1, close - 1);
    std::string_view rest = in.substr(close + 1);

    if (path.empty()) {
        if (!allow_null)
            return PathError::syntax;
    } else {
        // A-d-l (source route): accepted and ignored, RFC 5321 4.1.2 / C.
        if (path.front() == '@') {
            std::size_t colon = path.find(':');
            if (colon == std::string_view::npos)
                return PathError::syntax;
            std::string_view adl = path.substr(0, colon);
            std::size_t pos = 0;
            while (pos < adl.size()) {
                if (adl[pos] != '@')
                    return PathError::syntax;
                std::size_t comma = adl.find(',', pos);
                std::string_view dom = adl.substr(pos + 1, comma == adl.npos ? adl.npos : comma - pos - 1);
                if (!valid_domain_or_literal(dom))
                    return PathError::syntax;
                if (comma == adl.npos)
                    break;
                pos = comma + 1;
            }
            path = path.substr(colon + 1);
        }
        if (allow_postmaster && iequals(path, "postmaster")) {
            out.path.mailbox.assign(path);
            out.path.local_part.assign(path);
        } else if (!parse_mailbox(path, out.path)) {
            return PathError::syntax;
        }
    }

    // Parameters: SP-separated esmtp-keyword["=" esmtp-value]
    if (!rest.empty() && rest.front() != ' ')
        return PathError::syntax;
    while (!rest.empty()) {
        while (!rest.empty() && rest.front() == ' ')
            rest.remove_prefix(1);
        if (rest.empty())
            break;
        std::size_t sp = rest.find(' ');
        std::string_view tok = rest.substr(0, sp);
        rest = sp == std::string_view::npos ? std::string_view{} : rest.substr(sp);
        std::size_t eq = tok.find('=');
        std::string_view key = tok.substr(0, eq);
        if (!valid_keyword(key))
            return PathError::bad_parameter;
        Param p;
        for (char c : key)
            p.keyword.push_back(static_cast<char>(std::toupper(static_cast<unsigned char>(c))));
        if (eq != std::string_view::npos) {
            std::string_view value = tok.substr(eq + 1);
            if (!valid_value(value))
                return PathError::bad_parameter;
            p.value.assign(value);
        }
        out.params.push_back(std::move(p));
    }
    return PathError::ok;
}

} // namespace esmtp
