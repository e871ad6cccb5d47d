#include "engine/client_limits.hpp"

#include "engine/text.hpp"

#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <new>

namespace esmtp
{

// ---- the layout in the shared block (plain words; the shared ones are
// accessed through std::atomic_ref, everything else under the bucket lock)

struct ClientTable::Header {
    std::uint64_t magic;
    std::uint32_t version;
    std::uint32_t buckets;
    std::uint64_t seed;
    std::uint64_t evictions;        // atomic
    std::uint64_t untracked;        // atomic
    std::uint64_t shared;           // atomic: SharedStats on, up, nodes
    std::uint64_t shared_clients;   // atomic: SharedStats published << 32 | remote
    std::uint64_t shared_exchanges; // atomic: SharedStats exchanges
};

struct ClientTable::Slot {
    std::uint64_t state; // atomic: generation << 32 | sessions
    std::uint8_t addr[16];
    std::uint16_t zone;
    std::uint16_t used;
    std::uint32_t pad;
    std::int64_t last_ms;
    std::int64_t window_start[kWindows];
    std::uint32_t window_count[kWindows];
    std::uint32_t window_len_s[kWindows]; // the rate's unit when the window started (published)
    // Other nodes' counts (set_remote, under the bucket lock): sessions,
    // and per window the events of their running windows, until remote_until.
    std::uint32_t remote_events[kWindows];
    std::uint32_t remote_sessions;
    std::uint32_t remote_pad;
    std::int64_t remote_until[kWindows];
};

struct ClientTable::Bucket {
    std::uint32_t lock; // atomic: owner pid, 0 when free
    std::uint32_t pad;
    Slot slots[kSlotsPerBucket];
};

namespace
{

constexpr std::uint64_t kMagic = 0x6d6f645f65736d74ULL; // "mod_esmt"
constexpr std::uint32_t kVersion = 3;                   // 2: the AUTH window; 3: other nodes' counts

// Slot::used: a client this node counts, or one only other nodes count
// (set_remote made it; a connect() here makes it local).
constexpr std::uint16_t kLocal = 1;
constexpr std::uint16_t kRemoteOnly = 2;

static_assert(std::atomic_ref<std::uint64_t>::is_always_lock_free);
static_assert(std::atomic_ref<std::uint32_t>::is_always_lock_free);
static_assert(sizeof(ClientTable::Header) % 8 == 0);

std::uint32_t sessions_of(std::uint64_t state)
{
    return static_cast<std::uint32_t>(state);
}
std::uint32_t gen_of(std::uint64_t state)
{
    return static_cast<std::uint32_t>(state >> 32);
}
std::uint64_t make_state(std::uint32_t gen, std::uint32_t sessions)
{
    return static_cast<std::uint64_t>(gen) << 32 | sessions;
}

std::uint64_t mix(std::uint64_t x)
{
    // splitmix64's finalizer
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

// This process's pid without a system call per lock (glibc's getpid() is
// one): cached, and forgotten in a forked child.
std::atomic<std::uint32_t> g_pid{0};

std::uint32_t self_pid()
{
    static const bool registered = [] {
        pthread_atfork(nullptr, nullptr, [] { g_pid.store(0, std::memory_order_relaxed); });
        return true;
    }();
    (void)registered;
    std::uint32_t p = g_pid.load(std::memory_order_relaxed);
    if (!p) {
        p = static_cast<std::uint32_t>(getpid());
        g_pid.store(p, std::memory_order_relaxed);
    }
    return p;
}

// The bucket's lock word holds its owner's pid. A process that dies inside
// the few instructions it is held (SIGKILL, a crash) would wedge every
// client of the bucket: a waiter that has yielded a while checks the owner
// and takes over a lock whose owner is gone.
class BucketLock
{
  public:
    explicit BucketLock(std::uint32_t &word) : word_(word)
    {
        std::uint32_t me = self_pid();
        unsigned spins = 0;
        for (;;) {
            std::uint32_t expected = 0;
            if (word_.compare_exchange_weak(expected, me, std::memory_order_acquire, std::memory_order_relaxed))
                return;
            if (++spins < 64)
                continue;
            sched_yield();
            if (spins % 1024 == 0 && expected && expected != me && kill(static_cast<pid_t>(expected), 0) != 0 &&
                errno == ESRCH &&
                word_.compare_exchange_strong(expected, me, std::memory_order_acquire, std::memory_order_relaxed))
                return;
        }
    }
    ~BucketLock() { word_.store(0, std::memory_order_release); }
    BucketLock(const BucketLock &) = delete;
    BucketLock &operator=(const BucketLock &) = delete;

  private:
    std::atomic_ref<std::uint32_t> word_;
};

bool same_key(const ClientTable::Slot &s, const ClientTable::Key &k)
{
    return s.used && s.zone == k.zone && std::memcmp(s.addr, k.addr.data(), 16) == 0;
}

// Fixed windows, as anvil's: a window starts with its first event and lasts
// rate.seconds; the count restarts with the next window. `others`: the
// events other nodes counted in their running windows.
bool window_event(ClientTable::Slot &s, unsigned w, std::int64_t now_ms, RateLimit rate)
{
    std::uint32_t &count = s.window_count[w];
    if (count == 0 || now_ms - s.window_start[w] >= static_cast<std::int64_t>(rate.seconds) * 1000) {
        s.window_start[w] = now_ms;
        count = 0;
    }
    s.window_len_s[w] = rate.seconds;
    std::uint32_t others = s.remote_until[w] > now_ms ? s.remote_events[w] : 0;
    if (static_cast<std::uint64_t>(count) + others >= rate.count)
        return false;
    ++count;
    return true;
}

void clear_remote(ClientTable::Slot &s)
{
    s.remote_sessions = 0;
    for (unsigned w = 0; w < ClientTable::kWindows; ++w) {
        s.remote_events[w] = 0;
        s.remote_until[w] = 0;
    }
}

} // namespace

bool RateLimit::parse(std::string_view text, RateLimit &out)
{
    if (text == "off" || text == "0") {
        out = RateLimit{};
        return true;
    }
    std::size_t slash = text.find('/');
    if (slash == std::string_view::npos)
        return false;
    auto number = [](std::string_view s, unsigned max, unsigned &v) { return parse_decimal(s, 9, max, v) && v >= 1; };
    RateLimit r;
    if (!number(text.substr(0, slash), 100000000, r.count) || !number(text.substr(slash + 1), 86400, r.seconds))
        return false;
    out = r;
    return true;
}

std::string RateLimit::text() const
{
    if (!on())
        return "off";
    return std::to_string(count) + "/" + std::to_string(seconds) + "s";
}

std::vector<Network> loopback_networks()
{
    std::vector<Network> v(2);
    Network::parse("127.0.0.0/8", v[0]);
    Network::parse("::1/128", v[1]);
    return v;
}

bool ClientLimitsConfig::exempt(const IpAddress &a) const
{
    for (const Network &n : exceptions)
        if (n.contains(a))
            return true;
    return false;
}

// ---- the table

std::size_t ClientTable::round_entries(std::size_t entries)
{
    std::size_t buckets = (entries + kSlotsPerBucket - 1) / kSlotsPerBucket;
    return (buckets ? buckets : 1) * kSlotsPerBucket;
}

std::size_t ClientTable::bytes_for(std::size_t entries)
{
    return sizeof(Header) + round_entries(entries) / kSlotsPerBucket * sizeof(Bucket);
}

ClientTable ClientTable::format(void *mem, std::size_t bytes, std::size_t entries, std::uint64_t seed)
{
    if (!mem || bytes < bytes_for(entries) || reinterpret_cast<std::uintptr_t>(mem) % 8)
        return ClientTable();
    std::memset(mem, 0, bytes_for(entries));
    auto *h = static_cast<Header *>(mem);
    h->version = kVersion;
    h->buckets = static_cast<std::uint32_t>(round_entries(entries) / kSlotsPerBucket);
    h->seed = seed;
    std::atomic_ref<std::uint64_t>(h->magic).store(kMagic, std::memory_order_release);
    return ClientTable(mem, bytes);
}

ClientTable::ClientTable(void *mem, std::size_t bytes)
{
    auto *h = static_cast<Header *>(mem);
    if (!h || bytes < sizeof(Header) || reinterpret_cast<std::uintptr_t>(mem) % 8 ||
        std::atomic_ref<std::uint64_t>(h->magic).load(std::memory_order_acquire) != kMagic || h->version != kVersion ||
        !h->buckets || bytes < sizeof(Header) + h->buckets * sizeof(Bucket))
        return;
    hdr_ = h;
}

std::size_t ClientTable::capacity() const
{
    return hdr_ ? static_cast<std::size_t>(hdr_->buckets) * kSlotsPerBucket : 0;
}

ClientTable::Bucket *ClientTable::bucket(std::uint32_t index) const
{
    return reinterpret_cast<Bucket *>(reinterpret_cast<char *>(hdr_) + sizeof(Header)) + index;
}

ClientTable::Slot *ClientTable::slot(std::uint32_t index) const
{
    return &bucket(index / kSlotsPerBucket)->slots[index % kSlotsPerBucket];
}

std::uint32_t ClientTable::bucket_of(const Key &k) const
{
    std::uint64_t a, b;
    std::memcpy(&a, k.addr.data(), 8);
    std::memcpy(&b, k.addr.data() + 8, 8);
    std::uint64_t h = mix(hdr_->seed ^ a);
    h = mix(h ^ b);
    h = mix(h ^ k.zone);
    return static_cast<std::uint32_t>(h % hdr_->buckets);
}

ClientTable::Key ClientTable::key_of(const IpAddress &a, unsigned ipv6_prefix, std::uint16_t zone)
{
    Key k;
    k.addr = a.octets;
    k.zone = zone;
    if (!a.v4)
        for (unsigned bit = ipv6_prefix; bit < 128; ++bit)
            k.addr[bit / 8] &= static_cast<std::uint8_t>(~(0x80u >> (bit % 8)));
    return k;
}

ClientTable::Admission ClientTable::connect(const Key &k, std::int64_t now_ms, unsigned limit, RateLimit rate)
{
    Admission out;
    if (!hdr_)
        return out;
    std::uint32_t b = bucket_of(k);
    Bucket *bk = bucket(b);
    BucketLock lock(bk->lock);
    Slot *found = nullptr, *free_slot = nullptr, *victim = nullptr;
    for (Slot &s : bk->slots) {
        if (same_key(s, k)) {
            found = &s;
            break;
        }
        if (!s.used) {
            if (!free_slot)
                free_slot = &s;
        } else if (sessions_of(std::atomic_ref<std::uint64_t>(s.state).load(std::memory_order_relaxed)) == 0 &&
                   (!victim || s.last_ms < victim->last_ms)) {
            victim = &s;
        }
    }
    if (!found) {
        Slot *s = free_slot ? free_slot : victim;
        if (!s) {
            // every entry of the bucket holds sessions: not counted
            std::atomic_ref<std::uint64_t>(hdr_->untracked).fetch_add(1, std::memory_order_relaxed);
            out.verdict = Verdict::untracked;
            return out;
        }
        if (!free_slot) {
            out.evicted = true;
            std::atomic_ref<std::uint64_t>(hdr_->evictions).fetch_add(1, std::memory_order_relaxed);
        }
        // A new generation: handles of the entry's previous client are stale.
        // Its session count is 0 (free, or chosen for that), and only
        // connect() raises it, under this lock.
        std::atomic_ref<std::uint64_t> st(s->state);
        st.store(make_state(gen_of(st.load(std::memory_order_relaxed)) + 1, 0), std::memory_order_release);
        std::memcpy(s->addr, k.addr.data(), 16);
        s->zone = k.zone;
        s->used = kLocal;
        for (unsigned w = 0; w < kWindows; ++w) {
            s->window_start[w] = 0;
            s->window_count[w] = 0;
        }
        clear_remote(*s);
        found = s;
    }
    found->used = kLocal;
    found->last_ms = now_ms;
    std::atomic_ref<std::uint64_t> st(found->state);
    std::uint64_t cur = st.load(std::memory_order_acquire);
    out.count = sessions_of(cur) + found->remote_sessions;
    if (limit && out.count >= limit) {
        out.verdict = Verdict::too_many_connections;
        return out;
    }
    if (rate.on() && !window_event(*found, connection_window, now_ms, rate)) {
        out.verdict = Verdict::connection_rate;
        return out;
    }
    // disconnect() may lower the count meanwhile (without the lock)
    while (!st.compare_exchange_weak(cur, make_state(gen_of(cur), sessions_of(cur) + 1), std::memory_order_acq_rel,
                                     std::memory_order_acquire)) {
    }
    out.count = sessions_of(cur) + 1 + found->remote_sessions;
    out.handle.slot = static_cast<std::uint32_t>(b * kSlotsPerBucket + (found - bk->slots));
    out.handle.gen = gen_of(cur);
    return out;
}

void ClientTable::disconnect(Handle h)
{
    if (!hdr_ || !h.valid() || h.slot >= capacity())
        return;
    std::atomic_ref<std::uint64_t> st(slot(h.slot)->state);
    std::uint64_t cur = st.load(std::memory_order_acquire);
    do {
        if (gen_of(cur) != h.gen || sessions_of(cur) == 0)
            return; // stale: reset_connections() ran
    } while (!st.compare_exchange_weak(cur, cur - 1, std::memory_order_acq_rel, std::memory_order_acquire));
}

bool ClientTable::event(Handle h, Window w, std::int64_t now_ms, RateLimit rate)
{
    if (!hdr_ || !h.valid() || h.slot >= capacity() || w >= kWindows || !rate.on())
        return true;
    Bucket *bk = bucket(h.slot / kSlotsPerBucket);
    BucketLock lock(bk->lock);
    Slot *s = slot(h.slot);
    if (gen_of(std::atomic_ref<std::uint64_t>(s->state).load(std::memory_order_acquire)) != h.gen)
        return true;
    s->last_ms = now_ms;
    return window_event(*s, w, now_ms, rate);
}

void ClientTable::reset_connections()
{
    if (!hdr_)
        return;
    for (std::uint32_t i = 0; i < capacity(); ++i) {
        std::atomic_ref<std::uint64_t> st(slot(i)->state);
        std::uint64_t cur = st.load(std::memory_order_acquire);
        while (!st.compare_exchange_weak(cur, make_state(gen_of(cur) + 1, 0), std::memory_order_acq_rel,
                                         std::memory_order_acquire)) {
        }
    }
}

bool ClientTable::Counts::empty() const
{
    if (sessions)
        return false;
    for (unsigned w = 0; w < kWindows; ++w)
        if (events[w] && remaining_ms[w])
            return false;
    return true;
}

std::vector<ClientTable::Entry> ClientTable::own_counts(std::int64_t now_ms, std::size_t max, bool &more) const
{
    std::vector<Entry> out;
    more = false;
    if (!hdr_)
        return out;
    for (std::uint32_t b = 0; b < hdr_->buckets; ++b) {
        Bucket *bk = bucket(b);
        BucketLock lock(bk->lock);
        for (const Slot &sl : bk->slots) {
            if (sl.used != kLocal)
                continue;
            Entry e;
            std::memcpy(e.key.addr.data(), sl.addr, 16);
            e.key.zone = sl.zone;
            e.counts.sessions = sessions_of(
                std::atomic_ref<std::uint64_t>(const_cast<std::uint64_t &>(sl.state)).load(std::memory_order_relaxed));
            for (unsigned w = 0; w < kWindows; ++w) {
                std::int64_t left = sl.window_start[w] + static_cast<std::int64_t>(sl.window_len_s[w]) * 1000 - now_ms;
                if (sl.window_count[w] && left > 0) {
                    e.counts.events[w] = sl.window_count[w];
                    e.counts.remaining_ms[w] = static_cast<std::uint32_t>(left);
                }
            }
            if (e.counts.empty())
                continue;
            if (out.size() >= max) {
                more = true;
                return out;
            }
            out.push_back(e);
        }
    }
    return out;
}

ClientTable::RemoteStats ClientTable::set_remote(const std::vector<Entry> &others, std::int64_t now_ms)
{
    RemoteStats st;
    if (!hdr_)
        return st;
    auto put = [now_ms](Slot &s, const Counts &c) {
        s.remote_sessions = c.sessions;
        for (unsigned w = 0; w < kWindows; ++w) {
            s.remote_events[w] = c.remaining_ms[w] ? c.events[w] : 0;
            s.remote_until[w] = c.remaining_ms[w] ? now_ms + c.remaining_ms[w] : 0;
        }
    };
    // Per bucket, the entries of `others` that hash to it (an index, so
    // that each bucket is locked once).
    std::vector<std::vector<std::uint32_t>> by_bucket(hdr_->buckets);
    for (std::uint32_t i = 0; i < others.size(); ++i)
        by_bucket[bucket_of(others[i].key)].push_back(i);
    for (std::uint32_t b = 0; b < hdr_->buckets; ++b) {
        Bucket *bk = bucket(b);
        BucketLock lock(bk->lock);
        const std::vector<std::uint32_t> &mine = by_bucket[b];
        std::vector<bool> placed(mine.size(), false);
        for (Slot &s : bk->slots) {
            if (!s.used)
                continue;
            std::size_t j = 0;
            while (j < mine.size() && !same_key(s, others[mine[j]].key))
                ++j;
            if (j < mine.size()) {
                put(s, others[mine[j]].counts);
                placed[j] = true;
                ++st.clients;
            } else if (s.used == kRemoteOnly) {
                // no other node counts it any more: the entry is free again
                s.used = 0;
                clear_remote(s);
            } else {
                clear_remote(s);
            }
        }
        for (std::size_t j = 0; j < mine.size(); ++j) {
            if (placed[j])
                continue;
            Slot *free_slot = nullptr;
            for (Slot &s : bk->slots)
                if (!s.used) {
                    free_slot = &s;
                    break;
                }
            if (!free_slot) {
                ++st.untracked;
                continue;
            }
            // A new generation, as in connect(): no handle points here.
            std::atomic_ref<std::uint64_t> state(free_slot->state);
            state.store(make_state(gen_of(state.load(std::memory_order_relaxed)) + 1, 0), std::memory_order_release);
            const Key &k = others[mine[j]].key;
            std::memcpy(free_slot->addr, k.addr.data(), 16);
            free_slot->zone = k.zone;
            free_slot->used = kRemoteOnly;
            free_slot->last_ms = 0; // the first to go when a client of this node needs an entry
            for (unsigned w = 0; w < kWindows; ++w) {
                free_slot->window_start[w] = 0;
                free_slot->window_count[w] = 0;
            }
            put(*free_slot, others[mine[j]].counts);
            ++st.clients;
        }
    }
    return st;
}

void ClientTable::set_shared_stats(const SharedStats &s)
{
    if (!hdr_)
        return;
    if (s.exchanges)
        std::atomic_ref<std::uint64_t>(hdr_->shared_exchanges).fetch_add(1, std::memory_order_relaxed);
    std::uint64_t word = (s.on ? 1u : 0u) | (s.up ? 2u : 0u) | static_cast<std::uint64_t>(s.nodes) << 32;
    std::atomic_ref<std::uint64_t>(hdr_->shared).store(word, std::memory_order_relaxed);
    std::atomic_ref<std::uint64_t>(hdr_->shared_clients)
        .store(static_cast<std::uint64_t>(s.published) << 32 | s.remote, std::memory_order_relaxed);
}

ClientTable::SharedStats ClientTable::shared_stats() const
{
    SharedStats s;
    if (!hdr_)
        return s;
    std::uint64_t word = std::atomic_ref<std::uint64_t>(hdr_->shared).load(std::memory_order_relaxed);
    std::uint64_t clients = std::atomic_ref<std::uint64_t>(hdr_->shared_clients).load(std::memory_order_relaxed);
    s.on = word & 1;
    s.up = word & 2;
    s.nodes = static_cast<std::uint32_t>(word >> 32);
    s.published = static_cast<std::uint32_t>(clients >> 32);
    s.remote = static_cast<std::uint32_t>(clients);
    s.exchanges = std::atomic_ref<std::uint64_t>(hdr_->shared_exchanges).load(std::memory_order_relaxed);
    return s;
}

ClientTable::Stats ClientTable::stats() const
{
    Stats s;
    if (!hdr_)
        return s;
    s.capacity = capacity();
    for (std::uint32_t b = 0; b < hdr_->buckets; ++b) {
        Bucket *bk = bucket(b);
        BucketLock lock(bk->lock);
        for (const Slot &sl : bk->slots) {
            s.used += sl.used ? 1 : 0;
            s.sessions += sessions_of(
                std::atomic_ref<std::uint64_t>(const_cast<std::uint64_t &>(sl.state)).load(std::memory_order_relaxed));
        }
    }
    s.evictions = std::atomic_ref<std::uint64_t>(hdr_->evictions).load(std::memory_order_relaxed);
    s.untracked = std::atomic_ref<std::uint64_t>(hdr_->untracked).load(std::memory_order_relaxed);
    return s;
}

// ---- a session's entry

ClientSlot::ClientSlot(ClientSlot &&o) noexcept : table_(o.table_), handle_(o.handle_), cfg_(o.cfg_), zone_(o.zone_)
{
    o.handle_ = ClientTable::Handle{};
}

ClientSlot &ClientSlot::operator=(ClientSlot &&o) noexcept
{
    if (this != &o) {
        release();
        table_ = o.table_;
        handle_ = o.handle_;
        cfg_ = o.cfg_;
        zone_ = o.zone_;
        o.handle_ = ClientTable::Handle{};
    }
    return *this;
}

void ClientSlot::release() noexcept
{
    if (!handle_.valid())
        return;
    table_.disconnect(handle_);
    handle_ = ClientTable::Handle{};
}

bool ClientSlot::allow_message()
{
    return !cfg_ || table_.event(handle_, ClientTable::message_window, monotonic_ms(), cfg_->message_rate);
}

bool ClientSlot::allow_recipient()
{
    return !cfg_ || table_.event(handle_, ClientTable::recipient_window, monotonic_ms(), cfg_->recipient_rate);
}

bool ClientSlot::allow_auth()
{
    return !cfg_ || table_.event(handle_, ClientTable::auth_window, monotonic_ms(), cfg_->auth_rate);
}

bool ClientSlot::rekey(std::string_view address, std::string &limit)
{
    if (!cfg_)
        return true;
    // The old client's session ends here; the new one is admitted as if it
    // had connected (its connection limit and rate).
    release();
    ClientAdmission adm = admit_client(table_, *cfg_, address, zone_, monotonic_ms());
    if (adm.verdict == ClientTable::Verdict::too_many_connections ||
        adm.verdict == ClientTable::Verdict::connection_rate) {
        limit = adm.limit;
        return false;
    }
    *this = std::move(adm.slot);
    return true;
}

std::string ClientSlot::auth_limit() const
{
    return "auth rate " + (cfg_ ? cfg_->auth_rate.text() : std::string("off"));
}

std::string ClientSlot::message_limit() const
{
    return "message rate " + (cfg_ ? cfg_->message_rate.text() : std::string("off"));
}

std::string ClientSlot::recipient_limit() const
{
    return "recipient rate " + (cfg_ ? cfg_->recipient_rate.text() : std::string("off"));
}

std::int64_t monotonic_ms()
{
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

ClientAdmission admit_client(ClientTable table, const ClientLimitsConfig &cfg, std::string_view address,
                             std::uint16_t zone, std::int64_t now_ms, bool front_end)
{
    ClientAdmission out;
    IpAddress a;
    if (!table.valid() || !cfg.any() || !IpAddress::parse(address, a) || cfg.exempt(a)) {
        out.exempt = true;
        out.slot = ClientSlot(table, {}, &cfg, zone);
        return out;
    }
    ClientTable::Admission adm = table.connect(ClientTable::key_of(a, cfg.ipv6_prefix, zone), now_ms,
                                               front_end ? 0 : cfg.connection_limit, cfg.connection_rate);
    out.verdict = adm.verdict;
    out.count = adm.count;
    out.evicted = adm.evicted;
    if (adm.verdict == ClientTable::Verdict::ok)
        out.slot = ClientSlot(table, adm.handle, &cfg, zone);
    else if (adm.verdict == ClientTable::Verdict::untracked)
        out.slot = ClientSlot(table, {}, &cfg, zone);
    else if (adm.verdict == ClientTable::Verdict::too_many_connections)
        out.limit = "connection limit " + std::to_string(cfg.connection_limit);
    else if (adm.verdict == ClientTable::Verdict::connection_rate)
        out.limit = "connection rate " + cfg.connection_rate.text();
    return out;
}

} // namespace esmtp
