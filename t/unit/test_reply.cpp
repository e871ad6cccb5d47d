// format_reply / default_enhanced: how replies go on the wire (RFC 5321 4.2).

#include "engine/reply_format.hpp"

#include <cppunit/extensions/HelperMacros.h>

#include <string>
#include <vector>

using esmtp::Reply;

namespace
{

std::string fmt(const Reply &r, bool enhanced)
{
    std::string out;
    esmtp::format_reply(r, enhanced, out);
    return out;
}

} // namespace

class ReplyTest : public CppUnit::TestFixture
{
    CPPUNIT_TEST_SUITE(ReplyTest);
    CPPUNIT_TEST(testSingleLineEnhanced);
    CPPUNIT_TEST(testSingleLinePlain);
    CPPUNIT_TEST(testMultiLine);
    CPPUNIT_TEST(testMultiLineEnhanced);
    CPPUNIT_TEST(testDefaultEnhancedFilledIn);
    CPPUNIT_TEST(testNoEnhancedFor3xx);
    CPPUNIT_TEST(testDefaultEnhancedByClass);
    CPPUNIT_TEST(testAppendsToOutput);
    CPPUNIT_TEST(testEndsWithCrlf);
    CPPUNIT_TEST(testCrLfInjectionReplaced);
    CPPUNIT_TEST(testEmptyTextSendsCodeAlone);
    CPPUNIT_TEST(testOneEnhancedCodeRule);
    CPPUNIT_TEST_SUITE_END();

  public:
    void testSingleLineEnhanced()
    {
        CPPUNIT_ASSERT_EQUAL(std::string("250 2.1.0 Ok\r\n"), fmt(Reply(250, "Ok", "2.1.0"), true));
        CPPUNIT_ASSERT_EQUAL(std::string("550 5.1.1 No such user\r\n"), fmt(Reply(550, "No such user", "5.1.1"), true));
    }

    void testSingleLinePlain()
    {
        // enhanced off: the code is never sent, even when the reply has one
        CPPUNIT_ASSERT_EQUAL(std::string("250 Ok\r\n"), fmt(Reply(250, "Ok", "2.1.0"), false));
        CPPUNIT_ASSERT_EQUAL(std::string("220 mx.example.org ESMTP\r\n"),
                             fmt(Reply(220, "mx.example.org ESMTP"), false));
    }

    void testMultiLine()
    {
        Reply r(250, std::vector<std::string>{"mx.example.org", "PIPELINING", "8BITMIME"});
        CPPUNIT_ASSERT_EQUAL(std::string("250-mx.example.org\r\n250-PIPELINING\r\n250 8BITMIME\r\n"), fmt(r, false));
    }

    void testMultiLineEnhanced()
    {
        Reply r(214, std::vector<std::string>{"Commands:", "HELO EHLO"}, "2.0.0");
        CPPUNIT_ASSERT_EQUAL(std::string("214-2.0.0 Commands:\r\n214 2.0.0 HELO EHLO\r\n"), fmt(r, true));
    }

    void testDefaultEnhancedFilledIn()
    {
        CPPUNIT_ASSERT_EQUAL(std::string("250 2.0.0 Ok\r\n"), fmt(Reply(250, "Ok"), true));
        CPPUNIT_ASSERT_EQUAL(std::string("451 4.0.0 Try later\r\n"), fmt(Reply(451, "Try later"), true));
        CPPUNIT_ASSERT_EQUAL(std::string("554 5.0.0 No\r\n"), fmt(Reply(554, "No"), true));
    }

    void testNoEnhancedFor3xx()
    {
        // 1xx/3xx have no class default: nothing is inserted
        CPPUNIT_ASSERT_EQUAL(std::string("354 End data with <CR><LF>.<CR><LF>\r\n"),
                             fmt(Reply(354, "End data with <CR><LF>.<CR><LF>"), true));
    }

    void testDefaultEnhancedByClass()
    {
        CPPUNIT_ASSERT_EQUAL(std::string("2.0.0"), std::string(esmtp::default_enhanced(250)));
        CPPUNIT_ASSERT_EQUAL(std::string("2.0.0"), std::string(esmtp::default_enhanced(221)));
        CPPUNIT_ASSERT_EQUAL(std::string("4.0.0"), std::string(esmtp::default_enhanced(421)));
        CPPUNIT_ASSERT_EQUAL(std::string("5.0.0"), std::string(esmtp::default_enhanced(550)));
        CPPUNIT_ASSERT_EQUAL(std::string(""), std::string(esmtp::default_enhanced(354)));
        CPPUNIT_ASSERT_EQUAL(std::string(""), std::string(esmtp::default_enhanced(199)));
    }

    void testAppendsToOutput()
    {
        std::string out = "220 x\r\n";
        esmtp::format_reply(Reply(250, "Ok", "2.0.0"), true, out);
        CPPUNIT_ASSERT_EQUAL(std::string("220 x\r\n250 2.0.0 Ok\r\n"), out);
    }

    void testEndsWithCrlf()
    {
        std::string out = fmt(Reply(250, std::vector<std::string>{"a", "b", "c"}, "2.0.0"), true);
        // every line ends with CRLF, never a bare LF
        std::size_t lines = 0;
        for (std::size_t i = 0; i < out.size(); ++i) {
            if (out[i] == '\n') {
                CPPUNIT_ASSERT(i > 0 && out[i - 1] == '\r');
                ++lines;
            }
        }
        CPPUNIT_ASSERT_EQUAL(std::size_t(3), lines);
        CPPUNIT_ASSERT_EQUAL(std::string("250-2.0.0 a\r\n250-2.0.0 b\r\n250 2.0.0 c\r\n"), out);
    }

    void testCrLfInjectionReplaced()
    {
        // a handler cannot smuggle a reply line into the stream
        std::string out = fmt(Reply(550, "no\r\n250 2.0.0 Ok", "5.7.1"), true);
        CPPUNIT_ASSERT_EQUAL(std::string("550 5.7.1 no  250 2.0.0 Ok\r\n"), out);

        out = fmt(Reply(550, std::vector<std::string>{"a\nb", "c\rd"}), false);
        CPPUNIT_ASSERT_EQUAL(std::string("550-a b\r\n550 c d\r\n"), out);

        // nor through the enhanced code: anything but x.y.z becomes the class default
        out = fmt(Reply(550, "no", "5.7.1\r\n250 2.0.0"), true);
        CPPUNIT_ASSERT_EQUAL(std::string("550 5.0.0 no\r\n"), out);
        out = fmt(Reply(451, "later", "4.x.1"), true);
        CPPUNIT_ASSERT_EQUAL(std::string("451 4.0.0 later\r\n"), out);
    }

    void testEmptyTextSendsCodeAlone()
    {
        Reply r(250, std::vector<std::string>{});
        CPPUNIT_ASSERT_EQUAL(std::string("250\r\n"), fmt(r, false));
        // with enhanced codes the line still is a single line with the code first
        std::string out = fmt(r, true);
        CPPUNIT_ASSERT(out.rfind("250", 0) == 0);
        CPPUNIT_ASSERT_EQUAL(std::string::npos, out.find("250-"));
        CPPUNIT_ASSERT(out.size() >= 5 && out.substr(out.size() - 2) == "\r\n");
    }

    void testOneEnhancedCodeRule()
    {
        // one rule for the wire, the handler's reply check and the milter's
        for (const char *good : {"2.0.0", "5.1.1", "4.7.100", "5.123.456"})
            CPPUNIT_ASSERT_MESSAGE(good, esmtp::enhanced_code_syntax(good));
        for (const char *bad : {"", "2.0", "2.0.0.0", "22.0.0", "3.0.0", "9.1.1", "4.1234.1", "4.1.1234", "4..1",
                                "4.1.", "4.1.1 ", "x.1.1"})
            CPPUNIT_ASSERT_MESSAGE(bad, !esmtp::enhanced_code_syntax(bad));
        // what the check refuses is not sent either: the class default goes out
        CPPUNIT_ASSERT_EQUAL(std::string("451 4.0.0 x\r\n"), fmt(Reply(451, "x", "4.1234.1"), true));
        CPPUNIT_ASSERT_EQUAL(std::string("550 5.0.0 x\r\n"), fmt(Reply(550, "x", "55.1.1"), true));
    }
};

CPPUNIT_TEST_SUITE_REGISTRATION(ReplyTest);
