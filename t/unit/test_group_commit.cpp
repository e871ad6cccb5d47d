// GroupCommit on its own (handlers/group_commit.hpp), with a counting fake
// flush: announcements end on every path, a stuck announced delivery holds
// a leader only briefly, a failed flush fails the commits it covered. The
// maildir tests (test_maildir.cpp, testGroupCommit*, testArrivalsCounted)
// drive it through the handler.

#include "handlers/group_commit.hpp"

#include <cppunit/extensions/HelperMacros.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <string>
#include <thread>

namespace
{

std::atomic<int> g_flushes{0};
std::atomic<int> g_flush_error{0};

int fake_flush(const std::string &)
{
    g_flushes.fetch_add(1);
    return g_flush_error.load();
}

} // namespace

class GroupCommitTest : public CppUnit::TestFixture
{
    CPPUNIT_TEST_SUITE(GroupCommitTest);
    CPPUNIT_TEST(testUncommittedCancelled);
    CPPUNIT_TEST(testStuckArrivalHoldsBriefly);
    CPPUNIT_TEST(testFailedFlush);
    CPPUNIT_TEST_SUITE_END();

  public:
    void setUp() override
    {
        g_flushes = 0;
        g_flush_error = 0;
    }

    // What a delivery announced and did not commit is cancelled when its
    // GroupCommit goes (a 451 half-way, an exception): no count is left
    // behind for leaders to wait for.
    void testUncommittedCancelled()
    {
        const std::string dir = "/group-commit-test/a/new", other = "/group-commit-test/b/new";
        CPPUNIT_ASSERT_EQUAL(-1L, esmtp::group_commit_arriving(dir));
        esmtp::GroupCommit held;
        held.expect(dir);
        {
            esmtp::GroupCommit g;
            g.expect(dir);
            g.expect(other);
            CPPUNIT_ASSERT_EQUAL(2L, esmtp::group_commit_arriving(dir));
            CPPUNIT_ASSERT_EQUAL(1L, esmtp::group_commit_arriving(other));
        }
        CPPUNIT_ASSERT_EQUAL(1L, esmtp::group_commit_arriving(dir));
        CPPUNIT_ASSERT_EQUAL(-1L, esmtp::group_commit_arriving(other));
        CPPUNIT_ASSERT_EQUAL(0, held.commit(0, fake_flush));
        CPPUNIT_ASSERT_EQUAL(1, g_flushes.load());
        CPPUNIT_ASSERT_EQUAL(-1L, esmtp::group_commit_arriving(dir));
    }

    // A leader waits for announced deliveries at most a few milliseconds:
    // one that never renames (its client stalls, it is abandoned) does not
    // hold the others' 250s.
    void testStuckArrivalHoldsBriefly()
    {
        const std::string dir = "/group-commit-test/c/new";
        esmtp::GroupCommit stuck;
        stuck.expect(dir);
        int result = -1;
        std::atomic<bool> done{false};
        auto t0 = std::chrono::steady_clock::now();
        std::thread leader([&] {
            esmtp::GroupCommit g;
            g.expect(dir);
            result = g.commit(0, fake_flush);
            done = true;
        });
        // bounded: the hold is at most 5 ms; 10 s means it never ended
        while (!done && std::chrono::steady_clock::now() - t0 < std::chrono::seconds(10))
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        const bool finished = done.load();
        CPPUNIT_ASSERT_MESSAGE("the leader waited for a delivery that never came", finished);
        leader.join();
        CPPUNIT_ASSERT_EQUAL(0, result);
        CPPUNIT_ASSERT_EQUAL(1, g_flushes.load());
        CPPUNIT_ASSERT_EQUAL(1L, esmtp::group_commit_arriving(dir)); // still announced
    }

    // A failed flush is the error of every commit it was to cover.
    void testFailedFlush()
    {
        const std::string dir = "/group-commit-test/d/new";
        g_flush_error = EIO;
        esmtp::GroupCommit g;
        g.expect(dir);
        CPPUNIT_ASSERT_EQUAL(EIO, g.commit(0, fake_flush));
        g_flush_error = 0;
        esmtp::GroupCommit h;
        h.expect(dir);
        CPPUNIT_ASSERT_EQUAL(0, h.commit(0, fake_flush));
        CPPUNIT_ASSERT_EQUAL(2, g_flushes.load());
    }
};

CPPUNIT_TEST_SUITE_REGISTRATION(GroupCommitTest);
