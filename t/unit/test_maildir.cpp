// The maildir handler driven through a Session: one file per message in new/,
// nothing left in tmp/, nothing at all for a message that was not accepted.

#include "handlers/group_commit.hpp"
#include "handlers/maildir.hpp"
#include "session_harness.hpp"

#include <cppunit/extensions/HelperMacros.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <fstream>
#include <iterator>
#include <mutex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
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

using H = esmtp::test::Harness;
using esmtp::test::data_section;

// `h` gets a maildir handler delivering into `dir`, for any recipient
// domain (these tests are about storage).
void use_maildir(H &h, const std::string &dir, const esmtp::MaildirOptions &opts = {})
{
    std::string error;
    auto factory = esmtp::make_maildir_factory(dir, opts, &error);
    CPPUNIT_ASSERT_MESSAGE(error, factory);
    h.use(factory);
}

// A message from alice to `rcpts`; returns all the replies.
std::string deliver(H &h, const std::vector<std::string> &rcpts, std::string *trace = nullptr)
{
    std::string out;
    for (const auto &r : h.transaction("alice@example.com", rcpts, kMessage, trace))
        out += r;
    return out;
}

} // namespace

class MaildirTest : public CppUnit::TestFixture
{
    CPPUNIT_TEST_SUITE(MaildirTest);
    CPPUNIT_TEST(testDeliver);
    CPPUNIT_TEST(testAbortMidData);
    CPPUNIT_TEST(testTooBigNotDelivered);
    CPPUNIT_TEST(testUnwritableDirectory);
    CPPUNIT_TEST(testTwoMessagesTwoFiles);
    CPPUNIT_TEST(testComponentEncoding);
    CPPUNIT_TEST(testExpandHostile);
    CPPUNIT_TEST(testExpandPostmasterAndLiterals);
    CPPUNIT_TEST(testTemplateErrors);
    CPPUNIT_TEST(testTemplateWithoutPlaceholder);
    CPPUNIT_TEST(testPerRecipientDedupe);
    CPPUNIT_TEST(testPerRecipientHostileSession);
    CPPUNIT_TEST(testAllOrNothingTmpBlocked);
    CPPUNIT_TEST(testAllOrNothingNewBlocked);
    CPPUNIT_TEST(testDirectoryBlockedAtData);
    CPPUNIT_TEST(testDirectoriesCreated0700);
    CPPUNIT_TEST(testUnmappableRecipientRefused);
    CPPUNIT_TEST(testCreatedDirectoriesFsynced);
    CPPUNIT_TEST(testCreatedFixedMaildirFsynced);
    CPPUNIT_TEST(testCreatedDirectoryFsyncFails);
    CPPUNIT_TEST(testCreateNoRefusesUnknownMailbox);
    CPPUNIT_TEST(testCreateNoFixedMaildirMissing);
    CPPUNIT_TEST(testCreateOptionParsing);
    CPPUNIT_TEST(testCheckWritable);
    CPPUNIT_TEST(testCheckBlocked);
    CPPUNIT_TEST(testCheckPerRecipient);
    CPPUNIT_TEST(testCheckCreateNoMissing);
    CPPUNIT_TEST(testSyscallOrderOneMessage);
    CPPUNIT_TEST(testGroupCommitConcurrent);
    CPPUNIT_TEST(testGroupCommitFlushFails);
    CPPUNIT_TEST(testFileSyncFails);
    CPPUNIT_TEST(testArrivalsCounted);
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
        H h;
        use_maildir(h, dir_.string());
        h.ehlo();
        std::string trace;
        std::vector<std::string> r = h.transaction("alice@example.com", {"bob@example.org"}, kMessage, &trace);
        CPPUNIT_ASSERT_MESSAGE(r[2], r[2].rfind("354 ", 0) == 0);
        CPPUNIT_ASSERT(!trace.empty());
        CPPUNIT_ASSERT_MESSAGE(r.back(), r.back().rfind("250 2.0.0 Ok: queued as ", 0) == 0);

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
            H h;
            use_maildir(h, dir_.string());
            h.ehlo();
            std::string out = h.send("MAIL FROM:<alice@example.com>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n");
            CPPUNIT_ASSERT_MESSAGE(out, out.find("354 ") != std::string::npos);
            h.send("From: alice@example.com\r\n\r\nhalf of the bo");
            h.s().end(); // the client went away
        }
        CPPUNIT_ASSERT(files_in(dir_ / "new").empty());
        CPPUNIT_ASSERT(files_in(dir_ / "tmp").empty());
    }

    void testTooBigNotDelivered()
    {
        H h;
        use_maildir(h, dir_.string());
        h.cfg.limits.max_message_size = 4096;
        h.ehlo();
        std::string big = "Subject: big\r\n\r\n";
        while (big.size() < 5000)
            big += "0123456789012345678901234567890123456789\r\n";
        std::vector<std::string> r = h.transaction("alice@example.com", {"bob@example.org"}, big);
        CPPUNIT_ASSERT_MESSAGE(r[2], r[2].rfind("354 ", 0) == 0);
        CPPUNIT_ASSERT_EQUAL(std::string("552 5.3.4 Message size exceeds fixed limit\r\n"), r.back());
        CPPUNIT_ASSERT(files_in(dir_ / "new").empty());
        CPPUNIT_ASSERT(files_in(dir_ / "tmp").empty());
    }

    void testUnwritableDirectory()
    {
        // a path below a regular file can never be created, even as root
        fs::path blocker = dir_ / "not-a-directory";
        std::ofstream(blocker) << "x";
        fs::path maildir = blocker / "Maildir";

        H h;
        use_maildir(h, maildir.string());
        h.ehlo();
        std::string out = h.send("MAIL FROM:<alice@example.com>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n");
        out += h.send(data_section(kMessage));
        CPPUNIT_ASSERT_MESSAGE(out, out.find("451 4.3.0 ") != std::string::npos);
        CPPUNIT_ASSERT_MESSAGE(out, out.find("queued as") == std::string::npos);
        CPPUNIT_ASSERT_EQUAL(0u, h.s().messages_accepted());
    }

    void testTwoMessagesTwoFiles()
    {
        H h;
        use_maildir(h, dir_.string());
        h.ehlo();
        std::string trace1, trace2;
        std::string out =
            h.transaction("alice@example.com", {"bob@example.org"}, "Subject: one\r\n\r\nfirst\r\n", &trace1).back();
        CPPUNIT_ASSERT_MESSAGE(out, out.rfind("250 2.0.0 Ok: queued as ", 0) == 0);
        out = h.transaction("alice@example.com", {"bob@example.org"}, "Subject: two\r\n\r\nsecond\r\n", &trace2).back();
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

    // ---- per-recipient paths (%u, %d)

    static esmtp::Path path(std::string local, std::string domain)
    {
        esmtp::Path p;
        p.local_part = local;
        p.domain = domain;
        p.mailbox = domain.empty() ? local : local + "@" + domain;
        return p;
    }

    static std::string expand(const std::string &tmpl, const esmtp::Path &p)
    {
        esmtp::MaildirPath mp;
        std::string error, out;
        CPPUNIT_ASSERT_MESSAGE(error, mp.parse(tmpl, error));
        CPPUNIT_ASSERT_MESSAGE(p.mailbox, mp.expand(p, "mx.example.org", out));
        return out;
    }

    void testComponentEncoding()
    {
        using esmtp::MaildirPath;
        CPPUNIT_ASSERT_EQUAL(std::string("user.name+tag_1-x"), MaildirPath::component("User.Name+Tag_1-X", true));
        CPPUNIT_ASSERT_EQUAL(std::string("a=2Fb"), MaildirPath::component("a/b", false));
        CPPUNIT_ASSERT_EQUAL(std::string("=2E."), MaildirPath::component("..", false));
        CPPUNIT_ASSERT_EQUAL(std::string("=2E"), MaildirPath::component(".", false));
        CPPUNIT_ASSERT_EQUAL(std::string("a=00b"), MaildirPath::component(std::string_view("a\0b", 3), false));
        CPPUNIT_ASSERT_EQUAL(std::string("a=3Db"), MaildirPath::component("a=b", false)); // '=' too: injective
        CPPUNIT_ASSERT_EQUAL(std::string("a=25b"), MaildirPath::component("a%b", false));
        CPPUNIT_ASSERT_EQUAL(std::string("="), MaildirPath::component("", false));
        CPPUNIT_ASSERT_EQUAL(std::string("="), MaildirPath::component("\"\"", true));
        // quotes dropped, escapes undone, then encoded
        CPPUNIT_ASSERT_EQUAL(std::string("x=20y"), MaildirPath::component("\"x y\"", true));
        CPPUNIT_ASSERT_EQUAL(std::string("a=22b=5Cc"), MaildirPath::component("\"a\\\"b\\\\c\"", true));
        // not a quoted string when unquote is off (domains)
        CPPUNIT_ASSERT_EQUAL(std::string("=22ab=22"), MaildirPath::component("\"ab\"", false));
        // UTF-8: only ASCII is lowercased, the bytes are kept (encoded)
        CPPUNIT_ASSERT_EQUAL(std::string("j=C3=B6rg"), MaildirPath::component("J\xc3\xb6rg", true));
        CPPUNIT_ASSERT_EQUAL(std::string("=C3=96"), MaildirPath::component("\xc3\x96", true));
        CPPUNIT_ASSERT_EQUAL(std::string("=E7=94=A8=E6=88=B7"),
                             MaildirPath::component("\xe7\x94\xa8\xe6\x88\xb7", true));

        // whatever the input: never '/', NUL, leading '.', "." or ".."
        for (int c = 0; c < 256; ++c) {
            for (const std::string &in : {std::string(1, char(c)), std::string(2, char(c)),
                                          std::string(1, char(c)) + "x" + std::string(1, char(c))}) {
                for (bool unquote : {false, true}) {
                    std::string out = MaildirPath::component(in, unquote);
                    CPPUNIT_ASSERT(!out.empty());
                    CPPUNIT_ASSERT(out.find('/') == std::string::npos);
                    CPPUNIT_ASSERT(out.find('\0') == std::string::npos);
                    CPPUNIT_ASSERT(out.front() != '.');
                    for (unsigned char o : out)
                        CPPUNIT_ASSERT(o < 0x80);
                }
            }
        }
    }

    void testExpandHostile()
    {
        const std::string t = "/base/%d/%u/Maildir";
        struct Case {
            esmtp::Path to;
            std::string want;
        };
        const std::vector<Case> cases = {
            {path("\"../../x\"", "localhost"), "/base/localhost/=2E.=2F..=2Fx/Maildir"},
            {path("\"a/b\"", "localhost"), "/base/localhost/a=2Fb/Maildir"},
            {path("\".hidden\"", "localhost"), "/base/localhost/=2Ehidden/Maildir"},
            {path("\"..\"", "localhost"), "/base/localhost/=2E./Maildir"},
            {path("\".\"", "localhost"), "/base/localhost/=2E/Maildir"},
            {path("\"/etc/passwd\"", "localhost"), "/base/localhost/=2Fetc=2Fpasswd/Maildir"},
            {path("\"x y\"", "localhost"), "/base/localhost/x=20y/Maildir"},
            {path("\"a\\\"/b\"", "localhost"), "/base/localhost/a=22=2Fb/Maildir"},
            {path("a%b", "localhost"), "/base/localhost/a=25b/Maildir"},
            {path("UPPER", "Example.ORG"), "/base/example.org/upper/Maildir"},
            {path("j\xc3\xb6rg", "localhost"), "/base/localhost/j=C3=B6rg/Maildir"},
            {path("\xe7\x94\xa8\xe6\x88\xb7", "\xe4\xbe\x8b.example"),
             "/base/=E4=BE=8B.example/=E7=94=A8=E6=88=B7/Maildir"},
            {path("user", "[127.0.0.1]"), "/base/=5B127.0.0.1=5D/user/Maildir"},
            {path("user", "[IPv6:::1]"), "/base/=5Bipv6=3A=3A=3A1=5D/user/Maildir"},
        };
        for (const auto &c : cases) {
            std::string got = expand(t, c.to);
            CPPUNIT_ASSERT_EQUAL_MESSAGE(c.to.mailbox, c.want, got);
            CPPUNIT_ASSERT_EQUAL(got, fs::path(got).lexically_normal().string());
            CPPUNIT_ASSERT(got.rfind("/base/", 0) == 0);
        }
        // %% is a percent sign; placeholders inside a component
        CPPUNIT_ASSERT_EQUAL(std::string("/b/100%/x-upper@example.org"),
                             expand("/b/100%%/x-%u@%d", path("UPPER", "EXAMPLE.org")));
    }

    void testExpandPostmasterAndLiterals()
    {
        // <postmaster> has no domain: %d is the session's hostname
        CPPUNIT_ASSERT_EQUAL(std::string("/base/mx.example.org/postmaster"),
                             expand("/base/%d/%u", path("PostMaster", "")));
        // a component longer than NAME_MAX cannot be a directory: refused
        esmtp::MaildirPath mp;
        std::string error, out;
        CPPUNIT_ASSERT(mp.parse("/base/%u", error));
        CPPUNIT_ASSERT(!mp.expand(path("\"" + std::string(100, '/') + "\"", "x"), "h", out));
        CPPUNIT_ASSERT(mp.expand(path(std::string(64, 'a'), "x"), "h", out));
    }

    void testTemplateErrors()
    {
        for (const char *bad : {"/base/%x/Maildir", "/base/%U", "/base/%", "/base/%u/%", "/base/%u/../other",
                                "/base/%d/./%u", "/base/..%u/../x", "relative/%u"}) {
            esmtp::MaildirPath mp;
            std::string error;
            CPPUNIT_ASSERT_MESSAGE(bad, !mp.parse(bad, error));
            CPPUNIT_ASSERT_MESSAGE(error, error.rfind("ESMTPHandler maildir:", 0) == 0);
        }
        std::string error;
        CPPUNIT_ASSERT(!esmtp::make_maildir_factory("/base/%z", &error));
        CPPUNIT_ASSERT_MESSAGE(error, error.rfind("ESMTPHandler maildir:", 0) == 0);
        // through the provider, as `ESMTPHandler maildir ...` does
        esmtp::MaildirProvider provider;
        esmtp::HandlerContext ctx{"/srv/root", "mx.example.org", "ESMTPHandler"};
        error.clear();
        CPPUNIT_ASSERT(!provider.configure(ctx, {"mail/%q/Maildir"}, error));
        CPPUNIT_ASSERT_MESSAGE(error, error.rfind("ESMTPHandler maildir:", 0) == 0);
        error.clear();
        CPPUNIT_ASSERT_MESSAGE(error, provider.configure(ctx, {"mail/%d/%u/Maildir"}, error));
        CPPUNIT_ASSERT_MESSAGE(error, provider.configure(ctx, {"/var/mail/%%/Maildir"}, error));
    }

    void testTemplateWithoutPlaceholder()
    {
        esmtp::MaildirPath mp;
        std::string error, out;
        CPPUNIT_ASSERT(mp.parse("/var/mail/100%%/Maildir", error));
        CPPUNIT_ASSERT(!mp.per_recipient());
        CPPUNIT_ASSERT_EQUAL(std::string("/var/mail/100%/Maildir"), mp.prefix());
        CPPUNIT_ASSERT(mp.expand(path("\"../x\"", "y"), "h", out));
        CPPUNIT_ASSERT_EQUAL(std::string("/var/mail/100%/Maildir"), out);
        CPPUNIT_ASSERT(mp.parse("/var/mail/%d/%u/Maildir", error));
        CPPUNIT_ASSERT(mp.per_recipient());
        CPPUNIT_ASSERT_EQUAL(std::string("/var/mail/"), mp.prefix());
    }

    // All regular files below `root`, recursively.
    static std::vector<fs::path> all_files(const fs::path &root)
    {
        std::vector<fs::path> out;
        for (const auto &e : fs::recursive_directory_iterator(root))
            if (e.is_regular_file())
                out.push_back(e.path());
        return out;
    }

    void testPerRecipientDedupe()
    {
        H h;
        use_maildir(h, (dir_ / "%d/%u/Maildir").string());
        h.ehlo();
        std::string trace;
        std::string out =
            deliver(h, {"bob@example.org", "BOB@Example.Org", "carol@example.org", "bob@example.org"}, &trace);
        CPPUNIT_ASSERT_MESSAGE(out, out.find("250 2.0.0 Ok: queued as ") != std::string::npos);
        auto bob = files_in(dir_ / "example.org/bob/Maildir/new");
        auto carol = files_in(dir_ / "example.org/carol/Maildir/new");
        CPPUNIT_ASSERT_EQUAL(std::size_t(1), bob.size());
        CPPUNIT_ASSERT_EQUAL(std::size_t(1), carol.size());
        CPPUNIT_ASSERT_EQUAL(trace + kMessage, slurp(bob[0]));
        CPPUNIT_ASSERT_EQUAL(trace + kMessage, slurp(carol[0]));
        CPPUNIT_ASSERT(fs::is_directory(dir_ / "example.org/carol/Maildir/cur"));
        CPPUNIT_ASSERT_EQUAL(std::size_t(2), all_files(dir_).size()); // nothing in tmp/, nothing else
        // one directory per domain with %d only
        H d;
        use_maildir(d, (dir_ / "dom/%d").string());
        d.ehlo();
        out = deliver(d, {"a@one.test", "b@one.test", "c@two.test"});
        CPPUNIT_ASSERT_MESSAGE(out, out.find("250 2.0.0 Ok: queued as ") != std::string::npos);
        CPPUNIT_ASSERT_EQUAL(std::size_t(1), files_in(dir_ / "dom/one.test/new").size());
        CPPUNIT_ASSERT_EQUAL(std::size_t(1), files_in(dir_ / "dom/two.test/new").size());
    }

    void testPerRecipientHostileSession()
    {
        fs::path base = dir_ / "mail";
        H h;
        use_maildir(h, (base / "%d/%u/Maildir").string());
        h.ehlo();
        const std::vector<std::string> rcpts = {"\"../../x\"@localhost", "\"a/b\"@localhost", "\".hidden\"@localhost",
                                                "\"..\"@localhost",      "user@[127.0.0.1]",  "UPPER@Example.ORG",
                                                "\"x y\"@localhost",     "postmaster",        "upper@example.org"};
        std::vector<std::string> replies = h.transaction("alice@example.com", rcpts, kMessage);
        for (std::size_t i = 0; i < rcpts.size(); ++i)
            CPPUNIT_ASSERT_MESSAGE(rcpts[i] + ": " + replies[i + 1], replies[i + 1].rfind("250 ", 0) == 0);
        std::string out = replies[rcpts.size() + 1];
        CPPUNIT_ASSERT_MESSAGE(out, out.rfind("354 ", 0) == 0);
        out = replies.back();
        CPPUNIT_ASSERT_MESSAGE(out, out.rfind("250 2.0.0 Ok: queued as ", 0) == 0);

        const std::set<std::string> want = {"localhost/=2E.=2F..=2Fx/Maildir", "localhost/a=2Fb/Maildir",
                                            "localhost/=2Ehidden/Maildir",     "localhost/=2E./Maildir",
                                            "=5B127.0.0.1=5D/user/Maildir",    "example.org/upper/Maildir",
                                            "localhost/x=20y/Maildir",         "mx.example.org/postmaster/Maildir"};
        std::set<std::string> got;
        for (const auto &f : all_files(dir_)) {
            std::string rel = f.lexically_relative(base).string();
            CPPUNIT_ASSERT_MESSAGE(f.string(), rel.rfind("..", 0) != 0 && rel.find("/tmp/") == std::string::npos);
            auto pos = rel.find("/new/");
            CPPUNIT_ASSERT_MESSAGE(rel, pos != std::string::npos);
            CPPUNIT_ASSERT_MESSAGE(rel, got.insert(rel.substr(0, pos)).second); // one file per directory
        }
        CPPUNIT_ASSERT(want == got);
        // nothing escaped: the only entry of the test directory is mail/
        CPPUNIT_ASSERT_EQUAL(std::size_t(1), files_in(dir_).size());
    }

    // Two recipients in two directories; `sabotage` runs after DATA got 354
    // and must make the second copy fail. Nothing may remain anywhere.
    void check_all_or_nothing(const std::function<void()> &sabotage)
    {
        H h;
        use_maildir(h, (dir_ / "%u").string());
        h.ehlo();
        std::string out = h.send("MAIL FROM:<alice@example.com>\r\nRCPT TO:<one@example.org>\r\n"
                                 "RCPT TO:<two@example.org>\r\nDATA\r\n");
        CPPUNIT_ASSERT_MESSAGE(out, out.find("354 ") != std::string::npos);
        CPPUNIT_ASSERT(fs::is_directory(dir_ / "one/tmp"));
        CPPUNIT_ASSERT(fs::is_directory(dir_ / "two/new"));
        sabotage();
        out = h.send(data_section(kMessage));
        CPPUNIT_ASSERT_EQUAL(std::string("451 4.3.0 Local error in processing; message not stored\r\n"), out);
        CPPUNIT_ASSERT_EQUAL(0u, h.s().messages_accepted());
        CPPUNIT_ASSERT(files_in(dir_ / "one/new").empty());
        CPPUNIT_ASSERT(files_in(dir_ / "one/tmp").empty());
        if (fs::is_directory(dir_ / "two/tmp"))
            CPPUNIT_ASSERT(files_in(dir_ / "two/tmp").empty());
        if (fs::is_directory(dir_ / "two/new"))
            CPPUNIT_ASSERT(files_in(dir_ / "two/new").empty());
        // the session goes on and the next message is stored in both
        out = deliver(h, {"one@example.org"});
        CPPUNIT_ASSERT_MESSAGE(out, out.find("250 2.0.0 Ok: queued as ") != std::string::npos);
        CPPUNIT_ASSERT_EQUAL(std::size_t(1), files_in(dir_ / "one/new").size());
    }

    static void block(const fs::path &dir)
    {
        fs::remove_all(dir);
        std::ofstream(dir) << "in the way";
    }

    void testAllOrNothingTmpBlocked()
    {
        check_all_or_nothing([&] { block(dir_ / "two/tmp"); });
    }

    void testAllOrNothingNewBlocked()
    {
        // the second copy is written to two/tmp, the first is already in
        // one/new when the rename into two/new fails: both must go
        check_all_or_nothing([&] { block(dir_ / "two/new"); });
    }

    void testDirectoryBlockedAtData()
    {
        // a regular file where the second recipient's Maildir would be
        std::ofstream(dir_ / "two") << "in the way";
        H h;
        use_maildir(h, (dir_ / "%u").string());
        h.ehlo();
        std::string out = deliver(h, {"one@example.org", "two@example.org"});
        CPPUNIT_ASSERT_MESSAGE(out, out.find("451 4.3.0 ") != std::string::npos);
        CPPUNIT_ASSERT_MESSAGE(out, out.find("queued as") == std::string::npos);
        CPPUNIT_ASSERT(files_in(dir_ / "one/new").empty());
        CPPUNIT_ASSERT(files_in(dir_ / "one/tmp").empty());
        CPPUNIT_ASSERT_EQUAL(std::string("in the way"), slurp(dir_ / "two"));
    }

    void testDirectoriesCreated0700()
    {
        H h;
        use_maildir(h, (dir_ / "deep/%d/x/%u/Maildir").string());
        h.ehlo();
        std::string out = deliver(h, {"bob@example.org"});
        CPPUNIT_ASSERT_MESSAGE(out, out.find("250 2.0.0 Ok: queued as ") != std::string::npos);
        for (const fs::path &d : {dir_ / "deep", dir_ / "deep/example.org", dir_ / "deep/example.org/x/bob",
                                  dir_ / "deep/example.org/x/bob/Maildir", dir_ / "deep/example.org/x/bob/Maildir/new"})
            CPPUNIT_ASSERT_MESSAGE(d.string(), (fs::status(d).permissions() & fs::perms::all) == fs::perms::owner_all);
        CPPUNIT_ASSERT_EQUAL(std::size_t(1), files_in(dir_ / "deep/example.org/x/bob/Maildir/new").size());
    }

    void testUnmappableRecipientRefused()
    {
        // a UTF-8 domain of 3 x 30 "\xc3\xa9" encodes to 543 octets: longer
        // than a file name may be
        std::string label;
        for (int i = 0; i < 30; ++i)
            label += "\xc3\xa9";
        std::string domain = label + "." + label + "." + label + ".org";
        H h;
        use_maildir(h, (dir_ / "%d/%u").string());
        h.ehlo();
        h.send("MAIL FROM:<alice@example.com> SMTPUTF8\r\n");
        CPPUNIT_ASSERT_EQUAL(std::string("553 5.1.3 Recipient address cannot be mapped to a mailbox\r\n"),
                             h.send("RCPT TO:<a@" + domain + ">\r\n"));
        CPPUNIT_ASSERT_EQUAL(std::string("250 2.1.5 Ok\r\n"), h.send("RCPT TO:<a@" + label + ".org>\r\n"));
        CPPUNIT_ASSERT(files_in(dir_).empty());
    }

    // Issue 8 defect 12: every directory created for a new mailbox, and the
    // directory holding it, is fsynced before the 250 (after the last
    // mkdir): otherwise a crash can take the acknowledged message away with
    // its directory chain.
    void testCreatedDirectoriesFsynced()
    {
        fs::path box = dir_ / "deep/example.org/bob/Maildir";
        std::vector<std::string> ops = record_syscalls([&] {
            H h;
            use_maildir(h, (dir_ / "deep/%d/%u/Maildir").string());
            h.ehlo();
            std::string out = deliver(h, {"bob@example.org"});
            CPPUNIT_ASSERT_MESSAGE(out, out.find("250 2.0.0 Ok: queued as ") != std::string::npos);
        });
        std::vector<std::string> created = check_created_synced(ops);
        std::vector<std::string> want{(dir_ / "deep").string(),
                                      (dir_ / "deep/example.org").string(),
                                      (dir_ / "deep/example.org/bob").string(),
                                      box.string(),
                                      (box / "tmp").string(),
                                      (box / "new").string(),
                                      (box / "cur").string()};
        CPPUNIT_ASSERT_EQUAL(join(want), join(created));
        CPPUNIT_ASSERT_EQUAL(std::size_t(1), files_in(box / "new").size());

        // the mailbox exists now: the next message creates nothing and
        // syncs only new/
        ops = record_syscalls([&] {
            H h;
            use_maildir(h, (dir_ / "deep/%d/%u/Maildir").string());
            h.ehlo();
            std::string out = deliver(h, {"bob@example.org"});
            CPPUNIT_ASSERT_MESSAGE(out, out.find("250 2.0.0 Ok: queued as ") != std::string::npos);
        });
        CPPUNIT_ASSERT_EQUAL(join({"fsync " + (box / "new").string()}), join(ops));
    }

    void testCreatedFixedMaildirFsynced()
    {
        fs::path box = dir_ / "a/Maildir";
        std::vector<std::string> ops = record_syscalls([&] {
            H h;
            use_maildir(h, box.string());
            h.ehlo();
            std::string out = deliver(h, {"bob@example.org"});
            CPPUNIT_ASSERT_MESSAGE(out, out.find("250 2.0.0 Ok: queued as ") != std::string::npos);
        });
        std::vector<std::string> created = check_created_synced(ops);
        CPPUNIT_ASSERT_EQUAL(std::size_t(5), created.size());
    }

    // A directory fsync that fails: 451, nothing stored, and the reason in
    // httpd's error log (SessionView::error).
    void testCreatedDirectoryFsyncFails()
    {
        fs::path box = dir_ / "x/Maildir";
        esmtp::set_maildir_syscall_hook([&](std::string_view op, const std::string &path) {
            return op == "fsync" && path == (dir_ / "x").string() ? EIO : 0;
        });
        H h;
        use_maildir(h, box.string());
        h.ehlo();
        std::string out = h.send("MAIL FROM:<a@example.com>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n");
        out += h.send(data_section(kMessage));
        h.session.reset(); // ends while the hook still fails
        esmtp::set_maildir_syscall_hook({});
        CPPUNIT_ASSERT_MESSAGE(out, out.find("451 4.3.0 ") != std::string::npos);
        CPPUNIT_ASSERT_MESSAGE(out, out.find("queued as") == std::string::npos);
        CPPUNIT_ASSERT(files_in(box / "new").empty());
        CPPUNIT_ASSERT(files_in(box / "tmp").empty());
        CPPUNIT_ASSERT_EQUAL(std::size_t(1), h.log.errors.size());
        CPPUNIT_ASSERT_MESSAGE(h.log.errors[0], h.log.errors[0].find((dir_ / "x").string()) != std::string::npos);
        CPPUNIT_ASSERT_MESSAGE(h.log.errors[0], h.log.errors[0].find(std::strerror(EIO)) != std::string::npos);
    }

    // maildir DIR create=no: only mailboxes that exist; RCPT to any other
    // gets 550 5.1.1 and no directory is made for it.
    void testCreateNoRefusesUnknownMailbox()
    {
        fs::create_directories(dir_ / "example.org/alice"); // exists, without tmp/ new/ cur/
        esmtp::MaildirOptions opts;
        opts.create = false;
        H h;
        use_maildir(h, (dir_ / "%d/%u").string(), opts);
        h.ehlo();
        h.send("MAIL FROM:<a@example.com>\r\n");
        CPPUNIT_ASSERT_EQUAL(std::string("550 5.1.1 No such user here\r\n"),
                             h.send("RCPT TO:<nobody@example.org>\r\n"));
        CPPUNIT_ASSERT_EQUAL(std::string("550 5.1.1 No such user here\r\n"), h.send("RCPT TO:<bob@other.example>\r\n"));
        CPPUNIT_ASSERT_EQUAL(std::string("250 2.1.5 Ok\r\n"), h.send("RCPT TO:<Alice@example.org>\r\n"));
        std::string out = h.send("DATA\r\n" + data_section(kMessage));
        CPPUNIT_ASSERT_MESSAGE(out, out.find("250 2.0.0 Ok: queued as ") != std::string::npos);
        CPPUNIT_ASSERT_EQUAL(std::size_t(1), files_in(dir_ / "example.org/alice/new").size());
        CPPUNIT_ASSERT(!fs::exists(dir_ / "example.org/nobody"));
        CPPUNIT_ASSERT(!fs::exists(dir_ / "other.example"));
    }

    // A fixed Maildir with create=no that is missing: an administrator's
    // problem, 451 and a line in the error log, not a 550.
    void testCreateNoFixedMaildirMissing()
    {
        esmtp::MaildirOptions opts;
        opts.create = false;
        H h;
        use_maildir(h, (dir_ / "missing").string(), opts);
        h.ehlo();
        std::string out = h.send("MAIL FROM:<a@example.com>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n");
        CPPUNIT_ASSERT_MESSAGE(out, out.find("451 4.3.0 ") != std::string::npos);
        CPPUNIT_ASSERT(!fs::exists(dir_ / "missing"));
        CPPUNIT_ASSERT_EQUAL(std::size_t(1), h.log.errors.size());
        CPPUNIT_ASSERT_MESSAGE(h.log.errors[0], h.log.errors[0].find((dir_ / "missing").string()) != std::string::npos);
    }

    void testCreateOptionParsing()
    {
        esmtp::MaildirProvider p;
        esmtp::HandlerContext ctx{"/srv", "mx.example.org", "ESMTPHandler"};
        std::string error;
        CPPUNIT_ASSERT(p.configure(ctx, {(dir_ / "%u").string(), "create=no"}, error));
        CPPUNIT_ASSERT(p.configure(ctx, {(dir_ / "%u").string(), "create=yes"}, error));
        CPPUNIT_ASSERT(p.configure(ctx, {(dir_ / "%u").string()}, error));
        for (std::vector<std::string> bad : {std::vector<std::string>{(dir_ / "%u").string(), "create=maybe"},
                                             std::vector<std::string>{(dir_ / "%u").string(), "create="},
                                             std::vector<std::string>{(dir_ / "%u").string(), "frobnicate=1"},
                                             std::vector<std::string>{(dir_ / "%u").string(), "other/dir"},
                                             std::vector<std::string>{"create=no"}, std::vector<std::string>{}}) {
            error.clear();
            CPPUNIT_ASSERT_MESSAGE(join(bad), !p.configure(ctx, bad, error));
            CPPUNIT_ASSERT_MESSAGE(error, error.rfind("ESMTPHandler maildir: ", 0) == 0);
        }
        error.clear();
        p.configure(ctx, {(dir_ / "%u").string(), "create=maybe"}, error);
        CPPUNIT_ASSERT_MESSAGE(error, error.find("create=yes or create=no") != std::string::npos);
    }

    // Issue 8 defect 18: HandlerFactory::check() (child_init, as the
    // server's user) proves the Maildir writable by creating and removing
    // a file in DIR/tmp, and leaves nothing behind.
    void testCheckWritable()
    {
        auto f = esmtp::make_maildir_factory((dir_ / "new-box").string());
        std::string why;
        CPPUNIT_ASSERT_MESSAGE(why, f->check(why));
        CPPUNIT_ASSERT(fs::is_directory(dir_ / "new-box/tmp")); // created as a delivery would
        CPPUNIT_ASSERT(files_in(dir_ / "new-box/tmp").empty());
        CPPUNIT_ASSERT(files_in(dir_ / "new-box/new").empty());
    }

    void testCheckBlocked()
    {
        std::ofstream(dir_ / "file") << "x";
        auto f = esmtp::make_maildir_factory((dir_ / "file/Maildir").string());
        std::string why;
        CPPUNIT_ASSERT(!f->check(why));
        CPPUNIT_ASSERT_MESSAGE(why, why.find((dir_ / "file").string()) != std::string::npos);
        CPPUNIT_ASSERT_MESSAGE(why, why.find(std::strerror(ENOTDIR)) != std::string::npos);
        CPPUNIT_ASSERT_MESSAGE(why, why.rfind("maildir: ", 0) == 0);
    }

    void testCheckPerRecipient()
    {
        // the fixed part before the first placeholder is what is checked
        auto f = esmtp::make_maildir_factory((dir_ / "vhosts/%d/%u/Maildir").string());
        std::string why;
        CPPUNIT_ASSERT_MESSAGE(why, f->check(why));
        CPPUNIT_ASSERT(fs::is_directory(dir_ / "vhosts"));
        CPPUNIT_ASSERT(files_in(dir_ / "vhosts").empty());

        std::ofstream(dir_ / "plain") << "x";
        f = esmtp::make_maildir_factory((dir_ / "plain/%u").string());
        CPPUNIT_ASSERT(!f->check(why));
        CPPUNIT_ASSERT_MESSAGE(why, why.find((dir_ / "plain").string()) != std::string::npos);
    }

    void testCheckCreateNoMissing()
    {
        esmtp::MaildirOptions opts;
        opts.create = false;
        auto f = esmtp::make_maildir_factory((dir_ / "absent").string(), opts);
        std::string why;
        CPPUNIT_ASSERT(!f->check(why));
        CPPUNIT_ASSERT_MESSAGE(why, why.find((dir_ / "absent").string()) != std::string::npos);
        CPPUNIT_ASSERT_MESSAGE(why, why.find(std::strerror(ENOENT)) != std::string::npos);
        CPPUNIT_ASSERT(!fs::exists(dir_ / "absent")); // create=no creates nothing
        // per-recipient with create=no: the base must exist
        f = esmtp::make_maildir_factory((dir_ / "absent/%u").string(), opts);
        CPPUNIT_ASSERT(!f->check(why));
        f = esmtp::make_maildir_factory((dir_ / "%u").string(), opts);
        CPPUNIT_ASSERT_MESSAGE(why, f->check(why));
    }

    // One message: its file written, fdatasynced, renamed into new/, then
    // new/ fsynced (started after the rename, done before the reply).
    void testSyscallOrderOneMessage()
    {
        fs::path box = dir_ / "Maildir";
        fs::create_directories(box / "tmp");
        fs::create_directories(box / "new");
        fs::create_directories(box / "cur");
        std::vector<std::string> ops = record_syscalls(
            [&] {
                H h;
                use_maildir(h, box.string());
                h.ehlo();
                std::string out = deliver(h, {"bob@example.org"});
                CPPUNIT_ASSERT_MESSAGE(out, out.find("250 2.0.0 Ok: queued as ") != std::string::npos);
            },
            true);
        auto files = files_in(box / "new");
        CPPUNIT_ASSERT_EQUAL(std::size_t(1), files.size());
        std::string name = files[0].filename().string();
        std::vector<std::string> want{"write " + (box / "tmp" / name).string(),
                                      "fdatasync " + (box / "tmp" / name).string(),
                                      "rename " + (box / "new" / name).string(), "fsync " + (box / "new").string(),
                                      "fsynced " + (box / "new").string()};
        CPPUNIT_ASSERT_EQUAL(join(want), join(ops));
    }

    // One event of the concurrent tests: which thread, what, on what.
    struct Event {
        std::thread::id thread;
        std::string op, path;
    };

    // `threads` sessions deliver `per_thread` messages each into one
    // Maildir at the same time; every directory fsync of new/ takes 10 ms
    // (a slow disk) and fails with `fail(n)` for the n-th one (0-based).
    // Returns the events in global order, a "reply" event per message
    // (path: the final reply) recorded by the delivering thread.
    std::vector<Event> deliver_concurrently(const fs::path &box, int threads, int per_thread,
                                            const std::function<int(int)> &fail)
    {
        std::mutex mutex;
        std::vector<Event> events;
        int dir_syncs = 0;
        bool armed = false; // not during the first delivery that makes the Maildir
        const std::string new_dir = (box / "new").string();
        auto record = [&](std::string_view op, const std::string &path) {
            std::lock_guard lock(mutex);
            events.push_back({std::this_thread::get_id(), std::string(op), path});
        };
        esmtp::set_maildir_syscall_hook([&](std::string_view op, const std::string &path) {
            record(op, path);
            if (op == "fsync" && path == new_dir) {
                int n;
                {
                    std::lock_guard lock(mutex);
                    if (!armed)
                        return 0;
                    n = dir_syncs++;
                }
                std::this_thread::sleep_for(std::chrono::milliseconds(10));
                return fail(n);
            }
            return 0;
        });
        {
            // the Maildir exists before: only the group's fsyncs of new/
            H h;
            use_maildir(h, box.string());
            h.ehlo();
            deliver(h, {"bob@example.org"});
            fs::remove(files_in(box / "new").at(0));
        }
        {
            std::lock_guard lock(mutex);
            events.clear();
            armed = true;
        }
        std::atomic<int> ready{0};
        std::vector<std::thread> pool;
        std::vector<std::string> problems(static_cast<std::size_t>(threads));
        for (int t = 0; t < threads; ++t)
            pool.emplace_back([&, t] {
                try {
                    H h;
                    std::string error;
                    h.use(esmtp::make_maildir_factory(box.string(), &error));
                    h.ehlo();
                    ready.fetch_add(1);
                    while (ready.load() < threads)
                        std::this_thread::yield();
                    for (int i = 0; i < per_thread; ++i) {
                        auto replies = h.transaction("alice@example.com", {"bob@example.org"}, kMessage);
                        record("reply", replies.back());
                    }
                } catch (const std::exception &e) {
                    problems[static_cast<std::size_t>(t)] = e.what();
                }
            });
        for (auto &th : pool)
            th.join();
        esmtp::set_maildir_syscall_hook({});
        for (const auto &p : problems)
            CPPUNIT_ASSERT_MESSAGE(p, p.empty());
        return events;
    }

    // Checks the order for every message of `events`; returns the number of
    // 250s. A 250 needs, in its thread: write, fdatasync of that file,
    // its rename, then (in any thread) an fsync of new/ that started after
    // the rename and returned before the reply.
    static int check_order(const std::vector<Event> &events, const fs::path &box, int *dir_syncs)
    {
        const std::string tmp = (box / "tmp").string() + "/", nw = (box / "new").string() + "/";
        const std::string new_dir = (box / "new").string();
        int ok = 0;
        *dir_syncs = 0;
        for (const auto &e : events)
            *dir_syncs += e.op == "fsync" && e.path == new_dir;
        for (std::size_t r = 0; r < events.size(); ++r) {
            if (events[r].op != "reply")
                continue;
            const auto me = events[r].thread;
            // this message's events: the thread's events since its previous reply
            std::size_t start = r;
            while (start > 0 && !(events[start - 1].thread == me && events[start - 1].op == "reply"))
                --start;
            std::vector<std::size_t> mine;
            for (std::size_t i = start; i < r; ++i)
                if (events[i].thread == me)
                    mine.push_back(i);
            std::string seq;
            for (auto i : mine)
                seq += "[" + events[i].op + " " + events[i].path + "]";
            if (events[r].path.rfind("250 ", 0) != 0)
                continue; // refused: checked by the caller against new/
            ++ok;
            std::size_t w = 0, f = 0, rn = 0;
            std::string name;
            for (auto i : mine) {
                const auto &e = events[i];
                if (e.op == "write" && !w)
                    w = i + 1, name = e.path.substr(tmp.size());
                else if (e.op == "fdatasync" && e.path == tmp + name && !f)
                    f = i + 1;
                else if (e.op == "rename" && e.path == nw + name)
                    rn = i + 1;
            }
            CPPUNIT_ASSERT_MESSAGE("order " + seq, w && f && rn && w < f && f < rn);
            // an fsync of new/ started after the rename, returned before the reply
            bool covered = false;
            for (std::size_t i = rn; i < r && !covered; ++i) {
                if (events[i].op != "fsync" || events[i].path != new_dir)
                    continue;
                for (std::size_t j = i + 1; j < r; ++j)
                    if (events[j].thread == events[i].thread && events[j].op == "fsynced" &&
                        events[j].path == new_dir) {
                        covered = true;
                        break;
                    }
            }
            CPPUNIT_ASSERT_MESSAGE("no covering fsync of new/ for " + name, covered);
        }
        return ok;
    }

    // Group commit: 8 sessions at once, 5 messages each; every 250 in the
    // order above, every message in new/, and fewer fsyncs of new/ than
    // messages (the flushes were shared).
    void testGroupCommitConcurrent()
    {
        fs::path box = dir_ / "Maildir";
        const int threads = 8, per_thread = 5;
        auto events = deliver_concurrently(box, threads, per_thread, [](int) { return 0; });
        int dir_syncs = 0;
        int ok = check_order(events, box, &dir_syncs);
        CPPUNIT_ASSERT_EQUAL(threads * per_thread, ok);
        CPPUNIT_ASSERT_EQUAL(std::size_t(threads * per_thread), files_in(box / "new").size());
        CPPUNIT_ASSERT(files_in(box / "tmp").empty());
        CPPUNIT_ASSERT_MESSAGE("directory fsyncs " + std::to_string(dir_syncs), dir_syncs < threads * per_thread);
        CPPUNIT_ASSERT(dir_syncs >= 1);
    }

    // A failing shared flush fails every delivery it was to cover: 451,
    // its file removed; the 250s are exactly the files in new/.
    void testGroupCommitFlushFails()
    {
        fs::path box = dir_ / "Maildir";
        const int threads = 6, per_thread = 4;
        auto events = deliver_concurrently(box, threads, per_thread, [](int n) { return n % 2 == 0 ? EIO : 0; });
        int dir_syncs = 0;
        int ok = check_order(events, box, &dir_syncs);
        int refused = 0;
        for (const auto &e : events)
            if (e.op == "reply" && e.path.rfind("250 ", 0) != 0) {
                CPPUNIT_ASSERT_MESSAGE(e.path, e.path.rfind("451 4.3.0 ", 0) == 0);
                ++refused;
            }
        CPPUNIT_ASSERT_EQUAL(threads * per_thread, ok + refused);
        CPPUNIT_ASSERT(refused >= 1); // the first flush failed
        CPPUNIT_ASSERT_EQUAL(std::size_t(ok), files_in(box / "new").size());
        CPPUNIT_ASSERT(files_in(box / "tmp").empty());
    }

    // fdatasync of the file fails: 451, no rename, nothing left.
    void testFileSyncFails()
    {
        fs::path box = dir_ / "Maildir";
        std::vector<std::string> ops;
        esmtp::set_maildir_syscall_hook([&](std::string_view op, const std::string &path) {
            ops.push_back(std::string(op) + " " + path);
            return op == "fdatasync" ? EIO : 0;
        });
        H h;
        use_maildir(h, box.string());
        h.ehlo();
        std::string out = deliver(h, {"bob@example.org"});
        esmtp::set_maildir_syscall_hook({});
        CPPUNIT_ASSERT_MESSAGE(out, out.find("451 4.3.0 ") != std::string::npos);
        for (const auto &o : ops)
            CPPUNIT_ASSERT_MESSAGE(join(ops), o.rfind("rename ", 0) != 0);
        CPPUNIT_ASSERT(files_in(box / "new").empty());
        CPPUNIT_ASSERT(files_in(box / "tmp").empty());
    }

    // The group commit counts a delivery as arriving from the start of its
    // end of data to its rename (a leader about to flush waits a little for
    // those): a session in DATA does not count (issue 20: a slow client
    // made every leader wait), and every way out of eom() takes it off
    // again, else leaders would wait for nobody. A session that httpd
    // abandons between two events (leaked, never ended) holds nothing.
    void testArrivalsCounted()
    {
        fs::path box = dir_ / "Maildir";
        const std::string nw = (box / "new").string();
        H a, b, c;
        for (H *h : {&a, &b, &c}) {
            use_maildir(*h, box.string());
            h->ehlo();
        }
        CPPUNIT_ASSERT_EQUAL(-1L, esmtp::group_commit_arriving(nw));
        const std::string start = "MAIL FROM:<alice@example.com>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n";
        for (H *h : {&a, &b, &c}) {
            std::string out = h->send(start);
            CPPUNIT_ASSERT_MESSAGE(out, out.find("354 ") != std::string::npos);
        }
        // three sessions in DATA: none is arriving yet
        CPPUNIT_ASSERT_EQUAL(-1L, esmtp::group_commit_arriving(nw));
        b.send("Subject: x\r\n\r\nhalf of the bo");
        CPPUNIT_ASSERT_EQUAL(-1L, esmtp::group_commit_arriving(nw));
        // abandoned mid-DATA, as SmtpConnection::abandon() leaves a session
        // (no further event, no DISCONNECT): nothing is held for it
        std::unique_ptr<esmtp::Session> abandoned = std::move(b.session);
        CPPUNIT_ASSERT_EQUAL(-1L, esmtp::group_commit_arriving(nw));
        // in eom(): arriving from before the file's sync until the rename
        std::vector<long> seen;
        esmtp::set_maildir_syscall_hook([&](std::string_view op, const std::string &) {
            if (op == "fdatasync" || op == "rename")
                seen.push_back(esmtp::group_commit_arriving(nw));
            return 0;
        });
        std::string out = a.send(data_section(kMessage));
        esmtp::set_maildir_syscall_hook({});
        CPPUNIT_ASSERT_MESSAGE(out, out.find("250 2.0.0 ") != std::string::npos);
        CPPUNIT_ASSERT_EQUAL(std::size_t(2), seen.size());
        CPPUNIT_ASSERT_EQUAL(1L, seen[0]); // a's own announcement, c (in DATA) not counted
        CPPUNIT_ASSERT_EQUAL(1L, seen[1]); // renamed, not yet committed
        // a stored message: no longer arriving
        CPPUNIT_ASSERT_EQUAL(-1L, esmtp::group_commit_arriving(nw));
        // a message whose file cannot be synced: 451, no longer arriving
        esmtp::set_maildir_syscall_hook(
            [](std::string_view op, const std::string &) { return op == "fdatasync" ? EIO : 0; });
        out = c.send(data_section(kMessage));
        esmtp::set_maildir_syscall_hook({});
        CPPUNIT_ASSERT_MESSAGE(out, out.find("451 4.3.0 ") != std::string::npos);
        CPPUNIT_ASSERT_EQUAL(-1L, esmtp::group_commit_arriving(nw));
        // and again, a failing directory fsync while another session is in DATA
        out = a.send(start);
        CPPUNIT_ASSERT_MESSAGE(out, out.find("354 ") != std::string::npos);
        out = c.send(start);
        CPPUNIT_ASSERT_MESSAGE(out, out.find("354 ") != std::string::npos);
        esmtp::set_maildir_syscall_hook(
            [&](std::string_view op, const std::string &path) { return op == "fsync" && path == nw ? EIO : 0; });
        out = c.send(data_section(kMessage));
        esmtp::set_maildir_syscall_hook({});
        CPPUNIT_ASSERT_MESSAGE(out, out.find("451 4.3.0 ") != std::string::npos);
        CPPUNIT_ASSERT_EQUAL(-1L, esmtp::group_commit_arriving(nw));
        out = a.send(data_section(kMessage));
        CPPUNIT_ASSERT_MESSAGE(out, out.find("250 2.0.0 ") != std::string::npos);
        CPPUNIT_ASSERT_EQUAL(-1L, esmtp::group_commit_arriving(nw));
        CPPUNIT_ASSERT_EQUAL(std::size_t(2), files_in(box / "new").size());
    }

  private:
    static std::string join(const std::vector<std::string> &v)
    {
        std::string s;
        for (const auto &x : v)
            s += "[" + x + "]";
        return s;
    }

    // Runs `f` with the maildir syscall hook recording "mkdir PATH" and
    // "fsync PATH" in order (with `all`, every operation the hook sees).
    static std::vector<std::string> record_syscalls(const std::function<void()> &f, bool all = false)
    {
        std::vector<std::string> ops;
        esmtp::set_maildir_syscall_hook([&](std::string_view op, const std::string &path) {
            if (all || op == "mkdir" || op == "fsync")
                ops.push_back(std::string(op) + " " + path);
            return 0;
        });
        try {
            f();
        } catch (...) {
            esmtp::set_maildir_syscall_hook({});
            throw;
        }
        esmtp::set_maildir_syscall_hook({});
        return ops;
    }

    // Every created directory and its parent are fsynced after the last
    // mkdir; returns the created directories in order.
    static std::vector<std::string> check_created_synced(const std::vector<std::string> &ops)
    {
        std::vector<std::string> created;
        std::size_t last_mkdir = 0;
        for (std::size_t i = 0; i < ops.size(); ++i)
            if (ops[i].rfind("mkdir ", 0) == 0) {
                created.push_back(ops[i].substr(6));
                last_mkdir = i;
            }
        CPPUNIT_ASSERT(!created.empty());
        auto synced_after = [&](const std::string &p) {
            for (std::size_t i = last_mkdir + 1; i < ops.size(); ++i)
                if (ops[i] == "fsync " + p)
                    return true;
            return false;
        };
        for (const auto &d : created) {
            CPPUNIT_ASSERT_MESSAGE("not fsynced: " + d + " in " + join(ops), synced_after(d));
            std::string parent = fs::path(d).parent_path().string();
            CPPUNIT_ASSERT_MESSAGE("parent not fsynced: " + parent + " in " + join(ops), synced_after(parent));
        }
        return created;
    }

    fs::path dir_;
};

CPPUNIT_TEST_SUITE_REGISTRATION(MaildirTest);
