// parse_path_and_params / parse_mailbox / valid_domain_or_literal (RFC 5321 4.1.2).

#include "engine/address.hpp"

#include <cppunit/extensions/HelperMacros.h>

#include <string>

using esmtp::MailArgs;
using esmtp::PathError;

namespace
{

// MAIL FROM: null path allowed, postmaster not special.
PathError mail(std::string_view in, MailArgs &out)
{
    return esmtp::parse_path_and_params(in, true, false, out);
}
// RCPT TO: no null path, <postmaster> allowed.
PathError rcpt(std::string_view in, MailArgs &out)
{
    return esmtp::parse_path_and_params(in, false, true, out);
}

bool mail_ok(std::string_view in)
{
    MailArgs a;
    return mail(in, a) == PathError::ok;
}
bool rcpt_ok(std::string_view in)
{
    MailArgs a;
    return rcpt(in, a) == PathError::ok;
}

} // namespace

class AddressTest : public CppUnit::TestFixture
{
    CPPUNIT_TEST_SUITE(AddressTest);
    CPPUNIT_TEST(testSimplePath);
    CPPUNIT_TEST(testLeadingSpaces);
    CPPUNIT_TEST(testNullPathOnlyForMail);
    CPPUNIT_TEST(testNullPathWithParams);
    CPPUNIT_TEST(testPostmasterOnlyForRcpt);
    CPPUNIT_TEST(testQuotedLocalPart);
    CPPUNIT_TEST(testSourceRouteDropped);
    CPPUNIT_TEST(testAddressLiterals);
    CPPUNIT_TEST(testParams);
    CPPUNIT_TEST(testParamKeywordUpperCased);
    CPPUNIT_TEST(testBadParameter);
    CPPUNIT_TEST(testMissingBrackets);
    CPPUNIT_TEST(testGarbage);
    CPPUNIT_TEST(testSpacesInsidePath);
    CPPUNIT_TEST(testTrailingJunk);
    CPPUNIT_TEST(testBadLocalParts);
    CPPUNIT_TEST(testParseMailbox);
    CPPUNIT_TEST(testParseMailboxRejects);
    CPPUNIT_TEST(testLocalPartLength);
    CPPUNIT_TEST(testValidDomains);
    CPPUNIT_TEST(testInvalidDomains);
    CPPUNIT_TEST(testLiterals);
    CPPUNIT_TEST_SUITE_END();

  public:
    void testSimplePath()
    {
        MailArgs a;
        CPPUNIT_ASSERT(mail("<user@example.com>", a) == PathError::ok);
        CPPUNIT_ASSERT_EQUAL(std::string("user@example.com"), a.path.mailbox);
        CPPUNIT_ASSERT_EQUAL(std::string("user"), a.path.local_part);
        CPPUNIT_ASSERT_EQUAL(std::string("example.com"), a.path.domain);
        CPPUNIT_ASSERT(!a.path.is_null());
        CPPUNIT_ASSERT(a.params.empty());

        // case is kept as sent
        MailArgs b;
        CPPUNIT_ASSERT(rcpt("<John.Doe@Example.COM>", b) == PathError::ok);
        CPPUNIT_ASSERT_EQUAL(std::string("John.Doe@Example.COM"), b.path.mailbox);
        CPPUNIT_ASSERT_EQUAL(std::string("John.Doe"), b.path.local_part);
        CPPUNIT_ASSERT_EQUAL(std::string("Example.COM"), b.path.domain);
    }

    void testLeadingSpaces()
    {
        // "MAIL FROM: <a@b>" is common in the wild
        MailArgs a;
        CPPUNIT_ASSERT(mail("  <user@example.com>", a) == PathError::ok);
        CPPUNIT_ASSERT_EQUAL(std::string("user@example.com"), a.path.mailbox);
    }

    void testNullPathOnlyForMail()
    {
        MailArgs a;
        a.path.mailbox = "left over";
        CPPUNIT_ASSERT(mail("<>", a) == PathError::ok);
        CPPUNIT_ASSERT(a.path.is_null());
        CPPUNIT_ASSERT(a.path.local_part.empty());
        CPPUNIT_ASSERT(a.path.domain.empty());

        MailArgs b;
        CPPUNIT_ASSERT(rcpt("<>", b) == PathError::syntax);
        CPPUNIT_ASSERT(esmtp::parse_path_and_params("<>", false, false, b) == PathError::syntax);
    }

    void testNullPathWithParams()
    {
        MailArgs a;
        CPPUNIT_ASSERT(mail("<> BODY=8BITMIME", a) == PathError::ok);
        CPPUNIT_ASSERT(a.path.is_null());
        CPPUNIT_ASSERT_EQUAL(std::size_t(1), a.params.size());
        CPPUNIT_ASSERT_EQUAL(std::string("BODY"), a.params[0].keyword);
        CPPUNIT_ASSERT_EQUAL(std::string("8BITMIME"), a.params[0].value);
    }

    void testPostmasterOnlyForRcpt()
    {
        MailArgs a;
        CPPUNIT_ASSERT(rcpt("<postmaster>", a) == PathError::ok);
        CPPUNIT_ASSERT(!a.path.is_null());
        CPPUNIT_ASSERT_EQUAL(std::string("postmaster"), a.path.mailbox);
        CPPUNIT_ASSERT_EQUAL(std::string("postmaster"), a.path.local_part);
        CPPUNIT_ASSERT(a.path.domain.empty());

        // "Postmaster" is case-insensitive (RFC 5321 4.5.1)
        CPPUNIT_ASSERT(rcpt_ok("<PostMaster>"));

        // not a domain-less mailbox in general, and not for MAIL
        CPPUNIT_ASSERT(!rcpt_ok("<webmaster>"));
        CPPUNIT_ASSERT(!mail_ok("<postmaster>"));
        // postmaster@domain is an ordinary mailbox everywhere
        CPPUNIT_ASSERT(mail_ok("<postmaster@example.com>"));
    }

    void testQuotedLocalPart()
    {
        MailArgs a;
        CPPUNIT_ASSERT(rcpt("<\"john doe\"@example.com>", a) == PathError::ok);
        CPPUNIT_ASSERT_EQUAL(std::string("\"john doe\"@example.com"), a.path.mailbox);
        CPPUNIT_ASSERT_EQUAL(std::string("\"john doe\""), a.path.local_part);
        CPPUNIT_ASSERT_EQUAL(std::string("example.com"), a.path.domain);

        // quoted pairs and specials inside quotes
        CPPUNIT_ASSERT(rcpt_ok("<\"a\\\"b\"@example.com>"));
        CPPUNIT_ASSERT(rcpt_ok("<\"a@b>c\"@example.com>"));
        // unterminated quote
        CPPUNIT_ASSERT(!rcpt_ok("<\"john doe@example.com>"));
    }

    void testSourceRouteDropped()
    {
        MailArgs a;
        CPPUNIT_ASSERT(rcpt("<@a,@b:u@c>", a) == PathError::ok);
        CPPUNIT_ASSERT_EQUAL(std::string("u@c"), a.path.mailbox);
        CPPUNIT_ASSERT_EQUAL(std::string("u"), a.path.local_part);
        CPPUNIT_ASSERT_EQUAL(std::string("c"), a.path.domain);

        MailArgs b;
        CPPUNIT_ASSERT(mail("<@relay.example:user@example.com>", b) == PathError::ok);
        CPPUNIT_ASSERT_EQUAL(std::string("user@example.com"), b.path.mailbox);

        // a route without a mailbox is not a path
        CPPUNIT_ASSERT(!rcpt_ok("<@a,@b:>"));
        CPPUNIT_ASSERT(!rcpt_ok("<@a,@b>"));
    }

    void testAddressLiterals()
    {
        MailArgs a;
        CPPUNIT_ASSERT(rcpt("<user@[192.0.2.1]>", a) == PathError::ok);
        CPPUNIT_ASSERT_EQUAL(std::string("[192.0.2.1]"), a.path.domain);
        CPPUNIT_ASSERT_EQUAL(std::string("user@[192.0.2.1]"), a.path.mailbox);

        MailArgs b;
        CPPUNIT_ASSERT(rcpt("<user@[IPv6:::1]>", b) == PathError::ok);
        CPPUNIT_ASSERT_EQUAL(std::string("[IPv6:::1]"), b.path.domain);

        CPPUNIT_ASSERT(!rcpt_ok("<user@[192.0.2.300]>"));
        CPPUNIT_ASSERT(!rcpt_ok("<user@[not an address]>"));
    }

    void testParams()
    {
        MailArgs a;
        CPPUNIT_ASSERT(mail("<user@example.com> SIZE=123 BODY=8BITMIME", a) == PathError::ok);
        CPPUNIT_ASSERT_EQUAL(std::string("user@example.com"), a.path.mailbox);
        CPPUNIT_ASSERT_EQUAL(std::size_t(2), a.params.size());
        CPPUNIT_ASSERT_EQUAL(std::string("SIZE"), a.params[0].keyword);
        CPPUNIT_ASSERT_EQUAL(std::string("123"), a.params[0].value);
        CPPUNIT_ASSERT_EQUAL(std::string("BODY"), a.params[1].keyword);
        CPPUNIT_ASSERT_EQUAL(std::string("8BITMIME"), a.params[1].value);

        // a keyword without value
        MailArgs b;
        CPPUNIT_ASSERT(mail("<user@example.com> SMTPUTF8", b) == PathError::ok);
        CPPUNIT_ASSERT_EQUAL(std::size_t(1), b.params.size());
        CPPUNIT_ASSERT_EQUAL(std::string("SMTPUTF8"), b.params[0].keyword);
        CPPUNIT_ASSERT_EQUAL(std::string(""), b.params[0].value);

        // RCPT parameters too
        MailArgs c;
        CPPUNIT_ASSERT(rcpt("<user@example.com> NOTIFY=SUCCESS,FAILURE", c) == PathError::ok);
        CPPUNIT_ASSERT_EQUAL(std::size_t(1), c.params.size());
        CPPUNIT_ASSERT_EQUAL(std::string("NOTIFY"), c.params[0].keyword);
        CPPUNIT_ASSERT_EQUAL(std::string("SUCCESS,FAILURE"), c.params[0].value);
    }

    void testParamKeywordUpperCased()
    {
        MailArgs a;
        CPPUNIT_ASSERT(mail("<user@example.com> size=123 Body=8bitmime", a) == PathError::ok);
        CPPUNIT_ASSERT_EQUAL(std::size_t(2), a.params.size());
        CPPUNIT_ASSERT_EQUAL(std::string("SIZE"), a.params[0].keyword);
        CPPUNIT_ASSERT_EQUAL(std::string("123"), a.params[0].value);
        CPPUNIT_ASSERT_EQUAL(std::string("BODY"), a.params[1].keyword);
        // the value is kept as sent
        CPPUNIT_ASSERT_EQUAL(std::string("8bitmime"), a.params[1].value);
    }

    void testBadParameter()
    {
        MailArgs a;
        CPPUNIT_ASSERT(mail("<user@example.com> =123", a) == PathError::bad_parameter);
        MailArgs b;
        CPPUNIT_ASSERT(mail("<user@example.com> SI_ZE=1", b) == PathError::bad_parameter);
        MailArgs c;
        // esmtp-value excludes "=" and control characters
        CPPUNIT_ASSERT(mail("<user@example.com> SIZE=1=2", c) == PathError::bad_parameter);
    }

    void testMissingBrackets()
    {
        CPPUNIT_ASSERT(!mail_ok("user@example.com"));
        CPPUNIT_ASSERT(!mail_ok("<user@example.com"));
        CPPUNIT_ASSERT(!mail_ok("user@example.com>"));
        CPPUNIT_ASSERT(!rcpt_ok("postmaster"));
        MailArgs a;
        CPPUNIT_ASSERT(mail("user@example.com", a) == PathError::syntax);
    }

    void testGarbage()
    {
        CPPUNIT_ASSERT(!mail_ok(""));
        CPPUNIT_ASSERT(!mail_ok("   "));
        CPPUNIT_ASSERT(!mail_ok("<<user@example.com>>"));
        CPPUNIT_ASSERT(!mail_ok("<user@@example.com>"));
        CPPUNIT_ASSERT(!mail_ok("<@example.com>"));
        CPPUNIT_ASSERT(!mail_ok("<user@>"));
        CPPUNIT_ASSERT(!mail_ok("<user>"));
        CPPUNIT_ASSERT(!mail_ok("<user@exa mple.com>"));
        CPPUNIT_ASSERT(!mail_ok("<user@example..com>"));
        CPPUNIT_ASSERT(!mail_ok(std::string_view("<user\0@example.com>", 19)));
        CPPUNIT_ASSERT(!mail_ok("\x01\x02\x03"));
    }

    void testSpacesInsidePath()
    {
        CPPUNIT_ASSERT(!mail_ok("< user@example.com>"));
        CPPUNIT_ASSERT(!mail_ok("<user@example.com >"));
        CPPUNIT_ASSERT(!mail_ok("<user @example.com>"));
        CPPUNIT_ASSERT(!mail_ok("<john doe@example.com>"));
        CPPUNIT_ASSERT(!mail_ok("< >"));
    }

    void testTrailingJunk()
    {
        // something glued to the closing bracket is not a parameter
        CPPUNIT_ASSERT(!mail_ok("<user@example.com>junk"));
        CPPUNIT_ASSERT(!mail_ok("<user@example.com>>"));
        CPPUNIT_ASSERT(!mail_ok("<>x"));
        CPPUNIT_ASSERT(!rcpt_ok("<user@example.com><other@example.com>"));
    }

    void testBadLocalParts()
    {
        CPPUNIT_ASSERT(mail_ok("<a.b+c-d@example.com>"));
        CPPUNIT_ASSERT(!mail_ok("<.ab@example.com>"));
        CPPUNIT_ASSERT(!mail_ok("<ab.@example.com>"));
        CPPUNIT_ASSERT(!mail_ok("<a..b@example.com>"));
        CPPUNIT_ASSERT(!mail_ok("<a(b)@example.com>"));
        CPPUNIT_ASSERT(!mail_ok("<a,b@example.com>"));
    }

    void testParseMailbox()
    {
        esmtp::Path p;
        CPPUNIT_ASSERT(esmtp::parse_mailbox("user@example.com", p));
        CPPUNIT_ASSERT_EQUAL(std::string("user@example.com"), p.mailbox);
        CPPUNIT_ASSERT_EQUAL(std::string("user"), p.local_part);
        CPPUNIT_ASSERT_EQUAL(std::string("example.com"), p.domain);

        esmtp::Path q;
        CPPUNIT_ASSERT(esmtp::parse_mailbox("\"john doe\"@example.com", q));
        CPPUNIT_ASSERT_EQUAL(std::string("\"john doe\""), q.local_part);
        CPPUNIT_ASSERT_EQUAL(std::string("example.com"), q.domain);

        esmtp::Path r;
        CPPUNIT_ASSERT(esmtp::parse_mailbox("user@[IPv6:2001:db8::1]", r));
        CPPUNIT_ASSERT_EQUAL(std::string("[IPv6:2001:db8::1]"), r.domain);
    }

    void testParseMailboxRejects()
    {
        esmtp::Path p;
        CPPUNIT_ASSERT(!esmtp::parse_mailbox("<user@example.com>", p));
        CPPUNIT_ASSERT(!esmtp::parse_mailbox("user", p));
        CPPUNIT_ASSERT(!esmtp::parse_mailbox("user@", p));
        CPPUNIT_ASSERT(!esmtp::parse_mailbox("@example.com", p));
        CPPUNIT_ASSERT(!esmtp::parse_mailbox("us er@example.com", p));
        CPPUNIT_ASSERT(!esmtp::parse_mailbox("user@@example.com", p));
        CPPUNIT_ASSERT(!esmtp::parse_mailbox("", p));
        CPPUNIT_ASSERT(!esmtp::parse_mailbox("user@example.com ", p));
    }

    // Issue 8 defect 9: RFC 5321 4.5.3.1.1, a local part is at most 64
    // octets; for a quoted one that is the Quoted-string as sent, quotes and
    // backslashes included (the grammar's Local-part).
    void testLocalPartLength()
    {
        esmtp::Path p;
        for (std::size_t n : {1, 63, 64}) {
            std::string lp(n, 'a');
            CPPUNIT_ASSERT_MESSAGE(std::to_string(n), esmtp::parse_mailbox(lp + "@example.com", p));
            CPPUNIT_ASSERT_EQUAL(lp, p.local_part);
            CPPUNIT_ASSERT(rcpt_ok("<" + lp + "@example.com>"));
            CPPUNIT_ASSERT(mail_ok("<" + lp + "@example.com>"));
        }
        for (std::size_t n : {65, 66, 67, 200}) {
            std::string lp(n, 'a');
            CPPUNIT_ASSERT_MESSAGE(std::to_string(n), !esmtp::parse_mailbox(lp + "@example.com", p));
            CPPUNIT_ASSERT_MESSAGE(std::to_string(n), !rcpt_ok("<" + lp + "@example.com>"));
            CPPUNIT_ASSERT_MESSAGE(std::to_string(n), !mail_ok("<" + lp + "@example.com>"));
        }
        // dots count
        CPPUNIT_ASSERT(esmtp::parse_mailbox(std::string(32, 'a') + "." + std::string(31, 'b') + "@example.com", p));
        CPPUNIT_ASSERT(!esmtp::parse_mailbox(std::string(32, 'a') + "." + std::string(32, 'b') + "@example.com", p));
        // quoted: 64 octets with the quotes
        CPPUNIT_ASSERT(esmtp::parse_mailbox("\"" + std::string(62, 'q') + "\"@example.com", p));
        CPPUNIT_ASSERT_EQUAL(std::size_t(64), p.local_part.size());
        CPPUNIT_ASSERT(!esmtp::parse_mailbox("\"" + std::string(63, 'q') + "\"@example.com", p));
        CPPUNIT_ASSERT(!esmtp::parse_mailbox("\"" + std::string(64, 'q') + "\"@example.com", p));
        CPPUNIT_ASSERT(!rcpt_ok("<\"" + std::string(64, 'q') + "\"@example.com>"));
        // backslash escapes are octets too
        CPPUNIT_ASSERT(esmtp::parse_mailbox("\"" + std::string(60, 'q') + "\\\"\"@example.com", p));
        CPPUNIT_ASSERT(!esmtp::parse_mailbox("\"" + std::string(61, 'q') + "\\\"\"@example.com", p));
        // UTF-8: octets, not characters (32 two-octet characters are 64)
        std::string e_acute;
        for (int i = 0; i < 32; ++i)
            e_acute += "\xc3\xa9";
        CPPUNIT_ASSERT(esmtp::parse_mailbox(e_acute + "@example.com", p));
        CPPUNIT_ASSERT(!esmtp::parse_mailbox(e_acute + "x@example.com", p));
    }

    void testValidDomains()
    {
        CPPUNIT_ASSERT(esmtp::valid_domain_or_literal("example.com"));
        CPPUNIT_ASSERT(esmtp::valid_domain_or_literal("mail-1.Example.ORG"));
        CPPUNIT_ASSERT(esmtp::valid_domain_or_literal("localhost"));
        CPPUNIT_ASSERT(esmtp::valid_domain_or_literal("1.2.3.example"));
    }

    void testInvalidDomains()
    {
        CPPUNIT_ASSERT(!esmtp::valid_domain_or_literal(""));
        CPPUNIT_ASSERT(!esmtp::valid_domain_or_literal("-example.com"));
        CPPUNIT_ASSERT(!esmtp::valid_domain_or_literal("example-.com"));
        CPPUNIT_ASSERT(!esmtp::valid_domain_or_literal("example..com"));
        CPPUNIT_ASSERT(!esmtp::valid_domain_or_literal(".example.com"));
        CPPUNIT_ASSERT(!esmtp::valid_domain_or_literal("exa mple.com"));
        CPPUNIT_ASSERT(!esmtp::valid_domain_or_literal("exa<mple.com"));
        CPPUNIT_ASSERT(!esmtp::valid_domain_or_literal("user@example.com"));
    }

    void testLiterals()
    {
        CPPUNIT_ASSERT(esmtp::valid_domain_or_literal("[192.0.2.1]"));
        CPPUNIT_ASSERT(esmtp::valid_domain_or_literal("[IPv6:::1]"));
        CPPUNIT_ASSERT(esmtp::valid_domain_or_literal("[IPv6:2001:db8::25]"));
        CPPUNIT_ASSERT(!esmtp::valid_domain_or_literal("[192.0.2.256]"));
        CPPUNIT_ASSERT(!esmtp::valid_domain_or_literal("[192.0.2]"));
        CPPUNIT_ASSERT(!esmtp::valid_domain_or_literal("[192.0.2.1"));
        CPPUNIT_ASSERT(!esmtp::valid_domain_or_literal("192.0.2.1]"));
        CPPUNIT_ASSERT(!esmtp::valid_domain_or_literal("[IPv6:zz::1]"));
        CPPUNIT_ASSERT(!esmtp::valid_domain_or_literal("[]"));
    }
};

CPPUNIT_TEST_SUITE_REGISTRATION(AddressTest);
