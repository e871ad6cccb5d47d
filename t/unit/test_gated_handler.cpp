// The gated handler (httpd/gated_handler.cpp, ESMTPMaxWorkers) in a real
// session, with a stand-in for the shared count: which events are refused
// at the cap and how, which are never refused, and that no worker stays
// held once an event has returned (not while the session waits for its
// client, not after the handler threw).

#include "httpd/gated_handler.hpp"
#include "httpd/worker_hold.hpp"
#include "session_harness.hpp"

#include <cppunit/extensions/HelperMacros.h>

#include <algorithm>
#include <string>

namespace
{
// The stand-in count: `cap` workers, `held` now, the most ever held.
int g_cap = 1, g_held = 0, g_most = 0, g_refused = 0;

void reset(int cap)
{
    g_cap = cap;
    g_held = g_most = g_refused = 0;
}
} // namespace

namespace esmtp
{
WorkerHold WorkerHold::try_take()
{
    if (g_held >= g_cap) {
        ++g_refused;
        return WorkerHold();
    }
    g_most = std::max(g_most, ++g_held);
    return WorkerHold(State::counted);
}

WorkerHold WorkerHold::take()
{
    g_most = std::max(g_most, ++g_held);
    return WorkerHold(State::counted);
}

WorkerHold &WorkerHold::operator=(WorkerHold &&o) noexcept
{
    release();
    state_ = o.state_;
    o.state_ = State::none;
    return *this;
}

void WorkerHold::release() noexcept
{
    if (state_ == State::counted)
        --g_held;
    state_ = State::none;
}
} // namespace esmtp

using esmtp::test::Harness;

namespace
{
struct GatedHarness : Harness {
    GatedHarness()
    {
        make_handler = [this] { return esmtp::gate_handler(std::make_unique<esmtp::test::RecordingHandler>(rec)); };
    }
};

bool starts(const std::string &out, const std::string &with)
{
    return out.compare(0, with.size(), with) == 0;
}
} // namespace

class GatedHandlerTest : public CppUnit::TestFixture
{
    CPPUNIT_TEST_SUITE(GatedHandlerTest);
    CPPUNIT_TEST(testUnderTheCap);
    CPPUNIT_TEST(testConnectRefused);
    CPPUNIT_TEST(testCommandsRefused);
    CPPUNIT_TEST(testContentRefused);
    CPPUNIT_TEST(testHoldGivenBackOnThrow);
    CPPUNIT_TEST_SUITE_END();

  public:
    // Every event reaches the handler, each holding one worker while it
    // runs and none after.
    void testUnderTheCap()
    {
        reset(1);
        GatedHarness h;
        CPPUNIT_ASSERT(starts(h.start(), "220 "));
        CPPUNIT_ASSERT_EQUAL(0, g_held);
        h.send("EHLO client.example\r\n");
        h.send("MAIL FROM:<a@x.example>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n");
        CPPUNIT_ASSERT(starts(h.send(esmtp::test::data_section("Subject: t\r\n\r\nbody\r\n")), "250 "));
        h.send("NOOP\r\nQUIT\r\n");
        CPPUNIT_ASSERT_EQUAL(std::string("connect ehlo mail rcpt data header eoh body eom noop quit"),
                             h.rec->event_string());
        CPPUNIT_ASSERT_EQUAL(0, g_held);
        CPPUNIT_ASSERT_EQUAL(1, g_most);
        CPPUNIT_ASSERT_EQUAL(0, g_refused);
    }

    // CONNECT cannot be refused alone: 421 and close; DISCONNECT still runs.
    void testConnectRefused()
    {
        reset(0);
        GatedHarness h;
        CPPUNIT_ASSERT_EQUAL(std::string("421 mx.example.org Server busy, try again later\r\n"), h.start());
        CPPUNIT_ASSERT(h.s().closing());
        h.session->end();
        CPPUNIT_ASSERT_EQUAL(std::string("disconnect"), h.rec->event_string());
        CPPUNIT_ASSERT_EQUAL(1, g_refused);
        CPPUNIT_ASSERT_EQUAL(0, g_held);
    }

    // Commands get 451 4.3.2 without reaching the handler; RSET and QUIT
    // are never refused.
    void testCommandsRefused()
    {
        reset(1);
        GatedHarness h;
        h.start();
        h.send("EHLO client.example\r\n");
        g_cap = 0;
        for (const char *cmd :
             {"MAIL FROM:<a@x.example>\r\n", "HELO client.example\r\n", "NOOP\r\n", "VRFY bob\r\n", "HELP\r\n"})
            CPPUNIT_ASSERT_EQUAL_MESSAGE(cmd, std::string("451 4.3.2 Server busy, try again later\r\n"), h.send(cmd));
        CPPUNIT_ASSERT(starts(h.send("RSET\r\n"), "250 "));
        CPPUNIT_ASSERT(starts(h.send("QUIT\r\n"), "221 "));
        h.session->end();
        CPPUNIT_ASSERT_EQUAL(std::string("connect ehlo rset quit disconnect"), h.rec->event_string());
        CPPUNIT_ASSERT_EQUAL(5, g_refused);
        CPPUNIT_ASSERT_EQUAL(0, g_held);
        CPPUNIT_ASSERT(h.log.has("MAIL refused: ESMTPMaxWorkers reached"));
    }

    // Content refused mid-message: the handler misses the rest, its end is
    // answered 451 4.3.2, the handler's transaction is aborted; the next
    // message goes through.
    void testContentRefused()
    {
        reset(1);
        GatedHarness h;
        h.start();
        h.send("EHLO client.example\r\n");
        h.send("MAIL FROM:<a@x.example>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n");
        g_cap = 0;
        CPPUNIT_ASSERT_EQUAL(std::string("451 4.3.2 Server busy, try again later\r\n"),
                             h.send(esmtp::test::data_section("Subject: t\r\n\r\nbody\r\n")));
        CPPUNIT_ASSERT_EQUAL(std::string("connect ehlo mail rcpt data abort"), h.rec->event_string());
        CPPUNIT_ASSERT_EQUAL(1, g_refused); // the first header field; the rest is not even tried
        g_cap = 1;
        h.send("MAIL FROM:<a@x.example>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n");
        CPPUNIT_ASSERT(starts(h.send(esmtp::test::data_section("Subject: t\r\n\r\nbody\r\n")), "250 "));
        CPPUNIT_ASSERT_EQUAL(0, g_held);
    }

    void testHoldGivenBackOnThrow()
    {
        reset(1);
        GatedHarness h;
        h.start();
        h.rec->throw_in = "rcpt";
        h.send("EHLO client.example\r\n");
        h.send("MAIL FROM:<a@x.example>\r\n");
        CPPUNIT_ASSERT(starts(h.send("RCPT TO:<b@example.org>\r\n"), "451 4.3.0"));
        CPPUNIT_ASSERT_EQUAL(0, g_held);
        CPPUNIT_ASSERT(starts(h.send("RCPT TO:<b@example.org>\r\n"), "250 "));
    }
};

CPPUNIT_TEST_SUITE_REGISTRATION(GatedHandlerTest);
