// STARTTLS in the engine (issue 9): the verb, its table rows, the session
// starting over after the handshake, CVE-2011-0411, ESMTPStartTLS Required,
// the TLS facts in Received: and SessionView::tls(); SHA-256 for client
// certificate fingerprints.

#include "engine/sha256.hpp"
#include "session_harness.hpp"

#include <cppunit/extensions/HelperMacros.h>

#include <string>

using esmtp::StartTls;
using esmtp::TlsInfo;
using esmtp::test::Harness;

namespace
{

TlsInfo tls13()
{
    TlsInfo t;
    t.protocol = "TLSv1.3";
    t.cipher = "TLS_AES_256_GCM_SHA384";
    t.bits = 256;
    t.alg_bits = 256;
    t.sni = "mx.example.org";
    return t;
}

bool has(const std::string &out, const std::string &what)
{
    return out.find(what) != std::string::npos;
}

} // namespace

class StartTlsTest : public CppUnit::TestFixture
{
    CPPUNIT_TEST_SUITE(StartTlsTest);
    CPPUNIT_TEST(testOffIsNotOffered);
    CPPUNIT_TEST(testOnAdvertisedAndAnswered);
    CPPUNIT_TEST(testSessionStartsOver);
    CPPUNIT_TEST(testArgumentsAndTransaction);
    CPPUNIT_TEST(testPipelinedCommandsDiscarded);
    CPPUNIT_TEST(testPipelinedAfterHeloDiscardedWithoutViolation);
    CPPUNIT_TEST(testOneWriteWithEhloWhenPipeliningAllowed);
    CPPUNIT_TEST(testPartialLineAfterStartTlsDiscarded);
    CPPUNIT_TEST(testRequired);
    CPPUNIT_TEST(testRequiredBdatSwallowsChunk);
    CPPUNIT_TEST(testHandshakeFailedClosesSilently);
    CPPUNIT_TEST(testReceivedCarriesTls);
    CPPUNIT_TEST(testImplicitTlsNotOffered);
    CPPUNIT_TEST(testHelp);
    CPPUNIT_TEST(testUnavailableNotOffered);
    CPPUNIT_TEST(testUnavailableRequired);
    CPPUNIT_TEST(testCommandTableMatchesLongVerb);
    CPPUNIT_TEST(testSha256);
    CPPUNIT_TEST_SUITE_END();

  public:
    void testOffIsNotOffered()
    {
        Harness h;
        h.start();
        std::string ehlo = h.send("EHLO client.example\r\n");
        CPPUNIT_ASSERT_MESSAGE(ehlo, !has(ehlo, "STARTTLS"));
        CPPUNIT_ASSERT_EQUAL(std::string("502 5.5.1 Error: command not implemented\r\n"), h.send("STARTTLS\r\n"));
        CPPUNIT_ASSERT(!h.s().tls_requested());
    }

    void testOnAdvertisedAndAnswered()
    {
        Harness h;
        h.cfg.starttls = StartTls::on;
        h.start();
        std::string ehlo = h.send("EHLO client.example\r\n");
        CPPUNIT_ASSERT_MESSAGE(ehlo, has(ehlo, "250-STARTTLS\r\n") || has(ehlo, "250 STARTTLS\r\n"));
        CPPUNIT_ASSERT_EQUAL(std::string("220 2.0.0 Ready to start TLS\r\n"), h.send("STARTTLS\r\n"));
        CPPUNIT_ASSERT(h.s().tls_requested());
        CPPUNIT_ASSERT(!h.s().tls().active);
    }

    // RFC 3207 4.2: after the handshake the client starts over.
    void testSessionStartsOver()
    {
        Harness h;
        h.cfg.starttls = StartTls::on;
        h.start();
        h.send("EHLO client.example\r\n");
        h.send("STARTTLS\r\n");
        h.s().plaintext_discarded(0);
        h.s().tls_started(tls13());
        CPPUNIT_ASSERT(!h.s().tls_requested());
        CPPUNIT_ASSERT(h.s().tls().active);
        CPPUNIT_ASSERT_EQUAL(std::string("TLSv1.3"), h.s().tls().protocol);
        CPPUNIT_ASSERT_EQUAL(std::string("mx.example.org"), h.s().tls().sni);
        CPPUNIT_ASSERT(h.s().helo_name().empty());
        CPPUNIT_ASSERT_EQUAL(std::string("503 5.5.1 Error: send HELO/EHLO first\r\n"),
                             h.send("MAIL FROM:<a@example.com>\r\n"));
        std::string ehlo = h.send("EHLO again.example\r\n");
        CPPUNIT_ASSERT_MESSAGE(ehlo, ehlo.rfind("250-mx.example.org\r\n", 0) == 0);
        CPPUNIT_ASSERT_MESSAGE(ehlo, !has(ehlo, "STARTTLS"));
        CPPUNIT_ASSERT_EQUAL(std::string("ESMTPS"), std::string(h.s().protocol()));
        CPPUNIT_ASSERT_EQUAL(std::string("503 5.5.1 Error: TLS already active\r\n"), h.send("STARTTLS\r\n"));
        CPPUNIT_ASSERT(h.log.has("STARTTLS: TLSv1.3 cipher=TLS_AES_256_GCM_SHA384 bits=256/256 sni=mx.example.org"));
    }

    void testArgumentsAndTransaction()
    {
        Harness h;
        h.cfg.starttls = StartTls::on;
        h.ehlo();
        CPPUNIT_ASSERT_EQUAL(std::string("501 5.5.4 Syntax: STARTTLS\r\n"), h.send("STARTTLS now\r\n"));
        h.send("MAIL FROM:<a@example.com>\r\n");
        CPPUNIT_ASSERT_EQUAL(std::string("503 5.5.1 Error: MAIL transaction in progress\r\n"), h.send("STARTTLS\r\n"));
        CPPUNIT_ASSERT(!h.s().tls_requested());
        CPPUNIT_ASSERT(h.s().in_transaction());
    }

    // CVE-2011-0411: commands in the same packet as STARTTLS never run.
    void testPipelinedCommandsDiscarded()
    {
        Harness h;
        h.cfg.starttls = StartTls::on;
        h.start();
        h.send("EHLO x\r\n");
        std::string out = h.send("STARTTLS\r\nRSET\r\nMAIL FROM:<a@example.com>\r\n");
        CPPUNIT_ASSERT_EQUAL(std::string("220 2.0.0 Ready to start TLS\r\n"), out);
        CPPUNIT_ASSERT(!h.rec->saw("rset"));
        CPPUNIT_ASSERT(!h.rec->saw("mail"));
        // more plaintext before the handshake (the glue feeds none; if it did)
        CPPUNIT_ASSERT_EQUAL(std::string(), h.send("NOOP\r\n"));
        h.s().plaintext_discarded(4);
        CPPUNIT_ASSERT(h.log.has("discarded 43 octets sent after STARTTLS"));
        h.s().tls_started(tls13());
        CPPUNIT_ASSERT_EQUAL(std::string(), h.take());
        std::string ehlo = h.send("EHLO y\r\n");
        CPPUNIT_ASSERT_MESSAGE(ehlo, ehlo.rfind("250-mx.example.org\r\n", 0) == 0);
        CPPUNIT_ASSERT(!h.rec->saw("rset"));
    }

    // A HELO session may not pipeline, but what follows STARTTLS is
    // discarded, not a synchronization error.
    void testPipelinedAfterHeloDiscardedWithoutViolation()
    {
        Harness h;
        h.cfg.starttls = StartTls::on;
        h.helo();
        CPPUNIT_ASSERT_EQUAL(std::string("220 Ready to start TLS\r\n"), h.send("STARTTLS\r\nRSET\r\n"));
        CPPUNIT_ASSERT(h.s().tls_requested());
        CPPUNIT_ASSERT(!h.s().closing());
    }

    // ESMTPForbidUnauthPipelining Off: EHLO, STARTTLS and RSET in one
    // write; EHLO and STARTTLS are answered, RSET is not.
    void testOneWriteWithEhloWhenPipeliningAllowed()
    {
        Harness h;
        h.cfg.starttls = StartTls::on;
        h.cfg.forbid_unauth_pipelining = false;
        h.start();
        std::string out = h.send("EHLO x\r\nSTARTTLS\r\nRSET\r\n");
        CPPUNIT_ASSERT_MESSAGE(out, out.rfind("250-mx.example.org\r\n", 0) == 0);
        CPPUNIT_ASSERT_MESSAGE(out, out.ends_with("\r\n220 2.0.0 Ready to start TLS\r\n"));
        CPPUNIT_ASSERT(!h.rec->saw("rset"));
        // with the default (On) the same write is a synchronization error
        Harness d;
        d.cfg.starttls = StartTls::on;
        d.start();
        out = d.send("EHLO x\r\nSTARTTLS\r\nRSET\r\n");
        CPPUNIT_ASSERT_MESSAGE(out, has(out, "554 5.5.0"));
        CPPUNIT_ASSERT(!d.s().tls_requested());
    }

    // Half a command after STARTTLS is dropped too: it must not be
    // completed by the first octets after the handshake.
    void testPartialLineAfterStartTlsDiscarded()
    {
        Harness h;
        h.cfg.starttls = StartTls::on;
        h.ehlo();
        CPPUNIT_ASSERT_EQUAL(std::string("220 2.0.0 Ready to start TLS\r\n"), h.send("STARTTLS\r\nRS"));
        h.s().plaintext_discarded(0);
        CPPUNIT_ASSERT(h.log.has("discarded 2 octets"));
        h.s().tls_started(tls13());
        CPPUNIT_ASSERT(!h.s().has_partial_input());
        // "ET\r\n" alone is no RSET
        CPPUNIT_ASSERT_EQUAL(std::string("500 5.5.2 Command unrecognized\r\n"), h.send("ET\r\n"));
        CPPUNIT_ASSERT(!h.rec->saw("rset"));
    }

    void testRequired()
    {
        Harness h;
        h.cfg.starttls = StartTls::required;
        h.start();
        const std::string must = "530 5.7.0 Must issue a STARTTLS command first\r\n";
        CPPUNIT_ASSERT_EQUAL(must, h.send("MAIL FROM:<a@example.com>\r\n"));
        h.send("EHLO client.example\r\n");
        CPPUNIT_ASSERT_EQUAL(must, h.send("MAIL FROM:<a@example.com>\r\n"));
        CPPUNIT_ASSERT_EQUAL(must, h.send("RCPT TO:<b@example.org>\r\n"));
        CPPUNIT_ASSERT_EQUAL(must, h.send("DATA\r\n"));
        CPPUNIT_ASSERT_EQUAL(std::string("250 2.0.0 Ok\r\n"), h.send("NOOP\r\n"));
        CPPUNIT_ASSERT(!h.rec->saw("mail"));
        h.send("STARTTLS\r\n");
        h.s().tls_started(tls13());
        h.send("EHLO client.example\r\n");
        std::string mail = h.send("MAIL FROM:<a@example.com>\r\n");
        CPPUNIT_ASSERT_MESSAGE(mail, mail.rfind("250 ", 0) == 0);
        std::string rcpt = h.send("RCPT TO:<b@example.org>\r\n");
        CPPUNIT_ASSERT_MESSAGE(rcpt, rcpt.rfind("250 ", 0) == 0);
    }

    void testRequiredBdatSwallowsChunk()
    {
        Harness h;
        h.cfg.starttls = StartTls::required;
        h.ehlo();
        CPPUNIT_ASSERT_EQUAL(std::string("530 5.7.0 Must issue a STARTTLS command first\r\n"),
                             h.send("BDAT 12 LAST\r\nNOOP\r\nNOOP\r\n"));
        CPPUNIT_ASSERT_EQUAL(std::string("250 2.0.0 Ok\r\n"), h.send("NOOP\r\n"));
    }

    void testHandshakeFailedClosesSilently()
    {
        Harness h;
        h.cfg.starttls = StartTls::on;
        h.ehlo();
        h.send("STARTTLS\r\n");
        h.s().tls_failed("timeout");
        CPPUNIT_ASSERT(h.s().closing());
        CPPUNIT_ASSERT_EQUAL(std::string(), h.take());
        CPPUNIT_ASSERT(h.log.has("TLS handshake failed: timeout"));
    }

    void testReceivedCarriesTls()
    {
        Harness h;
        h.cfg.starttls = StartTls::on;
        h.ehlo();
        h.send("STARTTLS\r\n");
        h.s().tls_started(tls13());
        h.send("EHLO client.example\r\n");
        std::string trace;
        auto replies = h.transaction("a@example.com", {"b@example.org"}, "Subject: x\r\n\r\nhi\r\n", &trace);
        CPPUNIT_ASSERT_MESSAGE(replies.back(), replies.back().rfind("250 ", 0) == 0);
        CPPUNIT_ASSERT_MESSAGE(trace, has(trace, "])\r\n\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 "
                                                 "(256/256 bits))\r\n\tby mx.example.org (mod_esmtp) with ESMTPS id "));
        CPPUNIT_ASSERT(h.log.has("tls=TLSv1.3 cipher=TLS_AES_256_GCM_SHA384"));
        // plaintext: no clause
        Harness p;
        p.ehlo();
        p.transaction("a@example.com", {"b@example.org"}, "Subject: x\r\n\r\nhi\r\n", &trace);
        CPPUNIT_ASSERT_MESSAGE(trace, !has(trace, "using"));
    }

    // SSLEngine on with ESMTPStartTLS Off: TLS from the start, nothing offered.
    void testImplicitTlsNotOffered()
    {
        Harness h;
        h.cfg.starttls = StartTls::on;
        h.conn.tls = true;
        h.conn.tls_info = tls13();
        h.conn.tls_info.active = true;
        h.start();
        CPPUNIT_ASSERT(h.log.has("connect from 192.0.2.7[192.0.2.7]:40000 tls=TLSv1.3"));
        std::string ehlo = h.send("EHLO client.example\r\n");
        CPPUNIT_ASSERT_MESSAGE(ehlo, !has(ehlo, "STARTTLS"));
        CPPUNIT_ASSERT_EQUAL(std::string("503 5.5.1 Error: TLS already active\r\n"), h.send("STARTTLS\r\n"));
    }

    void testHelp()
    {
        Harness h;
        h.cfg.starttls = StartTls::on;
        h.ehlo();
        std::string help = h.send("HELP\r\n");
        CPPUNIT_ASSERT_MESSAGE(help, has(help, " STARTTLS"));
        h.send("STARTTLS\r\n");
        h.s().tls_started(tls13());
        help = h.send("HELP\r\n");
        CPPUNIT_ASSERT_MESSAGE(help, !has(help, "STARTTLS"));
        Harness off;
        off.ehlo();
        help = off.send("HELP\r\n");
        CPPUNIT_ASSERT_MESSAGE(help, !has(help, "STARTTLS"));
    }

    // The certificate is a stand-in (mod_md's fallback before its first
    // certificate): STARTTLS is neither advertised nor accepted, plaintext
    // mail goes on.
    void testUnavailableNotOffered()
    {
        Harness h;
        h.cfg.starttls = StartTls::on;
        h.conn.tls_unavailable = true;
        h.start();
        std::string ehlo = h.send("EHLO client.example\r\n");
        CPPUNIT_ASSERT_MESSAGE(ehlo, ehlo.rfind("250-", 0) == 0 && !has(ehlo, "STARTTLS"));
        CPPUNIT_ASSERT_EQUAL(std::string("454 4.7.0 TLS not available due to temporary reason\r\n"),
                             h.send("STARTTLS\r\n"));
        std::string help = h.send("HELP\r\n");
        CPPUNIT_ASSERT_MESSAGE(help, !has(help, "STARTTLS"));
        auto replies = h.transaction("a@example.com", {"b@example.org"}, "Subject: x\r\n\r\nhi\r\n");
        CPPUNIT_ASSERT_MESSAGE(replies.back(), replies.back().rfind("250 ", 0) == 0);
        CPPUNIT_ASSERT(!h.s().closing());
    }

    // Required with a stand-in certificate: a temporary failure (the sender
    // retries), not Required's 530.
    void testUnavailableRequired()
    {
        Harness h;
        h.cfg.starttls = StartTls::required;
        h.conn.tls_unavailable = true;
        h.ehlo();
        const std::string later = "454 4.7.0 TLS not available due to temporary reason\r\n";
        CPPUNIT_ASSERT_EQUAL(later, h.send("MAIL FROM:<a@example.com>\r\n"));
        CPPUNIT_ASSERT_EQUAL(later, h.send("STARTTLS\r\n"));
        CPPUNIT_ASSERT_EQUAL(std::string("250 2.0.0 Ok\r\n"), h.send("NOOP\r\n"));
        CPPUNIT_ASSERT(!h.rec->saw("mail"));
    }

    void testCommandTableMatchesLongVerb()
    {
        using esmtp::CommandTable;
        using esmtp::Verb;
        CPPUNIT_ASSERT(CommandTable::match(nullptr, "STARTTLS").verb == Verb::starttls);
        CPPUNIT_ASSERT(CommandTable::match(nullptr, "starttls").verb == Verb::starttls);
        auto m = CommandTable::match(nullptr, "StartTLS  x ");
        CPPUNIT_ASSERT(m.verb == Verb::starttls);
        CPPUNIT_ASSERT_EQUAL(std::string("x"), std::string(m.argument));
        CPPUNIT_ASSERT(CommandTable::match(nullptr, "STARTTLSX").verb == Verb::unknown);
        CPPUNIT_ASSERT(CommandTable::match(nullptr, "START").verb == Verb::unknown);
        CPPUNIT_ASSERT(CommandTable::match(nullptr, "MAIL FROM:<a@b>").verb == Verb::mail);
        CPPUNIT_ASSERT(CommandTable::match(nullptr, "MAILX").verb == Verb::unknown);
    }

    void testSha256()
    {
        CPPUNIT_ASSERT_EQUAL(std::string("E3:B0:C4:42:98:FC:1C:14:9A:FB:F4:C8:99:6F:B9:24:27:AE:41:E4:64:9B:93:4C:A4:"
                                         "95:99:1B:78:52:B8:55"),
                             esmtp::sha256_fingerprint(""));
        CPPUNIT_ASSERT_EQUAL(std::string("BA:78:16:BF:8F:01:CF:EA:41:41:40:DE:5D:AE:22:23:B0:03:61:A3:96:17:7A:9C:B4:"
                                         "10:FF:61:F2:00:15:AD"),
                             esmtp::sha256_fingerprint("abc"));
        // 56 octets: the padding needs a second block
        CPPUNIT_ASSERT_EQUAL(std::string("24:8D:6A:61:D2:06:38:B8:E5:C0:26:93:0C:3E:60:39:A3:3C:E4:59:64:FF:21:67:F6:"
                                         "EC:ED:D4:19:DB:06:C1"),
                             esmtp::sha256_fingerprint("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"));
    }
};

CPPUNIT_TEST_SUITE_REGISTRATION(StartTlsTest);
