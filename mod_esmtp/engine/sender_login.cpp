#include "engine/sender_login.hpp"

#include "engine/address.hpp"
#include "engine/text.hpp"

#include <cctype>

namespace esmtp
{

namespace
{

std::string lower(std::string_view s)
{
    std::string out(s);
    for (char &c : out)
        c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return out;
}

bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r';
}

} // namespace

bool SenderLoginMap::parse(std::string_view text, std::string &error)
{
    map_.clear();
    unsigned lineno = 0;
    while (!text.empty()) {
        ++lineno;
        std::size_t nl = text.find('\n');
        std::string_view line = text.substr(0, nl);
        text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
        if (std::size_t hash = line.find('#'); hash != std::string_view::npos)
            line = line.substr(0, hash);
        std::vector<std::string_view> words;
        std::size_t i = 0;
        while (i < line.size()) {
            while (i < line.size() && (is_space(line[i]) || line[i] == ','))
                ++i;
            std::size_t start = i;
            while (i < line.size() && !is_space(line[i]) && line[i] != ',')
                ++i;
            if (i > start)
                words.push_back(line.substr(start, i - start));
        }
        if (words.empty())
            continue;
        std::string_view key = words.front();
        std::size_t at = key.rfind('@');
        if (at == std::string_view::npos || at + 1 == key.size()) {
            error = "line " + std::to_string(lineno) + ": '" + std::string(key) +
                    "' is neither an address (local@domain) nor @domain";
            return false;
        }
        if (words.size() < 2) {
            error = "line " + std::to_string(lineno) + ": '" + std::string(key) + "' has no login";
            return false;
        }
        // "@domain", or the address in its canonical form (the one a client's
        // spelling is compared in)
        auto &owners = map_[key.front() == '@' ? lower(key) : canonical_mailbox(key)];
        for (std::size_t w = 1; w < words.size(); ++w)
            owners.emplace_back(words[w]);
    }
    return true;
}

const std::vector<std::string> *SenderLoginMap::owners(std::string_view address) const
{
    // "bob"@x and "b\ob"@x are bob@x (RFC 5321 4.1.2)
    std::string key = canonical_mailbox(address);
    if (auto it = map_.find(key); it != map_.end())
        return &it->second;
    std::size_t at = key.rfind('@');
    if (at == std::string::npos)
        return nullptr;
    if (auto it = map_.find(key.substr(at)); it != map_.end())
        return &it->second;
    return nullptr;
}

bool SenderLoginMap::owns(std::string_view login, std::string_view address) const
{
    if (const auto *o = owners(address))
        for (const auto &l : *o)
            if (iequals(l, login))
                return true;
    return false;
}

} // namespace esmtp
