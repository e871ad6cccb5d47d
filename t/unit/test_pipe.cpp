// The pipe handler driven through a Session: configuration errors, argv
// expansion without injection, stdin, the clean environment, exit codes,
// the timeout, and no fd or process left behind.

#include "handlers/pipe.hpp"
#include "session_harness.hpp"

#include <cppunit/extensions/HelperMacros.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <sys/stat.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

namespace fs = std::filesystem;

namespace
{

std::string slurp(const fs::path &p)
{
    std::ifstream in(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// NUL-separated records (the script writes argv and environ that way).
std::vector<std::string> split_nul(const std::string &s)
{
    std::vector<std::string> out;
    std::size_t start = 0;
    for (std::size_t i = 0; i < s.size(); ++i)
        if (s[i] == '\0') {
            out.push_back(s.substr(start, i - start));
            start = i + 1;
        }
    return out;
}

std::size_t open_fds()
{
    std::size_t n = 0;
    for (const auto &e : fs::directory_iterator("/proc/self/fd")) {
        (void)e;
        ++n;
    }
    return n;
}

std::string join(const std::vector<std::string> &v)
{
    std::string s;
    for (const auto &x : v)
        s += "[" + x + "]";
    return s;
}

const std::string kMessage = "From: alice@example.com\r\n"
                             "Subject: pipe test\r\n"
                             "\r\n"
                             "Line one.\r\n"
                             ".A line that started with a dot.\r\n"
                             "8-bit: \xc3\xa9\xff\r\n";

using H = esmtp::test::Harness;

// The factory of `ESMTPHandler pipe ARGS...`, or nullptr and `error`.
std::shared_ptr<esmtp::HandlerFactory> configure(const std::vector<std::string> &args, std::string &error)
{
    esmtp::PipeProvider p;
    return p.configure({"/srv", "mx.example.org", "ESMTPHandler"}, args, error);
}

std::string configure_error(const std::vector<std::string> &args)
{
    std::string error;
    CPPUNIT_ASSERT_MESSAGE("configure accepted " + join(args), !configure(args, error));
    CPPUNIT_ASSERT_MESSAGE(error, error.rfind("ESMTPHandler pipe: ", 0) == 0);
    return error;
}

// `h` gets the handler `pipe ARGS...`, for any recipient domain.
void use_pipe(H &h, const std::vector<std::string> &args)
{
    std::string error;
    auto factory = configure(args, error);
    CPPUNIT_ASSERT_MESSAGE(error, factory);
    h.use(factory);
}

// One message, the envelope and DATA accepted; returns the reply to the
// final dot. `trace` gets the trace headers the handler was given.
std::string deliver(H &h, const std::string &from, const std::vector<std::string> &to, const std::string &msg,
                    std::string *trace = nullptr)
{
    std::vector<std::string> r = h.transaction(from, to, msg, trace);
    CPPUNIT_ASSERT_MESSAGE(r[0], r[0].rfind("250 ", 0) == 0);
    for (std::size_t i = 0; i < to.size(); ++i)
        CPPUNIT_ASSERT_MESSAGE(to[i] + ": " + r[i + 1], r[i + 1].rfind("250 ", 0) == 0);
    CPPUNIT_ASSERT_MESSAGE(r[to.size() + 1], r[to.size() + 1].rfind("354 ", 0) == 0);
    return r.back();
}

} // namespace

class PipeTest : public CppUnit::TestFixture
{
    CPPUNIT_TEST_SUITE(PipeTest);
    CPPUNIT_TEST(testConfigureErrors);
    CPPUNIT_TEST(testDeliverArgvStdinEnvironment);
    CPPUNIT_TEST(testExpansions);
    CPPUNIT_TEST(testHostileAddresses);
    CPPUNIT_TEST(testLeadingDashRefused);
    CPPUNIT_TEST(testLeadingDashHeloRefused);
    CPPUNIT_TEST(testLeadingDashClientHostnameRefused);
    CPPUNIT_TEST(testNullSender);
    CPPUNIT_TEST(testTempfail);
    CPPUNIT_TEST(testPermanentFailure);
    CPPUNIT_TEST(testKilledBySignal);
    CPPUNIT_TEST(testTimeoutKillsProcessGroup);
    CPPUNIT_TEST(testCommandVanished);
    CPPUNIT_TEST(testAbortRunsNothing);
    CPPUNIT_TEST(testCheck);
    CPPUNIT_TEST(testCommandVanishedIsAnError);
    CPPUNIT_TEST(testNoFdOrProcessLeft);
    CPPUNIT_TEST(testLargeMessage);
    CPPUNIT_TEST_SUITE_END();

  public:
    void setUp() override
    {
        char tmpl[] = "/tmp/esmtp-pipe-test-XXXXXX";
        CPPUNIT_ASSERT(mkdtemp(tmpl) != nullptr);
        dir_ = tmpl;
    }
    void tearDown() override
    {
        std::error_code ec;
        fs::remove_all(dir_, ec);
    }

    // A /bin/sh script that records its argv, environment and stdin into
    // the test directory, then runs `tail` (shell code).
    std::string script(const std::string &name, const std::string &tail = "exit 0")
    {
        fs::path p = dir_ / name;
        std::ofstream out(p);
        out << "#!/bin/sh\n"
            << "d='" << dir_.string() << "'\n"
            << "printf '%s\\0' \"$@\" > \"$d/argv\"\n"
            << "cat /proc/$$/environ > \"$d/environ\"\n"
            << "cat > \"$d/stdin\"\n"
            << "echo $$ > \"$d/pid\"\n"
            << tail << "\n";
        out.close();
        fs::permissions(p, fs::perms::owner_all);
        return p.string();
    }
    std::vector<std::string> argv() { return split_nul(slurp(dir_ / "argv")); }

    void testConfigureErrors()
    {
        std::string sh = script("rec");
        configure_error({});
        configure_error({"timeout=5"});
        std::string e = configure_error({"bin/cat"});
        CPPUNIT_ASSERT_MESSAGE(e, e.find("absolute path") != std::string::npos);
        configure_error({"cat", "-"});
        configure_error({"timeout=0", sh});
        configure_error({"timeout=abc", sh});
        configure_error({"timeout=", sh});
        configure_error({"nosuchoption=1", sh});
        e = configure_error({sh, "${nosuch}"});
        CPPUNIT_ASSERT_MESSAGE(e, e.find("${nosuch}") != std::string::npos);
        configure_error({sh, "x${sender"});
        e = configure_error({sh, "$(nosuch)"});
        CPPUNIT_ASSERT_MESSAGE(e, e.find("$(nosuch)") != std::string::npos);
        configure_error({sh, "$(sender"});
        configure_error({(dir_ / "missing").string()});
        configure_error({dir_.string()}); // a directory
        std::ofstream(dir_ / "noexec") << "#!/bin/sh\n";
        configure_error({(dir_ / "noexec").string()});

        std::string error;
        CPPUNIT_ASSERT(configure({"timeout=5", "null_sender=", sh, "${sender}", "$$", "a$b"}, error));
        CPPUNIT_ASSERT(error.empty());
    }

    void testDeliverArgvStdinEnvironment()
    {
        H m;
        use_pipe(m, {script("rec"), "-f", "${sender}", "--", "${recipient}"});
        m.ehlo();
        std::string trace;
        std::string out = deliver(m, "alice@example.com", {"bob@example.org", "carol@example.net"}, kMessage, &trace);
        CPPUNIT_ASSERT_MESSAGE(out, out.rfind("250 2.0.0 Ok: queued as ", 0) == 0);
        CPPUNIT_ASSERT(trace.rfind("Return-Path: <alice@example.com>\r\nReceived: ", 0) == 0);
        CPPUNIT_ASSERT_EQUAL(trace + kMessage, slurp(dir_ / "stdin"));
        std::vector<std::string> expect{"-f", "alice@example.com", "--", "bob@example.org", "carol@example.net"};
        CPPUNIT_ASSERT_EQUAL(join(expect), join(argv()));

        // exactly the documented environment, nothing of ours
        std::vector<std::string> env = split_nul(slurp(dir_ / "environ"));
        std::size_t size = (trace + kMessage).size();
        std::string qid = out.substr(std::string("250 2.0.0 Ok: queued as ").size());
        qid = qid.substr(0, qid.find('\r'));
        std::vector<std::string> expect_env{"SENDER=alice@example.com",
                                            "RECIPIENT=bob@example.org carol@example.net",
                                            "CLIENT_ADDRESS=192.0.2.7",
                                            "CLIENT_HOSTNAME=192.0.2.7",
                                            "HELO_NAME=client.example",
                                            "QUEUE_ID=" + qid,
                                            "SIZE=" + std::to_string(size),
                                            "PATH=/usr/bin:/bin",
                                            "LANG=C"};
        CPPUNIT_ASSERT_EQUAL(join(expect_env), join(env));
    }

    void testExpansions()
    {
        H m;
        use_pipe(m, {script("rec"), "ip=${client_address}", "host=${client_hostname}", "helo=${helo_name}",
                     "qid=${queue_id}", "size=${size}", "to=${recipient}!", "$$sender", "$x", "${sender}${sender}",
                     "$(sender)|$(helo_name)", "rcpt=$(recipient)"});
        m.ehlo();
        std::string trace;
        std::string out = deliver(m, "a@b.example", {"r1@x.example", "r2@y.example", "r3@z.example"}, kMessage, &trace);
        CPPUNIT_ASSERT_MESSAGE(out, out.rfind("250 ", 0) == 0);
        std::string qid = out.substr(std::string("250 2.0.0 Ok: queued as ").size());
        qid = qid.substr(0, qid.find('\r'));
        std::vector<std::string> expect{"ip=192.0.2.7",
                                        "host=192.0.2.7",
                                        "helo=client.example",
                                        "qid=" + qid,
                                        "size=" + std::to_string(trace.size() + kMessage.size()),
                                        "to=r1@x.example!",
                                        "to=r2@y.example!",
                                        "to=r3@z.example!",
                                        "$sender",
                                        "$x",
                                        "a@b.examplea@b.example",
                                        "a@b.example|client.example",
                                        "rcpt=r1@x.example",
                                        "rcpt=r2@y.example",
                                        "rcpt=r3@z.example"};
        CPPUNIT_ASSERT_EQUAL(join(expect), join(argv()));
    }

    void testHostileAddresses()
    {
        fs::path pwn = dir_ / "pwned";
        const std::string p = pwn.string();
        // Valid RFC 5321 mailboxes that mean something to a shell.
        std::vector<std::string> hostile{
            "\"a;rm -rf x\"@d.example",
            "\"$(touch " + p + ")\"@d.example",
            "\"`touch " + p + "`\"@d.example",
            "\"a | touch " + p + "\"@d.example",
            "\"a && touch " + p + "\"@d.example",
            "\"a > " + p + "\"@d.example",
            "\"x' ; touch " + p + " ; '\"@d.example",
            "\"a\\\" b\"@d.example",
            "\"${PATH}\"@d.example",
            "\"*\"@d.example",
            "a|b&c'd`id`${IFS}@d.example",
            "\"-oQ/tmp/x\"@d.example",
            "\" \"@d.example",
        };
        H m;
        use_pipe(m, {script("rec"), "${sender}", "${recipient}", "x${recipient}"});
        m.ehlo();
        std::string sender = "\"$(touch " + p + ");\"@evil.example";
        std::string out = deliver(m, sender, hostile, kMessage);
        CPPUNIT_ASSERT_MESSAGE(out, out.rfind("250 ", 0) == 0);
        std::vector<std::string> expect{sender};
        expect.insert(expect.end(), hostile.begin(), hostile.end());
        for (const auto &h : hostile)
            expect.push_back("x" + h);
        CPPUNIT_ASSERT_EQUAL(join(expect), join(argv()));
        CPPUNIT_ASSERT_MESSAGE("a shell ran an address", !fs::exists(pwn));
        CPPUNIT_ASSERT(!fs::exists("x")); // "a;rm -rf x" and "a > x" ran nowhere
    }

    void testLeadingDashRefused()
    {
        H m;
        use_pipe(m, {script("rec"), "${sender}", "${recipient}"});
        m.ehlo();
        CPPUNIT_ASSERT_EQUAL(std::string("553 5.1.7 Address must not begin with '-'\r\n"),
                             m.send("MAIL FROM:<-oQ/tmp/x@d.example>\r\n"));
        CPPUNIT_ASSERT_EQUAL(std::string("553 5.1.7 Address must not begin with '-'\r\n"),
                             m.send("MAIL FROM:<-f@d.example>\r\n"));
        CPPUNIT_ASSERT(m.send("MAIL FROM:<a@d.example>\r\n").rfind("250 ", 0) == 0);
        CPPUNIT_ASSERT_EQUAL(std::string("553 5.1.3 Address must not begin with '-'\r\n"),
                             m.send("RCPT TO:<-oQ/tmp/x@d.example>\r\n"));
        CPPUNIT_ASSERT(m.send("RCPT TO:<b@d.example>\r\n").rfind("250 ", 0) == 0);
        CPPUNIT_ASSERT(m.send("DATA\r\n").rfind("354 ", 0) == 0);
        CPPUNIT_ASSERT(m.send("Subject: x\r\n\r\nx\r\n.\r\n").rfind("250 ", 0) == 0);
        CPPUNIT_ASSERT_EQUAL(join({"a@d.example", "b@d.example"}), join(argv()));
    }

    // Issue 8 defect 11: the HELO/EHLO name is client-chosen like the
    // addresses: `HELO -oQ/tmp/x` must not reach argv as an option.
    void testLeadingDashHeloRefused()
    {
        H m;
        use_pipe(m, {script("rec"), "$(helo_name)", "${sender}"});
        m.ehlo();
        std::string out = m.send("HELO -oQ/tmp/x\r\n");
        CPPUNIT_ASSERT_MESSAGE(out, out.rfind("501 ", 0) == 0);
        CPPUNIT_ASSERT_MESSAGE(out, out.find("must not begin with '-'") != std::string::npos);
        out = m.send("EHLO -fx\r\n");
        CPPUNIT_ASSERT_MESSAGE(out, out.rfind("501 ", 0) == 0);
        // the refused name was not taken: the earlier EHLO's name stands
        CPPUNIT_ASSERT(deliver(m, "a@d.example", {"b@d.example"}, kMessage).rfind("250 ", 0) == 0);
        CPPUNIT_ASSERT_EQUAL(join({"client.example", "a@d.example"}), join(argv()));
        // a dash inside the name is fine
        CPPUNIT_ASSERT(m.send("EHLO mx-1.example\r\n").rfind("250", 0) == 0);
        CPPUNIT_ASSERT(deliver(m, "a@d.example", {"b@d.example"}, kMessage).rfind("250 ", 0) == 0);
        CPPUNIT_ASSERT_EQUAL(join({"mx-1.example", "a@d.example"}), join(argv()));
    }

    // The reverse-DNS name is chosen by whoever owns the client's PTR record.
    void testLeadingDashClientHostnameRefused()
    {
        H h;
        use_pipe(h, {script("rec"), "$(client_hostname)"});
        h.conn.remote_host = "-oQ/tmp/x";
        h.ehlo();
        CPPUNIT_ASSERT_EQUAL(std::string("550 5.7.1 Client host name must not begin with '-'\r\n"),
                             h.send("MAIL FROM:<a@d.example>\r\n"));
        CPPUNIT_ASSERT(!fs::exists(dir_ / "argv"));
    }

    void testNullSender()
    {
        {
            H m;
            use_pipe(m, {script("rec"), "${sender}"});
            m.ehlo();
            CPPUNIT_ASSERT(deliver(m, "", {"b@d.example"}, kMessage).rfind("250 ", 0) == 0);
            CPPUNIT_ASSERT_EQUAL(join({"MAILER-DAEMON"}), join(argv()));
        }
        {
            H m;
            use_pipe(m, {"null_sender=", script("rec"), "-f", "${sender}"});
            m.ehlo();
            CPPUNIT_ASSERT(deliver(m, "", {"b@d.example"}, kMessage).rfind("250 ", 0) == 0);
            CPPUNIT_ASSERT_EQUAL(join({"-f", ""}), join(argv()));
            CPPUNIT_ASSERT(slurp(dir_ / "environ").find(std::string("SENDER=\0", 8)) != std::string::npos);
        }
    }

    void testTempfail()
    {
        H m;
        use_pipe(m, {script("tf", "echo 'mailbox locked, later' >&2; echo second line >&2; exit 75")});
        m.ehlo();
        std::string out = deliver(m, "a@d.example", {"b@d.example"}, kMessage);
        CPPUNIT_ASSERT_EQUAL(std::string("451 4.3.0 mailbox locked, later\r\n"), out);
        CPPUNIT_ASSERT_EQUAL(0u, m.s().messages_accepted());

        H quiet;
        use_pipe(quiet, {script("tf2", "exit 75")});
        quiet.ehlo();
        CPPUNIT_ASSERT_EQUAL(std::string("451 4.3.0 temporary failure\r\n"),
                             deliver(quiet, "a@d.example", {"b@d.example"}, kMessage));
    }

    void testPermanentFailure()
    {
        H m;
        use_pipe(m, {script("pf", "printf '  no such\\001 user?\\r\\n' >&2; exit 1")});
        m.ehlo();
        CPPUNIT_ASSERT_EQUAL(std::string("554 5.3.0 no such? user?\r\n"),
                             deliver(m, "a@d.example", {"b@d.example"}, kMessage));
        H quiet;
        use_pipe(quiet, {script("pf2", "exit 2")});
        quiet.ehlo();
        CPPUNIT_ASSERT_EQUAL(std::string("554 5.3.0 delivery failed (exit 2)\r\n"),
                             deliver(quiet, "a@d.example", {"b@d.example"}, kMessage));
        // a transaction after a failure works
        H again;
        use_pipe(again, {script("pf3", "exit 1")});
        again.ehlo();
        deliver(again, "a@d.example", {"b@d.example"}, kMessage);
        CPPUNIT_ASSERT(again.send("MAIL FROM:<a@d.example>\r\n").rfind("250 ", 0) == 0);
    }

    void testKilledBySignal()
    {
        H m;
        use_pipe(m, {script("sig", "kill -9 $$")});
        m.ehlo();
        CPPUNIT_ASSERT_EQUAL(std::string("554 5.3.0 delivery failed (signal 9)\r\n"),
                             deliver(m, "a@d.example", {"b@d.example"}, kMessage));
    }

    void testTimeoutKillsProcessGroup()
    {
        // the script starts a grandchild that would outlive a plain kill
        H m;
        use_pipe(m, {"timeout=1", script("slow", "sleep 60 & echo $! > \"$d/grandchild\"; wait")});
        m.ehlo();
        auto t0 = std::chrono::steady_clock::now();
        std::string out = deliver(m, "a@d.example", {"b@d.example"}, kMessage);
        auto took = std::chrono::steady_clock::now() - t0;
        CPPUNIT_ASSERT_EQUAL(std::string("554 5.3.0 command timed out\r\n"), out);
        CPPUNIT_ASSERT(took >= std::chrono::milliseconds(900));
        CPPUNIT_ASSERT(took < std::chrono::seconds(10));
        pid_t pid = std::stoi(slurp(dir_ / "pid"));
        pid_t gc = std::stoi(slurp(dir_ / "grandchild"));
        CPPUNIT_ASSERT(!alive(pid));
        // the grandchild was re-parented; wait for its reaper a little
        for (int i = 0; i < 100 && alive(gc); ++i)
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        CPPUNIT_ASSERT_MESSAGE("sleep still running", !alive(gc));
    }

    void testCommandVanished()
    {
        std::string sh = script("gone");
        H m;
        use_pipe(m, {sh});
        m.ehlo();
        fs::remove(sh);
        CPPUNIT_ASSERT_EQUAL(std::string("451 4.3.0 Local error in processing\r\n"),
                             deliver(m, "a@d.example", {"b@d.example"}, kMessage));
    }

    // Issue 8 defect 18: check() (child_init, as the server's user): the
    // command must be executable by that user.
    void testCheck()
    {
        std::string sh = script("rec");
        std::string error, why;
        auto f = configure({sh, "$(sender)"}, error);
        CPPUNIT_ASSERT_MESSAGE(error, f);
        CPPUNIT_ASSERT_MESSAGE(why, f->check(why));
        fs::permissions(sh, fs::perms::owner_read | fs::perms::owner_write); // no x for anyone, root included
        CPPUNIT_ASSERT(!f->check(why));
        CPPUNIT_ASSERT_MESSAGE(why, why.find(sh) != std::string::npos);
        CPPUNIT_ASSERT_MESSAGE(why, why.find(std::strerror(EACCES)) != std::string::npos);
        fs::remove(sh);
        CPPUNIT_ASSERT(!f->check(why));
        CPPUNIT_ASSERT_MESSAGE(why, why.find(std::strerror(ENOENT)) != std::string::npos);
    }

    // A command that cannot be run is the administrator's problem: it goes
    // to httpd's error log (SessionView::error), path and reason.
    void testCommandVanishedIsAnError()
    {
        std::string sh = script("gone");
        H h;
        use_pipe(h, {sh});
        fs::remove(sh);
        h.ehlo();
        CPPUNIT_ASSERT_EQUAL(std::string("451 4.3.0 Local error in processing\r\n"),
                             deliver(h, "a@d.example", {"b@d.example"}, "Subject: x\r\n\r\nx\r\n"));
        CPPUNIT_ASSERT_EQUAL(std::size_t(1), h.log.errors.size());
        CPPUNIT_ASSERT_MESSAGE(h.log.errors[0], h.log.errors[0].find(sh) != std::string::npos);
        CPPUNIT_ASSERT_MESSAGE(h.log.errors[0], h.log.errors[0].find(std::strerror(ENOENT)) != std::string::npos);
    }

    void testAbortRunsNothing()
    {
        {
            H m;
            use_pipe(m, {script("rec")});
            m.ehlo();
            m.send("MAIL FROM:<a@d.example>\r\nRCPT TO:<b@d.example>\r\nDATA\r\n");
            m.send("Subject: cut\r\n\r\nhalf a bo");
            m.s().end(); // client gone mid-DATA
        }
        {
            H m;
            use_pipe(m, {script("rec")});
            m.ehlo();
            m.send("MAIL FROM:<a@d.example>\r\nRCPT TO:<b@d.example>\r\nRSET\r\nQUIT\r\n");
        }
        CPPUNIT_ASSERT(!fs::exists(dir_ / "argv"));
    }

    void testNoFdOrProcessLeft()
    {
        std::string ok = script("ok");
        std::string fail = script("fail", "echo bad >&2; exit 1");
        std::string slow = script("slow", "sleep 30");
        std::size_t before = open_fds();
        for (int i = 0; i < 10; ++i) {
            H a;
            use_pipe(a, {ok});
            a.ehlo();
            CPPUNIT_ASSERT(deliver(a, "a@d.example", {"b@d.example"}, kMessage).rfind("250 ", 0) == 0);
            CPPUNIT_ASSERT(deliver(a, "a@d.example", {"b@d.example"}, kMessage).rfind("250 ", 0) == 0);
            H b;
            use_pipe(b, {fail});
            b.ehlo();
            CPPUNIT_ASSERT(deliver(b, "a@d.example", {"b@d.example"}, kMessage).rfind("554 ", 0) == 0);
            H c;
            use_pipe(c, {ok});
            c.ehlo();
            c.send("MAIL FROM:<a@d.example>\r\nRCPT TO:<b@d.example>\r\nDATA\r\nSubject: x\r\n\r\nabc");
            // destroyed mid-DATA: the spool must be closed
        }
        H d;
        use_pipe(d, {"timeout=1", slow});
        d.ehlo();
        CPPUNIT_ASSERT(deliver(d, "a@d.example", {"b@d.example"}, kMessage).rfind("554 ", 0) == 0);
        CPPUNIT_ASSERT_EQUAL(before, open_fds());
        int st;
        errno = 0;
        CPPUNIT_ASSERT_EQUAL(pid_t(-1), waitpid(-1, &st, WNOHANG)); // no child left to reap
        CPPUNIT_ASSERT_EQUAL(ECHILD, errno);
    }

    void testLargeMessage()
    {
        // bigger than a pipe buffer and than the spool's write block
        std::string msg = "Subject: big\r\n\r\n";
        while (msg.size() < 3 * 1024 * 1024)
            msg += "0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\r\n";
        H m;
        use_pipe(m, {script("rec")});
        m.ehlo();
        // the default limit (10 MB) leaves room for it
        std::string trace;
        std::string out = deliver(m, "a@d.example", {"b@d.example"}, msg, &trace);
        CPPUNIT_ASSERT_MESSAGE(out, out.rfind("250 ", 0) == 0);
        CPPUNIT_ASSERT(trace + msg == slurp(dir_ / "stdin"));
    }

  private:
    static bool alive(pid_t pid)
    {
        std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
        std::string line;
        if (!std::getline(stat, line))
            return false;
        std::size_t close = line.rfind(')');
        return close != std::string::npos && close + 2 < line.size() && line[close + 2] != 'Z';
    }

    fs::path dir_;
};

CPPUNIT_TEST_SUITE_REGISTRATION(PipeTest);
