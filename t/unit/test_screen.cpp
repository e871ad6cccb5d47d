// The session's screening hooks (engine/screen.hpp): a refusal at CONNECT
// takes the greeting's place and keeps the handler out (only QUIT is
// served), a refusal at RCPT comes before the handler's rcpt(), each is
// logged and counted, an authenticated client is not screened at RCPT.

#include "session_harness.hpp"

#include <cppunit/extensions/HelperMacros.h>

using esmtp::RejectCause;
using esmtp::Reply;
using esmtp::Screen;

namespace
{

struct FakeScreen final : Screen {
    Verdict at_connect, at_rcpt;
    int rcpts = 0;
    std::string last_sender, last_rcpt;
    Verdict connect() override { return at_connect; }
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

} // namespace

class ScreenTest : public CppUnit::TestFixture
{
    CPPUNIT_TEST_SUITE(ScreenTest);
    CPPUNIT_TEST(testRefusedAtConnect);
    CPPUNIT_TEST(testRefusedAtRcpt);
    CPPUNIT_TEST(testPassLeavesTheHandlerAlone);
    CPPUNIT_TEST_SUITE_END();

  public:
    void testRefusedAtConnect()
    {
        esmtp::test::Harness h;
        FakeScreen screen;
        Counting obs;
        screen.at_connect = {Reply(554, "5.7.1 Service unavailable; client [192.0.2.7] blocked using zen.example"),
                             RejectCause::dnsbl, "blocked using zen.example (score 3)"};
        h.screen = &screen;
        h.observer = &obs;
        CPPUNIT_ASSERT_EQUAL(
            std::string("554 5.7.1 Service unavailable; client [192.0.2.7] blocked using zen.example\r\n"), h.start());
        CPPUNIT_ASSERT(!h.rec->saw("connect")); // the handler never saw the client
        CPPUNIT_ASSERT_EQUAL(std::size_t(1), obs.causes.size());
        CPPUNIT_ASSERT(obs.causes[0] == RejectCause::dnsbl);
        CPPUNIT_ASSERT(h.log.has("blocked using zen.example (score 3)"));
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
};

CPPUNIT_TEST_SUITE_REGISTRATION(ScreenTest);
