// The maildir handler driven through a Session: one file per message in new/,
// nothing left in tmp/, nothing at all for a message that was not accepted.

#include "handlers/maildir.hpp"
#include "session.hpp"

#include <cppunit/extensions/HelperMacros.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace fs = std::filesystem;

namespace
{

std::vector<fs::path> files_in(const fs::path &dir)
{
    std::vector<fs::path> out;
    std::error_code ec;
    if (!fs::exists(dir, ec))
        return out;
    for (const auto &e : fs::directory_iterator(dir))
        out.push_back(e.path());
    return out;
}

std::string slurp(const fs::path &p)
{
    std::ifstream in(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

const std::string kMessage = "From: alice@example.com\r\n"
                             "To: bob@example.org\r\n"
                             "Subject: maildir test\r\n"
                             "\r\n"
                             "Line one.\r\n"
                             ".A line that started with a dot.\r\n"
                             "\r\n"
                             "Last line.\r\n";

// Dot-stuff `msg` for the wire.
std::string stuffed(const std::string &msg)
{
    std::string out;
    bool bol = true;
    for (char c : msg) {
        if (bol && c == '.')
            out += '.';
        out += c;
        bol = c == '\n';
    }
    return out;
}

// A session with a maildir handler.
struct MaildirSession {
    std::unique_ptr<esmtp::Session> s;

    explicit MaildirSession(const std::string &dir)
    {
        auto factory = esmtp::make_maildir_factory(dir);
        CPPUNIT_ASSERT(factory);
        esmtp::SessionConfig cfg;
        cfg.hostname = "mx.example.org";
        cfg.accept_domains = {"*"};
        cfg.limits.max_message_size = 4096;
        s = std::make_unique<esmtp::Session>(cfg, esmtp::ConnectionInfo{}, factory->create(), nullptr);
        s->start();
        send("EHLO client.example\r\n");
    }
    std::string send(std::string_view in)
    {
        s->feed(in);
        std::string out = s->output();
        s->output().clear();
        return out;
    }
    // MAIL, RCPT, DATA; returns the trace headers the session will prepend.
    std::string begin()
    {
        std::string out = send("MAIL FROM:<alice@example.com>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n");
        CPPUNIT_ASSERT_MESSAGE(out, out.find("354 ") != std::string::npos);
        return std::string(s->trace_headers());
    }
};

} // namespace

class MaildirTest : public CppUnit::TestFixture
{
    CPPUNIT_TEST_SUITE(MaildirTest);
    CPPUNIT_TEST(testDeliver);
    CPPUNIT_TEST(testAbortMidData);
    CPPUNIT_TEST(testTooBigNotDelivered);
    CPPUNIT_TEST(testUnwritableDirectory);
    CPPUNIT_TEST(testTwoMessagesTwoFiles);
    CPPUNIT_TEST_SUITE_END();

  public:
    void setUp() override
    {
        char tmpl[] = "/tmp/esmtp-maildir-test-XXXXXX";
        CPPUNIT_ASSERT(mkdtemp(tmpl) != nullptr);
        dir_ = tmpl;
    }
    void tearDown() override
    {
        std::error_code ec;
        fs::remove_all(dir_, ec);
    }

    void testDeliver()
    {
        MaildirSession m(dir_);
        std::string trace = m.begin();
        CPPUNIT_ASSERT(!trace.empty());
        std::string out = m.send(stuffed(kMessage) + ".\r\n");
        CPPUNIT_ASSERT_MESSAGE(out, out.rfind("250 2.0.0 Ok: queued as ", 0) == 0);

        auto news = files_in(dir_ / "new");
        CPPUNIT_ASSERT_EQUAL(std::size_t(1), news.size());
        CPPUNIT_ASSERT(files_in(dir_ / "tmp").empty());
        CPPUNIT_ASSERT(fs::is_regular_file(news[0]));
        CPPUNIT_ASSERT(trace + kMessage == slurp(news[0]));
        CPPUNIT_ASSERT_EQUAL(trace + kMessage, slurp(news[0]));
    }

    void testAbortMidData()
    {
        {
            MaildirSession m(dir_);
            m.begin();
            m.send("From: alice@example.com\r\n\r\nhalf of the bo");
            m.s->end(); // the client went away
        }
        CPPUNIT_ASSERT(files_in(dir_ / "new").empty());
        CPPUNIT_ASSERT(files_in(dir_ / "tmp").empty());
    }

    void testTooBigNotDelivered()
    {
        MaildirSession m(dir_);
        m.begin();
        std::string big = "Subject: big\r\n\r\n";
        while (big.size() < 5000)
            big += "0123456789012345678901234567890123456789\r\n";
        std::string out = m.send(big + ".\r\n");
        CPPUNIT_ASSERT_EQUAL(std::string("552 5.3.4 Message size exceeds fixed limit\r\n"), out);
        CPPUNIT_ASSERT(files_in(dir_ / "new").empty());
        CPPUNIT_ASSERT(files_in(dir_ / "tmp").empty());
    }

    void testUnwritableDirectory()
    {
        // a path below a regular file can never be created, even as root
        fs::path blocker = dir_ / "not-a-directory";
        std::ofstream(blocker) << "x";
        fs::path maildir = blocker / "Maildir";

        MaildirSession m(maildir.string());
        std::string out = m.send("MAIL FROM:<alice@example.com>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n");
        out += m.send(stuffed(kMessage) + ".\r\n");
        CPPUNIT_ASSERT_MESSAGE(out, out.find("451 4.3.0 ") != std::string::npos);
        CPPUNIT_ASSERT_MESSAGE(out, out.find("queued as") == std::string::npos);
        CPPUNIT_ASSERT_EQUAL(0u, m.s->messages_accepted());
    }

    void testTwoMessagesTwoFiles()
    {
        MaildirSession m(dir_);
        std::string trace1 = m.begin();
        std::string out = m.send("Subject: one\r\n\r\nfirst\r\n.\r\n");
        CPPUNIT_ASSERT_MESSAGE(out, out.rfind("250 2.0.0 Ok: queued as ", 0) == 0);
        std::string trace2 = m.begin();
        out = m.send("Subject: two\r\n\r\nsecond\r\n.\r\n");
        CPPUNIT_ASSERT_MESSAGE(out, out.rfind("250 2.0.0 Ok: queued as ", 0) == 0);

        auto news = files_in(dir_ / "new");
        CPPUNIT_ASSERT_EQUAL(std::size_t(2), news.size());
        CPPUNIT_ASSERT(news[0].filename() != news[1].filename());
        CPPUNIT_ASSERT(files_in(dir_ / "tmp").empty());

        std::set<std::string> contents{slurp(news[0]), slurp(news[1])};
        std::set<std::string> expected{trace1 + "Subject: one\r\n\r\nfirst\r\n",
                                       trace2 + "Subject: two\r\n\r\nsecond\r\n"};
        CPPUNIT_ASSERT(contents == expected);
    }

  private:
    fs::path dir_;
};

CPPUNIT_TEST_SUITE_REGISTRATION(MaildirTest);
