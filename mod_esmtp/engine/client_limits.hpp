// Per-client limits, as Postfix's anvil(8) keeps them: concurrent sessions
// and connection, message and recipient rates per client address, counted
// in one table that every child process of the server shares.
//
// The table lives in a memory block the caller provides (the httpd glue:
// anonymous shared memory created in post_config; the unit tests: a
// buffer) and knows nothing of httpd. Its size is fixed when it is laid
// out: buckets of kSlotsPerBucket entries, a client's bucket chosen by a
// hash keyed with a random seed. The eviction rule: a new client takes a
// free entry of its bucket, else the entry of its bucket that holds no
// session and was seen longest ago (its rate windows are forgotten); when
// every entry of the bucket holds sessions, the new client is not counted
// (served, as if it had no entry: fail open; Stats::untracked counts it).
//
// Other nodes (ESMTPStateCache redis/memcache; engine/shared_counts.hpp):
// each entry also holds the counts the other nodes last published for the
// client (set_remote), added to this node's exact own counts by every
// check. The table stays each node's own exact count; other nodes' counts
// are a view, refreshed in the background and never waited for.
//
// Concurrency: each bucket has a spin lock (its first word; it holds the owner's pid,
// so that a process that died holding it cannot wedge the bucket: a waiter
// takes a lock whose owner is gone). Ending a session takes no lock (a
// compare-and-swap of the entry's generation and session count), so it is
// safe from a signal handler (prefork's SIGTERM destroys pools).
#pragma once

#include "engine/cidr.hpp"

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace esmtp
{

// N events per SECONDS; off when either is 0.
struct RateLimit {
    unsigned count = 0;
    unsigned seconds = 0;
    bool on() const { return count && seconds; }
    // "N/SECONDS", "off" or "0".
    static bool parse(std::string_view text, RateLimit &out);
    std::string text() const;
};

// 127.0.0.0/8 and ::1.
std::vector<Network> loopback_networks();

// A server's per-client limits (the directives ESMTPClient*). Defaults as
// Postfix's: 50 sessions, rates off; loopback is not limited.
struct ClientLimitsConfig {
    unsigned connection_limit = 50; // 0: no limit
    RateLimit connection_rate;
    RateLimit message_rate;
    RateLimit recipient_rate;
    RateLimit auth_rate; // AUTH commands (Postfix's smtpd_client_auth_rate_limit)
    // IPv6 clients are counted per network of this prefix (one host can
    // rotate through its /64).
    unsigned ipv6_prefix = 64;
    std::vector<Network> exceptions = loopback_networks();
    bool any() const
    {
        return connection_limit || connection_rate.on() || message_rate.on() || recipient_rate.on() || auth_rate.on();
    }
    bool exempt(const IpAddress &a) const;
};

class ClientTable
{
  public:
    static constexpr unsigned kSlotsPerBucket = 8;
    static constexpr std::size_t kDefaultEntries = 8192;

    // The entries of a table laid out for `entries` (rounded up to whole
    // buckets, at least one) and the bytes it takes.
    static std::size_t round_entries(std::size_t entries);
    static std::size_t bytes_for(std::size_t entries);

    // Lays out an empty table in `mem` (8-byte aligned, bytes_for(entries)
    // long). Returns the table (invalid when the block is too small).
    static ClientTable format(void *mem, std::size_t bytes, std::size_t entries, std::uint64_t seed);
    // A table another process laid out in `mem`.
    ClientTable() = default;
    ClientTable(void *mem, std::size_t bytes);
    bool valid() const { return hdr_ != nullptr; }
    std::size_t capacity() const;

    struct Key {
        std::array<std::uint8_t, 16> addr{};
        std::uint16_t zone = 0; // the server port: counts are per service, as anvil's
    };
    // The client's key: IPv4 per address, IPv6 per `ipv6_prefix` network.
    static Key key_of(const IpAddress &a, unsigned ipv6_prefix, std::uint16_t zone);

    struct Handle {
        std::uint32_t slot = UINT32_MAX;
        std::uint32_t gen = 0;
        bool valid() const { return slot != UINT32_MAX; }
    };
    enum class Verdict { ok, too_many_connections, connection_rate, untracked };
    struct Admission {
        Verdict verdict = Verdict::ok;
        Handle handle;      // valid when verdict is ok
        unsigned count = 0; // the client's sessions (other nodes' too), this one included when admitted
        bool evicted = false;
    };
    // A new session of `k` at `now_ms` (a monotonic clock shared by the
    // processes): admitted and counted unless it would exceed `limit`
    // (0: none) or `rate`. A refused session is not counted in the rate.
    Admission connect(const Key &k, std::int64_t now_ms, unsigned limit, RateLimit rate);
    // The session of `h` ended. Lock-free; a stale handle (after
    // reset_connections) is ignored. Call once per admitted session.
    void disconnect(Handle h);

    enum Window : unsigned {
        connection_window = 0,
        message_window = 1,
        recipient_window = 2,
        auth_window = 3,
        kWindows = 4
    };
    // One event in the client's rate window: false (not counted) when the
    // window already holds rate.count events. Fixed windows: a window
    // starts with its first event and lasts rate.seconds.
    bool event(Handle h, Window w, std::int64_t now_ms, RateLimit rate);

    // No process holds a session any more (a non-graceful restart): every
    // session count to zero, every handle stale. Rate windows are kept.
    void reset_connections();

    // ---- counts of other nodes (docs/scale-out.md, Shared state)

    // A client's counts as one node publishes them: sessions held, and per
    // rate window the events counted in its running window and the
    // milliseconds that window still runs.
    struct Counts {
        std::uint32_t sessions = 0;
        std::array<std::uint32_t, kWindows> events{};
        std::array<std::uint32_t, kWindows> remaining_ms{};
        bool empty() const;
    };
    struct Entry {
        Key key;
        Counts counts;
    };
    // This node's own counts at `now_ms`: every client that holds a session
    // or has a rate window still running (at most `max` of them; `more`
    // tells whether some were left out).
    std::vector<Entry> own_counts(std::int64_t now_ms, std::size_t max, bool &more) const;
    struct RemoteStats {
        std::size_t clients = 0;   // clients with other nodes' counts in the table
        std::size_t untracked = 0; // left out: their bucket had no entry to spare
    };
    // The other nodes' counts (summed per client) replace the previous ones:
    // clients not in `others` have none any more. A client this node has
    // not seen gets an entry of its own (a free one, or one that only held
    // other nodes' counts; never one with counts of this node).
    RemoteStats set_remote(const std::vector<Entry> &others, std::int64_t now_ms);

    // What the node that shares the counts last did, for mod_status (in the
    // table's header: every child shows the same).
    struct SharedStats {
        bool on = false;             // a node shares its counts
        bool up = false;             // the last exchange worked
        std::uint32_t nodes = 0;     // other nodes whose counts are in the table
        std::uint32_t published = 0; // clients this node published
        std::uint32_t remote = 0;    // clients with other nodes' counts
        std::uint64_t exchanges = 0; // exchanges done (set_shared_stats: nonzero adds one)
    };
    void set_shared_stats(const SharedStats &s);
    SharedStats shared_stats() const;

    struct Stats {
        std::size_t capacity = 0;
        std::size_t used = 0;     // entries holding a client
        std::size_t sessions = 0; // sessions counted
        std::uint64_t evictions = 0;
        std::uint64_t untracked = 0;
    };
    Stats stats() const;

    struct Header;
    struct Slot;
    struct Bucket;

  private:
    Bucket *bucket(std::uint32_t index) const;
    Slot *slot(std::uint32_t index) const;
    std::uint32_t bucket_of(const Key &k) const;

    Header *hdr_ = nullptr;
};

// What the engine's session asks before MAIL and RCPT (the glue gives it
// one per session; null: no rate limits).
class ClientLimiter
{
  public:
    // A MAIL command: false when the client's message rate is exceeded.
    virtual bool allow_message() = 0;
    virtual bool allow_recipient() = 0;
    // An AUTH command (ESMTPClientAuthRate).
    virtual bool allow_auth() = 0;
    // The limits, for the log: "message rate 10/60s".
    virtual std::string message_limit() const = 0;
    virtual std::string recipient_limit() const = 0;
    virtual std::string auth_limit() const = 0;
    // XCLIENT named another client: count this session and its events for
    // `address` from now on, as a PROXY header would have. False (with the
    // limit hit, "connection limit 50", in `limit`) when that client may
    // have no further session.
    virtual bool rekey(std::string_view address, std::string &limit)
    {
        (void)address;
        (void)limit;
        return true;
    }

  protected:
    ~ClientLimiter() = default;
};

// One admitted session's entry: the ClientLimiter of its rates, and the
// session count given back (once) by release() or the destructor.
class ClientSlot final : public ClientLimiter
{
  public:
    ClientSlot() = default;
    // `h` invalid: an exempt client, not counted (rekey() may count it).
    ClientSlot(ClientTable table, ClientTable::Handle h, const ClientLimitsConfig *cfg, std::uint16_t zone)
        : table_(table), handle_(h), cfg_(cfg), zone_(zone)
    {
    }
    ClientSlot(ClientSlot &&o) noexcept;
    ClientSlot &operator=(ClientSlot &&o) noexcept;
    ClientSlot(const ClientSlot &) = delete;
    ClientSlot &operator=(const ClientSlot &) = delete;
    ~ClientSlot() { release(); }

    bool held() const { return handle_.valid(); }
    // Made by admit_client (counted or exempt): rates and rekey() apply.
    bool tracking() const { return cfg_ != nullptr; }
    void release() noexcept;

    bool allow_message() override;
    bool allow_recipient() override;
    bool allow_auth() override;
    std::string message_limit() const override;
    std::string recipient_limit() const override;
    std::string auth_limit() const override;
    bool rekey(std::string_view address, std::string &limit) override;

  private:
    ClientTable table_;
    ClientTable::Handle handle_;
    const ClientLimitsConfig *cfg_ = nullptr;
    std::uint16_t zone_ = 0;
};

// Milliseconds of CLOCK_MONOTONIC: the same clock in every process.
std::int64_t monotonic_ms();

// The admission of a new session from `address` to the server port `zone`:
// exempt addresses (and unparsable ones) are admitted without an entry.
// `front_end` (a host of ESMTPXClientHosts) is not held to the connection
// limit: its sessions carry many clients, each counted after its XCLIENT.
struct ClientAdmission {
    ClientTable::Verdict verdict = ClientTable::Verdict::ok;
    ClientSlot slot;
    unsigned count = 0;
    bool exempt = false;
    bool evicted = false;
    // The limit a refusal hit, for the log: "connection limit 50".
    std::string limit;
};
ClientAdmission admit_client(ClientTable table, const ClientLimitsConfig &cfg, std::string_view address,
                             std::uint16_t zone, std::int64_t now_ms, bool front_end = false);

} // namespace esmtp
