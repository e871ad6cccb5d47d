// The counting points of the live counters: what a session reports to its
// SessionObserver (engine/observer.hpp) for what a client did.

#include "session_harness.hpp"

#include <cppunit/extensions/HelperMacros.h>

#include <map>
#include <string>
#include <vector>

using esmtp::Phase;
using esmtp::RejectCause;

namespace
{

struct Recorder final : esmtp::SessionObserver {
    std::vector<std::string> phases;
    std::vector<std::string> verbs;
    std::uint64_t octets = 0;
    std::vector<int> messages;
    unsigned recipients = 0;
    std::map<RejectCause, int> rejects;
    std::vector<std::string> whats;

    void phase_changed(Phase from, Phase to) override { phases.push_back(esmtp::phase_name(to)); }
    void command(std::string_view verb) override { verbs.emplace_back(verb); }
    void received(std::uint64_t n) override { octets += n; }
    void message(int code, unsigned rcpts, std::uint64_t) override
    {
        messages.push_back(code);
        if (code < 300)
            recipients += rcpts;
    }
    void rejected(RejectCause c, std::string_view what) override
    {
        ++rejects[c];
        whats.emplace_back(what);
    }
};

using Harness = esmtp::test::Harness;

} // namespace

class ObserverTest : public CppUnit::TestFixture
{
    CPPUNIT_TEST_SUITE(ObserverTest);
    CPPUNIT_TEST(testAcceptedAndRefusedMessages);
    CPPUNIT_TEST(testPhasesAndVerbs);
    CPPUNIT_TEST(testRejectCauses);
    CPPUNIT_TEST(testBareNewlineAndSize);
    CPPUNIT_TEST(testPipelining);
    CPPUNIT_TEST_SUITE_END();

  public:
    void testAcceptedAndRefusedMessages()
    {
        Recorder r;
        Harness h;
        h.observer = &r;
        h.ehlo();
        auto replies = h.transaction("a@example.com", {"b@example.org", "c@example.org"}, "Subject: x\r\n\r\nhi\r\n");
        CPPUNIT_ASSERT_EQUAL(std::string("250 "), replies.back().substr(0, 4));
        h.rec->replies["eom"] = esmtp::Reply(451, "later", "4.3.0");
        h.transaction("a@example.com", {"b@example.org"}, "Subject: y\r\n\r\nhi\r\n");
        h.rec->replies["eom"] = esmtp::Reply(554, "no", "5.7.1");
        h.transaction("a@example.com", {"b@example.org"}, "Subject: z\r\n\r\nhi\r\n");
        CPPUNIT_ASSERT_EQUAL(std::size_t(3), r.messages.size());
        CPPUNIT_ASSERT_EQUAL(250, r.messages[0]);
        CPPUNIT_ASSERT_EQUAL(451, r.messages[1]);
        CPPUNIT_ASSERT_EQUAL(554, r.messages[2]);
        CPPUNIT_ASSERT_EQUAL(2u, r.recipients);
        CPPUNIT_ASSERT(r.octets > 3 * 20);
        // a handler's 4xx is a failed delivery (the operator's business); its 5xx a decision
        CPPUNIT_ASSERT_EQUAL(std::size_t(1), r.rejects.size());
        CPPUNIT_ASSERT_EQUAL(1, r.rejects[RejectCause::delivery]);
        // refused at DATA: a refused message too
        h.rec->replies["data"] = esmtp::Reply(451, "cannot store", "4.3.0");
        h.transaction("a@example.com", {"b@example.org"}, "Subject: w\r\n\r\nhi\r\n");
        CPPUNIT_ASSERT_EQUAL(std::size_t(4), r.messages.size());
        CPPUNIT_ASSERT_EQUAL(451, r.messages[3]);
        CPPUNIT_ASSERT_EQUAL(2, r.rejects[RejectCause::delivery]);
    }

    void testPhasesAndVerbs()
    {
        Recorder r;
        Harness h;
        h.observer = &r;
        h.ehlo();
        h.send("MAIL FROM:<secret@example.com>\r\n");
        h.send("RCPT TO:<b@example.org>\r\n");
        h.send("DATA\r\n");
        h.send("x\r\n.\r\n");
        h.send("FOO secret-argument\r\n");
        h.send("QUIT\r\n");
        std::vector<std::string> want_phases{"command", "data", "command", "closed"};
        CPPUNIT_ASSERT(want_phases == r.phases);
        // the verb only: never an argument
        std::vector<std::string> want_verbs{"EHLO", "MAIL", "RCPT", "DATA", "UNKNOWN", "QUIT"};
        CPPUNIT_ASSERT(want_verbs == r.verbs);
    }

    void testRejectCauses()
    {
        Recorder r;
        Harness h;
        h.cfg.limits.max_recipients = 1;
        h.observer = &r;
        h.ehlo();
        h.send("MAIL FROM:<a@example.com>\r\n");
        CPPUNIT_ASSERT_EQUAL(std::string("550"), h.send("RCPT TO:<x@elsewhere.example>\r\n").substr(0, 3));
        CPPUNIT_ASSERT_EQUAL(std::string("250"), h.send("RCPT TO:<b@example.org>\r\n").substr(0, 3));
        CPPUNIT_ASSERT_EQUAL(std::string("452"), h.send("RCPT TO:<c@example.org>\r\n").substr(0, 3));
        h.rec->throw_in = "rset";
        CPPUNIT_ASSERT_EQUAL(std::string("451"), h.send("RSET\r\n").substr(0, 3));
        CPPUNIT_ASSERT_EQUAL(1, r.rejects[RejectCause::relay]);
        CPPUNIT_ASSERT_EQUAL(1, r.rejects[RejectCause::limits]);
        CPPUNIT_ASSERT_EQUAL(1, r.rejects[RejectCause::handler_error]);
        CPPUNIT_ASSERT_EQUAL(std::size_t(3), r.whats.size());
        CPPUNIT_ASSERT(r.whats[0].find("192.0.2.7") != std::string::npos);
        CPPUNIT_ASSERT(r.whats[0].find("elsewhere") == std::string::npos); // no recipient address
        // the glue reports what it sees (timeouts, early talkers) the same way
        h.s().report(RejectCause::timeout, "timeout");
        CPPUNIT_ASSERT_EQUAL(1, r.rejects[RejectCause::timeout]);
    }

    void testBareNewlineAndSize()
    {
        Recorder r;
        Harness h;
        h.cfg.limits.max_message_size = 100;
        h.observer = &r;
        h.ehlo();
        CPPUNIT_ASSERT_EQUAL(std::string("550"), h.send("NOOP\n").substr(0, 3));
        h.send("MAIL FROM:<a@example.com>\r\n");
        h.send("RCPT TO:<b@example.org>\r\n");
        h.send("DATA\r\n");
        CPPUNIT_ASSERT_EQUAL(std::string("550"), h.send("Subject: x\n\nbody\r\n.\r\n").substr(0, 3));
        h.send("MAIL FROM:<a@example.com>\r\n");
        h.send("RCPT TO:<b@example.org>\r\n");
        h.send("DATA\r\n");
        CPPUNIT_ASSERT_EQUAL(std::string("552"), h.send(std::string(200, 'x') + "\r\n.\r\n").substr(0, 3));
        CPPUNIT_ASSERT_EQUAL(2, r.rejects[RejectCause::bare_newline]);
        CPPUNIT_ASSERT_EQUAL(1, r.rejects[RejectCause::limits]);
        std::vector<int> want{550, 552};
        CPPUNIT_ASSERT(want == r.messages);
    }

    void testPipelining()
    {
        Recorder r;
        Harness h;
        h.observer = &r;
        h.start();
        CPPUNIT_ASSERT(h.send("HELO x\r\nMAIL FROM:<a@example.com>\r\n").find("554") != std::string::npos);
        CPPUNIT_ASSERT_EQUAL(1, r.rejects[RejectCause::pipelining]);
    }
};

CPPUNIT_TEST_SUITE_REGISTRATION(ObserverTest);
