// The per-client table (engine/client_limits.hpp): keys and IPv6
// aggregation, CIDR exceptions, session counts, rate windows, the eviction
// bound, concurrent use; and the session's 450 4.7.1 replies.

#include "engine/client_limits.hpp"
#include "session_harness.hpp"

#include <cppunit/extensions/HelperMacros.h>

#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

using esmtp::ClientAdmission;
using esmtp::ClientLimitsConfig;
using esmtp::ClientSlot;
using esmtp::ClientTable;
using esmtp::IpAddress;
using esmtp::Network;
using esmtp::RateLimit;

namespace
{

// A table in an 8-byte-aligned buffer.
struct Table {
    explicit Table(std::size_t entries, std::uint64_t seed = 42)
        : mem((ClientTable::bytes_for(entries) + 7) / 8),
          t(ClientTable::format(mem.data(), mem.size() * 8, entries, seed))
    {
    }
    std::vector<std::uint64_t> mem;
    ClientTable t;
};

ClientTable::Key key(const char *addr, unsigned prefix = 64, std::uint16_t zone = 25)
{
    IpAddress a;
    if (!IpAddress::parse(addr, a))
        throw std::runtime_error(std::string("bad address ") + addr);
    return ClientTable::key_of(a, prefix, zone);
}

// A limiter for the session tests: allows `left` events of each kind.
class CountingLimiter final : public esmtp::ClientLimiter
{
  public:
    int messages_left = 1000, recipients_left = 1000, auths_left = 1000;
    bool allow_message() override { return messages_left-- > 0; }
    bool allow_recipient() override { return recipients_left-- > 0; }
    bool allow_auth() override { return auths_left-- > 0; }
    std::string message_limit() const override { return "message rate 2/2s"; }
    std::string recipient_limit() const override { return "recipient rate 3/2s"; }
    std::string auth_limit() const override { return "auth rate 1/60s"; }
};

// A session of a front end on 127.0.0.1 (an ESMTPXClientHosts host) that
// counts through `slot`, after its EHLO.
void behind_front_end(esmtp::test::Harness &h, ClientSlot &slot)
{
    h.conn.client_address = "127.0.0.1";
    h.cfg.xclient_hosts.add("127.0.0.1");
    h.start();
    h.session->set_client_limiter(&slot);
    h.send("EHLO front.example\r\n");
}

} // namespace

class ClientLimitsTest : public CppUnit::TestFixture
{
    CPPUNIT_TEST_SUITE(ClientLimitsTest);
    CPPUNIT_TEST(testParseAddresses);
    CPPUNIT_TEST(testNetworks);
    CPPUNIT_TEST(testRateParse);
    CPPUNIT_TEST(testIpv6Aggregation);
    CPPUNIT_TEST(testZonesSeparate);
    CPPUNIT_TEST(testConnectionLimit);
    CPPUNIT_TEST(testConnectionRateRecovers);
    CPPUNIT_TEST(testEventWindowsRecover);
    CPPUNIT_TEST(testEvictionBound);
    CPPUNIT_TEST(testLiveEntriesNotEvicted);
    CPPUNIT_TEST(testResetConnections);
    CPPUNIT_TEST(testAttachSeesSameCounts);
    CPPUNIT_TEST(testTooSmallBlock);
    CPPUNIT_TEST(testAdmitExempt);
    CPPUNIT_TEST(testSlotReleasesOnce);
    CPPUNIT_TEST(testThreads);
    CPPUNIT_TEST(testDeadOwnerLockTakenOver);
    CPPUNIT_TEST(testProcesses);
    CPPUNIT_TEST(testSessionMessageRate);
    CPPUNIT_TEST(testSessionRecipientRate);
    CPPUNIT_TEST(testSessionAuthRate);
    CPPUNIT_TEST(testXClientRekeys);
    CPPUNIT_TEST(testFrontEndSkipsConnectionLimit);
    CPPUNIT_TEST_SUITE_END();

  public:
    void testParseAddresses()
    {
        IpAddress a;
        CPPUNIT_ASSERT(IpAddress::parse("192.0.2.1", a));
        CPPUNIT_ASSERT(a.v4);
        IpAddress m;
        CPPUNIT_ASSERT(IpAddress::parse("::ffff:192.0.2.1", m));
        CPPUNIT_ASSERT(m.v4);
        CPPUNIT_ASSERT(a.octets == m.octets); // a v4-mapped client is the IPv4 client
        CPPUNIT_ASSERT(IpAddress::parse("2001:db8::1", a));
        CPPUNIT_ASSERT(!a.v4);
        CPPUNIT_ASSERT(!IpAddress::parse("", a));
        CPPUNIT_ASSERT(!IpAddress::parse("300.1.1.1", a));
        CPPUNIT_ASSERT(!IpAddress::parse("example.org", a));
        CPPUNIT_ASSERT(!IpAddress::parse(std::string(100, '1'), a));
    }

    void testNetworks()
    {
        Network n;
        CPPUNIT_ASSERT(Network::parse("127.0.0.0/8", n));
        IpAddress a;
        IpAddress::parse("127.1.2.3", a);
        CPPUNIT_ASSERT(n.contains(a));
        IpAddress::parse("128.0.0.1", a);
        CPPUNIT_ASSERT(!n.contains(a));
        IpAddress::parse("::ffff:127.0.0.9", a);
        CPPUNIT_ASSERT(n.contains(a));
        CPPUNIT_ASSERT(Network::parse("192.0.2.77/28", n)); // host bits ignored
        IpAddress::parse("192.0.2.65", a);
        CPPUNIT_ASSERT(n.contains(a));
        IpAddress::parse("192.0.2.80", a);
        CPPUNIT_ASSERT(!n.contains(a));
        CPPUNIT_ASSERT(Network::parse("2001:db8::/33", n));
        IpAddress::parse("2001:db8:7fff::1", a);
        CPPUNIT_ASSERT(n.contains(a));
        IpAddress::parse("2001:db8:8000::1", a);
        CPPUNIT_ASSERT(!n.contains(a));
        CPPUNIT_ASSERT(Network::parse("198.51.100.7", n)); // one address
        IpAddress::parse("198.51.100.7", a);
        CPPUNIT_ASSERT(n.contains(a));
        IpAddress::parse("198.51.100.8", a);
        CPPUNIT_ASSERT(!n.contains(a));
        CPPUNIT_ASSERT(Network::parse("0.0.0.0/0", n));
        IpAddress::parse("2001:db8::1", a);
        CPPUNIT_ASSERT(!n.contains(a)); // an IPv4 network holds no IPv6 client
        for (const char *bad : {"127.0.0.0/33", "::/129", "1.2.3.4/", "1.2.3.4/x", "nonsense/8", "1.2.3.4/0008"})
            CPPUNIT_ASSERT_MESSAGE(bad, !Network::parse(bad, n));
        ClientLimitsConfig cfg;
        IpAddress::parse("::1", a);
        CPPUNIT_ASSERT(cfg.exempt(a)); // loopback by default
        IpAddress::parse("192.0.2.1", a);
        CPPUNIT_ASSERT(!cfg.exempt(a));
    }

    void testRateParse()
    {
        RateLimit r;
        CPPUNIT_ASSERT(RateLimit::parse("10/60", r));
        CPPUNIT_ASSERT_EQUAL(10u, r.count);
        CPPUNIT_ASSERT_EQUAL(60u, r.seconds);
        CPPUNIT_ASSERT_EQUAL(std::string("10/60s"), r.text());
        CPPUNIT_ASSERT(RateLimit::parse("off", r));
        CPPUNIT_ASSERT(!r.on());
        CPPUNIT_ASSERT(RateLimit::parse("0", r));
        CPPUNIT_ASSERT(!r.on());
        for (const char *bad : {"10", "/60", "10/", "0/60", "10/0", "10/86401", "-1/5", "a/b", "10/60s", ""})
            CPPUNIT_ASSERT_MESSAGE(bad, !RateLimit::parse(bad, r));
    }

    void testIpv6Aggregation()
    {
        Table tb(64);
        // one /64: one count
        auto a1 = tb.t.connect(key("2001:db8:1:2::1"), 0, 2, {});
        auto a2 = tb.t.connect(key("2001:db8:1:2:ffff::9"), 0, 2, {});
        auto a3 = tb.t.connect(key("2001:db8:1:2:1:2:3:4"), 0, 2, {});
        CPPUNIT_ASSERT(a1.verdict == ClientTable::Verdict::ok);
        CPPUNIT_ASSERT(a2.verdict == ClientTable::Verdict::ok);
        CPPUNIT_ASSERT(a3.verdict == ClientTable::Verdict::too_many_connections);
        // the next /64 is another client
        CPPUNIT_ASSERT(tb.t.connect(key("2001:db8:1:3::1"), 0, 2, {}).verdict == ClientTable::Verdict::ok);
        // with /128 every address counts alone
        CPPUNIT_ASSERT(tb.t.connect(key("2001:db8:1:2::1", 128), 0, 2, {}).verdict == ClientTable::Verdict::ok);
        CPPUNIT_ASSERT(tb.t.connect(key("2001:db8:1:2::2", 128), 0, 2, {}).verdict == ClientTable::Verdict::ok);
        // IPv4 is never aggregated
        CPPUNIT_ASSERT(tb.t.connect(key("192.0.2.1", 8), 0, 1, {}).verdict == ClientTable::Verdict::ok);
        CPPUNIT_ASSERT(tb.t.connect(key("192.0.2.2", 8), 0, 1, {}).verdict == ClientTable::Verdict::ok);
    }

    void testZonesSeparate()
    {
        Table tb(64);
        CPPUNIT_ASSERT(tb.t.connect(key("192.0.2.1", 64, 25), 0, 1, {}).verdict == ClientTable::Verdict::ok);
        CPPUNIT_ASSERT(tb.t.connect(key("192.0.2.1", 64, 25), 0, 1, {}).verdict ==
                       ClientTable::Verdict::too_many_connections);
        CPPUNIT_ASSERT(tb.t.connect(key("192.0.2.1", 64, 587), 0, 1, {}).verdict == ClientTable::Verdict::ok);
    }

    void testConnectionLimit()
    {
        Table tb(64);
        std::vector<ClientTable::Handle> hs;
        for (unsigned i = 1; i <= 50; ++i) {
            auto a = tb.t.connect(key("192.0.2.1"), 0, 50, {});
            CPPUNIT_ASSERT(a.verdict == ClientTable::Verdict::ok);
            CPPUNIT_ASSERT_EQUAL(i, a.count);
            hs.push_back(a.handle);
        }
        auto refused = tb.t.connect(key("192.0.2.1"), 0, 50, {});
        CPPUNIT_ASSERT(refused.verdict == ClientTable::Verdict::too_many_connections);
        CPPUNIT_ASSERT_EQUAL(50u, refused.count);
        CPPUNIT_ASSERT(tb.t.connect(key("192.0.2.2"), 0, 50, {}).verdict == ClientTable::Verdict::ok);
        tb.t.disconnect(hs.back());
        hs.pop_back();
        CPPUNIT_ASSERT(tb.t.connect(key("192.0.2.1"), 0, 50, {}).verdict == ClientTable::Verdict::ok);
        CPPUNIT_ASSERT_EQUAL(std::size_t(51), tb.t.stats().sessions);
    }

    void testConnectionRateRecovers()
    {
        Table tb(64);
        RateLimit r{3, 2};
        for (int i = 0; i < 3; ++i) {
            auto a = tb.t.connect(key("192.0.2.1"), 1000 + i, 0, r);
            CPPUNIT_ASSERT(a.verdict == ClientTable::Verdict::ok);
            tb.t.disconnect(a.handle); // the rate counts sessions begun, not open ones
        }
        CPPUNIT_ASSERT(tb.t.connect(key("192.0.2.1"), 2500, 0, r).verdict == ClientTable::Verdict::connection_rate);
        CPPUNIT_ASSERT(tb.t.connect(key("192.0.2.1"), 2999, 0, r).verdict == ClientTable::Verdict::connection_rate);
        // the window began at 1000 and lasts 2 s
        CPPUNIT_ASSERT(tb.t.connect(key("192.0.2.1"), 3000, 0, r).verdict == ClientTable::Verdict::ok);
        CPPUNIT_ASSERT_EQUAL(std::size_t(1), tb.t.stats().sessions); // refusals hold nothing
    }

    void testEventWindowsRecover()
    {
        Table tb(64);
        auto a = tb.t.connect(key("192.0.2.1"), 0, 0, {});
        RateLimit two{2, 2};
        CPPUNIT_ASSERT(tb.t.event(a.handle, ClientTable::message_window, 100, two));
        CPPUNIT_ASSERT(tb.t.event(a.handle, ClientTable::message_window, 200, two));
        CPPUNIT_ASSERT(!tb.t.event(a.handle, ClientTable::message_window, 300, two));
        // the recipient window is another count
        CPPUNIT_ASSERT(tb.t.event(a.handle, ClientTable::recipient_window, 300, two));
        // another session of the same client shares the window
        auto b = tb.t.connect(key("192.0.2.1"), 400, 0, {});
        CPPUNIT_ASSERT(!tb.t.event(b.handle, ClientTable::message_window, 500, two));
        CPPUNIT_ASSERT(tb.t.event(b.handle, ClientTable::message_window, 2100, two));
        // a rate that is off never refuses
        for (int i = 0; i < 100; ++i)
            CPPUNIT_ASSERT(tb.t.event(b.handle, ClientTable::recipient_window, 2100, RateLimit{}));
    }

    void testEvictionBound()
    {
        // A flood of one-shot clients from 100,000 addresses: the table never
        // holds more than its capacity, and every client is counted (idle
        // entries are evicted).
        Table tb(256);
        std::size_t bytes = ClientTable::bytes_for(256);
        for (unsigned i = 0; i < 100000; ++i) {
            std::string addr =
                "10." + std::to_string(i >> 16) + "." + std::to_string((i >> 8) & 255) + "." + std::to_string(i & 255);
            auto a = tb.t.connect(key(addr.c_str()), i, 50, {});
            CPPUNIT_ASSERT(a.verdict == ClientTable::Verdict::ok);
            tb.t.disconnect(a.handle);
        }
        auto st = tb.t.stats();
        CPPUNIT_ASSERT_EQUAL(std::size_t(256), st.capacity);
        CPPUNIT_ASSERT(st.used <= 256);
        CPPUNIT_ASSERT(st.evictions >= 100000 - 256);
        CPPUNIT_ASSERT_EQUAL(std::size_t(0), st.sessions);
        CPPUNIT_ASSERT_EQUAL(bytes, ClientTable::bytes_for(256)); // fixed size
    }

    void testLiveEntriesNotEvicted()
    {
        // One bucket: 8 clients with sessions stay; a 9th is served uncounted;
        // once one ends, its entry is the one taken.
        Table tb(8);
        std::vector<ClientTable::Handle> hs;
        for (int i = 1; i <= 8; ++i) {
            std::string addr = "192.0.2." + std::to_string(i);
            auto a = tb.t.connect(key(addr.c_str()), i, 1, {});
            CPPUNIT_ASSERT(a.verdict == ClientTable::Verdict::ok);
            hs.push_back(a.handle);
        }
        CPPUNIT_ASSERT(tb.t.connect(key("192.0.2.99"), 10, 1, {}).verdict == ClientTable::Verdict::untracked);
        CPPUNIT_ASSERT_EQUAL(std::uint64_t(1), tb.t.stats().untracked);
        // the 8 still hit their limit
        CPPUNIT_ASSERT(tb.t.connect(key("192.0.2.3"), 11, 1, {}).verdict == ClientTable::Verdict::too_many_connections);
        tb.t.disconnect(hs[4]);
        auto a = tb.t.connect(key("192.0.2.99"), 12, 1, {});
        CPPUNIT_ASSERT(a.verdict == ClientTable::Verdict::ok);
        CPPUNIT_ASSERT(a.evicted);
        // the evicted client's stale handle changes nothing
        tb.t.disconnect(hs[4]);
        CPPUNIT_ASSERT(tb.t.connect(key("192.0.2.99"), 13, 1, {}).verdict ==
                       ClientTable::Verdict::too_many_connections);
        // the least recently seen idle entry goes first
        tb.t.disconnect(hs[6]); // seen at 7
        tb.t.disconnect(hs[1]); // seen at 2
        CPPUNIT_ASSERT(tb.t.connect(key("192.0.2.100"), 14, 1, {}).evicted);
        CPPUNIT_ASSERT(tb.t.connect(key("192.0.2.7"), 15, 1, {}).verdict == ClientTable::Verdict::ok);
    }

    void testResetConnections()
    {
        Table tb(64);
        auto a = tb.t.connect(key("192.0.2.1"), 0, 1, {});
        CPPUNIT_ASSERT(tb.t.connect(key("192.0.2.1"), 0, 1, {}).verdict == ClientTable::Verdict::too_many_connections);
        tb.t.reset_connections();
        CPPUNIT_ASSERT_EQUAL(std::size_t(0), tb.t.stats().sessions);
        auto b = tb.t.connect(key("192.0.2.1"), 0, 1, {});
        CPPUNIT_ASSERT(b.verdict == ClientTable::Verdict::ok);
        tb.t.disconnect(a.handle); // a session of before the reset: ignored
        CPPUNIT_ASSERT_EQUAL(std::size_t(1), tb.t.stats().sessions);
    }

    void testAttachSeesSameCounts()
    {
        Table tb(64);
        auto a = tb.t.connect(key("192.0.2.1"), 0, 2, {});
        ClientTable other(tb.mem.data(), tb.mem.size() * 8);
        CPPUNIT_ASSERT(other.valid());
        CPPUNIT_ASSERT_EQUAL(std::size_t(64), other.capacity());
        CPPUNIT_ASSERT(other.connect(key("192.0.2.1"), 0, 2, {}).verdict == ClientTable::Verdict::ok);
        CPPUNIT_ASSERT(tb.t.connect(key("192.0.2.1"), 0, 2, {}).verdict == ClientTable::Verdict::too_many_connections);
        other.disconnect(a.handle);
        CPPUNIT_ASSERT(tb.t.connect(key("192.0.2.1"), 0, 2, {}).verdict == ClientTable::Verdict::ok);
        std::vector<std::uint64_t> zero(64);
        CPPUNIT_ASSERT(!ClientTable(zero.data(), zero.size() * 8).valid());
    }

    void testTooSmallBlock()
    {
        std::vector<std::uint64_t> small(4);
        CPPUNIT_ASSERT(!ClientTable::format(small.data(), small.size() * 8, 64, 1).valid());
        CPPUNIT_ASSERT_EQUAL(std::size_t(8), ClientTable::round_entries(1));
        CPPUNIT_ASSERT_EQUAL(std::size_t(16), ClientTable::round_entries(9));
        ClientTable none;
        CPPUNIT_ASSERT(none.connect(key("192.0.2.1"), 0, 1, {}).verdict == ClientTable::Verdict::ok);
        none.disconnect(ClientTable::Handle{});
    }

    void testAdmitExempt()
    {
        Table tb(64);
        ClientLimitsConfig cfg;
        cfg.connection_limit = 1;
        std::vector<ClientAdmission> keep;
        for (int i = 0; i < 5; ++i) {
            ClientAdmission a = esmtp::admit_client(tb.t, cfg, "127.0.0.1", 25, 0);
            CPPUNIT_ASSERT(a.exempt);
            CPPUNIT_ASSERT(a.verdict == ClientTable::Verdict::ok);
            keep.push_back(std::move(a));
        }
        CPPUNIT_ASSERT_EQUAL(std::size_t(0), tb.t.stats().used);
        cfg.exceptions.clear(); // "none"
        keep.push_back(esmtp::admit_client(tb.t, cfg, "127.0.0.1", 25, 0));
        CPPUNIT_ASSERT(!keep.back().exempt);
        CPPUNIT_ASSERT(keep.back().slot.held());
        ClientAdmission refused = esmtp::admit_client(tb.t, cfg, "127.0.0.1", 25, 0);
        CPPUNIT_ASSERT(refused.verdict == ClientTable::Verdict::too_many_connections);
        CPPUNIT_ASSERT_EQUAL(std::string("connection limit 1"), refused.limit);
        CPPUNIT_ASSERT(!refused.slot.held());
        cfg.exceptions.resize(1);
        Network::parse("198.51.100.0/24", cfg.exceptions[0]);
        CPPUNIT_ASSERT(esmtp::admit_client(tb.t, cfg, "198.51.100.9", 25, 0).exempt);
        CPPUNIT_ASSERT(!esmtp::admit_client(tb.t, cfg, "198.51.101.9", 25, 0).exempt);
        // limits off: nothing is counted
        ClientLimitsConfig off;
        off.connection_limit = 0;
        off.exceptions.clear();
        CPPUNIT_ASSERT(esmtp::admit_client(tb.t, off, "192.0.2.50", 25, 0).exempt);
    }

    void testSlotReleasesOnce()
    {
        Table tb(64);
        ClientLimitsConfig cfg;
        cfg.connection_limit = 2;
        cfg.exceptions.clear();
        {
            ClientAdmission a = esmtp::admit_client(tb.t, cfg, "192.0.2.1", 25, 0);
            ClientAdmission b = esmtp::admit_client(tb.t, cfg, "192.0.2.1", 25, 0);
            CPPUNIT_ASSERT_EQUAL(std::size_t(2), tb.t.stats().sessions);
            ClientSlot moved = std::move(a.slot);
            moved.release();
            moved.release(); // a second release changes nothing
            CPPUNIT_ASSERT_EQUAL(std::size_t(1), tb.t.stats().sessions);
        } // b's destructor
        CPPUNIT_ASSERT_EQUAL(std::size_t(0), tb.t.stats().sessions);
    }

    void testThreads()
    {
        // 8 threads on 4 clients, each holding up to 8 sessions of a client at
        // once (2,000 rounds): the limit of 6 is reached and refuses, a count
        // never exceeds it, and every count ends at 0.
        Table tb(64);
        std::atomic<int> over{0}, refused{0};
        std::vector<std::thread> ts;
        for (int t = 0; t < 8; ++t)
            ts.emplace_back([&, t] {
                std::vector<ClientTable::Handle> held;
                for (int i = 0; i < 2000; ++i) {
                    std::string addr = "192.0.2." + std::to_string((t + i) % 4);
                    for (int k = 0; k < 8; ++k) {
                        auto a = tb.t.connect(key(addr.c_str()), i, 6, {});
                        if (a.verdict == ClientTable::Verdict::ok) {
                            if (a.count > 6)
                                ++over;
                            held.push_back(a.handle);
                        } else if (a.verdict == ClientTable::Verdict::too_many_connections) {
                            ++refused;
                        }
                    }
                    for (auto h : held)
                        tb.t.disconnect(h);
                    held.clear();
                }
            });
        for (auto &t : ts)
            t.join();
        CPPUNIT_ASSERT_EQUAL(0, over.load());
        CPPUNIT_ASSERT(refused.load() >= 2 * 2000 * 8 / 4); // each round's 7th and 8th at least
        CPPUNIT_ASSERT_EQUAL(std::size_t(0), tb.t.stats().sessions);
        CPPUNIT_ASSERT_EQUAL(std::size_t(4), tb.t.stats().used);
    }

    void testDeadOwnerLockTakenOver()
    {
        // A process that died holding a bucket's lock (SIGKILL inside it)
        // leaves its pid in the lock word: the next one takes the lock over.
        // The only bucket's lock is the first word after the header
        // (bytes_for(8) - sizeof(Bucket), the Bucket being bytes_for(16) - bytes_for(8)).
        std::size_t bytes = ClientTable::bytes_for(8);
        std::size_t bucket_bytes = ClientTable::bytes_for(16) - bytes;
        void *mem = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        CPPUNIT_ASSERT(mem != MAP_FAILED);
        ClientTable t = ClientTable::format(mem, bytes, 8, 7);
        auto *lock = reinterpret_cast<std::uint32_t *>(static_cast<char *>(mem) + bytes - bucket_bytes);
        CPPUNIT_ASSERT_EQUAL(std::uint32_t(0), *lock);
        pid_t pid = fork();
        if (pid == 0)
            _exit(0);
        int status = 0;
        waitpid(pid, &status, 0); // reaped: its pid names no process now
        std::atomic_ref<std::uint32_t>(*lock).store(static_cast<std::uint32_t>(pid));
        // the connect runs in a thread so that a wedged lock fails the test
        std::atomic<bool> done{false};
        std::thread th([&] {
            t.connect(key("192.0.2.1"), 0, 5, {});
            done = true;
        });
        for (int i = 0; i < 500 && !done; ++i)
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        bool taken_over = done.load();
        if (!taken_over)
            std::atomic_ref<std::uint32_t>(*lock).store(0); // let the thread finish
        th.join();
        CPPUNIT_ASSERT(taken_over);
        CPPUNIT_ASSERT_EQUAL(std::uint32_t(0), std::atomic_ref<std::uint32_t>(*lock).load());
        CPPUNIT_ASSERT_EQUAL(std::size_t(1), t.stats().sessions);
        munmap(mem, bytes);
    }

    void testProcesses()
    {
        // Shared anonymous memory, as the module's: a child process's sessions
        // count in the parent's view.
        std::size_t bytes = ClientTable::bytes_for(64);
        void *mem = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        CPPUNIT_ASSERT(mem != MAP_FAILED);
        ClientTable t = ClientTable::format(mem, bytes, 64, 7);
        pid_t pid = fork();
        if (pid == 0) {
            for (int i = 0; i < 3; ++i)
                t.connect(key("192.0.2.1"), 0, 5, {});
            _exit(0);
        }
        int status = 0;
        waitpid(pid, &status, 0);
        CPPUNIT_ASSERT_EQUAL(std::size_t(3), t.stats().sessions);
        CPPUNIT_ASSERT_EQUAL(3u, t.connect(key("192.0.2.1"), 0, 5, {}).count - 1);
        munmap(mem, bytes);
    }

    void testXClientRekeys()
    {
        // A front end on loopback (exempt) passes two clients in turn: each
        // is counted for its own address, and a refusal names it.
        Table tb(64);
        ClientLimitsConfig cfg;
        cfg.message_rate = {2, 60};
        cfg.connection_limit = 1;
        ClientAdmission front = esmtp::admit_client(tb.t, cfg, "127.0.0.1", 25, 0);
        CPPUNIT_ASSERT(front.exempt);
        esmtp::test::Harness h;
        behind_front_end(h, front.slot);
        CPPUNIT_ASSERT(h.send("XCLIENT ADDR=203.0.113.9\r\n").starts_with("220 "));
        CPPUNIT_ASSERT_EQUAL(std::size_t(1), tb.t.stats().sessions);
        h.send("EHLO client.example\r\n");
        for (int i = 0; i < 2; ++i) {
            CPPUNIT_ASSERT_EQUAL(std::string("250 2.1.0 Ok\r\n"), h.send("MAIL FROM:<a@example.com>\r\n"));
            h.send("RSET\r\n");
        }
        CPPUNIT_ASSERT_EQUAL(std::string("450 4.7.1 Error: too much mail from 203.0.113.9\r\n"),
                             h.send("MAIL FROM:<a@example.com>\r\n"));
        // another session of 203.0.113.9 behind the front end: over the connection limit
        ClientAdmission front2 = esmtp::admit_client(tb.t, cfg, "127.0.0.1", 25, 0);
        esmtp::test::Harness h2;
        behind_front_end(h2, front2.slot);
        CPPUNIT_ASSERT_EQUAL(std::string("421 4.7.0 mx.example.org Error: too many connections from 203.0.113.9\r\n"),
                             h2.send("XCLIENT ADDR=203.0.113.9\r\n"));
        CPPUNIT_ASSERT(h2.session->closing());
        // the first session ends: its client's count goes with it
        front.slot.release();
        CPPUNIT_ASSERT_EQUAL(std::size_t(0), tb.t.stats().sessions);
    }

    void testFrontEndSkipsConnectionLimit()
    {
        Table tb(64);
        ClientLimitsConfig cfg;
        cfg.connection_limit = 2;
        cfg.exceptions.clear();
        std::vector<ClientAdmission> keep;
        for (int i = 0; i < 5; ++i) {
            keep.push_back(esmtp::admit_client(tb.t, cfg, "192.0.2.1", 25, 0, true));
            CPPUNIT_ASSERT(keep.back().verdict == ClientTable::Verdict::ok);
        }
        CPPUNIT_ASSERT(esmtp::admit_client(tb.t, cfg, "192.0.2.1", 25, 0).verdict ==
                       ClientTable::Verdict::too_many_connections);
        // re-keyed to their clients, the front end's count goes down
        std::string limit;
        CPPUNIT_ASSERT(keep[0].slot.rekey("198.51.100.1", limit));
        CPPUNIT_ASSERT(keep[1].slot.rekey("198.51.100.1", limit));
        CPPUNIT_ASSERT(!keep[2].slot.rekey("198.51.100.1", limit));
        CPPUNIT_ASSERT_EQUAL(std::string("connection limit 2"), limit);
        CPPUNIT_ASSERT_EQUAL(std::size_t(4), tb.t.stats().sessions); // 2 front end + 2 of 198.51.100.1
    }

    void testSessionMessageRate()
    {
        esmtp::test::Harness h;
        CountingLimiter lim;
        lim.messages_left = 1;
        h.start();
        h.session->set_client_limiter(&lim);
        h.send("EHLO client.example\r\n");
        CPPUNIT_ASSERT_EQUAL(std::string("250 2.1.0 Ok\r\n"), h.send("MAIL FROM:<a@example.com>\r\n"));
        h.send("RSET\r\n");
        CPPUNIT_ASSERT_EQUAL(std::string("450 4.7.1 Error: too much mail from 192.0.2.7\r\n"),
                             h.send("MAIL FROM:<a@example.com>\r\n"));
        CPPUNIT_ASSERT(!h.session->closing()); // not closed
        CPPUNIT_ASSERT(!h.session->in_transaction());
        CPPUNIT_ASSERT(h.log.has("too much mail from 192.0.2.7: message rate 2/2s"));
        lim.messages_left = 1; // the window has passed
        CPPUNIT_ASSERT_EQUAL(std::string("250 2.1.0 Ok\r\n"), h.send("MAIL FROM:<a@example.com>\r\n"));
    }

    void testSessionRecipientRate()
    {
        esmtp::test::Harness h;
        CountingLimiter lim;
        lim.recipients_left = 2;
        h.start();
        h.session->set_client_limiter(&lim);
        h.send("EHLO client.example\r\n");
        h.send("MAIL FROM:<a@example.com>\r\n");
        CPPUNIT_ASSERT_EQUAL(std::string("250 2.1.5 Ok\r\n"), h.send("RCPT TO:<b@example.org>\r\n"));
        CPPUNIT_ASSERT_EQUAL(std::string("250 2.1.5 Ok\r\n"), h.send("RCPT TO:<c@example.org>\r\n"));
        CPPUNIT_ASSERT_EQUAL(std::string("450 4.7.1 Error: too many recipients from 192.0.2.7\r\n"),
                             h.send("RCPT TO:<d@example.org>\r\n"));
        CPPUNIT_ASSERT(h.log.has("too many recipients from 192.0.2.7: recipient rate 3/2s"));
        // the refused recipient is not in the envelope; the message goes on
        CPPUNIT_ASSERT_EQUAL(std::string("354 End data with <CR><LF>.<CR><LF>\r\n"), h.send("DATA\r\n"));
        std::string out = h.send("Subject: x\r\n\r\nhi\r\n.\r\n");
        CPPUNIT_ASSERT(out.rfind("250 ", 0) == 0);
        CPPUNIT_ASSERT_EQUAL(std::size_t(2), h.rec->env_at_data.recipients.size());
    }

    // ESMTPClientAuthRate (issue 10): valid AUTH commands count; beyond the
    // rate 450 4.7.1, the session goes on; the window is the table's own.
    void testSessionAuthRate()
    {
        esmtp::test::Harness h;
        h.cfg.auth_mechanisms = esmtp::mech_plain;
        h.cfg.auth_require_tls = false;
        CountingLimiter lim;
        lim.auths_left = 1;
        h.start();
        h.session->set_client_limiter(&lim);
        h.send("EHLO client.example\r\n");
        CPPUNIT_ASSERT_EQUAL(std::string("504 5.5.4 Unsupported authentication mechanism\r\n"),
                             h.send("AUTH CRAM-MD5\r\n")); // not counted
        CPPUNIT_ASSERT_EQUAL(std::string("334 \r\n"), h.send("AUTH PLAIN\r\n"));
        h.send("*\r\n");
        CPPUNIT_ASSERT_EQUAL(std::string("450 4.7.1 Error: too many AUTH commands from 192.0.2.7\r\n"),
                             h.send("AUTH PLAIN\r\n"));
        CPPUNIT_ASSERT(!h.session->closing());
        CPPUNIT_ASSERT(h.log.has("too many AUTH commands from 192.0.2.7: auth rate 1/60s"));

        Table tb(64);
        esmtp::ClientLimitsConfig cfg;
        cfg.auth_rate = RateLimit{2, 60};
        CPPUNIT_ASSERT(cfg.any());
        auto a = tb.t.connect(key("192.0.2.1"), 0, 0, {});
        for (int i = 0; i < 2; ++i)
            CPPUNIT_ASSERT(tb.t.event(a.handle, ClientTable::auth_window, 1000, cfg.auth_rate));
        CPPUNIT_ASSERT(!tb.t.event(a.handle, ClientTable::auth_window, 1000, cfg.auth_rate));
        // the other windows are separate
        CPPUNIT_ASSERT(tb.t.event(a.handle, ClientTable::message_window, 1000, cfg.auth_rate));
        CPPUNIT_ASSERT(tb.t.event(a.handle, ClientTable::auth_window, 61001, cfg.auth_rate));
    }
};

CPPUNIT_TEST_SUITE_REGISTRATION(ClientLimitsTest);
