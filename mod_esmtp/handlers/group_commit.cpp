#include "handlers/group_commit.hpp"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <unordered_map>

namespace esmtp
{

// Group commit of one directory.
//
// Why no 250'd message can be lost: a delivery (1) writes its file in tmp/,
// (2) fdatasyncs it, so its data is on stable storage before its name can
// appear in new/, (3) renames it into new/ and, once rename() returned,
// takes the next generation number under the mutex, (4) waits until a
// directory fsync that STARTED after that (the leader reads the generation
// under the same mutex before it calls fsync, so every rename numbered up to
// what it read had returned before fsync was called) has RETURNED with
// success, and only then (5) is its 250 sent. An fsync of a directory makes
// every change to it completed before the call durable, so the one fsync
// covers every rename numbered up to what its leader read. A failed fsync
// fails every delivery it was to cover (451, file removed), none is told it
// succeeded: a later fsync is no proof after an error (Linux may drop the
// dirty state). One fsync runs at a time per directory; the renames that
// arrive meanwhile are covered by the next one, which is the sharing.
class DirGroup
{
  public:
    explicit DirGroup(std::string path) : path_(std::move(path)) {}

    // A delivery at its end of data that will rename into the directory
    // soon (its file is being written or synced): a leader may wait a
    // little for it. Each expect() is followed by exactly one commit() or
    // cancel().
    void expect()
    {
        std::lock_guard lock(mutex_);
        ++arriving_;
    }
    void cancel()
    {
        std::lock_guard lock(mutex_);
        --arriving_;
        arrived_.notify_one();
    }

    // Call after a rename into the directory returned. Returns 0 once a
    // flush that started after it succeeded, else the flush's errno.
    int commit(DirFlush flush)
    {
        std::unique_lock lock(mutex_);
        --arriving_;
        Waiter me{++renamed_};
        waiters_.push_back(&me);
        arrived_.notify_one();
        while (!me.done) {
            if (flushing_) {
                cond_.wait(lock);
                continue;
            }
            // Leader: one flush for every rename numbered so far. Deliveries
            // at their end of data but not yet renamed would need the next
            // flush: wait for them, as long as the last flush took but at
            // least kMinHold and at most kMaxHold (measured: without the
            // floor, on a VM whose fsync takes 0.3 ms, 20 sessions made
            // 1.33 flushes per message; with 2 ms, 1.21). A lone delivery
            // has nobody arriving and flushes at once. The wait only delays
            // the start of the flush: it changes nothing in the argument.
            flushing_ = true;
            if (arriving_ > 0) {
                auto deadline = std::chrono::steady_clock::now() + std::clamp(last_flush_, kMinHold, kMaxHold);
                arrived_.wait_until(lock, deadline, [&] { return arriving_ <= 0; });
            }
            const std::uint64_t covered = renamed_;
            lock.unlock();
            auto t0 = std::chrono::steady_clock::now();
            int err = flush(path_);
            auto took = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0);
            lock.lock();
            last_flush_ = took;
            flushing_ = false;
            std::erase_if(waiters_, [&](Waiter *w) {
                if (w->generation > covered)
                    return false;
                w->done = true;
                w->error = err;
                return true;
            });
            cond_.notify_all();
        }
        return me.error;
    }

    long arriving()
    {
        std::lock_guard lock(mutex_);
        return arriving_;
    }

  private:
    // What a leader waits for arriving deliveries (see commit()).
    static constexpr std::chrono::microseconds kMinHold{2000};
    static constexpr std::chrono::microseconds kMaxHold{5000};
    struct Waiter {
        std::uint64_t generation;
        bool done = false;
        int error = 0;
    };
    const std::string path_;
    std::mutex mutex_;
    std::condition_variable cond_;    // followers: a flush ended
    std::condition_variable arrived_; // the leader: a delivery arrived
    std::uint64_t renamed_ = 0;       // generation of the last rename
    long arriving_ = 0;               // expect()ed, not yet committed or cancelled
    bool flushing_ = false;
    std::chrono::microseconds last_flush_{0};
    std::vector<Waiter *> waiters_; // each on its thread's stack, in commit()
};

namespace
{

// The process-wide registry: one DirGroup per directory while a delivery
// uses it. Entries nobody holds are dropped once there are more than
// kMaxGroups, so it stays bounded by the deliveries in progress.
constexpr std::size_t kMaxGroups = 256;

struct GroupRegistry {
    std::mutex mutex;
    std::unordered_map<std::string, std::weak_ptr<DirGroup>> groups;
};

GroupRegistry &registry()
{
    static GroupRegistry r;
    return r;
}

std::shared_ptr<DirGroup> dir_group(const std::string &path)
{
    auto &[mutex, groups] = registry();
    std::lock_guard lock(mutex);
    auto &slot = groups[path];
    auto g = slot.lock();
    if (!g) {
        g = std::make_shared<DirGroup>(path);
        slot = g;
        if (groups.size() > kMaxGroups)
            std::erase_if(groups, [](const auto &kv) { return kv.second.expired(); });
    }
    return g;
}

} // namespace

GroupCommit::~GroupCommit()
{
    for (auto &g : groups_)
        if (g)
            g->cancel();
}

void GroupCommit::expect(const std::string &dir)
{
    groups_.push_back(dir_group(dir));
    groups_.back()->expect();
}

int GroupCommit::commit(std::size_t i, DirFlush flush)
{
    auto g = std::move(groups_.at(i));
    return g->commit(flush);
}

long group_commit_arriving(const std::string &dir)
{
    std::shared_ptr<DirGroup> g;
    {
        auto &r = registry();
        std::lock_guard lock(r.mutex);
        auto it = r.groups.find(dir);
        if (it != r.groups.end())
            g = it->second.lock();
    }
    return g ? g->arriving() : -1;
}

} // namespace esmtp
