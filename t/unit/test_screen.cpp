// The session's screening hooks (engine/screen.hpp): a refusal at CONNECT
// takes the greeting's place and keeps the handler out (only QUIT is
// served), a refusal at RCPT comes before the handler's rcpt(), each is
// logged and counted, an authenticated client is not screened at RCPT. An
// address XCLIENT names is judged again: a refusal takes the place of the
// greeting XCLIENT sends.

#include "session_harness.hpp"

#include <cppunit/extensions/HelperMacros.h>

#include <string>
#include <vector>

using esmtp::RejectCause;
using esmtp::Reply;
using esmtp::Screen;

namespace
{

struct FakeScreen final : Screen {
    Verdict at_connect, at_rcpt, at_xclient;
    int rcpts = 0;
    std::string last_sender, last_rcpt;
    std::vector<std::string> changed; // the addresses client_changed() was given
    Verdict connect() override { return at_connect; }
    Verdict client_changed(std::string_view address) override
    {
        changed.emplace_back(address);
        return at_xclient;
    }
    Verdict rcpt(const esmtp::Path &sender, const esmtp::Path &recipient) override
    {
        ++rcpts;
        last_sender = sender.mailbox;
        last_rcpt = recipient.mailbox;
        return at_rcpt;
    }
};

struct Counting final : esmtp::SessionObserver {
    std::vector<RejectCause> causes;
    void rejected(RejectCause c, std::string_view) override { causes.push_back(c); }
};

// A DNSBL refusal of `addr`, worded as the glue's (httpd/screening.cpp).
Screen::Verdict dnsbl_refusal(const std::string &addr)
{
    return {Reply(554, "5.7.1 Service unavailable; client [" + addr + "] blocked using zen.example"),
            RejectCause::dnsbl, "blocked using zen.example (score 3)"};
}

// The refusal was counted once as a DNSBL one and logged.
void assert_counted(const esmtp::test::Harness &h, const Counting &obs)
{
    CPPUNIT_ASSERT_EQUAL(std::size_t(1), obs.causes.size());
    CPPUNIT_ASSERT(obs.causes[0] == RejectCause::dnsbl);
    CPPUNIT_ASSERT(h.log.has("blocked using zen.example (score 3)"));
}

} // namespace

class ScreenTest : public CppUnit::TestFixture
{
    CPPUNIT_TEST_SUITE(ScreenTest);
    CPPUNIT_TEST(testRefusedAtConnect);
    CPPUNIT_TEST(testRefusedAtRcpt);
    CPPUNIT_TEST(testPassLeavesTheHandlerAlone);
    CPPUNIT_TEST(testXclientAddressRefused);
    CPPUNIT_TEST(testXclientAddressPasses);
    CPPUNIT_TEST(testXclientWithoutAddressNotScreened);
    CPPUNIT_TEST_SUITE_END();

    static esmtp::test::Harness front_end()
    {
        esmtp::test::Harness h;
        h.cfg.xclient_hosts.add("192.0.2.0/24");
        return h;
    }

  public:
    void testRefusedAtConnect()
    {
        esmtp::test::Harness h;
        FakeScreen screen;
        Counting obs;
        screen.at_connect = dnsbl_refusal("192.0.2.7");
        h.screen = &screen;
        h.observer = &obs;
        CPPUNIT_ASSERT_EQUAL(
            std::string("554 5.7.1 Service unavailable; client [192.0.2.7] blocked using zen.example\r\n"), h.start());
        CPPUNIT_ASSERT(!h.rec->saw("connect")); // the handler never saw the client
        assert_counted(h, obs);
        CPPUNIT_ASSERT(h.send("EHLO client.example\r\n").rfind("503 ", 0) == 0);
        CPPUNIT_ASSERT(h.send("QUIT\r\n").rfind("221 ", 0) == 0);
    }

    void testRefusedAtRcpt()
    {
        esmtp::test::Harness h;
        FakeScreen screen;
        screen.at_rcpt = {Reply(450, "Greylisted, try again in 300 seconds", "4.2.0"), RejectCause::greylist,
                          "greylisted <b@example.org>"};
        h.screen = &screen;
        h.start();
        h.send("EHLO client.example\r\n");
        h.send("MAIL FROM:<A@client.example>\r\n");
        CPPUNIT_ASSERT_EQUAL(std::string("450 4.2.0 Greylisted, try again in 300 seconds\r\n"),
                             h.send("RCPT TO:<b@example.org>\r\n"));
        CPPUNIT_ASSERT_EQUAL(0, h.rec->rcpt_calls);
        CPPUNIT_ASSERT_EQUAL(std::string("A@client.example"), screen.last_sender);
        CPPUNIT_ASSERT_EQUAL(std::string("b@example.org"), screen.last_rcpt);
        // a relay refusal comes first: the screen is not asked for it
        CPPUNIT_ASSERT(h.send("RCPT TO:<x@elsewhere.example>\r\n").rfind("550 5.7.1", 0) == 0);
        CPPUNIT_ASSERT_EQUAL(1, screen.rcpts);
    }

    void testPassLeavesTheHandlerAlone()
    {
        esmtp::test::Harness h;
        FakeScreen screen;
        h.screen = &screen;
        CPPUNIT_ASSERT(h.start().rfind("220 ", 0) == 0);
        CPPUNIT_ASSERT(h.rec->saw("connect"));
        h.send("EHLO client.example\r\n");
        h.send("MAIL FROM:<a@client.example>\r\n");
        CPPUNIT_ASSERT(h.send("RCPT TO:<b@example.org>\r\n").rfind("250 ", 0) == 0);
        CPPUNIT_ASSERT_EQUAL(1, h.rec->rcpt_calls);
        CPPUNIT_ASSERT_EQUAL(1, screen.rcpts);
    }

    void testXclientAddressRefused()
    {
        esmtp::test::Harness h = front_end();
        FakeScreen screen;
        Counting obs;
        screen.at_xclient = dnsbl_refusal("203.0.113.5");
        h.screen = &screen;
        h.observer = &obs;
        CPPUNIT_ASSERT(h.start().rfind("220 ", 0) == 0);
        h.send("EHLO front.example\r\n");
        CPPUNIT_ASSERT_EQUAL(
            std::string("554 5.7.1 Service unavailable; client [203.0.113.5] blocked using zen.example\r\n"),
            h.send("XCLIENT ADDR=203.0.113.5 NAME=client.example\r\n"));
        CPPUNIT_ASSERT(screen.changed == std::vector<std::string>{"203.0.113.5"});
        // the handler saw the front end only, not the blocked client
        CPPUNIT_ASSERT_EQUAL(std::string("connect ehlo"), h.rec->event_string());
        assert_counted(h, obs);
        // as after a refused greeting: only QUIT
        CPPUNIT_ASSERT(h.send("EHLO client.example\r\n").rfind("503 ", 0) == 0);
        CPPUNIT_ASSERT(h.send("MAIL FROM:<a@client.example>\r\n").rfind("503 ", 0) == 0);
        CPPUNIT_ASSERT(h.send("QUIT\r\n").rfind("221 ", 0) == 0);
    }

    void testXclientAddressPasses()
    {
        esmtp::test::Harness h = front_end();
        FakeScreen screen;
        h.screen = &screen;
        h.start();
        CPPUNIT_ASSERT(h.send("XCLIENT ADDR=IPV6:2001:db8::5\r\n").rfind("220 ", 0) == 0);
        CPPUNIT_ASSERT(screen.changed == std::vector<std::string>{"2001:db8::5"});
        CPPUNIT_ASSERT_EQUAL(std::string("connect connect"), h.rec->event_string());
        h.send("EHLO client.example\r\n");
        h.send("MAIL FROM:<a@client.example>\r\n");
        CPPUNIT_ASSERT(h.send("RCPT TO:<b@example.org>\r\n").rfind("250 ", 0) == 0);
        CPPUNIT_ASSERT_EQUAL(1, screen.rcpts);
    }

    void testXclientWithoutAddressNotScreened()
    {
        // no address to look up: [UNAVAILABLE], [TEMPUNAVAIL], or no ADDR=
        for (const char *cmd :
             {"XCLIENT ADDR=[UNAVAILABLE]\r\n", "XCLIENT ADDR=[TEMPUNAVAIL]\r\n", "XCLIENT NAME=client.example\r\n"}) {
            esmtp::test::Harness h = front_end();
            FakeScreen screen;
            screen.at_xclient = dnsbl_refusal("192.0.2.9");
            h.screen = &screen;
            h.start();
            CPPUNIT_ASSERT_MESSAGE(cmd, h.send(cmd).rfind("220 ", 0) == 0);
            CPPUNIT_ASSERT_MESSAGE(cmd, screen.changed.empty());
        }
    }
};

CPPUNIT_TEST_SUITE_REGISTRATION(ScreenTest);
