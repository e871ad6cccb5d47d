// libFuzzer target: the MAIL/RCPT argument parsers of address.hpp.
//
// Input: [flags byte] then the text. Invariants:
//  - valid_utf8 agrees with an independent checker written from the
//    well-formed byte sequences table of the Unicode standard (table 3-7);
//  - has_non_ascii is "some octet >= 0x80";
//  - a parsed mailbox is local_part "@" domain == the input, UTF-8, at most
//    320 octets, its local part at most 64 (quotes included), its domain passes valid_domain_or_literal, and parsing it
//    again gives the same parts;
//  - valid_domain_or_literal agrees with reference checks: RFC 5321 domain
//    (LDH labels of 1-63 octets, UTF-8 U-labels allowed, at most 255),
//    "[a.b.c.d]" with 1-3 digit parts <= 255, and "[IPv6:...]" without a
//    dotted tail agreeing with inet_pton;
//  - parse_path_and_params: a parsed path and parameters, written back as
//    "<path> KEY=VALUE...", parse again to the same result; keywords are
//    upper-case esmtp-keywords, values esmtp-values; a null path only when
//    allowed, a domain-less path only for <postmaster> when allowed.
#include "engine/address.hpp"
#include "fuzz_util.hpp"

#include <arpa/inet.h>

#include <cctype>
#include <string>
#include <string_view>

namespace
{

// Unicode 15, table 3-7 "Well-Formed UTF-8 Byte Sequences".
bool reference_utf8(std::string_view s)
{
    struct Row {
        unsigned char lo[4], hi[4];
        int n;
    };
    static const Row rows[] = {
        {{0x00}, {0x7F}, 1},
        {{0xC2, 0x80}, {0xDF, 0xBF}, 2},
        {{0xE0, 0xA0, 0x80}, {0xE0, 0xBF, 0xBF}, 3},
        {{0xE1, 0x80, 0x80}, {0xEC, 0xBF, 0xBF}, 3},
        {{0xED, 0x80, 0x80}, {0xED, 0x9F, 0xBF}, 3},
        {{0xEE, 0x80, 0x80}, {0xEF, 0xBF, 0xBF}, 3},
        {{0xF0, 0x90, 0x80, 0x80}, {0xF0, 0xBF, 0xBF, 0xBF}, 4},
        {{0xF1, 0x80, 0x80, 0x80}, {0xF3, 0xBF, 0xBF, 0xBF}, 4},
        {{0xF4, 0x80, 0x80, 0x80}, {0xF4, 0x8F, 0xBF, 0xBF}, 4},
    };
    std::size_t i = 0;
    while (i < s.size()) {
        bool matched = false;
        for (const Row &r : rows) {
            if (i + r.n > s.size())
                continue;
            bool ok = true;
            for (int k = 0; k < r.n && ok; ++k) {
                auto c = static_cast<unsigned char>(s[i + k]);
                ok = c >= r.lo[k] && c <= r.hi[k];
            }
            if (ok) {
                i += r.n;
                matched = true;
                break;
            }
        }
        if (!matched)
            return false;
    }
    return true;
}

bool reference_domain(std::string_view d)
{
    if (d.empty() || d.size() > 255)
        return false;
    std::size_t label = 0;
    for (std::size_t i = 0; i <= d.size(); ++i) {
        if (i == d.size() || d[i] == '.') {
            if (label == 0 || label > 63 || d[i - 1] == '-' || d[i - label] == '-')
                return false;
            label = 0;
            continue;
        }
        auto c = static_cast<unsigned char>(d[i]);
        if (!(std::isalnum(c) || c == '-' || c >= 0x80))
            return false;
        ++label;
    }
    return true;
}

bool reference_ipv4(std::string_view s)
{
    int parts = 0;
    std::string digits;
    for (std::size_t i = 0; i <= s.size(); ++i) {
        if (i == s.size() || s[i] == '.') {
            if (digits.empty() || digits.size() > 3 || std::stoi(digits) > 255)
                return false;
            ++parts;
            digits.clear();
        } else if (s[i] >= '0' && s[i] <= '9') {
            digits.push_back(s[i]);
            if (digits.size() > 3)
                return false;
        } else {
            return false;
        }
    }
    return parts == 4;
}

bool iprefix(std::string_view s, std::string_view p)
{
    if (s.size() < p.size())
        return false;
    for (std::size_t i = 0; i < p.size(); ++i)
        if (std::tolower(static_cast<unsigned char>(s[i])) != std::tolower(static_cast<unsigned char>(p[i])))
            return false;
    return true;
}

void check_domain_or_literal(std::string_view d)
{
    bool v = esmtp::valid_domain_or_literal(d);
    if (d.size() >= 2 && d.front() == '[' && d.back() == ']') {
        std::string_view lit = d.substr(1, d.size() - 2);
        if (lit.size() > 5 && iprefix(lit, "IPv6:")) {
            std::string_view a = lit.substr(5);
            if (a.find('.') == std::string_view::npos && a.find('\0') == std::string_view::npos) {
                unsigned char buf[16];
                bool ref = inet_pton(AF_INET6, std::string(a).c_str(), buf) == 1;
                if (v != ref)
                    std::fprintf(stderr, "IPv6 literal %s: engine %d, inet_pton %d\n", fuzz::show(a).c_str(), v, ref);
                FUZZ_CHECK(v == ref);
            }
        } else {
            FUZZ_CHECK(v == reference_ipv4(lit));
        }
    } else {
        FUZZ_CHECK(v == reference_domain(d));
    }
}

bool is_keyword(std::string_view k)
{
    if (k.empty() || !std::isalnum(static_cast<unsigned char>(k[0])))
        return false;
    for (char c : k)
        if (!(std::isupper(static_cast<unsigned char>(c)) || std::isdigit(static_cast<unsigned char>(c)) || c == '-'))
            return false;
    return true;
}

bool is_value(std::string_view v)
{
    for (char ch : v) {
        auto c = static_cast<unsigned char>(ch);
        if (c < 33 || c > 126 || c == '=')
            return false;
    }
    return true;
}

void check_mailbox(std::string_view in)
{
    esmtp::Path p;
    if (!esmtp::parse_mailbox(in, p))
        return;
    FUZZ_CHECK(p.mailbox == in);
    FUZZ_CHECK(p.local_part + "@" + p.domain == p.mailbox);
    FUZZ_CHECK(!p.local_part.empty() && !p.domain.empty());
    FUZZ_CHECK(p.local_part.size() <= 64); // RFC 5321 4.5.3.1.1, quotes included
    FUZZ_CHECK(p.mailbox.size() <= 320 && esmtp::valid_utf8(p.mailbox));
    FUZZ_CHECK(esmtp::valid_domain_or_literal(p.domain));
    esmtp::Path again;
    FUZZ_CHECK(esmtp::parse_mailbox(p.mailbox, again));
    FUZZ_CHECK(again.local_part == p.local_part && again.domain == p.domain);
}

void check_path(std::string_view in, bool allow_null, bool allow_postmaster)
{
    esmtp::MailArgs a;
    esmtp::PathError e = esmtp::parse_path_and_params(in, allow_null, allow_postmaster, a);
    if (e != esmtp::PathError::ok)
        return;
    const esmtp::Path &p = a.path;
    if (p.is_null()) {
        FUZZ_CHECK(allow_null && p.local_part.empty() && p.domain.empty());
    } else if (p.domain.empty()) {
        FUZZ_CHECK(allow_postmaster && p.local_part == p.mailbox && iprefix(p.mailbox, "postmaster") &&
                   p.mailbox.size() == 10);
    } else {
        FUZZ_CHECK(p.local_part + "@" + p.domain == p.mailbox);
        FUZZ_CHECK(esmtp::valid_domain_or_literal(p.domain) && esmtp::valid_utf8(p.mailbox));
    }
    FUZZ_CHECK(in.find(p.mailbox) != std::string_view::npos);
    std::string text = "<" + p.mailbox + ">";
    for (const esmtp::Param &prm : a.params) {
        FUZZ_CHECK(is_keyword(prm.keyword));
        FUZZ_CHECK(is_value(prm.value));
        text += " " + prm.keyword;
        if (!prm.value.empty())
            text += "=" + prm.value;
    }
    esmtp::MailArgs b;
    FUZZ_CHECK(esmtp::parse_path_and_params(text, allow_null, allow_postmaster, b) == esmtp::PathError::ok);
    FUZZ_CHECK(b.path.mailbox == p.mailbox && b.path.local_part == p.local_part && b.path.domain == p.domain);
    FUZZ_CHECK(b.params.size() == a.params.size());
    for (std::size_t i = 0; i < a.params.size(); ++i)
        FUZZ_CHECK(b.params[i].keyword == a.params[i].keyword && b.params[i].value == a.params[i].value);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size)
{
    std::string_view in(reinterpret_cast<const char *>(data), size);
    unsigned flags = fuzz::take_byte(in);

    bool utf8 = esmtp::valid_utf8(in);
    if (utf8 != reference_utf8(in))
        std::fprintf(stderr, "valid_utf8(%s) = %d\n", fuzz::show(in).c_str(), utf8);
    FUZZ_CHECK(utf8 == reference_utf8(in));
    bool non_ascii = false;
    for (char c : in)
        non_ascii |= static_cast<unsigned char>(c) >= 0x80;
    FUZZ_CHECK(esmtp::has_non_ascii(in) == non_ascii);

    check_mailbox(in);
    check_domain_or_literal(in);
    // reach the literal parsers more often
    check_domain_or_literal("[" + std::string(in) + "]");
    check_domain_or_literal("[IPv6:" + std::string(in) + "]");

    check_path(in, flags & 1, flags & 2);
    if (!in.empty() && in.front() != '<')
        check_path("<" + std::string(in), flags & 1, flags & 2);
    return 0;
}
