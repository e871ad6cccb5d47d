// The per-client counts that nodes share through ESMTPStateCache (a redis
// or memcache every node reaches; docs/scale-out.md, Shared state): the
// text each node publishes under a key of its own, the registry of node
// ids, and summing the other nodes' counts per client.
//
// Why one key per node holding all its clients, and not one per client
// and node: mod_socache has store and retrieve with an expiry, no
// increment and no scan. A key that only its node writes loses no update;
// one key per node makes the cache traffic a few requests per node and
// interval whatever the connection rate, so it is done by one background
// thread per node and no session ever waits for the cache.
#pragma once

#include "engine/client_limits.hpp"

#include <cstddef>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace esmtp
{

// Snapshot text: a first line "esmtp-counts 1", then one line per client:
// "HEX32/ZONE SESSIONS E0:R0 E1:R1 E2:R2 E3:R3" (events and the
// milliseconds their window still runs, per rate window).
// At most `max_bytes` octets: the entries that fit, in order (`written`
// tells how many).
std::string encode_counts(const std::vector<ClientTable::Entry> &entries, std::size_t max_bytes, std::size_t &written);

// The other nodes' counts, summed per client.
class SharedView
{
  public:
    // Adds one node's snapshot. Lines that do not parse are skipped; false
    // when the text is no snapshot at all.
    bool add(std::string_view snapshot);
    std::vector<ClientTable::Entry> entries() const;
    std::size_t size() const { return map_.size(); }

  private:
    struct KeyHash {
        std::size_t operator()(const ClientTable::Key &k) const noexcept;
    };
    struct KeyEq {
        bool operator()(const ClientTable::Key &a, const ClientTable::Key &b) const noexcept
        {
            return a.addr == b.addr && a.zone == b.zone;
        }
    };
    std::unordered_map<ClientTable::Key, ClientTable::Counts, KeyHash, KeyEq> map_;
};

// The registry of node ids: ids separated by spaces (at most kMaxNodes).
constexpr std::size_t kMaxNodes = 64;
std::vector<std::string> parse_nodes(std::string_view text);
std::string nodes_text(const std::vector<std::string> &ids);

// A node id may hold letters, digits, '.', '-' and '_' (1 to 64 of them):
// it goes into cache keys (memcache allows no spaces or control characters).
bool valid_node_id(std::string_view id);
// The default node id: the host name (characters outside the set above
// dropped) and a hash of what tells two httpd instances of one host apart
// (ServerRoot and the configuration file): "mx1-3f9a0c12".
std::string default_node_id(std::string_view hostname, std::string_view instance);

} // namespace esmtp
