// Per-client counts shared between nodes (engine/shared_counts.hpp and
// ClientTable's other-node counts): other nodes' sessions and rate events
// count toward the limits, the view replaces the previous one, entries of
// this node's clients are never taken for other nodes' clients, and the
// snapshot text and registry survive a round trip and bad input.

#include "engine/client_limits.hpp"
#include "engine/shared_counts.hpp"

#include <cppunit/extensions/HelperMacros.h>

#include <cstdint>
#include <string>
#include <vector>

using esmtp::ClientTable;
using esmtp::IpAddress;
using esmtp::RateLimit;
using esmtp::SharedView;

namespace
{

struct Table {
    explicit Table(std::size_t entries)
        : mem((ClientTable::bytes_for(entries) + 7) / 8), t(ClientTable::format(mem.data(), mem.size() * 8, entries, 7))
    {
    }
    std::vector<std::uint64_t> mem;
    ClientTable t;
};

ClientTable::Key key(const char *addr, std::uint16_t zone = 25)
{
    IpAddress a;
    IpAddress::parse(addr, a);
    return ClientTable::key_of(a, 64, zone);
}

ClientTable::Entry remote(const char *addr, std::uint32_t sessions, unsigned window = 0, std::uint32_t events = 0,
                          std::uint32_t remaining_ms = 0)
{
    ClientTable::Entry e;
    e.key = key(addr);
    e.counts.sessions = sessions;
    e.counts.events[window] = events;
    e.counts.remaining_ms[window] = remaining_ms;
    return e;
}

} // namespace

class SharedCountsTest : public CppUnit::TestFixture
{
    CPPUNIT_TEST_SUITE(SharedCountsTest);
    CPPUNIT_TEST(testOtherNodesSessionsCount);
    CPPUNIT_TEST(testViewReplacesPrevious);
    CPPUNIT_TEST(testRemoteOnlyEntriesFreedAndTakenFirst);
    CPPUNIT_TEST(testLocalEntriesNeverTaken);
    CPPUNIT_TEST(testOtherNodesRateEvents);
    CPPUNIT_TEST(testOtherNodesConnectionRate);
    CPPUNIT_TEST(testOwnCounts);
    CPPUNIT_TEST(testSnapshotRoundTripAndSum);
    CPPUNIT_TEST(testSnapshotBadInput);
    CPPUNIT_TEST(testRegistry);
    CPPUNIT_TEST(testNodeIds);
    CPPUNIT_TEST(testSharedStats);
    CPPUNIT_TEST_SUITE_END();

  public:
    // Limit 2: one session on another node and one here fill it.
    void testOtherNodesSessionsCount()
    {
        Table tb(64);
        tb.t.set_remote({remote("192.0.2.1", 1)}, 0);
        auto a = tb.t.connect(key("192.0.2.1"), 0, 2, {});
        CPPUNIT_ASSERT(a.verdict == ClientTable::Verdict::ok);
        CPPUNIT_ASSERT_EQUAL(2u, a.count);
        auto b = tb.t.connect(key("192.0.2.1"), 0, 2, {});
        CPPUNIT_ASSERT(b.verdict == ClientTable::Verdict::too_many_connections);
        CPPUNIT_ASSERT_EQUAL(2u, b.count);
        // another client, another port: not counted
        CPPUNIT_ASSERT(tb.t.connect(key("192.0.2.2"), 0, 1, {}).verdict == ClientTable::Verdict::ok);
        CPPUNIT_ASSERT(tb.t.connect(key("192.0.2.1", 587), 0, 1, {}).verdict == ClientTable::Verdict::ok);
    }

    // The other node's session ended (its next snapshot lacks the client):
    // the count falls.
    void testViewReplacesPrevious()
    {
        Table tb(64);
        tb.t.set_remote({remote("192.0.2.1", 2)}, 0);
        CPPUNIT_ASSERT(tb.t.connect(key("192.0.2.1"), 0, 2, {}).verdict == ClientTable::Verdict::too_many_connections);
        tb.t.set_remote({}, 0);
        auto a = tb.t.connect(key("192.0.2.1"), 0, 2, {});
        CPPUNIT_ASSERT(a.verdict == ClientTable::Verdict::ok);
        CPPUNIT_ASSERT_EQUAL(1u, a.count);
        // the cache failed: an empty view, each node counts its own (fail open)
        tb.t.set_remote({remote("192.0.2.1", 5)}, 0);
        CPPUNIT_ASSERT(tb.t.connect(key("192.0.2.1"), 0, 2, {}).verdict == ClientTable::Verdict::too_many_connections);
        tb.t.set_remote({}, 0);
        CPPUNIT_ASSERT(tb.t.connect(key("192.0.2.1"), 0, 2, {}).verdict == ClientTable::Verdict::ok);
    }

    void testRemoteOnlyEntriesFreedAndTakenFirst()
    {
        Table tb(8); // one bucket
        ClientTable::RemoteStats rs = tb.t.set_remote({remote("192.0.2.1", 1), remote("192.0.2.2", 1)}, 0);
        CPPUNIT_ASSERT_EQUAL(std::size_t(2), rs.clients);
        CPPUNIT_ASSERT_EQUAL(std::size_t(2), tb.t.stats().used);
        tb.t.set_remote({remote("192.0.2.2", 1)}, 0);
        CPPUNIT_ASSERT_EQUAL(std::size_t(1), tb.t.stats().used); // 192.0.2.1 freed
        // fill the bucket with this node's idle clients, then one more: the
        // entry that only held another node's counts goes first
        std::vector<ClientTable::Handle> hs;
        for (int i = 0; i < 7; ++i) {
            auto a = tb.t.connect(key(("198.51.100." + std::to_string(i + 1)).c_str()), 100 + i, 0, {});
            CPPUNIT_ASSERT(a.verdict == ClientTable::Verdict::ok);
            tb.t.disconnect(a.handle);
        }
        auto n = tb.t.connect(key("203.0.113.1"), 200, 0, {});
        CPPUNIT_ASSERT(n.evicted);
        CPPUNIT_ASSERT_EQUAL(1u, n.count); // not 192.0.2.2's remote count
        bool more = false;
        auto own = tb.t.own_counts(300, 100, more);
        CPPUNIT_ASSERT_EQUAL(std::size_t(1), own.size()); // 203.0.113.1 holds a session
        // the 7 idle clients of this node are still there
        CPPUNIT_ASSERT_EQUAL(std::size_t(8), tb.t.stats().used);
    }

    void testLocalEntriesNeverTaken()
    {
        Table tb(8);
        for (int i = 0; i < 8; ++i) {
            auto a = tb.t.connect(key(("198.51.100." + std::to_string(i + 1)).c_str()), 0, 0, {});
            CPPUNIT_ASSERT(a.verdict == ClientTable::Verdict::ok);
            if (i % 2)
                tb.t.disconnect(a.handle); // idle, but this node's: kept
        }
        ClientTable::RemoteStats rs = tb.t.set_remote({remote("192.0.2.1", 3)}, 0);
        CPPUNIT_ASSERT_EQUAL(std::size_t(0), rs.clients);
        CPPUNIT_ASSERT_EQUAL(std::size_t(1), rs.untracked);
        CPPUNIT_ASSERT_EQUAL(std::size_t(4), tb.t.stats().sessions);
    }

    void testOtherNodesRateEvents()
    {
        Table tb(64);
        RateLimit rate{3, 60};
        auto a = tb.t.connect(key("192.0.2.1"), 0, 0, {});
        // another node counted 2 messages in a window that runs 1 s more
        tb.t.set_remote({remote("192.0.2.1", 1, ClientTable::message_window, 2, 1000)}, 1000);
        CPPUNIT_ASSERT(tb.t.event(a.handle, ClientTable::message_window, 1000, rate));
        CPPUNIT_ASSERT(!tb.t.event(a.handle, ClientTable::message_window, 1500, rate));
        // other windows are not touched
        CPPUNIT_ASSERT(tb.t.event(a.handle, ClientTable::recipient_window, 1500, rate));
        // the other node's window has ended: only the own event counts
        CPPUNIT_ASSERT(tb.t.event(a.handle, ClientTable::message_window, 2001, rate));
        CPPUNIT_ASSERT(tb.t.event(a.handle, ClientTable::message_window, 2002, rate));
        CPPUNIT_ASSERT(!tb.t.event(a.handle, ClientTable::message_window, 2003, rate));
    }

    void testOtherNodesConnectionRate()
    {
        Table tb(64);
        RateLimit rate{2, 10};
        tb.t.set_remote({remote("192.0.2.1", 0, ClientTable::connection_window, 1, 5000)}, 0);
        CPPUNIT_ASSERT(tb.t.connect(key("192.0.2.1"), 0, 0, rate).verdict == ClientTable::Verdict::ok);
        CPPUNIT_ASSERT(tb.t.connect(key("192.0.2.1"), 1, 0, rate).verdict == ClientTable::Verdict::connection_rate);
    }

    void testOwnCounts()
    {
        Table tb(64);
        RateLimit rate{10, 60};
        auto a = tb.t.connect(key("192.0.2.1"), 1000, 0, {});
        auto b = tb.t.connect(key("192.0.2.1"), 1000, 0, {});
        tb.t.event(a.handle, ClientTable::recipient_window, 1000, rate);
        tb.t.event(b.handle, ClientTable::recipient_window, 1000, rate);
        auto c = tb.t.connect(key("192.0.2.2"), 1000, 0, {});
        tb.t.disconnect(c.handle);                       // no session, no window: not published
        tb.t.set_remote({remote("192.0.2.3", 4)}, 1000); // another node's: not published again
        bool more = true;
        auto own = tb.t.own_counts(11000, 100, more);
        CPPUNIT_ASSERT(!more);
        CPPUNIT_ASSERT_EQUAL(std::size_t(1), own.size());
        CPPUNIT_ASSERT(own[0].key.addr == key("192.0.2.1").addr);
        CPPUNIT_ASSERT_EQUAL(2u, own[0].counts.sessions);
        CPPUNIT_ASSERT_EQUAL(2u, own[0].counts.events[ClientTable::recipient_window]);
        CPPUNIT_ASSERT_EQUAL(50000u, own[0].counts.remaining_ms[ClientTable::recipient_window]);
        CPPUNIT_ASSERT_EQUAL(0u, own[0].counts.events[ClientTable::message_window]);
        // at most `max`
        tb.t.connect(key("192.0.2.4"), 1000, 0, {});
        CPPUNIT_ASSERT_EQUAL(std::size_t(1), tb.t.own_counts(11000, 1, more).size());
        CPPUNIT_ASSERT(more);
        // sessions ended, window over: nothing
        tb.t.disconnect(a.handle);
        tb.t.disconnect(b.handle);
        own = tb.t.own_counts(61000, 100, more);
        CPPUNIT_ASSERT_EQUAL(std::size_t(1), own.size()); // 192.0.2.4 only
    }

    void testSnapshotRoundTripAndSum()
    {
        std::vector<ClientTable::Entry> one{remote("192.0.2.1", 2, ClientTable::message_window, 3, 4000),
                                            remote("2001:db8::1", 1)};
        one[1].key.zone = 587;
        std::vector<ClientTable::Entry> two{remote("192.0.2.1", 1, ClientTable::message_window, 5, 9000)};
        std::size_t written = 0;
        std::string text = esmtp::encode_counts(one, 1 << 20, written);
        CPPUNIT_ASSERT_EQUAL(std::size_t(2), written);
        // bounded: only what fits
        std::string first = esmtp::encode_counts(one, text.size() - 1, written);
        CPPUNIT_ASSERT_EQUAL(std::size_t(1), written);
        CPPUNIT_ASSERT(first.size() < text.size() && text.rfind(first, 0) == 0);
        CPPUNIT_ASSERT(text.rfind("esmtp-counts 1\n", 0) == 0);
        SharedView view;
        CPPUNIT_ASSERT(view.add(text));
        CPPUNIT_ASSERT(view.add(esmtp::encode_counts(two, 1 << 20, written)));
        CPPUNIT_ASSERT_EQUAL(std::size_t(2), view.size());
        for (const ClientTable::Entry &e : view.entries()) {
            if (e.key.zone == 587) {
                CPPUNIT_ASSERT(e.key.addr == one[1].key.addr);
                CPPUNIT_ASSERT_EQUAL(1u, e.counts.sessions);
            } else {
                CPPUNIT_ASSERT(e.key.addr == one[0].key.addr);
                CPPUNIT_ASSERT_EQUAL(3u, e.counts.sessions);
                CPPUNIT_ASSERT_EQUAL(8u, e.counts.events[ClientTable::message_window]);
                CPPUNIT_ASSERT_EQUAL(9000u, e.counts.remaining_ms[ClientTable::message_window]);
            }
        }
    }

    void testSnapshotBadInput()
    {
        SharedView view;
        CPPUNIT_ASSERT(!view.add(""));
        CPPUNIT_ASSERT(!view.add("esmtp-counts 2\n"));
        CPPUNIT_ASSERT(!view.add("hello"));
        std::size_t written = 0;
        std::string good = esmtp::encode_counts({remote("192.0.2.1", 1)}, 1 << 20, written);
        std::string bad = "esmtp-counts 1\n"
                          "zz000000000000000000ffff7f000001/25 1 0:0 0:0 0:0 0:0\n"    // not hex
                          "00000000000000000000ffffc0000201/70000 1 0:0 0:0 0:0 0:0\n" // port
                          "00000000000000000000ffffc0000201/25 1 0:0 0:0\n"            // fields
                          "00000000000000000000ffffc0000201/25 -1 0:0 0:0 0:0 0:0\n"
                          "00000000000000000000ffffc0000202/25 4294967295 0:0 0:0 0:0 0:0\n"
                          "00000000000000000000ffffc0000202/25 4294967295 0:0 0:0 0:0 0:0\n" // saturates
                          "\n\n";
        CPPUNIT_ASSERT(view.add(bad));
        CPPUNIT_ASSERT(view.add(good.substr(good.find('\n') + 1).insert(0, "esmtp-counts 1\n")));
        auto entries = view.entries();
        CPPUNIT_ASSERT_EQUAL(std::size_t(2), entries.size());
        for (const auto &e : entries)
            if (e.key.addr == key("192.0.2.1").addr)
                CPPUNIT_ASSERT_EQUAL(1u, e.counts.sessions);
            else
                CPPUNIT_ASSERT_EQUAL(UINT32_MAX, e.counts.sessions);
    }

    void testRegistry()
    {
        auto ids = esmtp::parse_nodes("mx1 mx2 mx1 bad/id  mx3");
        CPPUNIT_ASSERT_EQUAL(std::size_t(3), ids.size());
        CPPUNIT_ASSERT_EQUAL(std::string("mx1 mx2 mx3"), esmtp::nodes_text(ids));
        std::string many;
        for (int i = 0; i < 100; ++i)
            many += "n" + std::to_string(i) + " ";
        CPPUNIT_ASSERT_EQUAL(esmtp::kMaxNodes, esmtp::parse_nodes(many).size());
        CPPUNIT_ASSERT(esmtp::parse_nodes("").empty());
    }

    void testNodeIds()
    {
        CPPUNIT_ASSERT(esmtp::valid_node_id("mx1.example-org_2"));
        CPPUNIT_ASSERT(!esmtp::valid_node_id(""));
        CPPUNIT_ASSERT(!esmtp::valid_node_id("a b"));
        CPPUNIT_ASSERT(!esmtp::valid_node_id(std::string(65, 'a')));
        std::string a = esmtp::default_node_id("mx1.example.org", "/etc/apache2\n/etc/apache2/apache2.conf");
        std::string b = esmtp::default_node_id("mx1.example.org", "/etc/apache2-b\n/etc/apache2-b/apache2.conf");
        CPPUNIT_ASSERT(a != b); // two instances of one host
        CPPUNIT_ASSERT_EQUAL(
            a, esmtp::default_node_id("mx1.example.org", "/etc/apache2\n/etc/apache2/apache2.conf")); // stable
        CPPUNIT_ASSERT(a.rfind("mx1.example.org-", 0) == 0);
        CPPUNIT_ASSERT(esmtp::valid_node_id(esmtp::default_node_id("bad host\n", "x")));
        CPPUNIT_ASSERT(esmtp::default_node_id("", "x").rfind("node-", 0) == 0);
    }

    void testSharedStats()
    {
        Table tb(64);
        CPPUNIT_ASSERT(!tb.t.shared_stats().on);
        ClientTable::SharedStats s;
        s.on = true;
        s.up = true;
        s.nodes = 3;
        s.published = 70000;
        s.remote = 12;
        s.exchanges = 1;
        tb.t.set_shared_stats(s);
        tb.t.set_shared_stats(s);
        s.exchanges = 0; // the first stats, before any exchange
        tb.t.set_shared_stats(s);
        ClientTable::SharedStats r = tb.t.shared_stats();
        CPPUNIT_ASSERT(r.on && r.up);
        CPPUNIT_ASSERT_EQUAL(3u, r.nodes);
        CPPUNIT_ASSERT_EQUAL(70000u, r.published);
        CPPUNIT_ASSERT_EQUAL(12u, r.remote);
        CPPUNIT_ASSERT_EQUAL(std::uint64_t(2), r.exchanges);
    }
};

CPPUNIT_TEST_SUITE_REGISTRATION(SharedCountsTest);
