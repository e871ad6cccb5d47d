// DSN (RFC 3461) and REQUIRETLS (RFC 8689) in the engine: the parameter
// syntax (engine/dsn.hpp), and the session offering them only for a handler
// that carries them on (SessionConfig::handler_carries, filled from
// HandlerFactory::carries()), REQUIRETLS only over TLS.

#include "session_harness.hpp"

#include "engine/dsn.hpp"

#include <cppunit/extensions/HelperMacros.h>

#include <algorithm>
#include <string>
#include <vector>

using esmtp::carries_dsn;
using esmtp::carries_requiretls;
using esmtp::Reply;
using esmtp::SessionView;

namespace
{

using H = esmtp::test::Harness;

bool has(const std::string &out, const std::string &what)
{
    return out.find(what) != std::string::npos;
}

bool starts_with(const std::string &s, const std::string &p)
{
    return s.compare(0, p.size(), p) == 0;
}

// The EHLO keywords of a reply.
std::vector<std::string> keywords(const std::string &ehlo)
{
    std::vector<std::string> out;
    for (const auto &l : esmtp::test::lines_of(ehlo))
        if (l.size() > 4)
            out.push_back(l.substr(4, l.find(' ', 4) == std::string::npos ? std::string::npos : l.find(' ', 4) - 4));
    return out;
}

bool offers(const std::string &ehlo, const std::string &keyword)
{
    auto k = keywords(ehlo);
    return std::find(k.begin(), k.end(), keyword) != k.end();
}

// A handler that takes DSN out of its EHLO reply again.
class NoDsnHandler final : public esmtp::Handler
{
  public:
    Reply ehlo(SessionView &, std::string_view, std::vector<std::string> &ext) override
    {
        ext.erase(std::remove(ext.begin(), ext.end(), "DSN"), ext.end());
        return {};
    }
};

// The refusal of a bad parameter ("KEYWORD=value" or "KEYWORD").
std::string refusal(std::string_view param)
{
    return "501 5.5.4 Bad " + std::string(param.substr(0, param.find('='))) + " parameter\r\n";
}

esmtp::TlsInfo tls13()
{
    esmtp::TlsInfo t;
    t.active = true;
    t.protocol = "TLSv1.3";
    return t;
}

} // namespace

class DsnTest : public CppUnit::TestFixture
{
    CPPUNIT_TEST_SUITE(DsnTest);
    CPPUNIT_TEST(testXtext);
    CPPUNIT_TEST(testRetAndEnvid);
    CPPUNIT_TEST(testNotify);
    CPPUNIT_TEST(testOrcpt);
    CPPUNIT_TEST(testNotOfferedByDefault);
    CPPUNIT_TEST(testOfferedWhenCarried);
    CPPUNIT_TEST(testBadValues);
    CPPUNIT_TEST(testDuplicates);
    CPPUNIT_TEST(testHeloSession);
    CPPUNIT_TEST(testHandlerTakesDsnOut);
    CPPUNIT_TEST(testLongerCommandLines);
    CPPUNIT_TEST(testRequireTlsOnlyOverTls);
    CPPUNIT_TEST(testRequireTlsAfterStartTls);
    CPPUNIT_TEST(testRequireTlsNotCarried);
    CPPUNIT_TEST(testExtensionsTakeThemAway);
    CPPUNIT_TEST_SUITE_END();

  public:
    void testXtext()
    {
        using esmtp::valid_xtext;
        CPPUNIT_ASSERT(valid_xtext("abc"));
        CPPUNIT_ASSERT(valid_xtext("bob@example.org"));
        CPPUNIT_ASSERT(valid_xtext("a+2Bb+3Dc"));          // "+" and "=" hex-escaped
        CPPUNIT_ASSERT(valid_xtext("+20leading+20space")); // a space, escaped, is printable
        CPPUNIT_ASSERT(valid_xtext("!~;,\"<>"));
        CPPUNIT_ASSERT(!valid_xtext(""));
        CPPUNIT_ASSERT(!valid_xtext("a+b"));   // "+" must start an escape
        CPPUNIT_ASSERT(!valid_xtext("a+2"));   // cut short
        CPPUNIT_ASSERT(!valid_xtext("a+"));    // cut short
        CPPUNIT_ASSERT(!valid_xtext("a+2b"));  // upper-case hex only
        CPPUNIT_ASSERT(!valid_xtext("a+GG"));  // not hex
        CPPUNIT_ASSERT(!valid_xtext("a=b"));   // "=" only escaped
        CPPUNIT_ASSERT(!valid_xtext("a b"));   // no space
        CPPUNIT_ASSERT(!valid_xtext("a\x7f")); // DEL
        CPPUNIT_ASSERT(!valid_xtext("caf\xc3\xa9"));
        // what it decodes to goes into a notice: printable only
        CPPUNIT_ASSERT(!valid_xtext("a+0D+0Ab"));
        CPPUNIT_ASSERT(!valid_xtext("a+00"));
        CPPUNIT_ASSERT(!valid_xtext("a+7F"));
        CPPUNIT_ASSERT(!valid_xtext("a+C3+A9"));
    }

    void testRetAndEnvid()
    {
        CPPUNIT_ASSERT_EQUAL(std::string("FULL"), std::string(esmtp::dsn_ret("FULL")));
        CPPUNIT_ASSERT_EQUAL(std::string("HDRS"), std::string(esmtp::dsn_ret("hdrs")));
        CPPUNIT_ASSERT(esmtp::dsn_ret("").empty());
        CPPUNIT_ASSERT(esmtp::dsn_ret("BODY").empty());
        CPPUNIT_ASSERT(esmtp::dsn_ret("FULL,HDRS").empty());
        CPPUNIT_ASSERT(esmtp::valid_envid("QQ314159"));
        CPPUNIT_ASSERT(esmtp::valid_envid(std::string(esmtp::kMaxEnvid, 'x')));
        CPPUNIT_ASSERT(!esmtp::valid_envid(std::string(esmtp::kMaxEnvid + 1, 'x')));
        CPPUNIT_ASSERT(!esmtp::valid_envid(""));
        CPPUNIT_ASSERT(!esmtp::valid_envid("a+0Ab"));
    }

    void testNotify()
    {
        using esmtp::valid_notify;
        for (const char *good :
             {"NEVER", "never", "SUCCESS", "FAILURE", "DELAY", "SUCCESS,FAILURE", "failure,delay,success", "Delay"})
            CPPUNIT_ASSERT_MESSAGE(good, valid_notify(good));
        for (const char *bad : {"", "NEVER,SUCCESS", "FAILURE,NEVER", "SUCCESS,SUCCESS", "SUCCESS,", ",SUCCESS",
                                "SUCCESS,,FAILURE", "SOMETIMES", "SUCCESS FAILURE", "SUCCESS;FAILURE"})
            CPPUNIT_ASSERT_MESSAGE(bad, !valid_notify(bad));
    }

    void testOrcpt()
    {
        using esmtp::valid_orcpt;
        CPPUNIT_ASSERT(valid_orcpt("rfc822;bob@example.org"));
        CPPUNIT_ASSERT(valid_orcpt("RFC822;bob+2Bext@example.org"));
        CPPUNIT_ASSERT(valid_orcpt("utf-8;bob@example.org"));
        CPPUNIT_ASSERT(valid_orcpt("x-custom;a;b"));     // ";" is an xchar
        CPPUNIT_ASSERT(!valid_orcpt("bob@example.org")); // no addr-type
        CPPUNIT_ASSERT(!valid_orcpt(";bob@example.org"));
        CPPUNIT_ASSERT(!valid_orcpt("rfc822;"));
        CPPUNIT_ASSERT(!valid_orcpt("rfc 822;bob@example.org"));
        CPPUNIT_ASSERT(!valid_orcpt("rfc.822;bob@example.org"));
        CPPUNIT_ASSERT(!valid_orcpt("rfc822;bob+40example.org+0A"));
        CPPUNIT_ASSERT(!valid_orcpt("rfc822;bob+example.org"));
    }

    // A handler that does not carry DSN on: not offered, the parameters are
    // unknown (555), as before API 2.4.
    void testNotOfferedByDefault()
    {
        H h;
        h.conn.tls = true;
        h.conn.tls_info = tls13();
        h.start();
        std::string ehlo = h.send("EHLO client.example\r\n");
        CPPUNIT_ASSERT_MESSAGE(ehlo, !offers(ehlo, "DSN") && !offers(ehlo, "REQUIRETLS"));
        CPPUNIT_ASSERT_EQUAL(std::string("555 5.5.4 Unsupported parameter RET\r\n"),
                             h.send("MAIL FROM:<a@example.com> RET=HDRS\r\n"));
        CPPUNIT_ASSERT_EQUAL(std::string("555 5.5.4 Unsupported parameter ENVID\r\n"),
                             h.send("MAIL FROM:<a@example.com> ENVID=x\r\n"));
        CPPUNIT_ASSERT_EQUAL(std::string("555 5.5.4 Unsupported parameter REQUIRETLS\r\n"),
                             h.send("MAIL FROM:<a@example.com> REQUIRETLS\r\n"));
        CPPUNIT_ASSERT(starts_with(h.send("MAIL FROM:<a@example.com>\r\n"), "250 "));
        CPPUNIT_ASSERT_EQUAL(std::string("555 5.5.4 Unsupported parameter NOTIFY\r\n"),
                             h.send("RCPT TO:<b@example.org> NOTIFY=NEVER\r\n"));
        CPPUNIT_ASSERT_EQUAL(std::string("555 5.5.4 Unsupported parameter ORCPT\r\n"),
                             h.send("RCPT TO:<b@example.org> ORCPT=rfc822;b@example.org\r\n"));
        CPPUNIT_ASSERT_EQUAL(0, h.rec->rcpt_calls);
    }

    // Carried: offered, checked, and the handler gets them (Envelope for
    // MAIL's, the recipient's Params for RCPT's, values as sent).
    void testOfferedWhenCarried()
    {
        H h;
        h.cfg.handler_carries = carries_dsn;
        h.start();
        std::string ehlo = h.send("EHLO client.example\r\n");
        CPPUNIT_ASSERT_MESSAGE(ehlo, offers(ehlo, "DSN"));
        CPPUNIT_ASSERT_MESSAGE(ehlo, !offers(ehlo, "REQUIRETLS")); // not carried
        CPPUNIT_ASSERT(
            starts_with(h.send("MAIL FROM:<a@example.com> RET=hdrs ENVID=QQ+2B314159 SIZE=10\r\n"), "250 2.1.0 "));
        CPPUNIT_ASSERT(starts_with(
            h.send("RCPT TO:<b@example.org> NOTIFY=success,failure ORCPT=rfc822;b+2Bx@example.org\r\n"), "250 "));
        CPPUNIT_ASSERT(starts_with(h.send("RCPT TO:<c@example.org> NOTIFY=NEVER\r\n"), "250 "));
        CPPUNIT_ASSERT(starts_with(h.send("RCPT TO:<d@example.org>\r\n"), "250 "));
        CPPUNIT_ASSERT(starts_with(h.send("DATA\r\n"), "354 "));
        const esmtp::Envelope &env = h.rec->env_at_data;
        CPPUNIT_ASSERT_EQUAL(std::string("HDRS"), env.dsn_ret);
        CPPUNIT_ASSERT_EQUAL(std::string("QQ+2B314159"), env.dsn_envid);
        CPPUNIT_ASSERT(!env.requiretls);
        CPPUNIT_ASSERT_EQUAL(std::uint64_t(10), env.declared_size);
        CPPUNIT_ASSERT_EQUAL(std::size_t(3), env.mail_params.size());
        CPPUNIT_ASSERT_EQUAL(std::size_t(3), env.recipients.size());
        const auto &p = env.recipients[0].params;
        CPPUNIT_ASSERT_EQUAL(std::size_t(2), p.size());
        CPPUNIT_ASSERT_EQUAL(std::string("NOTIFY"), p[0].keyword);
        CPPUNIT_ASSERT_EQUAL(std::string("success,failure"), p[0].value);
        CPPUNIT_ASSERT_EQUAL(std::string("ORCPT"), p[1].keyword);
        CPPUNIT_ASSERT_EQUAL(std::string("rfc822;b+2Bx@example.org"), p[1].value);
        CPPUNIT_ASSERT_EQUAL(std::string("NEVER"), env.recipients[1].params.at(0).value);
        CPPUNIT_ASSERT(env.recipients[2].params.empty());
        CPPUNIT_ASSERT(starts_with(h.send("Subject: x\r\n\r\nhi\r\n.\r\n"), "250 "));
        // the next transaction starts without them
        CPPUNIT_ASSERT(starts_with(h.send("MAIL FROM:<a@example.com>\r\n"), "250 "));
        CPPUNIT_ASSERT(starts_with(h.send("RCPT TO:<b@example.org>\r\n"), "250 "));
        CPPUNIT_ASSERT(starts_with(h.send("DATA\r\n"), "354 "));
        CPPUNIT_ASSERT(h.rec->env_at_data.dsn_ret.empty() && h.rec->env_at_data.dsn_envid.empty());
    }

    void testBadValues()
    {
        H h;
        h.cfg.handler_carries = carries_dsn;
        h.ehlo();
        for (const char *bad : {"RET=BODY", "ENVID=a+0Ab", "ENVID=a+b", "RET"})
            CPPUNIT_ASSERT_EQUAL_MESSAGE(bad, refusal(bad),
                                         h.send("MAIL FROM:<a@example.com> " + std::string(bad) + "\r\n"));
        CPPUNIT_ASSERT_EQUAL(std::string("501 5.5.4 Bad ENVID parameter\r\n"),
                             h.send("MAIL FROM:<a@example.com> ENVID=" + std::string(101, 'x') + "\r\n"));
        // an empty value is no esmtp-value at all (RFC 5321 4.1.2)
        for (const char *bad : {"RET=", "ENVID="})
            CPPUNIT_ASSERT_EQUAL(std::string("501 5.5.4 Bad parameter syntax\r\n"),
                                 h.send("MAIL FROM:<a@example.com> " + std::string(bad) + "\r\n"));
        CPPUNIT_ASSERT_EQUAL(0, h.rec->count("mail"));
        CPPUNIT_ASSERT(starts_with(h.send("MAIL FROM:<a@example.com>\r\n"), "250 "));
        for (const char *bad : {"NOTIFY=NEVER,DELAY", "NOTIFY=sometimes", "NOTIFY", "ORCPT=b@example.org",
                                "ORCPT=rfc822;b+0A@example.org", "ORCPT=rfc822;"})
            CPPUNIT_ASSERT_EQUAL_MESSAGE(bad, refusal(bad),
                                         h.send("RCPT TO:<b@example.org> " + std::string(bad) + "\r\n"));
        CPPUNIT_ASSERT_EQUAL(0, h.rec->rcpt_calls);
        // DSN's keywords belong to their verb
        CPPUNIT_ASSERT_EQUAL(std::string("555 5.5.4 Unsupported parameter RET\r\n"),
                             h.send("RCPT TO:<b@example.org> RET=FULL\r\n"));
        CPPUNIT_ASSERT(starts_with(h.send("RSET\r\n"), "250 "));
        CPPUNIT_ASSERT_EQUAL(std::string("555 5.5.4 Unsupported parameter NOTIFY\r\n"),
                             h.send("MAIL FROM:<a@example.com> NOTIFY=NEVER\r\n"));
    }

    // Each parameter at most once, DSN's and the others.
    void testDuplicates()
    {
        H h;
        h.cfg.handler_carries = carries_dsn;
        h.ehlo();
        CPPUNIT_ASSERT_EQUAL(std::string("501 5.5.4 Duplicate parameter RET\r\n"),
                             h.send("MAIL FROM:<a@example.com> RET=FULL RET=HDRS\r\n"));
        CPPUNIT_ASSERT_EQUAL(std::string("501 5.5.4 Duplicate parameter ENVID\r\n"),
                             h.send("MAIL FROM:<a@example.com> envid=a ENVID=a\r\n"));
        CPPUNIT_ASSERT_EQUAL(std::string("501 5.5.4 Duplicate parameter SIZE\r\n"),
                             h.send("MAIL FROM:<a@example.com> SIZE=1 SIZE=100000000000\r\n"));
        CPPUNIT_ASSERT_EQUAL(0, h.rec->count("mail"));
        CPPUNIT_ASSERT(starts_with(h.send("MAIL FROM:<a@example.com>\r\n"), "250 "));
        CPPUNIT_ASSERT_EQUAL(std::string("501 5.5.4 Duplicate parameter NOTIFY\r\n"),
                             h.send("RCPT TO:<b@example.org> NOTIFY=NEVER NOTIFY=NEVER\r\n"));
        CPPUNIT_ASSERT_EQUAL(std::string("501 5.5.4 Duplicate parameter ORCPT\r\n"),
                             h.send("RCPT TO:<b@example.org> ORCPT=rfc822;x ORCPT=rfc822;y\r\n"));
        CPPUNIT_ASSERT_EQUAL(0, h.rec->rcpt_calls);
    }

    // After HELO no parameter at all, DSN's neither.
    void testHeloSession()
    {
        H h;
        h.cfg.handler_carries = carries_dsn | carries_requiretls;
        h.conn.tls = true;
        h.conn.tls_info = tls13();
        h.helo();
        // (no enhanced status codes after HELO)
        CPPUNIT_ASSERT_EQUAL(std::string("555 Unsupported parameter RET\r\n"),
                             h.send("MAIL FROM:<a@example.com> RET=FULL\r\n"));
        CPPUNIT_ASSERT_EQUAL(std::string("555 Unsupported parameter REQUIRETLS\r\n"),
                             h.send("MAIL FROM:<a@example.com> REQUIRETLS\r\n"));
        // EHLO, then HELO again: HELO's rules
        CPPUNIT_ASSERT(offers(h.send("EHLO client.example\r\n"), "DSN"));
        h.send("HELO client.example\r\n");
        CPPUNIT_ASSERT(starts_with(h.send("MAIL FROM:<a@example.com>\r\n"), "250 "));
        CPPUNIT_ASSERT_EQUAL(std::string("555 Unsupported parameter NOTIFY\r\n"),
                             h.send("RCPT TO:<b@example.org> NOTIFY=NEVER\r\n"));
    }

    // What the handler takes out of EHLO is not offered: its parameters
    // are unknown again.
    void testHandlerTakesDsnOut()
    {
        H h;
        h.cfg.handler_carries = carries_dsn;
        h.make_handler = [] { return std::make_unique<NoDsnHandler>(); };
        h.start();
        std::string ehlo = h.send("EHLO client.example\r\n");
        CPPUNIT_ASSERT_MESSAGE(ehlo, !offers(ehlo, "DSN"));
        CPPUNIT_ASSERT_EQUAL(std::string("555 5.5.4 Unsupported parameter RET\r\n"),
                             h.send("MAIL FROM:<a@example.com> RET=FULL\r\n"));
    }

    // RFC 3461 4: RCPT lines up to 500 octets longer when DSN is offered.
    void testLongerCommandLines()
    {
        const std::string orcpt = "rfc822;" + std::string(480, 'x') + "@example.org";
        const std::string line = "RCPT TO:<b@example.org> NOTIFY=FAILURE ORCPT=" + orcpt + "\r\n";
        CPPUNIT_ASSERT(line.size() > 512 && line.size() <= 512 + esmtp::kDsnCommandLineExtra);
        {
            H h;
            h.cfg.handler_carries = carries_dsn;
            h.ehlo();
            h.send("MAIL FROM:<a@example.com>\r\n");
            std::string out = h.send(line);
            CPPUNIT_ASSERT_MESSAGE(out, starts_with(out, "250 "));
            CPPUNIT_ASSERT(starts_with(h.send(std::string(1100, 'N') + "\r\n"), "500 5.5.2 Line too long"));
        }
        H h;
        h.ehlo();
        h.send("MAIL FROM:<a@example.com>\r\n");
        CPPUNIT_ASSERT(starts_with(h.send(line), "500 5.5.2 Line too long"));
    }

    // RFC 8689 3: REQUIRETLS only where the session is TLS (implicit here).
    void testRequireTlsOnlyOverTls()
    {
        {
            H h;
            h.cfg.handler_carries = carries_dsn | carries_requiretls;
            h.start();
            std::string ehlo = h.send("EHLO client.example\r\n");
            CPPUNIT_ASSERT_MESSAGE(ehlo, offers(ehlo, "DSN") && !offers(ehlo, "REQUIRETLS"));
            CPPUNIT_ASSERT_EQUAL(std::string("555 5.5.4 Unsupported parameter REQUIRETLS\r\n"),
                                 h.send("MAIL FROM:<a@example.com> REQUIRETLS\r\n"));
        }
        H h;
        h.cfg.handler_carries = carries_requiretls;
        h.conn.tls = true;
        h.conn.tls_info = tls13();
        h.start();
        std::string ehlo = h.send("EHLO client.example\r\n");
        CPPUNIT_ASSERT_MESSAGE(ehlo, offers(ehlo, "REQUIRETLS") && !offers(ehlo, "DSN"));
        CPPUNIT_ASSERT_EQUAL(std::string("501 5.5.4 Bad REQUIRETLS parameter\r\n"),
                             h.send("MAIL FROM:<a@example.com> REQUIRETLS=YES\r\n"));
        CPPUNIT_ASSERT(starts_with(h.send("MAIL FROM:<a@example.com> requiretls\r\n"), "250 "));
        CPPUNIT_ASSERT(starts_with(h.send("RCPT TO:<b@example.org>\r\n"), "250 "));
        CPPUNIT_ASSERT(starts_with(h.send("DATA\r\n"), "354 "));
        CPPUNIT_ASSERT(h.rec->env_at_data.requiretls);
        CPPUNIT_ASSERT_EQUAL(std::string("REQUIRETLS"), h.rec->env_at_data.mail_params.at(0).keyword);
        CPPUNIT_ASSERT(starts_with(h.send("Subject: x\r\n\r\nhi\r\n.\r\n"), "250 "));
        CPPUNIT_ASSERT(starts_with(h.send("MAIL FROM:<a@example.com>\r\n"), "250 "));
        CPPUNIT_ASSERT(starts_with(h.send("RCPT TO:<b@example.org>\r\n"), "250 "));
        CPPUNIT_ASSERT(starts_with(h.send("DATA\r\n"), "354 "));
        CPPUNIT_ASSERT(!h.rec->env_at_data.requiretls);
    }

    // Offered once STARTTLS has succeeded (and the client said EHLO again).
    void testRequireTlsAfterStartTls()
    {
        H h;
        h.cfg.handler_carries = carries_requiretls;
        h.cfg.starttls = esmtp::StartTls::on;
        h.start();
        std::string ehlo = h.send("EHLO client.example\r\n");
        CPPUNIT_ASSERT_MESSAGE(ehlo, !offers(ehlo, "REQUIRETLS"));
        CPPUNIT_ASSERT(starts_with(h.send("STARTTLS\r\n"), "220 "));
        h.s().plaintext_discarded(0);
        h.s().tls_started(tls13());
        ehlo = h.send("EHLO client.example\r\n");
        CPPUNIT_ASSERT_MESSAGE(ehlo, offers(ehlo, "REQUIRETLS"));
        CPPUNIT_ASSERT(starts_with(h.send("MAIL FROM:<a@example.com> REQUIRETLS\r\n"), "250 "));
    }

    void testRequireTlsNotCarried()
    {
        H h;
        h.cfg.handler_carries = carries_dsn;
        h.conn.tls = true;
        h.conn.tls_info = tls13();
        h.start();
        std::string ehlo = h.send("EHLO client.example\r\n");
        CPPUNIT_ASSERT_MESSAGE(ehlo, !offers(ehlo, "REQUIRETLS"));
        CPPUNIT_ASSERT_EQUAL(std::string("555 5.5.4 Unsupported parameter REQUIRETLS\r\n"),
                             h.send("MAIL FROM:<a@example.com> REQUIRETLS\r\n"));
        CPPUNIT_ASSERT(!has(h.send("NOOP\r\n"), "REQUIRETLS"));
    }

    // ESMTPExtensions -DSN / -REQUIRETLS: carried, yet not offered, and
    // their parameters are unsupported ones; each bit takes away only its own.
    void testExtensionsTakeThemAway()
    {
        for (unsigned off : {unsigned(esmtp::ext_dsn), unsigned(esmtp::ext_requiretls),
                             unsigned(esmtp::ext_dsn | esmtp::ext_requiretls)}) {
            H h;
            h.cfg.handler_carries = carries_dsn | carries_requiretls;
            h.cfg.extensions = esmtp::ext_all & ~off;
            h.conn.tls = true;
            h.conn.tls_info = tls13();
            h.start();
            std::string ehlo = h.send("EHLO client.example\r\n");
            bool dsn = !(off & esmtp::ext_dsn), rt = !(off & esmtp::ext_requiretls);
            CPPUNIT_ASSERT_EQUAL_MESSAGE(ehlo, dsn, offers(ehlo, "DSN"));
            CPPUNIT_ASSERT_EQUAL_MESSAGE(ehlo, rt, offers(ehlo, "REQUIRETLS"));
            CPPUNIT_ASSERT_MESSAGE(ehlo, offers(ehlo, "CHUNKING"));
            std::string ret = h.send("MAIL FROM:<a@example.com> RET=HDRS\r\n");
            if (dsn) {
                CPPUNIT_ASSERT_MESSAGE(ret, starts_with(ret, "250 "));
                CPPUNIT_ASSERT(starts_with(h.send("RSET\r\n"), "250 "));
            } else {
                CPPUNIT_ASSERT_EQUAL(std::string("555 5.5.4 Unsupported parameter RET\r\n"), ret);
            }
            std::string mail = h.send("MAIL FROM:<a@example.com> REQUIRETLS\r\n");
            if (rt) {
                CPPUNIT_ASSERT_MESSAGE(mail, starts_with(mail, "250 "));
            } else {
                CPPUNIT_ASSERT_EQUAL(std::string("555 5.5.4 Unsupported parameter REQUIRETLS\r\n"), mail);
                CPPUNIT_ASSERT(starts_with(h.send("MAIL FROM:<a@example.com>\r\n"), "250 "));
            }
            std::string rcpt = h.send("RCPT TO:<b@example.org> NOTIFY=NEVER\r\n");
            CPPUNIT_ASSERT_MESSAGE(rcpt, starts_with(rcpt, dsn ? "250 " : "555 5.5.4 Unsupported parameter NOTIFY"));
        }
    }
};

CPPUNIT_TEST_SUITE_REGISTRATION(DsnTest);
