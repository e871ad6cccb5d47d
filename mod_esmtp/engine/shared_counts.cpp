#include "engine/shared_counts.hpp"

#include "engine/text.hpp"

#include <algorithm>
#include <cstdio>
#include <cstring>

namespace esmtp
{

namespace
{

constexpr std::string_view kHeader = "esmtp-counts 1";

int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

bool parse_u32(std::string_view s, std::uint32_t &out)
{
    unsigned v = 0;
    if (!parse_decimal(s, 10, UINT32_MAX, v))
        return false;
    out = v;
    return true;
}

// Saturating: a corrupt snapshot cannot wrap a sum to a small count.
std::uint32_t add_sat(std::uint32_t a, std::uint32_t b)
{
    std::uint64_t s = static_cast<std::uint64_t>(a) + b;
    return s > UINT32_MAX ? UINT32_MAX : static_cast<std::uint32_t>(s);
}

// "HEX32/ZONE SESSIONS E:R E:R E:R E:R"
bool parse_line(std::string_view line, ClientTable::Entry &e)
{
    std::vector<std::string_view> f;
    while (!line.empty()) {
        std::size_t sp = line.find(' ');
        f.push_back(line.substr(0, sp));
        line = sp == std::string_view::npos ? std::string_view() : line.substr(sp + 1);
    }
    if (f.size() != 2 + ClientTable::kWindows || f[0].size() < 34 || f[0][32] != '/')
        return false;
    for (std::size_t i = 0; i < 16; ++i) {
        int hi = hex_value(f[0][2 * i]), lo = hex_value(f[0][2 * i + 1]);
        if (hi < 0 || lo < 0)
            return false;
        e.key.addr[i] = static_cast<std::uint8_t>(hi << 4 | lo);
    }
    unsigned zone = 0;
    if (!parse_decimal(f[0].substr(33), 5, 65535, zone) || !parse_u32(f[1], e.counts.sessions))
        return false;
    e.key.zone = static_cast<std::uint16_t>(zone);
    for (unsigned w = 0; w < ClientTable::kWindows; ++w) {
        std::string_view pair = f[2 + w];
        std::size_t colon = pair.find(':');
        if (colon == std::string_view::npos || !parse_u32(pair.substr(0, colon), e.counts.events[w]) ||
            !parse_u32(pair.substr(colon + 1), e.counts.remaining_ms[w]))
            return false;
    }
    return true;
}

} // namespace

std::string encode_counts(const std::vector<ClientTable::Entry> &entries, std::size_t max_bytes, std::size_t &written)
{
    std::string out(kHeader);
    out += '\n';
    written = 0;
    std::string line;
    char buf[64];
    for (const ClientTable::Entry &e : entries) {
        line.clear();
        for (std::uint8_t b : e.key.addr) {
            std::snprintf(buf, sizeof buf, "%02x", b);
            line += buf;
        }
        std::snprintf(buf, sizeof buf, "/%u %u", e.key.zone, e.counts.sessions);
        line += buf;
        for (unsigned w = 0; w < ClientTable::kWindows; ++w) {
            std::snprintf(buf, sizeof buf, " %u:%u", e.counts.events[w], e.counts.remaining_ms[w]);
            line += buf;
        }
        line += '\n';
        if (out.size() + line.size() > max_bytes)
            break;
        out += line;
        ++written;
    }
    return out;
}

std::size_t SharedView::KeyHash::operator()(const ClientTable::Key &k) const noexcept
{
    std::size_t h = 1469598103934665603ULL; // FNV-1a
    for (std::uint8_t b : k.addr)
        h = (h ^ b) * 1099511628211ULL;
    return (h ^ k.zone) * 1099511628211ULL;
}

bool SharedView::add(std::string_view snapshot)
{
    std::size_t nl = snapshot.find('\n');
    if (snapshot.substr(0, nl) != kHeader)
        return false;
    while (nl != std::string_view::npos) {
        snapshot = snapshot.substr(nl + 1);
        nl = snapshot.find('\n');
        ClientTable::Entry e;
        if (!parse_line(snapshot.substr(0, nl), e) || e.counts.empty())
            continue;
        ClientTable::Counts &sum = map_[e.key];
        sum.sessions = add_sat(sum.sessions, e.counts.sessions);
        for (unsigned w = 0; w < ClientTable::kWindows; ++w) {
            if (!e.counts.remaining_ms[w])
                continue;
            // Windows of several nodes end at different times: the sum is
            // kept as long as the longest (an overestimate until the next
            // refresh, never an undercount).
            sum.events[w] = add_sat(sum.events[w], e.counts.events[w]);
            sum.remaining_ms[w] = std::max(sum.remaining_ms[w], e.counts.remaining_ms[w]);
        }
    }
    return true;
}

std::vector<ClientTable::Entry> SharedView::entries() const
{
    std::vector<ClientTable::Entry> out;
    out.reserve(map_.size());
    for (const auto &[k, c] : map_)
        out.push_back({k, c});
    return out;
}

std::vector<std::string> parse_nodes(std::string_view text)
{
    std::vector<std::string> ids;
    while (!text.empty() && ids.size() < kMaxNodes) {
        std::size_t sp = text.find(' ');
        std::string_view id = text.substr(0, sp);
        text = sp == std::string_view::npos ? std::string_view() : text.substr(sp + 1);
        if (valid_node_id(id) && std::find(ids.begin(), ids.end(), id) == ids.end())
            ids.emplace_back(id);
    }
    return ids;
}

std::string nodes_text(const std::vector<std::string> &ids)
{
    std::string out;
    for (std::size_t i = 0; i < ids.size() && i < kMaxNodes; ++i) {
        if (i)
            out += ' ';
        out += ids[i];
    }
    return out;
}

bool valid_node_id(std::string_view id)
{
    if (id.empty() || id.size() > 64)
        return false;
    return std::all_of(id.begin(), id.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '-' ||
               c == '_';
    });
}

std::string default_node_id(std::string_view hostname, std::string_view instance)
{
    std::string out;
    for (char c : hostname)
        if (out.size() < 48 && valid_node_id(std::string_view(&c, 1)))
            out += c;
    if (out.empty())
        out = "node";
    std::uint32_t h = 2166136261u; // FNV-1a, 32 bits
    for (char c : instance)
        h = (h ^ static_cast<unsigned char>(c)) * 16777619u;
    char buf[16];
    std::snprintf(buf, sizeof buf, "-%08x", h);
    return out + buf;
}

} // namespace esmtp
