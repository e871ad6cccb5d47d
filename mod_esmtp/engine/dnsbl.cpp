#include "engine/dnsbl.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <cctype>
#include <charconv>

namespace esmtp
{

namespace
{

bool parse_int(std::string_view s, long min, long max, long &out)
{
    if (s.empty())
        return false;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
    return ec == std::errc() && p == s.data() + s.size() && out >= min && out <= max;
}

// One octet of a filter: N, [N..M] or [N;M;...].
bool parse_octet(std::string_view s, std::bitset<256> &bits)
{
    long a = 0, b = 0;
    if (s.size() >= 2 && s.front() == '[' && s.back() == ']') {
        s = s.substr(1, s.size() - 2);
        std::size_t range = s.find("..");
        if (range != std::string_view::npos) {
            if (!parse_int(s.substr(0, range), 0, 255, a) || !parse_int(s.substr(range + 2), 0, 255, b) || a > b)
                return false;
            for (long i = a; i <= b; ++i)
                bits.set(static_cast<std::size_t>(i));
            return true;
        }
        while (!s.empty()) {
            std::size_t semi = s.find(';');
            if (!parse_int(s.substr(0, semi), 0, 255, a))
                return false;
            bits.set(static_cast<std::size_t>(a));
            if (semi == std::string_view::npos)
                break;
            s.remove_prefix(semi + 1);
            if (s.empty())
                return false;
        }
        return bits.any();
    }
    if (!parse_int(s, 0, 255, a))
        return false;
    bits.set(static_cast<std::size_t>(a));
    return true;
}

bool valid_domain(std::string_view d)
{
    if (d.empty() || d.size() > 200 || d.front() == '.' || d.back() == '.' || d.find("..") != std::string_view::npos)
        return false;
    return std::all_of(d.begin(), d.end(),
                       [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.'; });
}

} // namespace

bool parse_dnsbl_site(std::string_view spec, DnsblSite &out, std::string &why)
{
    out = DnsblSite{};
    std::size_t star = spec.rfind('*');
    if (star != std::string_view::npos) {
        long w = 0;
        if (!parse_int(spec.substr(star + 1), -1000, 1000, w) || w == 0) {
            why = "the weight after * is a whole number from -1000 to 1000, not 0";
            return false;
        }
        out.weight = static_cast<int>(w);
        spec = spec.substr(0, star);
    }
    std::size_t eq = spec.find('=');
    std::string_view domain = spec.substr(0, eq);
    if (!valid_domain(domain)) {
        why = "not a domain name: '" + std::string(domain) + "'";
        return false;
    }
    out.domain.assign(domain);
    std::transform(out.domain.begin(), out.domain.end(), out.domain.begin(),
                   [](char c) { return static_cast<char>(std::tolower(static_cast<unsigned char>(c))); });
    if (eq == std::string_view::npos)
        return true;
    std::string_view filter = spec.substr(eq + 1);
    out.filtered = true;
    // split at the dots outside brackets ([0..255] has its own)
    std::size_t octet = 0, start = 0;
    bool in_bracket = false;
    for (std::size_t i = 0; i <= filter.size(); ++i) {
        if (i < filter.size() && filter[i] == '[')
            in_bracket = true;
        else if (i < filter.size() && filter[i] == ']')
            in_bracket = false;
        if (i < filter.size() && (filter[i] != '.' || in_bracket))
            continue;
        if (octet == 4 || !parse_octet(filter.substr(start, i - start), out.octets[octet])) {
            why = "the answer filter is four octets: N, [N..M] or [N;M;...], e.g. 127.0.0.[2..11]";
            return false;
        }
        ++octet;
        start = i + 1;
    }
    if (octet != 4) {
        why = "the answer filter is four octets: N, [N..M] or [N;M;...], e.g. 127.0.0.[2..11]";
        return false;
    }
    return true;
}

std::string dnsbl_query_name(std::string_view address, std::string_view domain)
{
    std::string a(address);
    unsigned char bytes[16];
    std::string name;
    if (inet_pton(AF_INET, a.c_str(), bytes) == 1) {
        for (int i = 3; i >= 0; --i)
            name += std::to_string(bytes[i]) + ".";
    } else if (inet_pton(AF_INET6, a.c_str(), bytes) == 1) {
        static const char hex[] = "0123456789abcdef";
        for (int i = 15; i >= 0; --i) {
            name += hex[bytes[i] & 15];
            name += '.';
            name += hex[bytes[i] >> 4];
            name += '.';
        }
    } else {
        return {};
    }
    return name.append(domain);
}

bool dnsbl_matches(const DnsblSite &site, const std::vector<Ipv4Answer> &answers)
{
    return std::any_of(answers.begin(), answers.end(), [&](const Ipv4Answer &a) {
        if (!site.filtered)
            return true;
        for (std::size_t i = 0; i < 4; ++i)
            if (!site.octets[i].test(a[i]))
                return false;
        return true;
    });
}

void dnsbl_add(DnsblScore &score, const DnsblSite &site, bool listed)
{
    if (!listed)
        return;
    score.score += site.weight;
    if (site.weight < 0) {
        score.allowlisted = true;
        return;
    }
    if (score.blocked_by.empty() || site.weight > score.top_weight_) {
        score.blocked_by = site.domain;
        score.top_weight_ = site.weight;
    }
}

} // namespace esmtp
