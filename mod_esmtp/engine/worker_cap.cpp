#include "engine/worker_cap.hpp"

#include <charconv>
#include <cstring>
#include <new>

namespace esmtp
{

namespace
{
constexpr std::uint32_t kMagic = 0x45534d57; // "ESMW": this layout
} // namespace

struct WorkerCap::Header {
    std::uint32_t magic;
    std::uint32_t rows;
    std::uint64_t size;
    std::atomic<std::uint32_t> cap;
    std::atomic<std::int64_t> held;
    std::atomic<std::uint64_t> refused;
};

struct WorkerCap::Row {
    std::atomic<std::int64_t> pid; // 0: free
    std::atomic<std::int64_t> held;
};

bool parse_worker_cap(std::string_view text, WorkerCapSpec &out)
{
    bool percent = !text.empty() && text.back() == '%';
    if (percent)
        text.remove_suffix(1);
    std::uint32_t v = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (text.empty() || ec != std::errc() || end != text.data() + text.size() || v == 0 ||
        v > (percent ? 100u : 1000000u))
        return false;
    out.value = v;
    out.percent = percent;
    return true;
}

std::uint32_t resolve_worker_cap(const WorkerCapSpec &spec, std::uint32_t max_workers, bool http)
{
    std::uint64_t cap;
    if (spec.value == 0)
        cap = http ? max_workers / 2 : max_workers;
    else if (spec.percent)
        cap = static_cast<std::uint64_t>(max_workers) * spec.value / 100;
    else
        cap = spec.value;
    return cap < 1 ? 1 : static_cast<std::uint32_t>(cap);
}

std::size_t WorkerCap::bytes_for(unsigned rows)
{
    return sizeof(Header) + rows * sizeof(Row);
}

void WorkerCap::format(void *mem, std::size_t size, unsigned rows)
{
    std::memset(mem, 0, size); // zero atomics are valid
    auto *h = new (mem) Header;
    h->magic = kMagic;
    h->rows = rows;
    h->size = bytes_for(rows);
    h->cap.store(1);
    h->held.store(0);
    h->refused.store(0);
    for (unsigned i = 0; i < rows; ++i)
        new (static_cast<char *>(mem) + sizeof(Header) + i * sizeof(Row)) Row{};
}

WorkerCap::WorkerCap(void *mem, std::size_t size)
{
    auto *h = static_cast<Header *>(mem);
    if (mem && size >= sizeof(Header) && h->magic == kMagic && h->size == bytes_for(h->rows) && h->size <= size)
        hdr_ = h;
}

WorkerCap::Row *WorkerCap::row(int i) const
{
    if (i < 0 || static_cast<unsigned>(i) >= hdr_->rows)
        return nullptr;
    return reinterpret_cast<Row *>(reinterpret_cast<char *>(hdr_) + sizeof(Header)) + i;
}

void WorkerCap::set_cap(std::uint32_t cap)
{
    hdr_->cap.store(cap < 1 ? 1 : cap);
}

void WorkerCap::reset_holds()
{
    hdr_->held.store(0);
    for (unsigned i = 0; i < hdr_->rows; ++i) {
        row(static_cast<int>(i))->pid.store(0);
        row(static_cast<int>(i))->held.store(0);
    }
}

int WorkerCap::claim_row(std::int64_t pid, AliveFn alive)
{
    for (unsigned i = 0; i < hdr_->rows; ++i) {
        Row *r = row(static_cast<int>(i));
        std::int64_t owner = r->pid.load();
        if (owner != 0 && owner != pid && alive(owner))
            continue;
        // The compare-and-swap picks one winner for a dead process's row:
        // it alone gives that process's holds back.
        if (!r->pid.compare_exchange_strong(owner, pid))
            continue;
        hdr_->held.fetch_sub(r->held.exchange(0));
        return static_cast<int>(i);
    }
    return -1;
}

bool WorkerCap::sweep(AliveFn alive)
{
    bool freed = false;
    for (unsigned i = 0; i < hdr_->rows; ++i) {
        Row *r = row(static_cast<int>(i));
        std::int64_t owner = r->pid.load();
        if (owner == 0 || r->held.load() == 0 || alive(owner) || !r->pid.compare_exchange_strong(owner, 0))
            continue;
        std::int64_t n = r->held.exchange(0);
        hdr_->held.fetch_sub(n);
        freed = freed || n > 0;
    }
    return freed;
}

bool WorkerCap::try_acquire(int i, AliveFn alive)
{
    for (int attempt = 0; attempt < 2; ++attempt) {
        std::int64_t h = hdr_->held.load();
        std::int64_t cap = hdr_->cap.load();
        while (h < cap) {
            if (hdr_->held.compare_exchange_weak(h, h + 1)) {
                if (Row *r = row(i))
                    r->held.fetch_add(1);
                return true;
            }
        }
        if (attempt == 0 && !(alive && sweep(alive)))
            break;
    }
    hdr_->refused.fetch_add(1, std::memory_order_relaxed);
    return false;
}

void WorkerCap::acquire(int i)
{
    hdr_->held.fetch_add(1);
    if (Row *r = row(i))
        r->held.fetch_add(1);
}

void WorkerCap::release(int i)
{
    if (Row *r = row(i))
        r->held.fetch_sub(1);
    hdr_->held.fetch_sub(1);
}

WorkerCap::Stats WorkerCap::stats() const
{
    Stats s;
    s.cap = hdr_->cap.load(std::memory_order_relaxed);
    std::int64_t h = hdr_->held.load(std::memory_order_relaxed);
    s.held = h < 0 ? 0 : h;
    s.refused = hdr_->refused.load(std::memory_order_relaxed);
    return s;
}

} // namespace esmtp
