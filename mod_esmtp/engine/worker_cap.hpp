// The bulkhead's counting (ESMTPMaxWorkers): how many MPM workers SMTP
// sessions hold at once for anything but reading the client, counted in a
// block of shared memory that every child maps. httpd-free: the glue
// (httpd/bulkhead.cpp) creates the block and names the processes.
//
// One global count decides (a compare-and-swap against the cap, so the cap
// holds exactly across processes and threads); each process also counts its
// own holds in a row of its own, so that the holds of a process that died
// holding them (a crash, prefork's SIGTERM exit) can be given back.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace esmtp
{

// ESMTPMaxWorkers as written: N workers or N percent of MaxRequestWorkers.
struct WorkerCapSpec {
    std::uint32_t value = 0; // 0: not given (the default applies)
    bool percent = false;
};

// "N" (1..1000000) or "N%" (1..100); false when it is neither.
bool parse_worker_cap(std::string_view text, WorkerCapSpec &out);

// The cap in workers. Default: half of MaxRequestWorkers when web sites
// share the server (`http`), all of them otherwise. Never below 1.
std::uint32_t resolve_worker_cap(const WorkerCapSpec &spec, std::uint32_t max_workers, bool http);

class WorkerCap
{
  public:
    struct Stats {
        std::uint32_t cap = 0;
        std::int64_t held = 0;
        std::uint64_t refused = 0;
    };
    // Tells whether a process id is still running (kill(pid, 0) in the glue).
    using AliveFn = bool (*)(std::int64_t pid);

    WorkerCap() = default;
    // A view of a formatted block; invalid when it is not one.
    WorkerCap(void *mem, std::size_t size);
    static std::size_t bytes_for(unsigned rows);
    // Lays out a block of bytes_for(rows) bytes: nothing held, cap 1.
    static void format(void *mem, std::size_t size, unsigned rows);
    bool valid() const { return hdr_ != nullptr; }

    void set_cap(std::uint32_t cap);
    // Every process is gone (a start or a full restart): nothing is held.
    void reset_holds();
    // The row for process `pid` (a free one or one of a dead process, whose
    // holds are given back first); -1 when every row is taken.
    int claim_row(std::int64_t pid, AliveFn alive);

    // One worker more, if the cap allows; counted as a refusal otherwise.
    // When the cap is reached, the holds of dead processes are given back
    // and the count tried once more.
    bool try_acquire(int row, AliveFn alive);
    // One worker more, whatever the cap: for steps that cannot be refused
    // (ending a transaction or a session).
    void acquire(int row);
    void release(int row);
    // Gives back the holds of dead processes; true when there were any.
    bool sweep(AliveFn alive);
    Stats stats() const;

  private:
    struct Header;
    struct Row;
    Row *row(int i) const;
    Header *hdr_ = nullptr;
};

} // namespace esmtp
