// ESMTPDNSBL's sites (engine/dnsbl.cpp): the directive's site syntax
// (filters with ranges and lists, weights), the query names of IPv4 and
// IPv6 clients, which answers count, and how weights add up.

#include "engine/dnsbl.hpp"

#include <cppunit/extensions/HelperMacros.h>

using esmtp::DnsblScore;
using esmtp::DnsblSite;
using esmtp::Ipv4Answer;

namespace
{

DnsblSite site(const char *spec)
{
    DnsblSite s;
    std::string why;
    CPPUNIT_ASSERT_MESSAGE(std::string(spec) + ": " + why, esmtp::parse_dnsbl_site(spec, s, why));
    return s;
}

bool bad(const char *spec)
{
    DnsblSite s;
    std::string why;
    return !esmtp::parse_dnsbl_site(spec, s, why) && !why.empty();
}

} // namespace

class DnsblTest : public CppUnit::TestFixture
{
    CPPUNIT_TEST_SUITE(DnsblTest);
    CPPUNIT_TEST(testSiteSyntax);
    CPPUNIT_TEST(testBadSites);
    CPPUNIT_TEST(testQueryNames);
    CPPUNIT_TEST(testFilters);
    CPPUNIT_TEST(testScore);
    CPPUNIT_TEST_SUITE_END();

  public:
    void testSiteSyntax()
    {
        DnsblSite s = site("Zen.Example.org");
        CPPUNIT_ASSERT_EQUAL(std::string("zen.example.org"), s.domain);
        CPPUNIT_ASSERT_EQUAL(1, s.weight);
        CPPUNIT_ASSERT(!s.filtered);
        s = site("list.dnswl.example=127.0.[0..255].[1..3]*-5");
        CPPUNIT_ASSERT_EQUAL(std::string("list.dnswl.example"), s.domain);
        CPPUNIT_ASSERT_EQUAL(-5, s.weight);
        CPPUNIT_ASSERT(s.filtered);
        CPPUNIT_ASSERT(s.octets[2].all());
        CPPUNIT_ASSERT_EQUAL(std::size_t(3), s.octets[3].count());
        s = site("zen.example.org=127.0.0.[2;4;10]*3");
        CPPUNIT_ASSERT_EQUAL(3, s.weight);
        CPPUNIT_ASSERT(s.octets[3].test(4) && !s.octets[3].test(3) && s.octets[3].count() == 3);
    }

    void testBadSites()
    {
        CPPUNIT_ASSERT(bad(""));
        CPPUNIT_ASSERT(bad("zen..example"));
        CPPUNIT_ASSERT(bad("zen.example*0"));
        CPPUNIT_ASSERT(bad("zen.example*x"));
        CPPUNIT_ASSERT(bad("zen.example=127.0.0"));
        CPPUNIT_ASSERT(bad("zen.example=127.0.0.2.1"));
        CPPUNIT_ASSERT(bad("zen.example=127.0.0.256"));
        CPPUNIT_ASSERT(bad("zen.example=127.0.0.[5..2]"));
        CPPUNIT_ASSERT(bad("zen.example=127.0.0.[2;]"));
        CPPUNIT_ASSERT(bad("zen example"));
    }

    void testQueryNames()
    {
        CPPUNIT_ASSERT_EQUAL(std::string("2.0.0.127.zen.example"), esmtp::dnsbl_query_name("127.0.0.2", "zen.example"));
        CPPUNIT_ASSERT_EQUAL(std::string("b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.0.0.0.0.1.2.3.4.zen.example"),
                             esmtp::dnsbl_query_name("4321:0:1:2:3:4:567:89ab", "zen.example"));
        CPPUNIT_ASSERT_EQUAL(std::string(), esmtp::dnsbl_query_name("not-an-address", "zen.example"));
    }

    void testFilters()
    {
        DnsblSite any = site("a.example");
        DnsblSite f = site("a.example=127.0.0.[2..11]");
        std::vector<Ipv4Answer> two{{127, 0, 0, 2}}, twelve{{127, 0, 0, 12}}, both{{127, 0, 0, 12}, {127, 0, 0, 3}};
        CPPUNIT_ASSERT(esmtp::dnsbl_matches(any, twelve));
        CPPUNIT_ASSERT(esmtp::dnsbl_matches(f, two));
        CPPUNIT_ASSERT(!esmtp::dnsbl_matches(f, twelve));
        CPPUNIT_ASSERT(esmtp::dnsbl_matches(f, both));
        CPPUNIT_ASSERT(!esmtp::dnsbl_matches(any, {}));
    }

    void testScore()
    {
        DnsblScore sc;
        esmtp::dnsbl_add(sc, site("bl2.example*2"), true);
        esmtp::dnsbl_add(sc, site("zen.example*3"), true);
        esmtp::dnsbl_add(sc, site("bl3.example*3"), true);
        esmtp::dnsbl_add(sc, site("not.example*9"), false);
        CPPUNIT_ASSERT_EQUAL(8, sc.score);
        CPPUNIT_ASSERT_EQUAL(std::string("zen.example"), sc.blocked_by); // the first of the largest weight
        CPPUNIT_ASSERT(!sc.allowlisted);
        esmtp::dnsbl_add(sc, site("wl.example*-5"), true);
        CPPUNIT_ASSERT_EQUAL(3, sc.score);
        CPPUNIT_ASSERT(sc.allowlisted);
    }
};

CPPUNIT_TEST_SUITE_REGISTRATION(DnsblTest);
