// esmtp::Session driven byte-wise with a recording handler and log.

#include "session_harness.hpp"

#include <cppunit/extensions/HelperMacros.h>

#include <cctype>
#include <functional>
#include <map>
#include <memory>
#include <regex>
#include <stdexcept>
#include <string>
#include <vector>

using esmtp::ConnectionInfo;
using esmtp::Reply;
using esmtp::Session;
using esmtp::SessionConfig;
using esmtp::SessionView;

namespace
{

using Harness = esmtp::test::Harness;
using esmtp::test::lines_of;

const std::string kEhloReply = "250-mx.example.org\r\n"
                               "250-PIPELINING\r\n"
                               "250-SIZE 10240000\r\n"
                               "250-8BITMIME\r\n"
                               "250-ENHANCEDSTATUSCODES\r\n"
                               "250-SMTPUTF8\r\n"
                               "250 CHUNKING\r\n";

// After "EHLO client.example\r\n" (a client waits for the EHLO reply
// before it pipelines).
const std::string kTransaction = "MAIL FROM:<alice@example.com>\r\n"
                                 "RCPT TO:<bob@example.org>\r\n"
                                 "DATA\r\n"
                                 "From: alice@example.com\r\n"
                                 "Subject: test\r\n"
                                 "\r\n"
                                 "Hello Bob.\r\n"
                                 "..dot\r\n"
                                 ".\r\n"
                                 "QUIT\r\n";

std::string mask_queue_ids(const std::string &s)
{
    static const std::regex qid("queued as [A-Za-z0-9]+");
    return std::regex_replace(s, qid, "queued as QID");
}

bool starts_with(std::string_view s, std::string_view prefix)
{
    return s.substr(0, prefix.size()) == prefix;
}

} // namespace

class SessionTest : public CppUnit::TestFixture
{
    CPPUNIT_TEST_SUITE(SessionTest);
    CPPUNIT_TEST(testGreeting);
    CPPUNIT_TEST(testHelo);
    CPPUNIT_TEST(testEhloKeywords);
    CPPUNIT_TEST(testEhloSizeFollowsLimit);
    CPPUNIT_TEST(testEnhancedCodesOff);
    CPPUNIT_TEST(testHeloSyntax);
    CPPUNIT_TEST(testMailBeforeHelo);
    CPPUNIT_TEST(testSequencingErrors);
    CPPUNIT_TEST(testMailSyntax);
    CPPUNIT_TEST(testRcptSyntax);
    CPPUNIT_TEST(testNullSender);
    CPPUNIT_TEST(testUnknownParameter);
    CPPUNIT_TEST(testSizeParameter);
    CPPUNIT_TEST(testBodyParameter);
    CPPUNIT_TEST(testTooManyRecipients);
    CPPUNIT_TEST(testOtherCommands);
    CPPUNIT_TEST(testPartialInput);
    CPPUNIT_TEST(testDataWithArguments);
    CPPUNIT_TEST(testEhloResetsTransaction);
    CPPUNIT_TEST(testHeloResetsTransaction);
    CPPUNIT_TEST(testRsetResetsTransaction);
    CPPUNIT_TEST(testPipelinedTransaction);
    CPPUNIT_TEST(testByteByByteSameOutput);
    CPPUNIT_TEST(testEventOrder);
    CPPUNIT_TEST(testHandlerRejectsRecipient);
    CPPUNIT_TEST(testHandlerReplyGetsEnhancedDefault);
    CPPUNIT_TEST(testHandlerThrows);
    CPPUNIT_TEST(testHandlerThrowsAtEom);
    CPPUNIT_TEST(testQuitCloses);
    CPPUNIT_TEST(testLongCommandLine);
    CPPUNIT_TEST(testMessageTooBig);
    CPPUNIT_TEST(testMessageLineTooLong);
    CPPUNIT_TEST(testTraceHeaders);
    CPPUNIT_TEST(testQueueId);
    CPPUNIT_TEST(testHandlerCommands);
    CPPUNIT_TEST(testEndFiresDisconnectOnce);
    CPPUNIT_TEST(testEndMidDataAborts);
    CPPUNIT_TEST(testDestructorFiresDisconnect);
    CPPUNIT_TEST(testRefusedConnect);
    CPPUNIT_TEST(testConnectThrows);
    CPPUNIT_TEST(testShutdown);
    CPPUNIT_TEST(testLogLevelSession);
    CPPUNIT_TEST(testLogLevelCommands);
    CPPUNIT_TEST_SUITE_END();

  public:
    void testGreeting()
    {
        Harness h;
        CPPUNIT_ASSERT_EQUAL(std::string("220 mx.example.org ESMTP mod_esmtp\r\n"), h.start());
        CPPUNIT_ASSERT_EQUAL(std::string("connect"), h.rec->event_string());
        CPPUNIT_ASSERT(!h.s().closing());
        CPPUNIT_ASSERT(h.s().phase() == Session::Phase::command);
    }

    void testHelo()
    {
        Harness h;
        h.start();
        CPPUNIT_ASSERT_EQUAL(std::string("250 mx.example.org\r\n"), h.send("HELO client.example\r\n"));
        CPPUNIT_ASSERT_EQUAL(std::string("client.example"), std::string(h.s().helo_name()));
        CPPUNIT_ASSERT(!h.s().esmtp());
        CPPUNIT_ASSERT_EQUAL(std::string("SMTP"), std::string(h.s().protocol()));
        CPPUNIT_ASSERT(h.rec->saw("helo"));
        // address literals are fine as HELO names
        CPPUNIT_ASSERT_EQUAL(std::string("250 mx.example.org\r\n"), h.send("HELO [192.0.2.7]\r\n"));
    }

    void testEhloKeywords()
    {
        Harness h;
        h.start();
        CPPUNIT_ASSERT_EQUAL(kEhloReply, h.send("EHLO client.example\r\n"));
        CPPUNIT_ASSERT(h.s().esmtp());
        CPPUNIT_ASSERT_EQUAL(std::string("ESMTP"), std::string(h.s().protocol()));
        CPPUNIT_ASSERT(h.rec->saw("ehlo"));
    }

    void testEhloSizeFollowsLimit()
    {
        Harness h;
        h.cfg.limits.max_message_size = 12345;
        h.start();
        std::string out = h.send("EHLO client.example\r\n");
        CPPUNIT_ASSERT(out.find("250-SIZE 12345\r\n") != std::string::npos);
    }

    void testEnhancedCodesOff()
    {
        Harness h;
        h.cfg.extensions &= ~esmtp::ext_enhancedstatuscodes;
        h.start();
        std::string out = h.send("EHLO client.example\r\n");
        CPPUNIT_ASSERT_EQUAL(std::string::npos, out.find("ENHANCEDSTATUSCODES"));
        CPPUNIT_ASSERT(out.find("250-8BITMIME\r\n") != std::string::npos);
        CPPUNIT_ASSERT(out.find("250 CHUNKING\r\n") != std::string::npos);
        CPPUNIT_ASSERT_EQUAL(std::string("250 Ok\r\n"), h.send("MAIL FROM:<a@example.com>\r\n"));
        CPPUNIT_ASSERT_EQUAL(std::string("500 Command unrecognized\r\n"), h.send("FOO\r\n"));
    }

    void testHeloSyntax()
    {
        Harness h;
        h.start();
        CPPUNIT_ASSERT_EQUAL(std::string("501 5.5.4 Syntax: HELO hostname\r\n"), h.send("HELO\r\n"));
        CPPUNIT_ASSERT_EQUAL(std::string("501 5.5.4 Syntax: EHLO hostname\r\n"), h.send("EHLO\r\n"));
        // control characters and non-ASCII octets are never a host name
        CPPUNIT_ASSERT_EQUAL(std::string("501 5.5.4 Syntax: EHLO hostname\r\n"), h.send("EHLO bad\x01name\r\n"));
        CPPUNIT_ASSERT_EQUAL(std::string("501 5.5.4 Syntax: HELO hostname\r\n"), h.send("HELO h\xc3\xa9llo\r\n"));
        CPPUNIT_ASSERT(!h.rec->saw("helo"));
        CPPUNIT_ASSERT(!h.rec->saw("ehlo"));
        // still no HELO
        CPPUNIT_ASSERT_EQUAL(std::string("503 5.5.1 Error: send HELO/EHLO first\r\n"),
                             h.send("MAIL FROM:<a@example.com>\r\n"));
    }

    void testMailBeforeHelo()
    {
        Harness h;
        h.start();
        CPPUNIT_ASSERT_EQUAL(std::string("503 5.5.1 Error: send HELO/EHLO first\r\n"),
                             h.send("MAIL FROM:<a@example.com>\r\n"));
        CPPUNIT_ASSERT(!h.rec->saw("mail"));
    }

    void testSequencingErrors()
    {
        Harness h;
        h.ehlo();
        CPPUNIT_ASSERT_EQUAL(std::string("503 5.5.1 Error: need MAIL command\r\n"),
                             h.send("RCPT TO:<b@example.org>\r\n"));
        CPPUNIT_ASSERT_EQUAL(std::string("503 5.5.1 Error: need MAIL command\r\n"), h.send("DATA\r\n"));
        CPPUNIT_ASSERT_EQUAL(std::string("250 2.1.0 Ok\r\n"), h.send("MAIL FROM:<a@example.com>\r\n"));
        CPPUNIT_ASSERT_EQUAL(std::string("503 5.5.1 Error: nested MAIL command\r\n"),
                             h.send("MAIL FROM:<a@example.com>\r\n"));
        CPPUNIT_ASSERT_EQUAL(std::string("503 5.5.1 Error: need RCPT command\r\n"), h.send("DATA\r\n"));
        CPPUNIT_ASSERT(!h.rec->saw("data"));
        CPPUNIT_ASSERT_EQUAL(std::string("250 2.1.5 Ok\r\n"), h.send("RCPT TO:<b@example.org>\r\n"));
        CPPUNIT_ASSERT_EQUAL(std::string("354 End data with <CR><LF>.<CR><LF>\r\n"), h.send("DATA\r\n"));
        CPPUNIT_ASSERT(h.s().phase() == Session::Phase::data);
    }

    void testMailSyntax()
    {
        Harness h;
        h.ehlo();
        CPPUNIT_ASSERT_EQUAL(std::string("501 5.5.4 Syntax: MAIL FROM:<address>\r\n"), h.send("MAIL\r\n"));
        CPPUNIT_ASSERT_EQUAL(std::string("501 5.5.4 Syntax: MAIL FROM:<address>\r\n"), h.send("MAIL TO:<a@b.c>\r\n"));
        CPPUNIT_ASSERT_EQUAL(std::string("501 5.1.7 Bad sender address syntax\r\n"),
                             h.send("MAIL FROM:<a b@example.com>\r\n"));
        CPPUNIT_ASSERT_EQUAL(std::string("501 5.1.7 Bad sender address syntax\r\n"),
                             h.send("MAIL FROM:<a@@example.com>\r\n"));
        CPPUNIT_ASSERT(!h.rec->saw("mail"));
        // none of that opened a transaction; case of the keyword does not matter
        CPPUNIT_ASSERT_EQUAL(std::string("250 2.1.0 Ok\r\n"), h.send("mail from:<a@example.com>\r\n"));
    }

    void testRcptSyntax()
    {
        Harness h;
        h.ehlo();
        h.send("MAIL FROM:<a@example.com>\r\n");
        CPPUNIT_ASSERT_EQUAL(std::string("501 5.5.4 Syntax: RCPT TO:<address>\r\n"), h.send("RCPT\r\n"));
        CPPUNIT_ASSERT_EQUAL(std::string("501 5.5.4 Syntax: RCPT TO:<address>\r\n"), h.send("RCPT FROM:<b@c.d>\r\n"));
        CPPUNIT_ASSERT_EQUAL(std::string("501 5.1.3 Bad recipient address syntax\r\n"), h.send("RCPT TO:<>\r\n"));
        CPPUNIT_ASSERT_EQUAL(std::string("501 5.1.3 Bad recipient address syntax\r\n"),
                             h.send("RCPT TO:<b@@example.org>\r\n"));
        CPPUNIT_ASSERT_EQUAL(0, h.rec->rcpt_calls);
        CPPUNIT_ASSERT(h.s().envelope().recipients.empty());
        CPPUNIT_ASSERT_EQUAL(std::string("250 2.1.5 Ok\r\n"), h.send("RCPT TO:<postmaster>\r\n"));
    }

    void testNullSender()
    {
        Harness h;
        h.ehlo();
        CPPUNIT_ASSERT_EQUAL(std::string("250 2.1.0 Ok\r\n"), h.send("MAIL FROM:<>\r\n"));
        CPPUNIT_ASSERT(h.s().envelope().sender.is_null());
        CPPUNIT_ASSERT_EQUAL(std::string("250 2.1.5 Ok\r\n"), h.send("RCPT TO:<b@example.org>\r\n"));
        h.send("DATA\r\n");
        CPPUNIT_ASSERT(starts_with(h.rec->trace_at_data, "Return-Path: <>\r\n"));
    }

    void testUnknownParameter()
    {
        Harness h;
        h.ehlo();
        CPPUNIT_ASSERT_EQUAL(std::string("555 5.5.4 Unsupported parameter FOO\r\n"),
                             h.send("MAIL FROM:<a@example.com> FOO=bar\r\n"));
        CPPUNIT_ASSERT(!h.rec->saw("mail"));
        CPPUNIT_ASSERT_EQUAL(std::string("250 2.1.0 Ok\r\n"), h.send("MAIL FROM:<a@example.com>\r\n"));
        CPPUNIT_ASSERT_EQUAL(std::string("555 5.5.4 Unsupported parameter XYZ\r\n"),
                             h.send("RCPT TO:<b@example.org> XYZ\r\n"));
        CPPUNIT_ASSERT(h.s().envelope().recipients.empty());
    }

    void testSizeParameter()
    {
        Harness h;
        h.cfg.limits.max_message_size = 1000;
        h.ehlo();
        CPPUNIT_ASSERT_EQUAL(std::string("552 5.3.4 Message size exceeds fixed limit\r\n"),
                             h.send("MAIL FROM:<a@example.com> SIZE=1001\r\n"));
        CPPUNIT_ASSERT(!h.rec->saw("mail"));
        CPPUNIT_ASSERT_EQUAL(std::string("552 5.3.4 Message size exceeds fixed limit\r\n"),
                             h.send("MAIL FROM:<a@example.com> SIZE=18446744073709551615\r\n"));
        CPPUNIT_ASSERT_EQUAL(std::string("250 2.1.0 Ok\r\n"), h.send("MAIL FROM:<a@example.com> SIZE=1000\r\n"));
        CPPUNIT_ASSERT_EQUAL(std::size_t(1), h.s().envelope().mail_params.size());
        CPPUNIT_ASSERT_EQUAL(std::string("SIZE"), h.s().envelope().mail_params[0].keyword);
        CPPUNIT_ASSERT_EQUAL(std::string("1000"), h.s().envelope().mail_params[0].value);
    }

    void testBodyParameter()
    {
        Harness h;
        h.ehlo();
        CPPUNIT_ASSERT_EQUAL(std::string("250 2.1.0 Ok\r\n"), h.send("MAIL FROM:<a@example.com> BODY=8BITMIME\r\n"));
        CPPUNIT_ASSERT_EQUAL(std::string("250 2.0.0 Ok\r\n"), h.send("RSET\r\n"));
        CPPUNIT_ASSERT_EQUAL(std::string("250 2.1.0 Ok\r\n"), h.send("MAIL FROM:<a@example.com> BODY=7BIT\r\n"));
    }

    void testTooManyRecipients()
    {
        Harness h;
        h.cfg.limits.max_recipients = 3;
        h.ehlo();
        h.send("MAIL FROM:<a@example.com>\r\n");
        for (int i = 1; i <= 3; ++i)
            CPPUNIT_ASSERT_EQUAL(std::string("250 2.1.5 Ok\r\n"),
                                 h.send("RCPT TO:<r" + std::to_string(i) + "@example.org>\r\n"));
        CPPUNIT_ASSERT_EQUAL(std::string("452 4.5.3 Error: too many recipients\r\n"),
                             h.send("RCPT TO:<r4@example.org>\r\n"));
        CPPUNIT_ASSERT_EQUAL(std::size_t(3), h.s().envelope().recipients.size());
        CPPUNIT_ASSERT_EQUAL(3, h.rec->rcpt_calls);
        // the transaction goes on with the first three
        CPPUNIT_ASSERT_EQUAL(std::string("354 End data with <CR><LF>.<CR><LF>\r\n"), h.send("DATA\r\n"));
    }

    void testOtherCommands()
    {
        Harness h;
        h.ehlo();
        CPPUNIT_ASSERT_EQUAL(std::string("250 2.0.0 Ok\r\n"), h.send("NOOP\r\n"));
        CPPUNIT_ASSERT_EQUAL(std::string("250 2.0.0 Ok\r\n"), h.send("RSET\r\n"));
        CPPUNIT_ASSERT_EQUAL(std::string("252 2.0.0 Cannot VRFY user; try RCPT to attempt delivery\r\n"),
                             h.send("VRFY bob\r\n"));
        CPPUNIT_ASSERT_EQUAL(std::string("502 5.5.1 EXPN not available\r\n"), h.send("EXPN staff\r\n"));
        std::string help = h.send("HELP\r\n");
        CPPUNIT_ASSERT(starts_with(help, "214 2.0.0 ") || starts_with(help, "214-2.0.0 "));
        CPPUNIT_ASSERT(help.size() > 2 && help.substr(help.size() - 2) == "\r\n");
        CPPUNIT_ASSERT_EQUAL(std::string("500 5.5.2 Command unrecognized\r\n"), h.send("FOO bar\r\n"));
        CPPUNIT_ASSERT_EQUAL(std::string("noop rset vrfy expn help unknown"),
                             h.rec->event_string().substr(std::string("connect ehlo ").size()));
    }

    void testPartialInput()
    {
        Harness h;
        h.ehlo();
        CPPUNIT_ASSERT(!h.s().has_partial_input());
        CPPUNIT_ASSERT_EQUAL(std::string(""), h.send("NO"));
        CPPUNIT_ASSERT(h.s().has_partial_input());
        CPPUNIT_ASSERT_EQUAL(std::string("250 2.0.0 Ok\r\n"), h.send("OP\r\n"));
        // the command was answered: nothing is left over
        CPPUNIT_ASSERT(!h.s().has_partial_input());
        CPPUNIT_ASSERT_EQUAL(std::string("250 2.0.0 Ok\r\n"), h.send("NOOP\r\nRS"));
        CPPUNIT_ASSERT(h.s().has_partial_input());
    }

    void testDataWithArguments()
    {
        Harness h;
        h.ehlo();
        h.send("MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\n");
        CPPUNIT_ASSERT_EQUAL(std::string("501 5.5.4 Syntax: DATA\r\n"), h.send("DATA now\r\n"));
        CPPUNIT_ASSERT(h.s().phase() == Session::Phase::command);
        CPPUNIT_ASSERT(!h.rec->saw("data"));
    }

    void testEhloResetsTransaction()
    {
        Harness h;
        h.ehlo();
        h.send("MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\n");
        CPPUNIT_ASSERT_EQUAL(std::size_t(1), h.s().envelope().recipients.size());
        CPPUNIT_ASSERT_EQUAL(0, h.rec->aborts);
        CPPUNIT_ASSERT_EQUAL(kEhloReply, h.send("EHLO client.example\r\n"));
        CPPUNIT_ASSERT_EQUAL(1, h.rec->aborts);
        CPPUNIT_ASSERT(h.s().envelope().recipients.empty());
        CPPUNIT_ASSERT(h.s().queue_id().empty());
        CPPUNIT_ASSERT_EQUAL(std::string("503 5.5.1 Error: need MAIL command\r\n"),
                             h.send("RCPT TO:<b@example.org>\r\n"));
        CPPUNIT_ASSERT_EQUAL(std::string("250 2.1.0 Ok\r\n"), h.send("MAIL FROM:<a@example.com>\r\n"));
    }

    void testHeloResetsTransaction()
    {
        Harness h;
        h.ehlo();
        h.send("MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\n");
        CPPUNIT_ASSERT_EQUAL(std::string("250 mx.example.org\r\n"), h.send("HELO other.example\r\n"));
        CPPUNIT_ASSERT_EQUAL(1, h.rec->aborts);
        CPPUNIT_ASSERT(h.s().envelope().recipients.empty());
        CPPUNIT_ASSERT_EQUAL(std::string("other.example"), std::string(h.s().helo_name()));
        CPPUNIT_ASSERT(!h.s().esmtp());
        // a HELO session gets plain SMTP: no enhanced status codes
        CPPUNIT_ASSERT_EQUAL(std::string("250 Ok\r\n"), h.send("MAIL FROM:<a@example.com>\r\n"));
    }

    void testRsetResetsTransaction()
    {
        Harness h;
        h.ehlo();
        h.send("MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\n");
        CPPUNIT_ASSERT_EQUAL(std::string("250 2.0.0 Ok\r\n"), h.send("RSET\r\n"));
        CPPUNIT_ASSERT_EQUAL(1, h.rec->aborts);
        CPPUNIT_ASSERT(h.s().envelope().recipients.empty());
        CPPUNIT_ASSERT_EQUAL(std::string("503 5.5.1 Error: need MAIL command\r\n"), h.send("DATA\r\n"));
        // RSET keeps the HELO
        CPPUNIT_ASSERT_EQUAL(std::string("250 2.1.0 Ok\r\n"), h.send("MAIL FROM:<a@example.com>\r\n"));
    }

    void testPipelinedTransaction()
    {
        Harness h;
        h.start();
        std::string out = h.send("EHLO client.example\r\n");
        out += h.send(kTransaction);
        CPPUNIT_ASSERT(!h.rec->qid_at_eom.empty());
        std::string expected = kEhloReply +
                               "250 2.1.0 Ok\r\n"
                               "250 2.1.5 Ok\r\n"
                               "354 End data with <CR><LF>.<CR><LF>\r\n"
                               "250 2.0.0 Ok: queued as " +
                               h.rec->qid_at_eom + "\r\n221 2.0.0 Bye\r\n";
        CPPUNIT_ASSERT_EQUAL(expected, out);
        CPPUNIT_ASSERT(h.s().closing());
        CPPUNIT_ASSERT_EQUAL(1u, h.s().messages_accepted());
        CPPUNIT_ASSERT_EQUAL(std::string("Hello Bob.\r\n.dot\r\n"), h.rec->body);
        CPPUNIT_ASSERT(h.rec->headers == (std::vector<std::string>{"From", "Subject"}));
    }

    void testByteByByteSameOutput()
    {
        Harness whole;
        std::string expected = whole.start();
        expected += whole.send("EHLO client.example\r\n");
        expected += whole.send(kTransaction);

        Harness bytes;
        std::string out = bytes.start();
        out += bytes.send_bytewise("EHLO client.example\r\n");
        for (char c : kTransaction)
            out += bytes.send(std::string_view(&c, 1));
        CPPUNIT_ASSERT_EQUAL(mask_queue_ids(expected), mask_queue_ids(out));
        CPPUNIT_ASSERT_EQUAL(whole.rec->body, bytes.rec->body);
        CPPUNIT_ASSERT(whole.rec->headers == bytes.rec->headers);
        CPPUNIT_ASSERT(bytes.s().closing());
    }

    void testEventOrder()
    {
        Harness h;
        h.ehlo();
        h.send(kTransaction);
        h.s().end();
        CPPUNIT_ASSERT_EQUAL(std::string("connect ehlo mail rcpt data header header eoh body eom quit disconnect"),
                             h.rec->event_string());
    }

    void testHandlerRejectsRecipient()
    {
        Harness h;
        h.rec->rcpt_replies["nobody@example.org"] = Reply(550, "No such user here", "5.1.1");
        h.ehlo();
        h.send("MAIL FROM:<a@example.com>\r\n");
        CPPUNIT_ASSERT_EQUAL(std::string("250 2.1.5 Ok\r\n"), h.send("RCPT TO:<bob@example.org>\r\n"));
        CPPUNIT_ASSERT_EQUAL(std::string("550 5.1.1 No such user here\r\n"),
                             h.send("RCPT TO:<nobody@example.org>\r\n"));
        const auto &rcpts = h.s().envelope().recipients;
        CPPUNIT_ASSERT_EQUAL(std::size_t(1), rcpts.size());
        CPPUNIT_ASSERT_EQUAL(std::string("bob@example.org"), rcpts[0].path.mailbox);
        CPPUNIT_ASSERT_EQUAL(std::string("354 End data with <CR><LF>.<CR><LF>\r\n"), h.send("DATA\r\n"));
    }

    void testHandlerReplyGetsEnhancedDefault()
    {
        Harness h;
        h.rec->mail_reply = Reply(250, "Sender looks fine");               // module default code: its 2.1.0
        h.rec->rcpt_replies["fwd@example.org"] = Reply(251, "Forwarding"); // other code: class default
        h.rec->rcpt_replies["later@example.org"] = Reply(450, "Try later");
        h.ehlo();
        CPPUNIT_ASSERT_EQUAL(std::string("250 2.1.0 Sender looks fine\r\n"), h.send("MAIL FROM:<a@example.com>\r\n"));
        CPPUNIT_ASSERT_EQUAL(std::string("251 2.0.0 Forwarding\r\n"), h.send("RCPT TO:<fwd@example.org>\r\n"));
        CPPUNIT_ASSERT_EQUAL(std::string("450 4.0.0 Try later\r\n"), h.send("RCPT TO:<later@example.org>\r\n"));
        CPPUNIT_ASSERT_EQUAL(std::size_t(1), h.s().envelope().recipients.size());
    }

    void testHandlerThrows()
    {
        Harness h;
        h.rec->throw_in = "mail";
        h.ehlo();
        CPPUNIT_ASSERT_EQUAL(std::string("451 4.3.0 Internal error; try again later\r\n"),
                             h.send("MAIL FROM:<a@example.com>\r\n"));
        CPPUNIT_ASSERT(!h.s().closing());
        // no transaction was opened; the session goes on
        CPPUNIT_ASSERT_EQUAL(std::string("503 5.5.1 Error: need MAIL command\r\n"),
                             h.send("RCPT TO:<b@example.org>\r\n"));
        CPPUNIT_ASSERT_EQUAL(std::string("250 2.1.0 Ok\r\n"), h.send("MAIL FROM:<a@example.com>\r\n"));

        h.rec->throw_in = "rcpt";
        CPPUNIT_ASSERT_EQUAL(std::string("451 4.3.0 Internal error; try again later\r\n"),
                             h.send("RCPT TO:<b@example.org>\r\n"));
        CPPUNIT_ASSERT(h.s().envelope().recipients.empty());
    }

    void testHandlerThrowsAtEom()
    {
        Harness h;
        h.rec->throw_in = "eom";
        h.ehlo();
        h.send("MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n");
        CPPUNIT_ASSERT_EQUAL(std::string("451 4.3.0 Internal error; try again later\r\n"),
                             h.send("Subject: x\r\n\r\nbody\r\n.\r\n"));
        CPPUNIT_ASSERT_EQUAL(0u, h.s().messages_accepted());
        CPPUNIT_ASSERT(h.s().phase() == Session::Phase::command);
        CPPUNIT_ASSERT_EQUAL(std::string("250 2.1.0 Ok\r\n"), h.send("MAIL FROM:<a@example.com>\r\n"));
    }

    void testQuitCloses()
    {
        Harness h;
        h.ehlo();
        CPPUNIT_ASSERT(!h.s().closing());
        // what follows QUIT in the same packet is not answered
        CPPUNIT_ASSERT_EQUAL(std::string("221 2.0.0 Bye\r\n"), h.send("QUIT\r\nNOOP\r\n"));
        CPPUNIT_ASSERT(h.s().closing());
        CPPUNIT_ASSERT(h.s().phase() == Session::Phase::closed);
        CPPUNIT_ASSERT_EQUAL(std::string(""), h.send("NOOP\r\n"));
        CPPUNIT_ASSERT(!h.rec->saw("noop"));
    }

    void testLongCommandLine()
    {
        Harness h;
        h.ehlo();
        std::string line = "NOOP " + std::string(600, 'x') + "\r\n";
        CPPUNIT_ASSERT_EQUAL(std::string("500 5.5.2 Line too long\r\n"), h.send(line));
        CPPUNIT_ASSERT(!h.s().closing());
        CPPUNIT_ASSERT_EQUAL(std::string("250 2.0.0 Ok\r\n"), h.send("NOOP\r\n"));

        // same when the long line arrives in pieces and is followed by a command
        std::string out;
        for (int i = 0; i < 20; ++i)
            out += h.send(std::string(100, 'y'));
        CPPUNIT_ASSERT_EQUAL(std::string(""), out);
        CPPUNIT_ASSERT_EQUAL(std::string("500 5.5.2 Line too long\r\n250 2.0.0 Ok\r\n"), h.send("y\r\nRSET\r\n"));

        // 512 octets with CRLF are fine (an unknown command, but not too long)
        CPPUNIT_ASSERT_EQUAL(std::string("500 5.5.2 Command unrecognized\r\n"), h.send(std::string(510, 'z') + "\r\n"));
    }

    void testMessageTooBig()
    {
        Harness h;
        h.cfg.limits.max_message_size = 100;
        h.ehlo();
        h.send("MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n");
        std::string msg = "Subject: big\r\n\r\n";
        for (int i = 0; i < 10; ++i)
            msg += "0123456789012345678901234567890123456789\r\n";
        CPPUNIT_ASSERT_EQUAL(std::string(""), h.send(msg)); // nothing before the end
        CPPUNIT_ASSERT_EQUAL(std::string("552 5.3.4 Message size exceeds fixed limit\r\n"), h.send(".\r\n"));
        CPPUNIT_ASSERT(h.rec->saw("abort"));
        CPPUNIT_ASSERT(!h.rec->saw("eom"));
        CPPUNIT_ASSERT_EQUAL(0u, h.s().messages_accepted());
        CPPUNIT_ASSERT(h.s().phase() == Session::Phase::command);
        // the transaction is over
        CPPUNIT_ASSERT_EQUAL(std::string("250 2.1.0 Ok\r\n"), h.send("MAIL FROM:<a@example.com>\r\n"));
    }

    void testMessageLineTooLong()
    {
        Harness h;
        h.ehlo();
        h.send("MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n");
        std::string msg = "Subject: long\r\n\r\n" + std::string(999, 'a') + "\r\n.\r\n";
        CPPUNIT_ASSERT_EQUAL(std::string("500 5.5.2 Message line too long\r\n"), h.send(msg));
        CPPUNIT_ASSERT(!h.rec->saw("eom"));
        CPPUNIT_ASSERT(h.rec->saw("abort"));
        CPPUNIT_ASSERT_EQUAL(0u, h.s().messages_accepted());
    }

    void testTraceHeaders()
    {
        Harness h;
        h.ehlo();
        h.send("MAIL FROM:<alice@example.com>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n");
        std::string qid(h.s().queue_id());
        const std::string &t = h.rec->trace_at_data;
        CPPUNIT_ASSERT_MESSAGE(t, starts_with(t, "Return-Path: <alice@example.com>\r\nReceived: from "));
        CPPUNIT_ASSERT(!qid.empty());
        CPPUNIT_ASSERT_MESSAGE(t, t.find(qid) != std::string::npos);
        CPPUNIT_ASSERT_MESSAGE(t, t.find("client.example") != std::string::npos);
        CPPUNIT_ASSERT_MESSAGE(t, t.find("192.0.2.7") != std::string::npos);
        CPPUNIT_ASSERT_MESSAGE(t, t.find("by mx.example.org") != std::string::npos);
        CPPUNIT_ASSERT_MESSAGE(t, t.find("ESMTP") != std::string::npos);
        CPPUNIT_ASSERT(t.size() > 2 && t.substr(t.size() - 2) == "\r\n");
        // every line ends with CRLF, continuation lines are folded
        for (std::size_t i = 0; i < t.size(); ++i)
            if (t[i] == '\n')
                CPPUNIT_ASSERT(i > 0 && t[i - 1] == '\r');

        h.send("Subject: x\r\n\r\nhi\r\n.\r\n");
        CPPUNIT_ASSERT_EQUAL(t, h.rec->trace_at_eom);
    }

    void testQueueId()
    {
        Harness h;
        h.ehlo();
        CPPUNIT_ASSERT(h.s().queue_id().empty());
        h.send("MAIL FROM:<a@example.com>\r\n");
        std::string first(h.s().queue_id());
        CPPUNIT_ASSERT(!first.empty());
        for (char c : first)
            CPPUNIT_ASSERT(std::isupper(static_cast<unsigned char>(c)) || std::isdigit(static_cast<unsigned char>(c)));
        std::string out = h.send("RCPT TO:<b@example.org>\r\nDATA\r\nSubject: 1\r\n\r\none\r\n.\r\n");
        CPPUNIT_ASSERT(out.find("250 2.0.0 Ok: queued as " + first + "\r\n") != std::string::npos);

        h.send("MAIL FROM:<a@example.com>\r\n");
        std::string second(h.s().queue_id());
        CPPUNIT_ASSERT(!second.empty());
        CPPUNIT_ASSERT(first != second);
        out = h.send("RCPT TO:<b@example.org>\r\nDATA\r\nSubject: 2\r\n\r\ntwo\r\n.\r\n");
        CPPUNIT_ASSERT(out.find("250 2.0.0 Ok: queued as " + second + "\r\n") != std::string::npos);
        CPPUNIT_ASSERT_EQUAL(2u, h.s().messages_accepted());

        // outside a transaction it is empty again
        h.send("MAIL FROM:<a@example.com>\r\nRSET\r\n");
        CPPUNIT_ASSERT(h.s().queue_id().empty());
    }

    void testHandlerCommands()
    {
        Harness h;
        std::string err;
        h.cfg.commands = esmtp::CommandTable::compile({{"XHELLO", "^XHELLO (\\w+)$"}}, err);
        h.rec->replies["command"] = Reply(250, "hello");
        h.ehlo();
        CPPUNIT_ASSERT_EQUAL(std::string("250 2.0.0 hello\r\n"), h.send("XHELLO bob\r\n"));
        CPPUNIT_ASSERT_EQUAL(std::string("250 2.0.0 hello\r\n"), h.send("xhello Ann\r\n"));
        CPPUNIT_ASSERT(h.rec->command_names == (std::vector<std::string>{"XHELLO", "XHELLO"}));
        CPPUNIT_ASSERT_EQUAL(std::string("Ann"), h.rec->captures.at(1).at(1));
        CPPUNIT_ASSERT_EQUAL(std::string("500 5.5.2 Command unrecognized\r\n"), h.send("XHELLO two words\r\n"));
        CPPUNIT_ASSERT(h.rec->saw("unknown"));
        // HELP names it
        CPPUNIT_ASSERT(h.send("HELP\r\n").find(" XHELLO") != std::string::npos);
        // the handler's default for its commands
        h.rec->replies.erase("command");
        CPPUNIT_ASSERT_EQUAL(std::string("502 5.5.1 Command not implemented\r\n"), h.send("XHELLO x\r\n"));
    }

    void testEndFiresDisconnectOnce()
    {
        Harness h;
        h.ehlo();
        h.s().end();
        CPPUNIT_ASSERT_EQUAL(1, h.rec->disconnects);
        h.s().end();
        CPPUNIT_ASSERT_EQUAL(1, h.rec->disconnects);
        h.session.reset();
        CPPUNIT_ASSERT_EQUAL(1, h.rec->disconnects);
        CPPUNIT_ASSERT_EQUAL(std::string("disconnect"), h.rec->events.back());
        CPPUNIT_ASSERT_EQUAL(0, h.rec->aborts); // no transaction was open
    }

    void testEndMidDataAborts()
    {
        Harness h;
        h.ehlo();
        h.send("MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\nDATA\r\nSubject: cut\r\n\r\nhalf a mess");
        h.s().end();
        CPPUNIT_ASSERT(!h.rec->saw("eom"));
        CPPUNIT_ASSERT_EQUAL(1, h.rec->aborts);
        CPPUNIT_ASSERT_EQUAL(1, h.rec->disconnects);
        std::size_t n = h.rec->events.size();
        CPPUNIT_ASSERT(n >= 2);
        CPPUNIT_ASSERT_EQUAL(std::string("abort"), h.rec->events[n - 2]);
        CPPUNIT_ASSERT_EQUAL(std::string("disconnect"), h.rec->events[n - 1]);
        CPPUNIT_ASSERT_EQUAL(0u, h.s().messages_accepted());
    }

    void testDestructorFiresDisconnect()
    {
        Harness h;
        h.ehlo();
        h.send("MAIL FROM:<a@example.com>\r\n");
        h.session.reset();
        CPPUNIT_ASSERT_EQUAL(1, h.rec->disconnects);
        CPPUNIT_ASSERT_EQUAL(1, h.rec->aborts);
    }

    void testRefusedConnect()
    {
        Harness h;
        h.rec->connect_reply = Reply(554, "mx.example.org no service for you");
        std::string greeting = h.start();
        CPPUNIT_ASSERT_MESSAGE(greeting, starts_with(greeting, "554 "));
        CPPUNIT_ASSERT(greeting.find("no service for you\r\n") != std::string::npos);
        CPPUNIT_ASSERT(!h.s().closing());
        CPPUNIT_ASSERT_EQUAL(std::string("503 5.5.1 Error: access denied\r\n"), h.send("EHLO client.example\r\n"));
        CPPUNIT_ASSERT_EQUAL(std::string("503 5.5.1 Error: access denied\r\n"),
                             h.send("MAIL FROM:<a@example.com>\r\n"));
        CPPUNIT_ASSERT(!h.rec->saw("ehlo"));
        CPPUNIT_ASSERT(!h.rec->saw("mail"));
        CPPUNIT_ASSERT_EQUAL(std::string("221 2.0.0 Bye\r\n"), h.send("QUIT\r\n"));
        CPPUNIT_ASSERT(h.s().closing());
    }

    void testConnectThrows()
    {
        Harness h;
        h.rec->throw_in = "connect";
        std::string greeting = h.start();
        CPPUNIT_ASSERT_MESSAGE(greeting, starts_with(greeting, "421 "));
        CPPUNIT_ASSERT(h.s().closing());
    }

    void testShutdown()
    {
        Harness h;
        h.ehlo();
        h.s().shutdown(Reply(421, "mx.example.org Service shutting down", "4.3.2", true));
        CPPUNIT_ASSERT_EQUAL(std::string("421 4.3.2 mx.example.org Service shutting down\r\n"), h.take());
        CPPUNIT_ASSERT(h.s().closing());
        h.s().shutdown(Reply(421, "again", "4.3.2", true)); // ignored once closed
        CPPUNIT_ASSERT_EQUAL(std::string(""), h.take());
    }

    void testLogLevelSession()
    {
        Harness h;
        h.cfg.log_level = esmtp::txlog_session;
        h.ehlo();
        h.send(kTransaction);
        h.s().end();
        CPPUNIT_ASSERT(!h.log.records.empty());
        for (const auto &[level, record] : h.log.records) {
            CPPUNIT_ASSERT_MESSAGE(record, level <= esmtp::txlog_session);
            CPPUNIT_ASSERT_MESSAGE(record, record.find("RCPT TO:") == std::string::npos);
            CPPUNIT_ASSERT_MESSAGE(record, !record.empty() && record.back() == '\n');
            CPPUNIT_ASSERT_MESSAGE(record, record.find("[192.0.2.7]") != std::string::npos);
        }
    }

    void testLogLevelCommands()
    {
        Harness quiet;
        quiet.cfg.log_level = esmtp::txlog_session;
        quiet.ehlo();
        quiet.send(kTransaction);
        quiet.s().end();

        Harness h;
        h.cfg.log_level = esmtp::txlog_commands;
        h.ehlo();
        h.send(kTransaction);
        h.s().end();
        bool command_records = false, rcpt_seen = false;
        for (const auto &[level, record] : h.log.records) {
            CPPUNIT_ASSERT_MESSAGE(record, level <= esmtp::txlog_commands);
            if (level == esmtp::txlog_commands)
                command_records = true;
            if (record.find("RCPT TO:<bob@example.org>") != std::string::npos)
                rcpt_seen = true;
        }
        CPPUNIT_ASSERT(command_records);
        CPPUNIT_ASSERT(rcpt_seen);
        CPPUNIT_ASSERT(h.log.records.size() > quiet.log.records.size());

        Harness off;
        off.cfg.log_level = esmtp::txlog_off;
        off.ehlo();
        off.send(kTransaction);
        off.s().end();
        CPPUNIT_ASSERT(off.log.records.empty());
    }
};

CPPUNIT_TEST_SUITE_REGISTRATION(SessionTest);

// The defects of issue 8 that live in the session, each with its test.
class SessionDefectsTest : public CppUnit::TestFixture
{
    CPPUNIT_TEST_SUITE(SessionDefectsTest);
    CPPUNIT_TEST(testBdatUnparsableCloses);
    CPPUNIT_TEST(testBdatTabSeparator);
    CPPUNIT_TEST(testRecipientOvershootIsNoError);
    CPPUNIT_TEST(testBdatBareLineFeed);
    CPPUNIT_TEST(testEhloAndMailInOneWrite);
    CPPUNIT_TEST(testJunkCounterResetsAfterDelivery);
    CPPUNIT_TEST(testHeloEhloMailAreJunk);
    CPPUNIT_TEST(testHandler451AtConnect);
    CPPUNIT_TEST(testHelpListsOfferedVerbs);
    CPPUNIT_TEST(testProtocolOverTls);
    CPPUNIT_TEST(testInvalidCodeForRcpt);
    CPPUNIT_TEST(testEnhancedClassMismatch);
    CPPUNIT_TEST(testInvalidGreeting);
    CPPUNIT_TEST(testInvalidDataAndEomReplies);
    CPPUNIT_TEST(testAbortAfterRefusedEom);
    CPPUNIT_TEST(testTransferOctets);
    CPPUNIT_TEST(testTransitionsLogged);
    CPPUNIT_TEST(testAbortLogged);
    CPPUNIT_TEST(testAbortedContentIsATxState);
    CPPUNIT_TEST_SUITE_END();

    static std::string bdat(const std::string &chunk, bool last = false)
    {
        return "BDAT " + std::to_string(chunk.size()) + (last ? " LAST" : "") + "\r\n" + chunk;
    }

  public:
    // #2: the framing is lost; the octets that follow must not run as commands.
    void testBdatUnparsableCloses()
    {
        for (std::string bad : {"BDAT 9999999999999999999 LAST", "BDAT 3 LAST LAST", "BDAT -1", "BDAT", "BDAT 3x"}) {
            Harness h;
            h.ehlo();
            h.send("MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\n");
            std::string out = h.send(bad + "\r\nRSET\r\nMAIL FROM:<c@example.com>\r\n");
            CPPUNIT_ASSERT_MESSAGE(bad + ": " + out, starts_with(out, "521 5.5.4 "));
            CPPUNIT_ASSERT_MESSAGE(bad + ": " + out, out.find("250") == std::string::npos);
            CPPUNIT_ASSERT_MESSAGE(bad, h.s().closing());
            CPPUNIT_ASSERT_MESSAGE(bad, !h.rec->saw("rset"));
        }
    }

    // #2: Postfix takes a tab between the BDAT arguments.
    void testBdatTabSeparator()
    {
        Harness h;
        h.ehlo();
        h.send("MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\n");
        std::string out = h.send("BDAT 6\tLAST\r\nx: y\r\n");
        CPPUNIT_ASSERT_MESSAGE(out, starts_with(out, "250 2.0.0 Ok: queued as "));
        CPPUNIT_ASSERT_EQUAL(1u, h.s().messages_accepted());
    }

    // #3: 452 for recipients beyond ESMTPMaxRecipients is no client error.
    void testRecipientOvershootIsNoError()
    {
        Harness h;
        h.ehlo();
        h.send("MAIL FROM:<a@example.com>\r\n");
        std::string all;
        for (int i = 1; i <= 130; ++i)
            all += "RCPT TO:<r" + std::to_string(i) + "@example.org>\r\n";
        auto l = lines_of(h.send(all));
        CPPUNIT_ASSERT_EQUAL(std::size_t(130), l.size());
        CPPUNIT_ASSERT_EQUAL(std::string("250 2.1.5 Ok"), l[99]);
        CPPUNIT_ASSERT_EQUAL(std::string("452 4.5.3 Error: too many recipients"), l[129]);
        CPPUNIT_ASSERT(!h.s().closing());
        CPPUNIT_ASSERT_EQUAL(std::string("354 End data with <CR><LF>.<CR><LF>\r\n"), h.send("DATA\r\n"));
    }

    // #4: bare LF in BDAT content is the documented 550 5.5.2, not 451.
    void testBdatBareLineFeed()
    {
        Harness h;
        h.ehlo();
        h.send("MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\n");
        std::string out = h.send(bdat("Subject: x\r\n\r\nbare\nlf\r\n", true));
        CPPUNIT_ASSERT_MESSAGE(out, starts_with(out, "550 5.5.2 "));
        CPPUNIT_ASSERT_EQUAL(0u, h.s().messages_accepted());
        CPPUNIT_ASSERT_EQUAL(0, h.rec->count("eom"));
    }

    // #5: the client had not seen PIPELINING when it sent MAIL with EHLO.
    void testEhloAndMailInOneWrite()
    {
        Harness h;
        h.start();
        std::string out = h.send("EHLO client.example\r\nMAIL FROM:<a@example.com>\r\n");
        CPPUNIT_ASSERT_MESSAGE(out,
                               out.find("554 5.5.0 Error: SMTP protocol synchronization\r\n") != std::string::npos);
        CPPUNIT_ASSERT(h.s().closing());
        CPPUNIT_ASSERT(!h.rec->saw("mail"));
    }

    // #6: a reused connection that delivers keeps its junk budget.
    void testJunkCounterResetsAfterDelivery()
    {
        Harness h;
        h.ehlo();
        for (int m = 0; m < 5; ++m) {
            std::string in;
            for (int i = 0; i < 40; ++i)
                in += "RSET\r\n";
            in += "MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\nDATA\r\nSubject: x\r\n\r\nhi\r\n.\r\n";
            std::string out = h.send(in);
            CPPUNIT_ASSERT_MESSAGE(out, out.find("421") == std::string::npos);
        }
        CPPUNIT_ASSERT_EQUAL(5u, h.s().messages_accepted());
        CPPUNIT_ASSERT(!h.s().closing());
    }

    // #6: HELO, EHLO and MAIL without delivery count toward the junk limit.
    void testHeloEhloMailAreJunk()
    {
        Harness h;
        h.ehlo();
        std::string out;
        for (int i = 0; i < 10000 && !h.s().closing(); ++i)
            out = h.send("EHLO client.example\r\nMAIL FROM:<a@example.com>\r\n");
        CPPUNIT_ASSERT(h.s().closing());
        CPPUNIT_ASSERT_MESSAGE(out,
                               out.find("421 4.7.0 mx.example.org Error: too many commands\r\n") != std::string::npos);

        Harness helo;
        helo.helo();
        for (int i = 0; i < 200 && !helo.s().closing(); ++i)
            out = helo.send("HELO client.example\r\n");
        CPPUNIT_ASSERT(helo.s().closing());
    }

    // #7: a handler's own 451 4.3.0 is a refusal, not a handler failure. A
    // greeting is 220, 554 or 421 (RFC 5321 4.3.2): the 451 goes out as a
    // 421 with its text and the connection closes; a 550 as a 554.
    void testHandler451AtConnect()
    {
        Harness h;
        h.rec->connect_reply = Reply(451, "try again later", "4.3.0");
        CPPUNIT_ASSERT_EQUAL(std::string("421 try again later\r\n"), h.start()); // greetings carry no enhanced code
        CPPUNIT_ASSERT(h.s().closing());
        CPPUNIT_ASSERT(!h.rec->saw("ehlo"));
        Harness p;
        p.rec->connect_reply = Reply(550, "go away", "5.7.1");
        CPPUNIT_ASSERT_EQUAL(std::string("554 go away\r\n"), p.start());
        CPPUNIT_ASSERT(!p.s().closing());
        CPPUNIT_ASSERT_EQUAL(std::string("503 5.5.1 Error: access denied\r\n"), p.send("EHLO client.example\r\n"));
        CPPUNIT_ASSERT_EQUAL(std::string("221 2.0.0 Bye\r\n"), p.send("QUIT\r\n"));
    }

    // #16: HELP names the verbs this server offers.
    void testHelpListsOfferedVerbs()
    {
        Harness h;
        h.ehlo();
        std::string help = h.send("HELP\r\n");
        CPPUNIT_ASSERT_MESSAGE(help, help.find(" BDAT") != std::string::npos);
        CPPUNIT_ASSERT_MESSAGE(help, help.find(" VRFY") != std::string::npos);
        CPPUNIT_ASSERT_MESSAGE(help, help.find("EXPN") == std::string::npos); // its default is 502
        Harness off;
        off.cfg.extensions &= ~esmtp::ext_chunking;
        off.ehlo();
        help = off.send("HELP\r\n");
        CPPUNIT_ASSERT_MESSAGE(help, help.find("BDAT") == std::string::npos);
        CPPUNIT_ASSERT_MESSAGE(help, help.find(" DATA") != std::string::npos);
    }

    // #15: RFC 3848 / RFC 6531 "with" keywords over TLS.
    void testProtocolOverTls()
    {
        Harness h;
        h.conn.tls = true;
        h.start();
        h.send("HELO client.example\r\n");
        // no keyword is registered for HELO over TLS
        CPPUNIT_ASSERT_EQUAL(std::string("SMTP"), std::string(h.s().protocol()));
        h.send("EHLO client.example\r\n");
        CPPUNIT_ASSERT_EQUAL(std::string("ESMTPS"), std::string(h.s().protocol()));
        h.send("MAIL FROM:<a@example.com> SMTPUTF8\r\n");
        CPPUNIT_ASSERT_EQUAL(std::string("UTF8SMTPS"), std::string(h.s().protocol()));
        Harness plain;
        plain.ehlo();
        plain.send("MAIL FROM:<a@example.com> SMTPUTF8\r\n");
        CPPUNIT_ASSERT_EQUAL(std::string("UTF8SMTP"), std::string(plain.s().protocol()));
    }

    // Reply validation: 354 is no RCPT reply; the recipient is not added.
    void testInvalidCodeForRcpt()
    {
        Harness h;
        h.rec->rcpt_replies["odd@example.org"] = Reply(354, "go ahead");
        h.ehlo();
        h.send("MAIL FROM:<a@example.com>\r\n");
        CPPUNIT_ASSERT_EQUAL(std::string("451 4.3.0 Internal error; try again later\r\n"),
                             h.send("RCPT TO:<odd@example.org>\r\n"));
        CPPUNIT_ASSERT(h.s().envelope().recipients.empty());
        CPPUNIT_ASSERT(h.log.has("354"));
        CPPUNIT_ASSERT(!h.log.errors.empty());
    }

    // Reply validation: 550 with a success enhanced code is not sent.
    void testEnhancedClassMismatch()
    {
        Harness h;
        h.rec->rcpt_replies["x@example.org"] = Reply(550, "no", "2.1.5");
        h.ehlo();
        h.send("MAIL FROM:<a@example.com>\r\n");
        CPPUNIT_ASSERT_EQUAL(std::string("451 4.3.0 Internal error; try again later\r\n"),
                             h.send("RCPT TO:<x@example.org>\r\n"));
        CPPUNIT_ASSERT(h.s().envelope().recipients.empty());
        // and a 250 with a 5.x.x code from a harmless event gets the default
        h.rec->replies["noop"] = Reply(250, "fine", "5.0.0");
        CPPUNIT_ASSERT_EQUAL(std::string("250 2.0.0 Ok\r\n"), h.send("NOOP\r\n"));
    }

    // Reply validation: a greeting is 220, 4xx or 5xx.
    void testInvalidGreeting()
    {
        Harness h;
        h.rec->connect_reply = Reply(250, "hello");
        CPPUNIT_ASSERT_EQUAL(std::string("220 mx.example.org ESMTP mod_esmtp\r\n"), h.start());
        CPPUNIT_ASSERT(h.log.has("250"));
        CPPUNIT_ASSERT_EQUAL(std::string("250 mx.example.org\r\n"), h.send("HELO client.example\r\n"));
    }

    // Reply validation: DATA answers 354 (or refuses), EOM never 354.
    void testInvalidDataAndEomReplies()
    {
        Harness h;
        h.rec->replies["data"] = Reply(250, "ok?");
        h.ehlo();
        h.send("MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\n");
        CPPUNIT_ASSERT_EQUAL(std::string("451 4.3.0 Internal error; try again later\r\n"), h.send("DATA\r\n"));
        CPPUNIT_ASSERT(h.s().phase() == Session::Phase::command);
        h.rec->replies["data"] = Reply();
        h.rec->replies["eom"] = Reply(354, "more?");
        h.send("DATA\r\n");
        CPPUNIT_ASSERT_EQUAL(std::string("451 4.3.0 Internal error; try again later\r\n"),
                             h.send("Subject: x\r\n\r\nhi\r\n.\r\n"));
        CPPUNIT_ASSERT_EQUAL(0u, h.s().messages_accepted());
        CPPUNIT_ASSERT_EQUAL(1, h.rec->aborts);
    }

    // The abort() rule: a refused eom() is followed by abort(), once.
    void testAbortAfterRefusedEom()
    {
        Harness h;
        h.rec->replies["eom"] = Reply(554, "no thanks", "5.7.1");
        h.ehlo();
        std::string out = h.send(
            "MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\nDATA\r\nSubject: x\r\n\r\nhi\r\n.\r\nRSET\r\n");
        CPPUNIT_ASSERT_MESSAGE(out, out.find("554 5.7.1 no thanks\r\n") != std::string::npos);
        CPPUNIT_ASSERT_EQUAL(1, h.rec->aborts);
        CPPUNIT_ASSERT_EQUAL(std::string("eom abort rset"),
                             h.rec->event_string().substr(h.rec->event_string().size() - 14));
    }

    // #13: the octets of a refused BDAT chunk being swallowed count for
    // ESMTPMinDataRate, as do DATA's and accepted chunks'.
    void testTransferOctets()
    {
        Harness h;
        h.ehlo();
        CPPUNIT_ASSERT_EQUAL(std::string(""), h.send("BDAT 1000\r\n" + std::string(400, 'x')));
        CPPUNIT_ASSERT(h.s().phase() == Session::Phase::bdat);
        CPPUNIT_ASSERT_EQUAL(std::uint64_t(400), h.s().transfer_octets());
        CPPUNIT_ASSERT_EQUAL(std::uint64_t(0), h.s().message_size()); // nothing is stored
        CPPUNIT_ASSERT_EQUAL(std::string("503 5.5.1 Error: need MAIL command\r\n"), h.send(std::string(600, 'x')));
        CPPUNIT_ASSERT_EQUAL(std::uint64_t(1000), h.s().transfer_octets());

        h.send("MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n");
        CPPUNIT_ASSERT_EQUAL(std::uint64_t(0), h.s().transfer_octets());
        h.send("Subject: x\r\n\r\n..");
        CPPUNIT_ASSERT_EQUAL(std::uint64_t(16), h.s().transfer_octets());
        h.send("\r\n.\r\n");
        CPPUNIT_ASSERT_EQUAL(1u, h.s().messages_accepted());
        h.send("MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\nBDAT 10\r\n12345");
        CPPUNIT_ASSERT_EQUAL(std::uint64_t(5), h.s().transfer_octets());
    }

    // `input` after EHLO at ESMTPLogLevel 3; every record holding `marker`
    // must be at that level.
    static void sendLoggingEvents(Harness &h, const std::string &input, std::string_view marker)
    {
        h.cfg.log_level = esmtp::log_events;
        h.ehlo();
        h.send(input);
        for (const auto &[level, record] : h.log.records)
            if (record.find(marker) != std::string::npos)
                CPPUNIT_ASSERT_EQUAL(int(esmtp::log_events), level);
    }

    // Every state change goes through transit(), logged at level events.
    void testTransitionsLogged()
    {
        Harness h;
        sendLoggingEvents(
            h, "MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\nDATA\r\nSubject: x\r\n\r\nhi\r\n.\r\n",
            "transit [");
        CPPUNIT_ASSERT(h.log.has("transit [EHLO] command/none/none -> command/ehlo/none"));
        CPPUNIT_ASSERT(h.log.has("transit [MAIL] command/ehlo/none -> command/ehlo/mail"));
        CPPUNIT_ASSERT(h.log.has("transit [RCPT] command/ehlo/mail -> command/ehlo/rcpt"));
        CPPUNIT_ASSERT(h.log.has("transit [DATA] command/ehlo/rcpt -> data/ehlo/data"));
        CPPUNIT_ASSERT(h.log.has("-> command/ehlo/none"));
    }

    // Issue 25: ABORT was the one handler event missing from the log at
    // level events.
    void testAbortLogged()
    {
        Harness h;
        sendLoggingEvents(h, "MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\nRSET\r\n", "event ABORT");
        CPPUNIT_ASSERT(h.log.has("event RCPT"));
        CPPUNIT_ASSERT(h.log.has("event ABORT"));
    }

    // Issue 20: "abort() already sent" is the transaction state Tx::aborted,
    // entered through transit(): the rest of the content is swallowed, its
    // end is refused and no second abort() follows, for DATA and for BDAT.
    void testAbortedContentIsATxState()
    {
        Harness h;
        h.cfg.limits.max_message_size = 100;
        h.cfg.log_level = esmtp::log_events;
        h.ehlo();
        h.send("MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\nDATA\r\nSubject: x\r\n\r\n" +
               std::string(200, 'x') + "\r\n");
        CPPUNIT_ASSERT(h.s().state().tx == esmtp::Tx::aborted);
        CPPUNIT_ASSERT(h.s().phase() == Session::Phase::data);
        CPPUNIT_ASSERT(h.log.has("transit [content refused] data/ehlo/data -> data/ehlo/aborted"));
        CPPUNIT_ASSERT_EQUAL(1, h.rec->aborts);
        std::string out = h.send(std::string(200, 'y') + "\r\n.\r\n");
        CPPUNIT_ASSERT_MESSAGE(out, starts_with(out, "552 5.3.4 "));
        CPPUNIT_ASSERT(h.s().state().tx == esmtp::Tx::none);
        CPPUNIT_ASSERT_EQUAL(1, h.rec->aborts);

        Harness b;
        b.cfg.limits.max_message_size = 100;
        b.cfg.log_level = esmtp::log_events;
        b.ehlo();
        b.send("MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\n");
        out = b.send(bdat(std::string(150, 'x')));
        CPPUNIT_ASSERT_MESSAGE(out, starts_with(out, "552 5.3.4 "));
        CPPUNIT_ASSERT(b.log.has("transit [content refused] command/ehlo/bdat -> command/ehlo/aborted"));
        CPPUNIT_ASSERT(b.s().state().tx == esmtp::Tx::none);
        CPPUNIT_ASSERT_EQUAL(1, b.rec->aborts);
    }
};

CPPUNIT_TEST_SUITE_REGISTRATION(SessionDefectsTest);
