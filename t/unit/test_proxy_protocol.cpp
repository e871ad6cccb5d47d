// ProxyParser: PROXY protocol v1 and v2 headers, whole and byte by byte,
// never taking an octet past the header; every malformation an error.

#include "engine/cidr.hpp"
#include "engine/proxy_protocol.hpp"

#include <cppunit/extensions/HelperMacros.h>

#include <string>

using esmtp::ProxyAccept;
using esmtp::ProxyParser;
using Status = esmtp::ProxyParser::Status;

namespace
{

const std::string kSig("\r\n\r\n\0\r\nQUIT\n", 12);

// A v2 header: command, family/transport byte, address block and TLVs.
std::string v2(unsigned char cmd, unsigned char fam, const std::string &body)
{
    std::string h = kSig;
    h.push_back(char(0x20 | cmd));
    h.push_back(char(fam));
    h.push_back(char(body.size() >> 8));
    h.push_back(char(body.size() & 0xFF));
    return h + body;
}

std::string inet_block(const char a[4], const char b[4], unsigned sp, unsigned dp)
{
    std::string s(a, 4);
    s.append(b, 4);
    s.push_back(char(sp >> 8));
    s.push_back(char(sp & 0xFF));
    s.push_back(char(dp >> 8));
    s.push_back(char(dp & 0xFF));
    return s;
}

std::string tlv(unsigned char type, const std::string &v)
{
    std::string s;
    s.push_back(char(type));
    s.push_back(char(v.size() >> 8));
    s.push_back(char(v.size() & 0xFF));
    return s + v;
}

// Feed all of `in` at once; the parser must stop at the header's end.
ProxyParser whole(const std::string &in, std::size_t &used, ProxyAccept a = ProxyAccept::any)
{
    ProxyParser p(a);
    used = p.feed(in);
    return p;
}

// Feed byte by byte until the parser is no longer hungry.
ProxyParser bytewise(const std::string &in, std::size_t &used, ProxyAccept a = ProxyAccept::any)
{
    ProxyParser p(a);
    used = 0;
    for (char c : in) {
        if (p.status() != Status::more)
            break;
        used += p.feed(std::string_view(&c, 1));
    }
    return p;
}

} // namespace

class ProxyProtocolTest : public CppUnit::TestFixture
{
    CPPUNIT_TEST_SUITE(ProxyProtocolTest);
    CPPUNIT_TEST(testV1Tcp4);
    CPPUNIT_TEST(testV1Tcp6);
    CPPUNIT_TEST(testV1Unknown);
    CPPUNIT_TEST(testV1ByteByByte);
    CPPUNIT_TEST(testV1Max);
    CPPUNIT_TEST(testV1Malformed);
    CPPUNIT_TEST(testV2Inet);
    CPPUNIT_TEST(testV2Inet6AndTlvs);
    CPPUNIT_TEST(testV2Local);
    CPPUNIT_TEST(testV2ByteByByte);
    CPPUNIT_TEST(testV2Malformed);
    CPPUNIT_TEST(testNotAHeader);
    CPPUNIT_TEST(testAcceptModes);
    CPPUNIT_TEST_SUITE_END();

  public:
    void testV1Tcp4()
    {
        std::string h = "PROXY TCP4 192.0.2.10 198.51.100.1 56324 25\r\n";
        std::size_t used;
        auto p = whole(h + "EHLO x\r\n", used);
        CPPUNIT_ASSERT(p.status() == Status::done);
        CPPUNIT_ASSERT_EQUAL(h.size(), used);
        CPPUNIT_ASSERT_EQUAL(1, p.header().version);
        CPPUNIT_ASSERT(!p.header().local);
        CPPUNIT_ASSERT_EQUAL(4, p.header().family);
        CPPUNIT_ASSERT_EQUAL(std::string("192.0.2.10"), p.header().source);
        CPPUNIT_ASSERT_EQUAL(std::string("198.51.100.1"), p.header().destination);
        CPPUNIT_ASSERT_EQUAL(56324u, p.header().source_port);
        CPPUNIT_ASSERT_EQUAL(25u, p.header().destination_port);
    }

    void testV1Tcp6()
    {
        std::size_t used;
        auto p = whole("PROXY TCP6 2001:DB8:0:0::1 ::1 65535 0\r\n", used);
        CPPUNIT_ASSERT(p.status() == Status::done);
        CPPUNIT_ASSERT_EQUAL(6, p.header().family);
        CPPUNIT_ASSERT_EQUAL(std::string("2001:db8::1"), p.header().source); // canonical
        CPPUNIT_ASSERT_EQUAL(65535u, p.header().source_port);
        CPPUNIT_ASSERT_EQUAL(0u, p.header().destination_port);
    }

    void testV1Unknown()
    {
        std::size_t used;
        // exactly 15 octets: complete without waiting for more
        auto p = whole("PROXY UNKNOWN\r\n", used);
        CPPUNIT_ASSERT(p.status() == Status::done);
        CPPUNIT_ASSERT_EQUAL(std::size_t(15), used);
        CPPUNIT_ASSERT(p.header().local);
        // the rest of an UNKNOWN line is ignored
        p = whole("PROXY UNKNOWN whatever follows here\r\nQUIT\r\n", used);
        CPPUNIT_ASSERT(p.status() == Status::done);
        CPPUNIT_ASSERT_EQUAL(std::size_t(37), used);
    }

    void testV1ByteByByte()
    {
        std::string h = "PROXY TCP4 127.0.0.10 127.0.0.1 4000 2525\r\n";
        std::size_t used;
        auto p = bytewise(h + "EHLO", used);
        CPPUNIT_ASSERT(p.status() == Status::done);
        CPPUNIT_ASSERT_EQUAL(h.size(), used);
        CPPUNIT_ASSERT_EQUAL(std::string("127.0.0.10"), p.header().source);
        p = bytewise("PROXY UNKNOWN\r\n", used);
        CPPUNIT_ASSERT(p.status() == Status::done);
        // incomplete: still hungry, everything taken
        ProxyParser q(ProxyAccept::any);
        CPPUNIT_ASSERT_EQUAL(std::size_t(10), q.feed("PROXY TCP4"));
        CPPUNIT_ASSERT(q.status() == Status::more);
    }

    void testV1Max()
    {
        // the longest valid header: 107 octets
        std::string h = "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
                        "65535 65535\r\n";
        CPPUNIT_ASSERT_EQUAL(std::size_t(104), h.size());
        std::size_t used;
        auto p = whole(h, used);
        CPPUNIT_ASSERT(p.status() == Status::done);
        std::string unk = "PROXY UNKNOWN " + std::string(107 - 16, 'x') + "\r\n";
        CPPUNIT_ASSERT_EQUAL(std::size_t(107), unk.size());
        p = whole(unk, used);
        CPPUNIT_ASSERT(p.status() == Status::done);
        std::string over = "PROXY UNKNOWN " + std::string(107 - 15, 'x') + "\r\n";
        p = whole(over, used);
        CPPUNIT_ASSERT(p.status() == Status::error);
        CPPUNIT_ASSERT(p.error().find("107") != std::string::npos);
        CPPUNIT_ASSERT_EQUAL(std::size_t(107), used);
        // an endless line stops at the limit
        p = bytewise("PROXY TCP4 " + std::string(1000, '1'), used);
        CPPUNIT_ASSERT(p.status() == Status::error);
        CPPUNIT_ASSERT_EQUAL(std::size_t(107), used);
    }

    void testV1Malformed()
    {
        const char *bad[] = {
            "PROXY TCP4 192.0.2.1 192.0.2.2 1 2\n",       // bare LF
            "PROXY TCP4 192.0.2.1 192.0.2.2 1 2\rX",      // CR without LF
            "PROXY TCP5 192.0.2.1 192.0.2.2 1 2\r\n",     // protocol
            "PROXY TCP4 192.0.2.1 192.0.2.2 1\r\n",       // missing port
            "PROXY TCP4 192.0.2.1 192.0.2.2 1 2 3\r\n",   // extra field
            "PROXY TCP4  192.0.2.1 192.0.2.2 1 2\r\n",    // double space
            "PROXY TCP4 ::1 192.0.2.2 1 2\r\n",           // family mismatch
            "PROXY TCP6 192.0.2.1 ::1 1 2\r\n",           // family mismatch
            "PROXY TCP4 192.0.2.1 192.0.2.256 1 2\r\n",   // bad address
            "PROXY TCP4 192.0.2.1 192.0.2.2 65536 2\r\n", // port range
            "PROXY TCP4 192.0.2.1 192.0.2.2 01 2\r\n",    // leading zero
            "PROXY TCP4 192.0.2.1 192.0.2.2 -1 2\r\n",    // sign
            "PROXY TCP4 192.0.2.1 192.0.2.2 1 2 \r\n",    // trailing space
            "PROXY\r\n",                                  // no protocol
            "PROXY \r\n",                                 // empty protocol
            "proxy TCP4 192.0.2.1 192.0.2.2 1 2\r\n",     // case
        };
        for (const char *b : bad) {
            std::size_t used;
            auto p = whole(b, used);
            CPPUNIT_ASSERT_MESSAGE(b, p.status() == Status::error);
            CPPUNIT_ASSERT_MESSAGE(b, !p.error().empty());
            auto q = bytewise(b, used);
            CPPUNIT_ASSERT_MESSAGE(b, q.status() == Status::error);
        }
    }

    void testV2Inet()
    {
        std::string h = v2(1, 0x11, inet_block("\xC0\x00\x02\x0A", "\x7F\x00\x00\x01", 40000, 25));
        std::size_t used;
        auto p = whole(h + "EHLO x\r\n", used);
        CPPUNIT_ASSERT(p.status() == Status::done);
        CPPUNIT_ASSERT_EQUAL(h.size(), used);
        CPPUNIT_ASSERT_EQUAL(2, p.header().version);
        CPPUNIT_ASSERT_EQUAL(std::string("192.0.2.10"), p.header().source);
        CPPUNIT_ASSERT_EQUAL(std::string("127.0.0.1"), p.header().destination);
        CPPUNIT_ASSERT_EQUAL(40000u, p.header().source_port);
        CPPUNIT_ASSERT_EQUAL(25u, p.header().destination_port);
    }

    void testV2Inet6AndTlvs()
    {
        std::string src(16, '\0'), dst(16, '\0');
        src[0] = '\x20';
        src[1] = '\x01';
        src[2] = '\x0d';
        src[3] = '\xb8';
        src[15] = '\x07';
        dst[15] = '\x01';
        std::string body = src + dst + std::string("\x01\x02\x00\x19", 4);
        body += tlv(0x04, std::string(5, '\0')); // NOOP padding
        body += tlv(0x02, "mx.example.test");
        body += tlv(0x05, "abc\x01");
        body += tlv(0x20, std::string(300, 'z')); // SSL: skipped
        std::string h = v2(1, 0x21, body);
        std::size_t used;
        auto p = whole(h, used);
        CPPUNIT_ASSERT_MESSAGE(p.error(), p.status() == Status::done);
        CPPUNIT_ASSERT_EQUAL(6, p.header().family);
        CPPUNIT_ASSERT_EQUAL(std::string("2001:db8::7"), p.header().source);
        CPPUNIT_ASSERT_EQUAL(std::string("::1"), p.header().destination);
        CPPUNIT_ASSERT_EQUAL(258u, p.header().source_port);
        CPPUNIT_ASSERT_EQUAL(std::string("mx.example.test"), p.header().authority);
        CPPUNIT_ASSERT_EQUAL(std::string("abc\\x01"), p.header().unique_id); // printable for the log
    }

    void testV2Local()
    {
        std::size_t used;
        // LOCAL (a health check): addresses ignored, even garbage ones
        auto p = whole(v2(0, 0x00, ""), used);
        CPPUNIT_ASSERT(p.status() == Status::done);
        CPPUNIT_ASSERT(p.header().local);
        CPPUNIT_ASSERT_EQUAL(std::size_t(16), used);
        p = whole(v2(0, 0x11, "xyz"), used);
        CPPUNIT_ASSERT(p.status() == Status::done && p.header().local);
        CPPUNIT_ASSERT_EQUAL(std::size_t(19), used);
        // PROXY with AF_UNSPEC and AF_UNIX: the connection's own address stays
        p = whole(v2(1, 0x00, ""), used);
        CPPUNIT_ASSERT(p.status() == Status::done && p.header().local);
        p = whole(v2(1, 0x31, std::string(216, '\0')), used);
        CPPUNIT_ASSERT(p.status() == Status::done && p.header().local);
    }

    void testV2ByteByByte()
    {
        std::string h = v2(1, 0x11, inet_block("\x7F\x00\x00\x0A", "\x7F\x00\x00\x01", 1, 2) + tlv(5, "id"));
        std::size_t used;
        auto p = bytewise(h + "\x16\x03\x01", used); // TLS follows: untouched
        CPPUNIT_ASSERT(p.status() == Status::done);
        CPPUNIT_ASSERT_EQUAL(h.size(), used);
        CPPUNIT_ASSERT_EQUAL(std::string("127.0.0.10"), p.header().source);
        CPPUNIT_ASSERT_EQUAL(std::string("id"), p.header().unique_id);
        // a long header in pieces
        std::string big =
            v2(1, 0x11,
               inet_block("\x01\x02\x03\x04", "\x05\x06\x07\x08", 1, 2) + tlv(0x20, std::string(65535 - 12 - 3, 'q')));
        ProxyParser q(ProxyAccept::v2);
        std::size_t total = 0;
        for (std::size_t i = 0; i < big.size(); i += 1000)
            total += q.feed(std::string_view(big).substr(i, 1000));
        CPPUNIT_ASSERT(q.status() == Status::done);
        CPPUNIT_ASSERT_EQUAL(big.size(), total);
    }

    void testV2Malformed()
    {
        std::string good = inet_block("\x01\x02\x03\x04", "\x05\x06\x07\x08", 1, 2);
        struct Case {
            std::string in;
            const char *what;
        } cases[] = {
            {std::string(kSig).replace(11, 1, "X") + std::string(4, '\0'), "began with"},
            {v2(1, 0x11, good).replace(12, 1, "\x11"), "version 1"},
            {v2(1, 0x11, good).replace(12, 1, "\x22"), "command"},
            {v2(1, 0x12, good), "STREAM"},
            {v2(1, 0x21, good), "needs 36"},
            {v2(1, 0x11, good.substr(0, 11)), "needs 12"},
            {v2(1, 0x41, good), "family"},
            {v2(1, 0x13, good), "transport"},
            {v2(1, 0x11, good + "\x05\x00"), "truncated TLV"},
            {v2(1, 0x11,
                good + std::string("\x05\x00\x09"
                                   "abc",
                                   6)),
             "runs past"},
        };
        for (const auto &c : cases) {
            std::size_t used;
            auto p = whole(c.in, used);
            CPPUNIT_ASSERT_MESSAGE(c.what, p.status() == Status::error);
            CPPUNIT_ASSERT_MESSAGE(c.what + std::string(": ") + p.error(), p.error().find(c.what) != std::string::npos);
            auto q = bytewise(c.in, used);
            CPPUNIT_ASSERT_MESSAGE(c.what, q.status() == Status::error);
            CPPUNIT_ASSERT_EQUAL(p.error(), q.error());
        }
        // truncated: still waiting (the caller's deadline ends it)
        std::size_t used;
        auto p = whole(v2(1, 0x11, good).substr(0, 20), used);
        CPPUNIT_ASSERT(p.status() == Status::more);
        CPPUNIT_ASSERT_EQUAL(std::size_t(20), used);
    }

    void testNotAHeader()
    {
        std::size_t used;
        // a client that speaks SMTP (or TLS) is told at its first octet
        auto p = whole("EHLO client\r\n", used);
        CPPUNIT_ASSERT(p.status() == Status::error);
        CPPUNIT_ASSERT_EQUAL(std::size_t(0), used);
        CPPUNIT_ASSERT(p.error().find("began with \"E\"") != std::string::npos);
        p = whole("PROXZ", used);
        CPPUNIT_ASSERT(p.status() == Status::error);
        p = whole("\r\nQUIT\r\n", used);
        CPPUNIT_ASSERT(p.status() == Status::error);
        p = whole(std::string("\x16\x03\x01\x02", 4), used);
        CPPUNIT_ASSERT(p.status() == Status::error);
        CPPUNIT_ASSERT(p.error().find("\\x16") != std::string::npos);
    }

    void testAcceptModes()
    {
        std::size_t used;
        auto p = whole("PROXY UNKNOWN\r\n", used, ProxyAccept::v2);
        CPPUNIT_ASSERT(p.status() == Status::error);
        CPPUNIT_ASSERT(p.error().find("ESMTPProxyProtocol is v2") != std::string::npos);
        p = whole(v2(0, 0, ""), used, ProxyAccept::v1);
        CPPUNIT_ASSERT(p.status() == Status::error);
        CPPUNIT_ASSERT(p.error().find("ESMTPProxyProtocol is v1") != std::string::npos);
        p = whole("PROXY UNKNOWN\r\n", used, ProxyAccept::v1);
        CPPUNIT_ASSERT(p.status() == Status::done);
        p = whole(v2(0, 0, ""), used, ProxyAccept::v2);
        CPPUNIT_ASSERT(p.status() == Status::done);
    }
};

CPPUNIT_TEST_SUITE_REGISTRATION(ProxyProtocolTest);

// CidrList: ESMTPProxyTrusted / ESMTPXClientHosts.
class CidrListTest : public CppUnit::TestFixture
{
    CPPUNIT_TEST_SUITE(CidrListTest);
    CPPUNIT_TEST(testMatching);
    CPPUNIT_TEST(testBadSpecs);
    CPPUNIT_TEST_SUITE_END();

  public:
    void testMatching()
    {
        esmtp::CidrList l;
        CPPUNIT_ASSERT(l.empty());
        CPPUNIT_ASSERT(!l.contains("127.0.0.1"));
        CPPUNIT_ASSERT(l.add("127.0.0.0/29"));
        CPPUNIT_ASSERT(l.add("192.0.2.7"));
        CPPUNIT_ASSERT(l.add("2001:db8::/32"));
        CPPUNIT_ASSERT(l.add("10.128.0.0/9"));
        CPPUNIT_ASSERT(l.contains("127.0.0.1") && l.contains("127.0.0.7"));
        CPPUNIT_ASSERT(!l.contains("127.0.0.8"));
        CPPUNIT_ASSERT(l.contains("192.0.2.7") && !l.contains("192.0.2.8"));
        CPPUNIT_ASSERT(l.contains("::ffff:127.0.0.2")); // mapped IPv4
        CPPUNIT_ASSERT(l.contains("2001:db8:ffff::1") && !l.contains("2001:db9::1"));
        CPPUNIT_ASSERT(l.contains("10.200.0.1") && !l.contains("10.127.255.255"));
        CPPUNIT_ASSERT(!l.contains("") && !l.contains("localhost") && !l.contains("::1"));
        esmtp::CidrList all;
        CPPUNIT_ASSERT(all.add("0.0.0.0/0"));
        CPPUNIT_ASSERT(all.contains("203.0.113.1") && !all.contains("2001:db8::1"));
    }

    void testBadSpecs()
    {
        esmtp::CidrList l;
        for (const char *bad : {"", "localhost", "10.0.0.1/8", "10.0.0.0/33", "::/129", "10.0.0.0/", "10.0.0.0/x",
                                "10.0.0.0/08a", "1.2.3", "2001:db8::1/16", "/8"})
            CPPUNIT_ASSERT_MESSAGE(bad, !l.add(bad));
        CPPUNIT_ASSERT(l.empty());
    }
};

CPPUNIT_TEST_SUITE_REGISTRATION(CidrListTest);
