// LineReader: command lines end at LF, CR before it removed, 512 octets max.

#include "engine/line_reader.hpp"

#include <cppunit/extensions/HelperMacros.h>

#include <string>
#include <vector>

using esmtp::LineReader;
using Status = esmtp::LineReader::Status;

namespace
{

// Feed `in` completely; collect complete lines, and "<too long>" for lines
// over the limit.
std::vector<std::string> feed_all(LineReader &r, std::string_view in)
{
    std::vector<std::string> out;
    while (!in.empty()) {
        std::size_t used = 0;
        Status st = r.feed(in, used);
        CPPUNIT_ASSERT(used <= in.size());
        if (st == Status::line)
            out.emplace_back(r.line());
        else if (st == Status::too_long)
            out.emplace_back("<too long>");
        else
            CPPUNIT_ASSERT_EQUAL(in.size(), used); // need_more uses everything
        CPPUNIT_ASSERT(used > 0);
        in.remove_prefix(used);
    }
    return out;
}

} // namespace

class LineReaderTest : public CppUnit::TestFixture
{
    CPPUNIT_TEST_SUITE(LineReaderTest);
    CPPUNIT_TEST(testCrlfLines);
    CPPUNIT_TEST(testNoPartialAfterCompleteLine);
    CPPUNIT_TEST(testConsumedStopsAfterLf);
    CPPUNIT_TEST(testBareLfEndsLine);
    CPPUNIT_TEST(testOnlyCrBeforeLfStripped);
    CPPUNIT_TEST(testEmptyLine);
    CPPUNIT_TEST(testPartialAcrossFeeds);
    CPPUNIT_TEST(testExactly512);
    CPPUNIT_TEST(test513TooLong);
    CPPUNIT_TEST(testHugeLineBoundedMemory);
    CPPUNIT_TEST(testByteByByte);
    CPPUNIT_TEST(testCustomLimit);
    CPPUNIT_TEST_SUITE_END();

  public:
    void testCrlfLines()
    {
        LineReader r;
        auto lines = feed_all(r, "HELO client.example\r\nMAIL FROM:<a@b>\r\nQUIT\r\n");
        CPPUNIT_ASSERT_EQUAL(std::size_t(3), lines.size());
        CPPUNIT_ASSERT_EQUAL(std::string("HELO client.example"), lines[0]);
        CPPUNIT_ASSERT_EQUAL(std::string("MAIL FROM:<a@b>"), lines[1]);
        CPPUNIT_ASSERT_EQUAL(std::string("QUIT"), lines[2]);
    }

    void testNoPartialAfterCompleteLine()
    {
        // has_partial() is about bytes of an unfinished line, not the line handed out
        LineReader r;
        CPPUNIT_ASSERT(!r.has_partial());
        std::size_t used = 0;
        CPPUNIT_ASSERT(r.feed("NOOP\r\n", used) == Status::line);
        CPPUNIT_ASSERT(!r.has_partial());
        CPPUNIT_ASSERT(r.feed("NO", used) == Status::need_more);
        CPPUNIT_ASSERT(r.has_partial());
        CPPUNIT_ASSERT(r.feed("OP\r\n", used) == Status::line);
        CPPUNIT_ASSERT(!r.has_partial());
    }

    void testConsumedStopsAfterLf()
    {
        LineReader r;
        std::string in = "NOOP\r\nQUIT\r\n";
        std::size_t used = 0;
        CPPUNIT_ASSERT(r.feed(in, used) == Status::line);
        CPPUNIT_ASSERT_EQUAL(std::size_t(6), used);
        CPPUNIT_ASSERT_EQUAL(std::string("NOOP"), std::string(r.line()));
        CPPUNIT_ASSERT(r.feed(std::string_view(in).substr(used), used) == Status::line);
        CPPUNIT_ASSERT_EQUAL(std::size_t(6), used);
        CPPUNIT_ASSERT_EQUAL(std::string("QUIT"), std::string(r.line()));
    }

    void testBareLfEndsLine()
    {
        LineReader r;
        auto lines = feed_all(r, "NOOP\nRSET\r\n");
        CPPUNIT_ASSERT_EQUAL(std::size_t(2), lines.size());
        CPPUNIT_ASSERT_EQUAL(std::string("NOOP"), lines[0]);
        CPPUNIT_ASSERT_EQUAL(std::string("RSET"), lines[1]);
    }

    void testOnlyCrBeforeLfStripped()
    {
        LineReader r;
        // a CR elsewhere is not a line end and stays in the line
        auto lines = feed_all(r, "NO\rOP\r\n");
        CPPUNIT_ASSERT_EQUAL(std::size_t(1), lines.size());
        CPPUNIT_ASSERT_EQUAL(std::string("NO\rOP"), lines[0]);
        // only one CR is removed
        lines = feed_all(r, "NOOP\r\r\n");
        CPPUNIT_ASSERT_EQUAL(std::size_t(1), lines.size());
        CPPUNIT_ASSERT_EQUAL(std::string("NOOP\r"), lines[0]);
    }

    void testEmptyLine()
    {
        LineReader r;
        auto lines = feed_all(r, "\r\n\n");
        CPPUNIT_ASSERT_EQUAL(std::size_t(2), lines.size());
        CPPUNIT_ASSERT_EQUAL(std::string(""), lines[0]);
        CPPUNIT_ASSERT_EQUAL(std::string(""), lines[1]);
    }

    void testPartialAcrossFeeds()
    {
        LineReader r;
        std::size_t used = 0;
        CPPUNIT_ASSERT(r.feed("MAIL FR", used) == Status::need_more);
        CPPUNIT_ASSERT_EQUAL(std::size_t(7), used);
        CPPUNIT_ASSERT(r.has_partial());
        CPPUNIT_ASSERT(r.feed("OM:<a@b>\r", used) == Status::need_more);
        CPPUNIT_ASSERT_EQUAL(std::size_t(9), used);
        CPPUNIT_ASSERT(r.feed("\nNOOP", used) == Status::line);
        CPPUNIT_ASSERT_EQUAL(std::size_t(1), used);
        CPPUNIT_ASSERT_EQUAL(std::string("MAIL FROM:<a@b>"), std::string(r.line()));
        CPPUNIT_ASSERT(r.feed("NOOP", used) == Status::need_more);
        CPPUNIT_ASSERT(r.has_partial());

        r.reset();
        CPPUNIT_ASSERT(!r.has_partial());
        CPPUNIT_ASSERT(r.feed("QUIT\r\n", used) == Status::line);
        CPPUNIT_ASSERT_EQUAL(std::string("QUIT"), std::string(r.line()));
    }

    void testExactly512()
    {
        LineReader r;
        std::string line(510, 'a');
        auto lines = feed_all(r, line + "\r\n");
        CPPUNIT_ASSERT_EQUAL(std::size_t(1), lines.size());
        CPPUNIT_ASSERT_EQUAL(line, lines[0]);
    }

    void test513TooLong()
    {
        LineReader r;
        std::string line(511, 'a');
        auto lines = feed_all(r, line + "\r\nNOOP\r\n");
        CPPUNIT_ASSERT_EQUAL(std::size_t(2), lines.size());
        CPPUNIT_ASSERT_EQUAL(std::string("<too long>"), lines[0]);
        // the next line is fine again
        CPPUNIT_ASSERT_EQUAL(std::string("NOOP"), lines[1]);
    }

    void testHugeLineBoundedMemory()
    {
        LineReader r;
        std::string chunk(8192, 'x');
        for (int i = 0; i < 128; ++i) { // 1 MiB without LF
            std::size_t used = 0;
            CPPUNIT_ASSERT(r.feed(chunk, used) == Status::need_more);
            CPPUNIT_ASSERT_EQUAL(chunk.size(), used);
            // what is kept of the line never grows past the limit
            CPPUNIT_ASSERT(r.line().size() <= 512);
        }
        CPPUNIT_ASSERT(r.has_partial());

        std::size_t used = 0;
        CPPUNIT_ASSERT(r.feed("xx\r\nQUIT\r\n", used) == Status::too_long);
        CPPUNIT_ASSERT_EQUAL(std::size_t(4), used);
        CPPUNIT_ASSERT(!r.has_partial());
        CPPUNIT_ASSERT(r.feed("QUIT\r\n", used) == Status::line);
        CPPUNIT_ASSERT_EQUAL(std::string("QUIT"), std::string(r.line()));
    }

    void testByteByByte()
    {
        std::string in =
            "EHLO client.example\r\nMAIL FROM:<a@b>\nRCPT TO:<c@d>\r\n" + std::string(600, 'z') + "\r\nDATA\r\n";
        LineReader whole;
        auto expected = feed_all(whole, in);
        CPPUNIT_ASSERT_EQUAL(std::size_t(5), expected.size());

        LineReader r;
        std::vector<std::string> got;
        for (char c : in) {
            std::size_t used = 0;
            Status st = r.feed(std::string_view(&c, 1), used);
            CPPUNIT_ASSERT_EQUAL(std::size_t(1), used);
            if (st == Status::line)
                got.emplace_back(r.line());
            else if (st == Status::too_long)
                got.emplace_back("<too long>");
        }
        CPPUNIT_ASSERT(expected == got);
        CPPUNIT_ASSERT_EQUAL(std::string("<too long>"), got[3]);
        CPPUNIT_ASSERT_EQUAL(std::string("DATA"), got[4]);
    }

    void testCustomLimit()
    {
        LineReader r(10);
        auto lines = feed_all(r, "12345678\r\n123456789\r\nok\r\n");
        CPPUNIT_ASSERT_EQUAL(std::size_t(3), lines.size());
        CPPUNIT_ASSERT_EQUAL(std::string("12345678"), lines[0]);
        CPPUNIT_ASSERT_EQUAL(std::string("<too long>"), lines[1]);
        CPPUNIT_ASSERT_EQUAL(std::string("ok"), lines[2]);
    }
};

CPPUNIT_TEST_SUITE_REGISTRATION(LineReaderTest);
