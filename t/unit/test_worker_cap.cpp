// The bulkhead's counting (engine/worker_cap.cpp, ESMTPMaxWorkers): the
// directive's values, the default cap, the cap held exactly by concurrent
// threads, refusals counted, and the holds of a dead process given back.

#include "engine/worker_cap.hpp"

#include <cppunit/extensions/HelperMacros.h>

#include <atomic>
#include <thread>
#include <vector>

using esmtp::WorkerCap;
using esmtp::WorkerCapSpec;

namespace
{

std::int64_t g_dead = 0; // the pid the fake process table reports dead

bool alive(std::int64_t pid)
{
    return pid != g_dead;
}

struct Block {
    explicit Block(unsigned rows) : mem(WorkerCap::bytes_for(rows) / sizeof(std::uint64_t) + 1)
    {
        WorkerCap::format(mem.data(), WorkerCap::bytes_for(rows), rows);
        cap = WorkerCap(mem.data(), WorkerCap::bytes_for(rows));
    }
    std::vector<std::uint64_t> mem; // aligned for the atomics
    WorkerCap cap;
};

} // namespace

class WorkerCapTest : public CppUnit::TestFixture
{
    CPPUNIT_TEST_SUITE(WorkerCapTest);
    CPPUNIT_TEST(testParse);
    CPPUNIT_TEST(testResolve);
    CPPUNIT_TEST(testCapAndRefusals);
    CPPUNIT_TEST(testForcedHold);
    CPPUNIT_TEST(testDeadProcessGivesBack);
    CPPUNIT_TEST(testRowReclaimed);
    CPPUNIT_TEST(testConcurrent);
    CPPUNIT_TEST(testInvalidBlock);
    CPPUNIT_TEST_SUITE_END();

  public:
    void testParse()
    {
        WorkerCapSpec s;
        CPPUNIT_ASSERT(esmtp::parse_worker_cap("12", s));
        CPPUNIT_ASSERT_EQUAL(12u, s.value);
        CPPUNIT_ASSERT(!s.percent);
        CPPUNIT_ASSERT(esmtp::parse_worker_cap("25%", s));
        CPPUNIT_ASSERT_EQUAL(25u, s.value);
        CPPUNIT_ASSERT(s.percent);
        CPPUNIT_ASSERT(esmtp::parse_worker_cap("100%", s));
        for (const char *bad : {"", "0", "0%", "101%", "-1", "1.5", "12 ", "%", "x", "5%%", "1000001", "99999999999"})
            CPPUNIT_ASSERT_MESSAGE(bad, !esmtp::parse_worker_cap(bad, s));
    }

    void testResolve()
    {
        WorkerCapSpec def;
        CPPUNIT_ASSERT_EQUAL(64u, esmtp::resolve_worker_cap(def, 128, true));
        CPPUNIT_ASSERT_EQUAL(128u, esmtp::resolve_worker_cap(def, 128, false));
        CPPUNIT_ASSERT_EQUAL(1u, esmtp::resolve_worker_cap(def, 1, true)); // never 0
        WorkerCapSpec pct{25, true};
        CPPUNIT_ASSERT_EQUAL(100u, esmtp::resolve_worker_cap(pct, 400, true));
        CPPUNIT_ASSERT_EQUAL(1u, esmtp::resolve_worker_cap(pct, 2, false));
        WorkerCapSpec n{7, false};
        CPPUNIT_ASSERT_EQUAL(7u, esmtp::resolve_worker_cap(n, 400, true));
    }

    void testCapAndRefusals()
    {
        Block b(4);
        b.cap.set_cap(2);
        int row = b.cap.claim_row(100, alive);
        CPPUNIT_ASSERT(row >= 0);
        CPPUNIT_ASSERT(b.cap.try_acquire(row, alive));
        CPPUNIT_ASSERT(b.cap.try_acquire(row, alive));
        CPPUNIT_ASSERT(!b.cap.try_acquire(row, alive));
        CPPUNIT_ASSERT(!b.cap.try_acquire(row, alive));
        WorkerCap::Stats st = b.cap.stats();
        CPPUNIT_ASSERT_EQUAL(2u, st.cap);
        CPPUNIT_ASSERT_EQUAL(std::int64_t(2), st.held);
        CPPUNIT_ASSERT_EQUAL(std::uint64_t(2), st.refused);
        b.cap.release(row);
        CPPUNIT_ASSERT(b.cap.try_acquire(row, alive));
        b.cap.release(row);
        b.cap.release(row);
        CPPUNIT_ASSERT_EQUAL(std::int64_t(0), b.cap.stats().held);
    }

    void testForcedHold()
    {
        Block b(4);
        b.cap.set_cap(1);
        int row = b.cap.claim_row(100, alive);
        CPPUNIT_ASSERT(b.cap.try_acquire(row, alive));
        b.cap.acquire(row); // beyond the cap, not refused
        CPPUNIT_ASSERT_EQUAL(std::int64_t(2), b.cap.stats().held);
        CPPUNIT_ASSERT_EQUAL(std::uint64_t(0), b.cap.stats().refused);
        b.cap.release(row);
        CPPUNIT_ASSERT(!b.cap.try_acquire(row, alive));
        b.cap.release(row);
        CPPUNIT_ASSERT(b.cap.try_acquire(row, alive));
    }

    // A process died holding workers: the next refusal sweeps them back.
    void testDeadProcessGivesBack()
    {
        Block b(4);
        b.cap.set_cap(1);
        g_dead = 0;
        int dying = b.cap.claim_row(200, alive);
        int other = b.cap.claim_row(300, alive);
        CPPUNIT_ASSERT(dying != other);
        CPPUNIT_ASSERT(b.cap.try_acquire(dying, alive));
        CPPUNIT_ASSERT(!b.cap.try_acquire(other, alive));
        g_dead = 200;
        CPPUNIT_ASSERT(b.cap.try_acquire(other, alive));
        CPPUNIT_ASSERT_EQUAL(std::int64_t(1), b.cap.stats().held);
        CPPUNIT_ASSERT_EQUAL(std::uint64_t(1), b.cap.stats().refused);
        g_dead = 0;
    }

    // A new process takes the row of a dead one: its holds are given back.
    void testRowReclaimed()
    {
        Block b(1);
        b.cap.set_cap(5);
        g_dead = 0;
        int row = b.cap.claim_row(200, alive);
        CPPUNIT_ASSERT(b.cap.try_acquire(row, alive));
        CPPUNIT_ASSERT(b.cap.try_acquire(row, alive));
        CPPUNIT_ASSERT_EQUAL(-1, b.cap.claim_row(300, alive)); // the only row is taken
        g_dead = 200;
        CPPUNIT_ASSERT_EQUAL(row, b.cap.claim_row(300, alive));
        CPPUNIT_ASSERT_EQUAL(std::int64_t(0), b.cap.stats().held);
        g_dead = 0;
        b.cap.reset_holds();
        CPPUNIT_ASSERT_EQUAL(row, b.cap.claim_row(400, alive));
    }

    // Threads racing for the workers never hold more than the cap.
    void testConcurrent()
    {
        Block b(4);
        b.cap.set_cap(3);
        int row = b.cap.claim_row(100, alive);
        std::atomic<int> inside{0}, most{0};
        std::atomic<std::uint64_t> refused{0};
        std::vector<std::thread> threads;
        for (int t = 0; t < 8; ++t)
            threads.emplace_back([&] {
                for (int i = 0; i < 2000; ++i) {
                    if (!b.cap.try_acquire(row, alive)) {
                        ++refused;
                        continue;
                    }
                    int now = ++inside;
                    int m = most.load();
                    while (now > m && !most.compare_exchange_weak(m, now)) {
                    }
                    --inside;
                    b.cap.release(row);
                }
            });
        for (auto &t : threads)
            t.join();
        CPPUNIT_ASSERT(most.load() <= 3);
        CPPUNIT_ASSERT_EQUAL(std::int64_t(0), b.cap.stats().held);
        CPPUNIT_ASSERT_EQUAL(refused.load(), b.cap.stats().refused);
    }

    void testInvalidBlock()
    {
        std::vector<std::uint64_t> junk(64, 0x1234);
        CPPUNIT_ASSERT(!WorkerCap(junk.data(), junk.size() * 8).valid());
        CPPUNIT_ASSERT(!WorkerCap(nullptr, 0).valid());
        Block b(2);
        CPPUNIT_ASSERT(!WorkerCap(b.mem.data(), 8).valid()); // shorter than its header
    }
};

CPPUNIT_TEST_SUITE_REGISTRATION(WorkerCapTest);
