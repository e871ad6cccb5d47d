// XCLIENT: xtext, the attribute parser, and the session: offered in EHLO
// to ESMTPXClientHosts clients only, 550/503/501 refusals, the session
// restarting with the new identity (checked again for the next XCLIENT).

#include "engine/dsn.hpp"
#include "engine/xclient.hpp"
#include "session_harness.hpp"

#include <cppunit/extensions/HelperMacros.h>

#include <string>

using esmtp::XClientAttrs;
using esmtp::test::Harness;

class XClientTest : public CppUnit::TestFixture
{
    CPPUNIT_TEST_SUITE(XClientTest);
    CPPUNIT_TEST(testXtext);
    CPPUNIT_TEST(testParse);
    CPPUNIT_TEST(testParseErrors);
    CPPUNIT_TEST(testAdvertisedToTrustedOnly);
    CPPUNIT_TEST(testUntrusted);
    CPPUNIT_TEST(testRestartsWithNewIdentity);
    CPPUNIT_TEST(testHeloAndProto);
    CPPUNIT_TEST(testInsideTransaction);
    CPPUNIT_TEST(testBadAttributes);
    CPPUNIT_TEST(testCheckedAgainAfterXclient);
    CPPUNIT_TEST(testConnectRefusedForNewIdentity);
    CPPUNIT_TEST(testTraceNamesNeutered);
    CPPUNIT_TEST_SUITE_END();

    static Harness trusted()
    {
        Harness h;
        h.cfg.xclient_hosts.add("192.0.2.0/24");
        return h;
    }

  public:
    void testXtext()
    {
        std::string out;
        CPPUNIT_ASSERT(esmtp::decode_xtext("abc+2Bdef+3D", out));
        CPPUNIT_ASSERT_EQUAL(std::string("abc+def="), out);
        CPPUNIT_ASSERT(esmtp::decode_xtext("", out) && out.empty());
        for (const char *bad : {"a+", "a+2", "a+2g", "a+2b", "a=b", "a b", "\x80"})
            CPPUNIT_ASSERT_MESSAGE(bad, !esmtp::decode_xtext(bad, out));
    }

    void testParse()
    {
        XClientAttrs a;
        std::string e;
        CPPUNIT_ASSERT(esmtp::parse_xclient("name=client.example ADDR=IPv6:2001:DB8::7 port=1234 PROTO=esmtp "
                                            "HELO=[UNAVAILABLE] LOGIN=joe+40example.org DESTADDR=192.0.2.1 "
                                            "DESTPORT=25",
                                            a, e));
        CPPUNIT_ASSERT_EQUAL(std::string("client.example"), *a.name);
        CPPUNIT_ASSERT_EQUAL(std::string("2001:db8::7"), *a.addr);
        CPPUNIT_ASSERT_EQUAL(1234u, *a.port);
        CPPUNIT_ASSERT(*a.esmtp);
        CPPUNIT_ASSERT_EQUAL(std::string(""), *a.helo);
        CPPUNIT_ASSERT_EQUAL(std::string("joe@example.org"), *a.login);
        CPPUNIT_ASSERT_EQUAL(std::string("192.0.2.1"), *a.destaddr);
        CPPUNIT_ASSERT_EQUAL(25u, *a.destport);
        CPPUNIT_ASSERT(esmtp::parse_xclient("NAME=[TEMPUNAVAIL] ADDR=[unavailable] PORT=[UNAVAILABLE]", a, e));
        CPPUNIT_ASSERT_EQUAL(std::string("unknown"), *a.name);
        CPPUNIT_ASSERT_EQUAL(std::string("unknown"), *a.addr);
        CPPUNIT_ASSERT_EQUAL(0u, *a.port);
        CPPUNIT_ASSERT(!a.helo && !a.login && !a.esmtp);
    }

    void testParseErrors()
    {
        struct Case {
            const char *arg, *error;
        } cases[] = {
            {"", "Syntax: XCLIENT attribute=value"},
            {"NAME", "Syntax: XCLIENT attribute=value"},
            {"=x", "Syntax: XCLIENT attribute=value"},
            {"FOO=bar", "Bad XCLIENT attribute name: FOO"},
            {"name=a+zz", "Bad NAME syntax: bad xtext"},
            {"ADDR=192.0.2.300", "Bad ADDR syntax"},
            {"ADDR=2001:db8::1", "Bad ADDR syntax"}, // IPv6 needs IPV6:
            {"ADDR=IPV6:192.0.2.1", "Bad ADDR syntax"},
            {"PORT=65536", "Bad PORT syntax"},
            {"PORT=-1", "Bad PORT syntax"},
            {"PROTO=LMTP", "Bad PROTO syntax: LMTP (SMTP or ESMTP)"},
            {"HELO=a+20b", "Bad HELO syntax"}, // a space inside
            {"NAME=a..b", "Bad NAME syntax: a..b"},
            {"NAME=a)(b", "Bad NAME syntax"},
            {"NAME=[192.0.2.1]", "Bad NAME syntax"},
            {"LOGIN=+00", "Bad LOGIN syntax"},
        };
        for (const auto &c : cases) {
            XClientAttrs a;
            std::string e;
            CPPUNIT_ASSERT_MESSAGE(c.arg, !esmtp::parse_xclient(c.arg, a, e));
            CPPUNIT_ASSERT_MESSAGE(std::string(c.arg) + ": " + e, e.find(c.error) != std::string::npos);
        }
        XClientAttrs a;
        std::string e;
        std::string label(63, 'a');
        std::string longest = label + "." + label + "." + label + "." + label; // 255 octets
        CPPUNIT_ASSERT(esmtp::parse_xclient("NAME=" + longest, a, e));
        CPPUNIT_ASSERT(!esmtp::parse_xclient("NAME=" + longest + "a", a, e));
        CPPUNIT_ASSERT(e.find("too long") != std::string::npos);
        CPPUNIT_ASSERT(!esmtp::parse_xclient("HELO=" + std::string(256, 'a'), a, e));
        CPPUNIT_ASSERT(!esmtp::parse_xclient("LOGIN=" + std::string(256, 'a'), a, e));
    }

    void testAdvertisedToTrustedOnly()
    {
        Harness h = trusted();
        h.start();
        CPPUNIT_ASSERT(h.send("EHLO front.example\r\n")
                           .find("250 XCLIENT NAME ADDR PORT PROTO HELO LOGIN DESTADDR DESTPORT\r\n") !=
                       std::string::npos);
        Harness o;
        o.start();
        CPPUNIT_ASSERT(o.send("EHLO front.example\r\n").find("XCLIENT") == std::string::npos);
        // nor named by HELP
        CPPUNIT_ASSERT(h.send("HELP\r\n").find("XCLIENT") == std::string::npos);
    }

    void testUntrusted()
    {
        Harness h;
        h.start();
        h.send("EHLO front.example\r\n");
        CPPUNIT_ASSERT_EQUAL(std::string("550 5.7.0 Error: insufficient authorization\r\n"),
                             h.send("XCLIENT ADDR=203.0.113.5\r\n"));
        CPPUNIT_ASSERT_EQUAL(std::string("192.0.2.7"), std::string(h.s().client_address()));
        // even with bad syntax, the authorization comes first
        CPPUNIT_ASSERT_EQUAL(std::string("550 5.7.0 Error: insufficient authorization\r\n"), h.send("XCLIENT\r\n"));
    }

    void testRestartsWithNewIdentity()
    {
        Harness h = trusted();
        h.start();
        h.send("EHLO front.example\r\n");
        CPPUNIT_ASSERT_EQUAL(std::string("220 mx.example.org ESMTP mod_esmtp\r\n"),
                             h.send("XCLIENT ADDR=203.0.113.5 PORT=5555 NAME=client.example LOGIN=joe\r\n"));
        CPPUNIT_ASSERT_EQUAL(std::string("203.0.113.5"), std::string(h.s().client_address()));
        CPPUNIT_ASSERT_EQUAL(std::string("client.example"), std::string(h.s().remote_host()));
        CPPUNIT_ASSERT_EQUAL(5555u, h.s().client_port());
        CPPUNIT_ASSERT_EQUAL(std::string("connect ehlo connect"), h.rec->event_string());
        // the greeting state: HELO/EHLO again
        CPPUNIT_ASSERT(h.s().state().hello == esmtp::Hello::none);
        CPPUNIT_ASSERT(h.send("MAIL FROM:<a@b.example>\r\n").find("503 5.5.1 Error: send HELO/EHLO first") == 0);
        h.send("EHLO client.example\r\n");
        h.send("MAIL FROM:<a@client.example>\r\n");
        h.send("RCPT TO:<u@example.org>\r\n");
        h.send("DATA\r\n");
        h.send("Subject: x\r\n\r\nhi\r\n.\r\n");
        CPPUNIT_ASSERT(h.rec->trace_at_eom.find("Received: from client.example (client.example [203.0.113.5])") !=
                       std::string::npos);
        CPPUNIT_ASSERT(h.log.has("XCLIENT from 192.0.2.7[192.0.2.7]: client client.example[203.0.113.5]:5555 "
                                 "login=joe"));
        // ADDR without NAME: the old name does not stay with the new address
        Harness g = trusted();
        g.conn.remote_host = "front.example";
        g.start();
        g.send("XCLIENT ADDR=192.0.2.9\r\n");
        CPPUNIT_ASSERT_EQUAL(std::string("192.0.2.9"), std::string(g.s().remote_host()));
    }

    void testHeloAndProto()
    {
        Harness h = trusted();
        h.start();
        CPPUNIT_ASSERT(h.send("XCLIENT HELO=client.example PROTO=ESMTP\r\n").find("220 ") == 0);
        CPPUNIT_ASSERT(h.s().esmtp());
        CPPUNIT_ASSERT_EQUAL(std::string("client.example"), std::string(h.s().helo_name()));
        // MAIL right away: HELO= stood for the client's EHLO
        CPPUNIT_ASSERT(h.send("MAIL FROM:<a@client.example>\r\n").find("250 ") == 0);
        Harness s = trusted();
        s.start();
        s.send("XCLIENT HELO=old.example\r\n");
        CPPUNIT_ASSERT(!s.s().esmtp());
        CPPUNIT_ASSERT_EQUAL(std::string("SMTP"), std::string(s.s().protocol()));
    }

    void testInsideTransaction()
    {
        Harness h = trusted();
        h.start();
        h.send("EHLO front.example\r\n");
        h.send("MAIL FROM:<a@b.example>\r\n");
        CPPUNIT_ASSERT_EQUAL(std::string("503 5.5.1 Error: MAIL transaction in progress\r\n"),
                             h.send("XCLIENT ADDR=203.0.113.5\r\n"));
        CPPUNIT_ASSERT_EQUAL(std::string("192.0.2.7"), std::string(h.s().client_address()));
        CPPUNIT_ASSERT(h.s().in_transaction());
        // after RSET it works
        h.send("RSET\r\n");
        CPPUNIT_ASSERT(h.send("XCLIENT ADDR=192.0.2.8\r\n").find("220 ") == 0);
    }

    void testBadAttributes()
    {
        Harness h = trusted();
        h.start();
        h.send("EHLO front.example\r\n");
        CPPUNIT_ASSERT_EQUAL(std::string("501 5.5.4 Bad XCLIENT attribute name: COLOR\r\n"),
                             h.send("XCLIENT COLOR=blue\r\n"));
        CPPUNIT_ASSERT_EQUAL(std::string("501 5.5.4 Bad NAME syntax: bad xtext\r\n"), h.send("XCLIENT NAME=a+\r\n"));
        CPPUNIT_ASSERT(h.send("XCLIENT NAME=" + std::string(300, 'a') + "\r\n").find("501 5.5.4 Bad NAME syntax") == 0);
        CPPUNIT_ASSERT_EQUAL(std::string("501 5.5.4 Syntax: XCLIENT attribute=value...\r\n"), h.send("XCLIENT\r\n"));
        // nothing changed, the session goes on
        CPPUNIT_ASSERT_EQUAL(std::string("192.0.2.7"), std::string(h.s().client_address()));
        CPPUNIT_ASSERT(h.s().esmtp());
    }

    void testCheckedAgainAfterXclient()
    {
        Harness h = trusted();
        h.start();
        CPPUNIT_ASSERT(h.send("XCLIENT ADDR=192.0.2.50\r\n").find("220 ") == 0); // still trusted
        CPPUNIT_ASSERT(h.send("XCLIENT ADDR=203.0.113.5\r\n").find("220 ") == 0);
        // the new identity is not trusted: no XCLIENT in EHLO, 550 for another
        CPPUNIT_ASSERT(h.send("EHLO client.example\r\n").find("XCLIENT") == std::string::npos);
        CPPUNIT_ASSERT(h.send("XCLIENT ADDR=192.0.2.7\r\n").find("550 5.7.0") == 0);
    }

    void testConnectRefusedForNewIdentity()
    {
        Harness h = trusted();
        h.rec->on_connect = [&h](esmtp::SessionView &s) {
            h.rec->connect_reply =
                s.client_address() == "203.0.113.66" ? esmtp::Reply(554, "go away", "5.7.1") : esmtp::Reply();
        };
        h.start();
        // as the greeting, without an enhanced code (RFC 2034)
        CPPUNIT_ASSERT_EQUAL(std::string("554 go away\r\n"), h.send("XCLIENT ADDR=203.0.113.66\r\n"));
        CPPUNIT_ASSERT(h.send("EHLO x\r\n").find("503 5.5.1 Error: access denied") == 0);
        CPPUNIT_ASSERT(h.send("QUIT\r\n").find("221 ") == 0);
    }

    void testTraceNamesNeutered()
    {
        Harness h = trusted();
        h.start();
        CPPUNIT_ASSERT_EQUAL(std::string("501 5.5.4 Bad NAME syntax: a..b\r\n"),
                             h.send("XCLIENT HELO=a)(b[x] NAME=a..b\r\n"));
        // HELO= stands for the client's EHLO: MAIL may follow at once
        Harness g = trusted();
        g.start();
        g.send("XCLIENT HELO=a)(b[x] NAME=mail.client.example ADDR=203.0.113.1 PROTO=ESMTP\r\n");
        g.send("MAIL FROM:<a@client.example>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n");
        CPPUNIT_ASSERT_MESSAGE(g.rec->trace_at_data,
                               g.rec->trace_at_data.find(
                                   "Received: from a??b?x? (mail.client.example [203.0.113.1])") != std::string::npos);
        // a domain or address literal is kept as it is
        Harness l = trusted();
        l.start();
        l.send("EHLO [192.0.2.7]\r\n");
        l.send("MAIL FROM:<a@client.example>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n");
        CPPUNIT_ASSERT_MESSAGE(l.rec->trace_at_data,
                               l.rec->trace_at_data.find("Received: from [192.0.2.7] (") != std::string::npos);
    }
};

CPPUNIT_TEST_SUITE_REGISTRATION(XClientTest);
