#include "httpd/greylist.hpp"

#include "engine/sha256.hpp"
#include "httpd/state_cache.hpp"

#include <apr_strings.h>
#include <arpa/inet.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstring>
#include <string>

namespace esmtp
{

namespace
{

bool number_opt(std::string_view arg, std::string_view name, apr_int64_t min, apr_int64_t max, apr_int64_t &out)
{
    if (arg.substr(0, name.size()) != name)
        return false;
    arg.remove_prefix(name.size());
    long long v = 0;
    auto [p, ec] = std::from_chars(arg.data(), arg.data() + arg.size(), v);
    if (ec != std::errc() || p != arg.data() + arg.size() || v < min || v > max)
        return false;
    out = v;
    return true;
}

// The client's network: a /24 for IPv4, a /64 for IPv6 (postgrey's
// default: a pool of outgoing servers retries from another address).
std::string network_of(const char *ip)
{
    unsigned char b[16];
    char out[INET6_ADDRSTRLEN];
    if (inet_pton(AF_INET, ip, b) == 1) {
        b[3] = 0;
        return std::string(inet_ntop(AF_INET, b, out, sizeof out)) + "/24";
    }
    if (inet_pton(AF_INET6, ip, b) == 1) {
        std::memset(b + 8, 0, 8);
        return std::string(inet_ntop(AF_INET6, b, out, sizeof out)) + "/64";
    }
    return ip;
}

std::string lower(std::string_view s)
{
    std::string r(s);
    std::transform(r.begin(), r.end(), r.begin(),
                   [](char ch) { return static_cast<char>(std::tolower(static_cast<unsigned char>(ch))); });
    return r;
}

// Keys of bounded length whatever the addresses: a hash of the parts.
std::string key(std::string_view kind, std::initializer_list<std::string_view> parts)
{
    std::string text;
    for (std::string_view p : parts)
        text.append(p).push_back('\0');
    static const char hex[] = "0123456789abcdef";
    std::string k = "esmtp:gl:";
    k.append(kind).push_back(':');
    for (std::uint8_t byte : sha256(text))
        k.push_back(hex[byte >> 4]), k.push_back(hex[byte & 15]);
    return k;
}

// "FIRST PASSED": when the triplet was first seen (seconds), and whether a
// retry has passed.
bool parse_triplet(const std::string &v, long long &first, int &passed)
{
    return std::sscanf(v.c_str(), "%lld %d", &first, &passed) == 2;
}

} // namespace

const char *parse_greylist(apr_pool_t *p, int argc, char *const argv[], GreylistSpec &out)
{
    constexpr const char *usage = "ESMTPGreylist: needs Off or On [delay=SECONDS] [retry=SECONDS] "
                                  "[allowlist=PASSES] [keep=DAYS]";
    if (argc < 1)
        return usage;
    GreylistSpec g;
    if (!strcasecmp(argv[0], "off")) {
        if (argc != 1)
            return usage;
        g.on = 0;
        out = g;
        return nullptr;
    }
    if (strcasecmp(argv[0], "on"))
        return usage;
    g.on = 1;
    for (int i = 1; i < argc; ++i) {
        std::string_view a(argv[i]);
        apr_int64_t days = 0;
        if (number_opt(a, "delay=", 1, 86400, g.delay) || number_opt(a, "retry=", 60, 30 * 86400, g.retry) ||
            number_opt(a, "allowlist=", 0, 1000, g.allowlist))
            continue;
        if (number_opt(a, "keep=", 1, 365, days)) {
            g.keep = days * 86400;
            continue;
        }
        return apr_psprintf(p, "%s; not '%s'", usage, argv[i]);
    }
    if (g.retry <= g.delay)
        return "ESMTPGreylist: retry= (how long a first attempt is remembered) must be longer than delay=";
    out = g;
    return nullptr;
}

GreylistAnswer greylist_check(conn_rec *c, const GreylistSpec &spec, std::string_view scope, std::string_view client,
                              std::string_view sender, std::string_view recipient)
{
    GreylistAnswer a;
    const std::string net = network_of(std::string(client).c_str());
    const std::string net_key = key("n", {scope, net});
    const apr_time_t now = apr_time_now();
    std::string v;
    long long passes = 0;
    CacheResult r = state_get(c, net_key, v, "greylist");
    if (r == CacheResult::error) {
        a.cache_failed = true;
        return a;
    }
    if (r == CacheResult::found)
        passes = std::atoll(v.c_str());
    if (spec.allowlist > 0 && passes >= spec.allowlist) {
        a.allowlisted = true;
        return a;
    }
    const std::string t_key = key("t", {scope, net, lower(sender), lower(recipient)});
    r = state_get(c, t_key, v, "greylist");
    long long first = 0;
    int passed = 0;
    if (r == CacheResult::error) {
        a.cache_failed = true;
        return a;
    }
    const long long now_s = apr_time_sec(now);
    if (r == CacheResult::not_found || !parse_triplet(v, first, passed)) {
        // the first attempt: remembered for retry= seconds
        if (!state_put(c, t_key, std::to_string(now_s) + " 0", now + apr_time_from_sec(spec.retry), "greylist")) {
            a.cache_failed = true;
            return a;
        }
        a.verdict = Greylisted::wait;
        a.wait = apr_time_from_sec(spec.delay);
        return a;
    }
    if (passed) {
        // known good: remembered keep= days from its last use
        state_put(c, t_key, v, now + apr_time_from_sec(spec.keep), "greylist");
        return a;
    }
    if (now_s - first < spec.delay) {
        a.verdict = Greylisted::wait;
        a.wait = apr_time_from_sec(spec.delay - (now_s - first));
        return a;
    }
    a.verdict = Greylisted::passed_now;
    state_put(c, t_key, std::to_string(first) + " 1", now + apr_time_from_sec(spec.keep), "greylist");
    // Read, add one, write back: no atomic increment in mod_socache. Two
    // nodes passing a triplet of the same network at the same moment may
    // count one pass; the network is then allowlisted one pass later
    // (README, Screening clients).
    state_put(c, net_key, std::to_string(passes + 1), now + apr_time_from_sec(spec.keep), "greylist");
    return a;
}

} // namespace esmtp
