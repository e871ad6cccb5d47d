// DataReader: end of data, dot-unstuffing, smuggling, header splitting.

#include "engine/data_reader.hpp"

#include <cppunit/extensions/HelperMacros.h>

#include <random>
#include <string>
#include <vector>

using esmtp::DataReader;
using esmtp::HeaderField;
using esmtp::Limits;

namespace
{

struct Header {
    std::string name, value, raw;
    bool operator==(const Header &) const = default;
};

// Records everything; consecutive body chunks are merged so that two
// recordings of the same message fed in different pieces compare equal.
class RecordingSink final : public esmtp::DataSink
{
  public:
    void on_header(const HeaderField &f) override
    {
        headers.push_back({std::string(f.name), std::string(f.value), std::string(f.raw)});
        events += "H";
        all += f.raw;
    }
    void on_eoh(std::string_view raw) override
    {
        eoh.emplace_back(raw);
        events += "E";
        all += raw;
    }
    void on_body(std::string_view chunk) override
    {
        body += chunk;
        if (events.empty() || events.back() != 'B')
            events += "B";
        all += chunk;
        ++body_calls;
    }

    bool same_as(const RecordingSink &o) const
    {
        return headers == o.headers && eoh == o.eoh && body == o.body && events == o.events;
    }

    std::vector<Header> headers;
    std::vector<std::string> eoh;
    std::string body;
    std::string events; // "HHEB": headers, end of header, body
    std::string all;    // everything, in order: the message byte for byte
    int body_calls = 0;
};

// Feed `in` in one go; returns the bytes consumed.
std::size_t feed_whole(DataReader &r, std::string_view in, RecordingSink &sink)
{
    r.reset();
    return r.feed(in, sink);
}

// Feed `in` in pieces of the given sizes (cycled); stops when done().
std::size_t feed_pieces(DataReader &r, std::string_view in, RecordingSink &sink, const std::vector<std::size_t> &sizes)
{
    r.reset();
    std::size_t pos = 0, i = 0;
    while (pos < in.size() && !r.done()) {
        std::size_t n = std::min(sizes[i++ % sizes.size()], in.size() - pos);
        std::size_t used = r.feed(in.substr(pos, n), sink);
        CPPUNIT_ASSERT(used <= n);
        if (!r.done())
            CPPUNIT_ASSERT_EQUAL(n, used); // nothing is left over before the end
        pos += used;
    }
    return pos;
}

const std::string kMessage = "Received: from a by b;\r\n"
                             "\tThu, 1 Jan 2026 00:00:00 +0000\r\n"
                             "From: Alice <alice@example.com>\r\n"
                             "Subject: a folded\r\n"
                             "  subject line\r\n"
                             "X-Empty:\r\n"
                             "..X-Dotted: a stuffed line in the header section\r\n"
                             "\r\n"
                             "Hello\r\n"
                             "..leading dot\r\n"
                             "...two dots\r\n"
                             "x\n.\ny\r\n"
                             "x\r.\ry\r\n"
                             "x\n.\r\ny\r\n"
                             "\r\n"
                             ".\r\n";

} // namespace

class DataReaderTest : public CppUnit::TestFixture
{
    CPPUNIT_TEST_SUITE(DataReaderTest);
    CPPUNIT_TEST(testSimpleMessage);
    CPPUNIT_TEST(testEmptyMessage);
    CPPUNIT_TEST(testNotDoneWithoutTerminator);
    CPPUNIT_TEST(testDotUnstuffing);
    CPPUNIT_TEST(testDotUnstuffingInHeader);
    CPPUNIT_TEST(testChunkSizesGiveSameOutput);
    CPPUNIT_TEST(testRandomSplitsGiveSameOutput);
    CPPUNIT_TEST(testTerminatorSplitAcrossChunks);
    CPPUNIT_TEST(testSmugglingLfDotLf);
    CPPUNIT_TEST(testSmugglingLfDotCrLf);
    CPPUNIT_TEST(testSmugglingCrLfDotLf);
    CPPUNIT_TEST(testSmugglingCrDotCr);
    CPPUNIT_TEST(testHeaderUnfolding);
    CPPUNIT_TEST(testHeaderValueWithoutSpace);
    CPPUNIT_TEST(testEohEmptyLine);
    CPPUNIT_TEST(testEohNonHeaderLine);
    CPPUNIT_TEST(testNoHeadersAtAll);
    CPPUNIT_TEST(testBodyByteExact);
    CPPUNIT_TEST(testConsumedStopsAfterTerminator);
    CPPUNIT_TEST(testSize);
    CPPUNIT_TEST(testSizeExceeded);
    CPPUNIT_TEST(testLineTooLong);
    CPPUNIT_TEST(testNormalizeLfOnlyLinesAreNotTooLong);
    CPPUNIT_TEST(testNormalizeBareCrLinesAreNotTooLong);
    CPPUNIT_TEST(testNormalizeLongLfLineIsTooLong);
    CPPUNIT_TEST(testHugeHeaderField);
    CPPUNIT_TEST(testReset);
    CPPUNIT_TEST_SUITE_END();

  public:
    void testSimpleMessage()
    {
        Limits lim;
        DataReader r(lim);
        RecordingSink s;
        std::string in = "Subject: hi\r\n\r\nbody\r\n.\r\n";
        CPPUNIT_ASSERT_EQUAL(in.size(), feed_whole(r, in, s));
        CPPUNIT_ASSERT(r.done());
        CPPUNIT_ASSERT_EQUAL(std::size_t(1), s.headers.size());
        CPPUNIT_ASSERT_EQUAL(std::string("Subject"), s.headers[0].name);
        CPPUNIT_ASSERT_EQUAL(std::string("hi"), s.headers[0].value);
        CPPUNIT_ASSERT_EQUAL(std::string("Subject: hi\r\n"), s.headers[0].raw);
        CPPUNIT_ASSERT_EQUAL(std::size_t(1), s.eoh.size());
        CPPUNIT_ASSERT_EQUAL(std::string("\r\n"), s.eoh[0]);
        CPPUNIT_ASSERT_EQUAL(std::string("body\r\n"), s.body);
        CPPUNIT_ASSERT_EQUAL(std::string("HEB"), s.events);
        CPPUNIT_ASSERT_EQUAL(std::string("Subject: hi\r\n\r\nbody\r\n"), s.all);
    }

    void testEmptyMessage()
    {
        // the CRLF of the DATA command is the first CRLF of CRLF.CRLF
        Limits lim;
        DataReader r(lim);
        RecordingSink s;
        CPPUNIT_ASSERT_EQUAL(std::size_t(3), feed_whole(r, ".\r\nQUIT\r\n", s));
        CPPUNIT_ASSERT(r.done());
        CPPUNIT_ASSERT_EQUAL(std::uint64_t(0), r.size());
        CPPUNIT_ASSERT(s.headers.empty());
        CPPUNIT_ASSERT_EQUAL(std::string(""), s.all);
    }

    void testNotDoneWithoutTerminator()
    {
        Limits lim;
        DataReader r(lim);
        RecordingSink s;
        std::string in = "Subject: hi\r\n\r\nbody\r\n.";
        CPPUNIT_ASSERT_EQUAL(in.size(), feed_whole(r, in, s));
        CPPUNIT_ASSERT(!r.done());
        CPPUNIT_ASSERT_EQUAL(std::size_t(9), r.feed(".\r\nmore\r\n", s)); // "..": a stuffed dot
        CPPUNIT_ASSERT(!r.done());
        CPPUNIT_ASSERT_EQUAL(std::size_t(3), r.feed(".\r\n", s));
        CPPUNIT_ASSERT(r.done());
        CPPUNIT_ASSERT_EQUAL(std::string("body\r\n.\r\nmore\r\n"), s.body);
    }

    void testDotUnstuffing()
    {
        Limits lim;
        DataReader r(lim);
        RecordingSink s;
        feed_whole(r, "\r\n..x\r\n...\r\n..\r\na.b\r\n.\r\n", s);
        CPPUNIT_ASSERT(r.done());
        CPPUNIT_ASSERT_EQUAL(std::string(".x\r\n..\r\n.\r\na.b\r\n"), s.body);
        CPPUNIT_ASSERT_EQUAL(std::uint64_t(2 + 4 + 4 + 3 + 5), r.size());
    }

    void testDotUnstuffingInHeader()
    {
        Limits lim;
        DataReader r(lim);
        RecordingSink s;
        feed_whole(r, "..Subject: x\r\n\r\nb\r\n.\r\n", s);
        CPPUNIT_ASSERT(r.done());
        // after unstuffing the line is ".Subject: x": the message as the handler sees it
        CPPUNIT_ASSERT_EQUAL(std::string(".Subject: x\r\n\r\nb\r\n"), s.all);
    }

    void testChunkSizesGiveSameOutput()
    {
        Limits lim;
        DataReader r(lim);
        RecordingSink whole;
        std::string in = kMessage + "NOOP\r\n";
        std::size_t used = feed_whole(r, in, whole);
        CPPUNIT_ASSERT(r.done());
        CPPUNIT_ASSERT_EQUAL(kMessage.size(), used);

        for (std::size_t n = 1; n <= 17; ++n) {
            RecordingSink s;
            std::size_t pos = feed_pieces(r, in, s, {n});
            std::string msg = "chunk size " + std::to_string(n);
            CPPUNIT_ASSERT_MESSAGE(msg, r.done());
            CPPUNIT_ASSERT_EQUAL_MESSAGE(msg, kMessage.size(), pos);
            CPPUNIT_ASSERT_EQUAL_MESSAGE(msg, whole.all, s.all);
            CPPUNIT_ASSERT_MESSAGE(msg, whole.same_as(s));
            CPPUNIT_ASSERT_EQUAL_MESSAGE(msg, whole.events, s.events);
        }
    }

    void testRandomSplitsGiveSameOutput()
    {
        Limits lim;
        DataReader r(lim);
        RecordingSink whole;
        feed_whole(r, kMessage, whole);

        std::mt19937 rng(20260521);
        std::uniform_int_distribution<std::size_t> dist(1, 40);
        for (int round = 0; round < 200; ++round) {
            std::vector<std::size_t> sizes;
            for (int i = 0; i < 64; ++i)
                sizes.push_back(dist(rng));
            RecordingSink s;
            std::size_t pos = feed_pieces(r, kMessage, s, sizes);
            CPPUNIT_ASSERT(r.done());
            CPPUNIT_ASSERT_EQUAL(kMessage.size(), pos);
            CPPUNIT_ASSERT_EQUAL(whole.all, s.all);
            CPPUNIT_ASSERT(whole.same_as(s));
        }
    }

    void testTerminatorSplitAcrossChunks()
    {
        Limits lim;
        DataReader r(lim);
        RecordingSink s;
        r.reset();
        CPPUNIT_ASSERT_EQUAL(std::size_t(4), r.feed("\r\nhi", s));
        const char *pieces[] = {"\r", "\n", ".", "\r"};
        for (const char *p : pieces) {
            CPPUNIT_ASSERT_EQUAL(std::size_t(1), r.feed(p, s));
            CPPUNIT_ASSERT(!r.done());
        }
        CPPUNIT_ASSERT_EQUAL(std::size_t(1), r.feed("\nRSET\r\n", s));
        CPPUNIT_ASSERT(r.done());
        CPPUNIT_ASSERT_EQUAL(std::string("\r\nhi\r\n"), s.all);
        CPPUNIT_ASSERT_EQUAL(std::string("hi\r\n"), s.body);
    }

    void testSmugglingLfDotLf() { check_smuggling("\n.\n"); }
    void testSmugglingLfDotCrLf() { check_smuggling("\n.\r\n"); }
    void testSmugglingCrDotCr() { check_smuggling("\r.\r"); }

    void testSmugglingCrLfDotLf()
    {
        // "\r\n.\n": the dot starts a line, but ".\n" is not a line of its own.
        // RFC 5321 4.5.2 would remove the leading dot of that line; keeping
        // it is also acceptable. What matters: data does not end there.
        Limits lim;
        DataReader r(lim);
        RecordingSink s;
        std::string in = "Subject: s\r\n\r\nx\r\n.\nMAIL FROM:<evil@example.com>\r\n";
        CPPUNIT_ASSERT_EQUAL(in.size(), feed_whole(r, in, s));
        CPPUNIT_ASSERT(!r.done());
        CPPUNIT_ASSERT_EQUAL(std::size_t(3), r.feed(".\r\n", s));
        CPPUNIT_ASSERT(r.done());
        bool kept = s.body == "x\r\n.\nMAIL FROM:<evil@example.com>\r\n";
        bool unstuffed = s.body == "x\r\n\nMAIL FROM:<evil@example.com>\r\n";
        CPPUNIT_ASSERT_MESSAGE("body: " + s.body, kept || unstuffed);
    }

    void testHeaderUnfolding()
    {
        Limits lim;
        DataReader r(lim);
        RecordingSink s;
        feed_whole(r, "Subject: a folded\r\n  subject\r\n\tline\r\nTo: b@c\r\n\r\n.\r\n", s);
        CPPUNIT_ASSERT(r.done());
        CPPUNIT_ASSERT_EQUAL(std::size_t(2), s.headers.size());
        CPPUNIT_ASSERT_EQUAL(std::string("Subject"), s.headers[0].name);
        CPPUNIT_ASSERT_EQUAL(std::string("a folded  subject\tline"), s.headers[0].value);
        CPPUNIT_ASSERT_EQUAL(std::string("Subject: a folded\r\n  subject\r\n\tline\r\n"), s.headers[0].raw);
        CPPUNIT_ASSERT_EQUAL(std::string("To"), s.headers[1].name);
        CPPUNIT_ASSERT_EQUAL(std::string("b@c"), s.headers[1].value);
        CPPUNIT_ASSERT_EQUAL(std::string("To: b@c\r\n"), s.headers[1].raw);
    }

    void testHeaderValueWithoutSpace()
    {
        Limits lim;
        DataReader r(lim);
        RecordingSink s;
        feed_whole(r, "X-A:b\r\nX-Empty:\r\nX-Spaces:   v  \r\n\r\n.\r\n", s);
        CPPUNIT_ASSERT_EQUAL(std::size_t(3), s.headers.size());
        CPPUNIT_ASSERT_EQUAL(std::string("X-A"), s.headers[0].name);
        CPPUNIT_ASSERT_EQUAL(std::string("b"), s.headers[0].value);
        CPPUNIT_ASSERT_EQUAL(std::string("X-Empty"), s.headers[1].name);
        CPPUNIT_ASSERT_EQUAL(std::string(""), s.headers[1].value);
        CPPUNIT_ASSERT_EQUAL(std::string("X-Spaces"), s.headers[2].name);
        // leading whitespace goes; trailing whitespace may stay
        CPPUNIT_ASSERT(s.headers[2].value == "v  " || s.headers[2].value == "v");
        CPPUNIT_ASSERT_EQUAL(std::string("X-Spaces:   v  \r\n"), s.headers[2].raw);
    }

    void testEohEmptyLine()
    {
        Limits lim;
        DataReader r(lim);
        RecordingSink s;
        feed_whole(r, "A: 1\r\n\r\nB: 2\r\n.\r\n", s);
        CPPUNIT_ASSERT_EQUAL(std::size_t(1), s.headers.size());
        CPPUNIT_ASSERT_EQUAL(std::size_t(1), s.eoh.size());
        CPPUNIT_ASSERT_EQUAL(std::string("\r\n"), s.eoh[0]);
        // after the empty line, header-looking lines are body
        CPPUNIT_ASSERT_EQUAL(std::string("B: 2\r\n"), s.body);
        CPPUNIT_ASSERT_EQUAL(std::string("HEB"), s.events);
    }

    void testEohNonHeaderLine()
    {
        Limits lim;
        DataReader r(lim);
        RecordingSink s;
        feed_whole(r, "A: 1\r\nthis is not a header\r\nB: 2\r\n.\r\n", s);
        CPPUNIT_ASSERT_EQUAL(std::size_t(1), s.headers.size());
        CPPUNIT_ASSERT_EQUAL(std::string("A"), s.headers[0].name);
        CPPUNIT_ASSERT_EQUAL(std::size_t(1), s.eoh.size());
        CPPUNIT_ASSERT_EQUAL(std::string(""), s.eoh[0]);
        CPPUNIT_ASSERT_EQUAL(std::string("this is not a header\r\nB: 2\r\n"), s.body);
        CPPUNIT_ASSERT_EQUAL(std::string("A: 1\r\nthis is not a header\r\nB: 2\r\n"), s.all);
    }

    void testNoHeadersAtAll()
    {
        Limits lim;
        DataReader r(lim);
        RecordingSink s;
        feed_whole(r, "just text\r\n.\r\n", s);
        CPPUNIT_ASSERT(s.headers.empty());
        CPPUNIT_ASSERT_EQUAL(std::size_t(1), s.eoh.size());
        CPPUNIT_ASSERT_EQUAL(std::string(""), s.eoh[0]);
        CPPUNIT_ASSERT_EQUAL(std::string("just text\r\n"), s.body);
    }

    void testBodyByteExact()
    {
        // every octet but the terminator survives, in 300 KB of varied lines
        std::string body;
        std::mt19937 rng(7);
        for (int i = 0; i < 3000; ++i) {
            std::size_t len = rng() % 200;
            std::string line;
            for (std::size_t j = 0; j < len; ++j) {
                char c = char(rng() % 256);
                if (c == '\r' || c == '\n')
                    c = 'q';
                line += c;
            }
            if (!line.empty() && line[0] == '.')
                line[0] = '#';
            body += line + "\r\n";
        }
        std::string in = "Subject: big\r\n\r\n" + body + ".\r\n";

        Limits lim;
        DataReader r(lim);
        RecordingSink whole;
        CPPUNIT_ASSERT_EQUAL(in.size(), feed_whole(r, in, whole));
        CPPUNIT_ASSERT(r.done());
        CPPUNIT_ASSERT(body == whole.body);

        RecordingSink pieces;
        feed_pieces(r, in, pieces, {4093, 1, 2, 8191});
        CPPUNIT_ASSERT(r.done());
        CPPUNIT_ASSERT(body == pieces.body);
        CPPUNIT_ASSERT_EQUAL(std::uint64_t(in.size() - 3), r.size());
    }

    void testConsumedStopsAfterTerminator()
    {
        Limits lim;
        DataReader r(lim);
        RecordingSink s;
        std::string msg = "Subject: t\r\n\r\nhello\r\n.\r\n";
        std::string in = msg + "MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n";
        CPPUNIT_ASSERT_EQUAL(msg.size(), feed_whole(r, in, s));
        CPPUNIT_ASSERT(r.done());
        CPPUNIT_ASSERT_EQUAL(std::string("hello\r\n"), s.body);

        // once done, nothing more is taken
        CPPUNIT_ASSERT_EQUAL(std::size_t(0), r.feed("NOOP\r\n", s));
        CPPUNIT_ASSERT_EQUAL(std::string("hello\r\n"), s.body);
    }

    void testSize()
    {
        Limits lim;
        DataReader r(lim);
        RecordingSink s;
        feed_whole(r, "Subject: hi\r\n\r\nbody\r\n.\r\n", s);
        CPPUNIT_ASSERT_EQUAL(std::uint64_t(21), r.size());
        CPPUNIT_ASSERT(!r.size_exceeded());
        CPPUNIT_ASSERT_EQUAL(std::uint64_t(s.all.size()), r.size());
    }

    void testSizeExceeded()
    {
        Limits lim;
        lim.max_message_size = 20;
        DataReader r(lim);
        RecordingSink s;
        feed_whole(r, "\r\n0123456789012345\r\n.\r\n", s); // 20 octets: at the limit
        CPPUNIT_ASSERT(r.done());
        CPPUNIT_ASSERT_EQUAL(std::uint64_t(20), r.size());
        CPPUNIT_ASSERT(!r.size_exceeded());

        RecordingSink s2;
        std::string in = "\r\n01234567890123456\r\n.\r\n"; // 21 octets
        CPPUNIT_ASSERT_EQUAL(in.size(), feed_whole(r, in, s2));
        CPPUNIT_ASSERT(r.done()); // the end is still found
        CPPUNIT_ASSERT(r.size_exceeded());
    }

    void testLineTooLong()
    {
        Limits lim;
        DataReader r(lim);
        RecordingSink s;
        std::string ok_line(998, 'a'); // 1000 octets with CRLF
        std::string in = "\r\n" + ok_line + "\r\n.\r\n";
        CPPUNIT_ASSERT_EQUAL(in.size(), feed_whole(r, in, s));
        CPPUNIT_ASSERT(r.done());
        CPPUNIT_ASSERT(!r.line_too_long());

        RecordingSink s2;
        std::string long_line(999, 'a'); // 1001 octets with CRLF
        in = "\r\n" + long_line + "\r\nshort\r\n.\r\n";
        CPPUNIT_ASSERT_EQUAL(in.size(), feed_whole(r, in, s2));
        CPPUNIT_ASSERT(r.done());
        CPPUNIT_ASSERT(r.line_too_long());

        // a long header line too
        RecordingSink s3;
        in = "Subject: " + long_line + "\r\n\r\n.\r\n";
        feed_whole(r, in, s3);
        CPPUNIT_ASSERT(r.done());
        CPPUNIT_ASSERT(r.line_too_long());
    }

    // Issue 8 defect 1: with ESMTPBareLineFeed normalize, each bare LF ends
    // a text line, so the line-length limit applies per LF-terminated line
    // (25 lines of 50 octets were "too long" together).
    void testNormalizeLfOnlyLinesAreNotTooLong()
    {
        Limits lim;
        DataReader r(lim);
        r.set_normalize(true);
        std::string line(50, 'a');
        std::string in = "Subject: lf only\n\n", expect = "Subject: lf only\r\n\r\n";
        for (int i = 0; i < 25; ++i) {
            in += line + "\n";
            expect += line + "\r\n";
        }
        in += "\r\n.\r\n";
        expect += "\r\n";
        for (std::size_t piece : {in.size(), std::size_t(1), std::size_t(7)}) {
            RecordingSink s;
            CPPUNIT_ASSERT_EQUAL(in.size(), feed_pieces(r, in, s, {piece}));
            CPPUNIT_ASSERT(r.done());
            CPPUNIT_ASSERT_MESSAGE("LF-only lines counted as one long line", !r.line_too_long());
            CPPUNIT_ASSERT(r.bare_newline());
            CPPUNIT_ASSERT_EQUAL(expect, s.all);
            CPPUNIT_ASSERT_EQUAL(std::string("Subject"), s.headers.at(0).name);
        }
    }

    void testNormalizeBareCrLinesAreNotTooLong()
    {
        Limits lim;
        lim.max_text_line = 20;
        DataReader r(lim);
        r.set_normalize(true);
        RecordingSink s;
        // each line 15 octets + CR: 17 with the CRLF it becomes; a stuffed
        // dot line ending in a bare CR too
        std::string in = "\r\n" + std::string(15, 'b') + "\r" + std::string(15, 'c') + "\r..dot" +
                         std::string(12, 'd') + "\r" + std::string(15, 'e') + "\r\n.\r\n";
        CPPUNIT_ASSERT_EQUAL(in.size(), feed_whole(r, in, s));
        CPPUNIT_ASSERT(r.done());
        CPPUNIT_ASSERT(!r.line_too_long());
        CPPUNIT_ASSERT_EQUAL("\r\n" + std::string(15, 'b') + "\r\n" + std::string(15, 'c') + "\r\n..dot" +
                                 std::string(12, 'd') + "\r\n" + std::string(15, 'e') + "\r\n",
                             s.all);
    }

    void testNormalizeLongLfLineIsTooLong()
    {
        Limits lim;
        DataReader r(lim);
        r.set_normalize(true);
        // 998 octets + LF becomes 998 + CRLF: 1000, allowed
        RecordingSink s;
        std::string in = "\r\n" + std::string(998, 'a') + "\nshort\n\r\n.\r\n";
        CPPUNIT_ASSERT_EQUAL(in.size(), feed_whole(r, in, s));
        CPPUNIT_ASSERT(!r.line_too_long());
        // 999 octets + LF is stored as 1001 octets with CRLF: too long
        RecordingSink s2;
        in = "\r\nshort\n" + std::string(999, 'a') + "\nshort\r\n.\r\n";
        CPPUNIT_ASSERT_EQUAL(in.size(), feed_whole(r, in, s2));
        CPPUNIT_ASSERT(r.line_too_long());
        // and a bare-CR-terminated one
        RecordingSink s3;
        in = "\r\nshort\r" + std::string(999, 'a') + "\rshort\r\n.\r\n";
        CPPUNIT_ASSERT_EQUAL(in.size(), feed_whole(r, in, s3));
        CPPUNIT_ASSERT(r.line_too_long());
    }

    void testHugeHeaderField()
    {
        Limits lim;
        lim.max_header_field = 200;
        DataReader r(lim);
        RecordingSink s;
        // a folded field of ~3000 octets in short lines
        std::string big = "X-Big: start\r\n";
        for (int i = 0; i < 100; ++i)
            big += " continuation " + std::to_string(i) + "\r\n";
        std::string msg = "From: a@b\r\n" + big + "Subject: after\r\n\r\nbody\r\n";
        std::string in = msg + ".\r\n";
        CPPUNIT_ASSERT_EQUAL(in.size(), feed_whole(r, in, s));
        CPPUNIT_ASSERT(r.done());
        CPPUNIT_ASSERT(!r.line_too_long());
        // the field before is a header; nothing from the big field on is
        CPPUNIT_ASSERT(!s.headers.empty());
        CPPUNIT_ASSERT_EQUAL(std::string("From"), s.headers[0].name);
        for (const auto &h : s.headers) {
            CPPUNIT_ASSERT(h.name != "Subject");
            CPPUNIT_ASSERT(h.raw.size() <= 200);
        }
        // but every byte reached the sink, in order
        CPPUNIT_ASSERT_EQUAL(msg, s.all);
        CPPUNIT_ASSERT_EQUAL(std::uint64_t(msg.size()), r.size());

        // same when fed byte by byte
        RecordingSink s2;
        feed_pieces(r, in, s2, {1});
        CPPUNIT_ASSERT_EQUAL(msg, s2.all);
        CPPUNIT_ASSERT(s.same_as(s2));
    }

    void testReset()
    {
        Limits lim;
        DataReader r(lim);
        RecordingSink s;
        feed_whole(r, "A: 1\r\n\r\nfirst\r\n.\r\n", s);
        CPPUNIT_ASSERT(r.done());
        r.reset();
        CPPUNIT_ASSERT(!r.done());
        CPPUNIT_ASSERT_EQUAL(std::uint64_t(0), r.size());
        RecordingSink s2;
        r.feed("B: 2\r\n\r\nsecond\r\n.\r\n", s2);
        CPPUNIT_ASSERT(r.done());
        CPPUNIT_ASSERT_EQUAL(std::string("B: 2\r\n\r\nsecond\r\n"), s2.all);
        CPPUNIT_ASSERT_EQUAL(std::string("B"), s2.headers.at(0).name);
    }

  private:
    // `seq` inside the body never ends data and is passed on unchanged.
    void check_smuggling(const std::string &seq)
    {
        Limits lim;
        DataReader r(lim);
        RecordingSink s;
        std::string smuggled = "x" + seq + "MAIL FROM:<evil@example.com>\r\n";
        std::string in = "Subject: s\r\n\r\n" + smuggled;
        CPPUNIT_ASSERT_EQUAL(in.size(), feed_whole(r, in, s));
        CPPUNIT_ASSERT_MESSAGE("data ended early", !r.done());
        CPPUNIT_ASSERT_EQUAL(std::size_t(3), r.feed(".\r\n", s));
        CPPUNIT_ASSERT(r.done());
        CPPUNIT_ASSERT_EQUAL(smuggled, s.body);

        // and the same fed byte by byte
        RecordingSink s2;
        feed_pieces(r, in + ".\r\n", s2, {1});
        CPPUNIT_ASSERT(r.done());
        CPPUNIT_ASSERT_EQUAL(smuggled, s2.body);
    }
};

CPPUNIT_TEST_SUITE_REGISTRATION(DataReaderTest);
