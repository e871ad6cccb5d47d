// The lmtp handler: target parsing, dot-stuffing across chunk boundaries,
// reply parsing, and whole sessions against a scripted LMTP server on a unix
// socket (per-recipient replies folded into one SMTP reply, RSET, lost
// connections, a server that is down).

#include "engine/auth.hpp"
#include "engine/forwarding_view.hpp"
#include "handlers/lmtp.hpp"
#include "handlers/stream_socket.hpp"
#include "session_harness.hpp"

#include <cppunit/extensions/HelperMacros.h>

#include <fstream>

#include <cstring>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <poll.h>
#include <string>
#include <sys/socket.h>
#include <sys/un.h>
#include <thread>
#include <unistd.h>
#include <vector>

namespace fs = std::filesystem;
using esmtp::SocketTarget;
using esmtp::lmtp::DotStuffer;
using esmtp::lmtp::ReplyParser;

namespace
{

// Remove dot-stuffing the way an RFC 5321 server does, up to the final dot;
// returns false when there is no final dot.
bool unstuff(const std::string &wire, std::string &content)
{
    content.clear();
    std::size_t pos = 0;
    while (pos < wire.size()) {
        std::size_t nl = wire.find('\n', pos);
        std::string line = wire.substr(pos, nl == std::string::npos ? std::string::npos : nl + 1 - pos);
        pos = nl == std::string::npos ? wire.size() : nl + 1;
        if (line == ".\r\n")
            return pos == wire.size(); // nothing after the end
        if (!line.empty() && line[0] == '.')
            line.erase(0, 1);
        content += line;
    }
    return false;
}

std::string stuff_all(const std::vector<std::string> &chunks)
{
    DotStuffer d;
    std::string out;
    for (const auto &c : chunks)
        d.feed(c, out);
    d.finish(out);
    return out;
}

// ---------------------------------------------------------------- a scripted LMTP server

class FakeLmtp
{
  public:
    // Replies by command verb ("MAIL", "RCPT", "RSET"...) or by whole line;
    // "<close>" closes the connection instead of answering.
    std::map<std::string, std::string> replies;
    // After the final dot: one reply per accepted recipient, in order.
    std::vector<std::string> data_replies;
    std::string lhlo_reply = "250-lmtp.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n"
                             "250 SMTPUTF8\r\n";
    std::string greeting = "220 lmtp.test LMTP ready\r\n";
    // Hold while changing the above once start() has run.
    std::mutex mu;

    explicit FakeLmtp(const fs::path &path) : path_(path)
    {
        fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        CPPUNIT_ASSERT(fd_ >= 0);
        sockaddr_un sun{};
        sun.sun_family = AF_UNIX;
        std::snprintf(sun.sun_path, sizeof sun.sun_path, "%s", path.c_str());
        CPPUNIT_ASSERT(::bind(fd_, reinterpret_cast<sockaddr *>(&sun), sizeof sun) == 0);
        CPPUNIT_ASSERT(::listen(fd_, 8) == 0);
    }
    ~FakeLmtp()
    {
        stop();
        ::close(fd_);
    }
    void start()
    {
        thread_ = std::thread([this] { serve(); });
    }
    void stop()
    {
        stop_ = true;
        if (thread_.joinable())
            thread_.join();
    }

    // What the server saw (call after stop()).
    std::vector<std::string> commands;
    std::vector<std::string> data; // raw (stuffed) DATA content, final dot included
    int connections = 0;

  private:
    void serve()
    {
        while (!stop_) {
            pollfd p{fd_, POLLIN, 0};
            if (::poll(&p, 1, 50) <= 0)
                continue;
            int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
            if (c < 0)
                continue;
            ++connections;
            session(c);
            ::close(c);
        }
    }
    bool read_more(int c, std::string &buf)
    {
        for (;;) {
            if (stop_)
                return false;
            pollfd p{c, POLLIN, 0};
            if (::poll(&p, 1, 50) <= 0)
                continue;
            char tmp[4096];
            ssize_t n = ::read(c, tmp, sizeof tmp);
            if (n <= 0)
                return false;
            buf.append(tmp, static_cast<std::size_t>(n));
            return true;
        }
    }
    template <class F> auto locked(F f)
    {
        std::lock_guard<std::mutex> l(mu);
        return f();
    }
    void put(int c, const std::string &s) { (void)!::write(c, s.data(), s.size()); }
    void session(int c)
    {
        put(c, locked([&] { return greeting; }));
        std::string buf;
        for (;;) {
            std::size_t nl;
            while ((nl = buf.find("\r\n")) == std::string::npos)
                if (!read_more(c, buf))
                    return;
            std::string line = buf.substr(0, nl);
            buf.erase(0, nl + 2);
            commands.push_back(line);
            std::string verb = line.substr(0, line.find_first_of(" :"));
            std::string r;
            std::unique_lock<std::mutex> lock(mu);
            if (replies.count(line))
                r = replies[line];
            else if (replies.count(verb))
                r = replies[verb];
            else if (verb == "LHLO")
                r = lhlo_reply;
            else if (verb == "DATA")
                r = "354 go ahead\r\n";
            else if (verb == "QUIT")
                r = "221 2.0.0 bye\r\n";
            else
                r = "250 2.0.0 ok\r\n";
            lock.unlock();
            if (r == "<close>")
                return;
            put(c, r);
            if (verb == "QUIT")
                return;
            if (verb == "DATA" && r.rfind("354", 0) == 0) {
                std::size_t end;
                while ((end = buf.find("\r\n.\r\n")) == std::string::npos && buf != ".\r\n")
                    if (!read_more(c, buf))
                        return;
                std::size_t len = buf == ".\r\n" ? 3 : end + 5;
                data.push_back(buf.substr(0, len));
                buf.erase(0, len);
                for (const auto &dr : locked([&] { return data_replies; })) {
                    if (dr == "<close>")
                        return;
                    put(c, dr);
                }
            }
        }
    }

    fs::path path_;
    int fd_ = -1;
    std::thread thread_;
    std::atomic<bool> stop_{false};
};

using H = esmtp::test::Harness;

// The factory of `ESMTPHandler lmtp ARGS...`, or nullptr and `error`.
std::shared_ptr<esmtp::HandlerFactory> configure(const std::vector<std::string> &args, std::string &error)
{
    esmtp::LmtpProvider p;
    return p.configure({"/srv", "mx.example.org", "ESMTPHandler"}, args, error);
}

// The factory of `ESMTPHandler smtp ARGS...`, or nullptr and `error`.
std::shared_ptr<esmtp::HandlerFactory> configure_smtp(const std::vector<std::string> &args, std::string &error)
{
    esmtp::LmtpProvider p(esmtp::LmtpProvider::Dialect::smtp);
    return p.configure({"/srv", "mx.example.org", "ESMTPHandler"}, args, error);
}

std::string configure_error(const std::vector<std::string> &args)
{
    std::string error;
    CPPUNIT_ASSERT(!configure(args, error));
    CPPUNIT_ASSERT_MESSAGE(error, error.rfind("ESMTPHandler lmtp: ", 0) == 0);
    return error;
}

// `h` gets the handler `lmtp ARGS...`, for any recipient domain.
void use_lmtp(H &h, const std::vector<std::string> &args)
{
    std::string error;
    auto factory = configure(args, error);
    CPPUNIT_ASSERT_MESSAGE(error, factory);
    h.use(factory);
}

void use_smtp(H &h, const std::vector<std::string> &args)
{
    std::string error;
    auto factory = configure_smtp(args, error);
    CPPUNIT_ASSERT_MESSAGE(error, factory);
    h.use(factory);
}

// Shows the wrapped handler, from data() on, the envelope a milter left:
// `extra` recipients added (as ESMTPMilter's smfi_addrcpt_par would).
class AddRecipients final : public esmtp::Handler
{
  public:
    AddRecipients(std::unique_ptr<esmtp::Handler> inner, std::vector<esmtp::Recipient> extra)
        : inner_(std::move(inner)), extra_(std::move(extra))
    {
    }
    esmtp::Reply mail(esmtp::SessionView &s, const esmtp::Path &p, const esmtp::Params &ps) override
    {
        return inner_->mail(s, p, ps);
    }
    esmtp::Reply rcpt(esmtp::SessionView &s, const esmtp::Path &p, const esmtp::Params &ps) override
    {
        return inner_->rcpt(s, p, ps);
    }
    esmtp::Reply data(esmtp::SessionView &s) override
    {
        view_.s = &s;
        view_.env = s.envelope();
        view_.env.recipients.insert(view_.env.recipients.end(), extra_.begin(), extra_.end());
        return inner_->data(view_);
    }
    void header(esmtp::SessionView &, const esmtp::HeaderField &f) override { inner_->header(view_, f); }
    void eoh(esmtp::SessionView &, std::string_view raw) override { inner_->eoh(view_, raw); }
    void body(esmtp::SessionView &, std::string_view chunk) override { inner_->body(view_, chunk); }
    esmtp::Reply eom(esmtp::SessionView &) override { return inner_->eom(view_); }
    void abort(esmtp::SessionView &s) override { inner_->abort(s); }
    void disconnect(esmtp::SessionView &s) override { inner_->disconnect(s); }

  private:
    struct View final : esmtp::ForwardingView {
        esmtp::Envelope env;
        const esmtp::Envelope &envelope() const override { return env; }
    };
    std::unique_ptr<esmtp::Handler> inner_;
    std::vector<esmtp::Recipient> extra_;
    View view_;
};

const char *const kEhlo = "250-smarthost.test\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-8BITMIME\r\n"
                          "250-ENHANCEDSTATUSCODES\r\n250 SMTPUTF8\r\n";

} // namespace

class LmtpTest : public CppUnit::TestFixture
{
    CPPUNIT_TEST_SUITE(LmtpTest);
    CPPUNIT_TEST(testParseTarget);
    CPPUNIT_TEST(testConfigure);
    CPPUNIT_TEST(testDotStuffingSimple);
    CPPUNIT_TEST(testDotStuffingEveryChunkBoundary);
    CPPUNIT_TEST(testDotStuffingEnd);
    CPPUNIT_TEST(testReplyParserMultiLine);
    CPPUNIT_TEST(testReplyParserByteByByte);
    CPPUNIT_TEST(testReplyParserMalformed);
    CPPUNIT_TEST(testDeliverOne);
    CPPUNIT_TEST(testRcptRepliesMappedBack);
    CPPUNIT_TEST(testFoldAllAccepted);
    CPPUNIT_TEST(testFoldSingleFailure);
    CPPUNIT_TEST(testFoldAllPermanent);
    CPPUNIT_TEST(testFoldMixed);
    CPPUNIT_TEST(testServerDown);
    CPPUNIT_TEST(testServerDownIsAnError);
    CPPUNIT_TEST(testCheck);
    CPPUNIT_TEST(testBadGreeting);
    CPPUNIT_TEST(testConnectionLostMidTransaction);
    CPPUNIT_TEST(testConnectionLostAfterDot);
    CPPUNIT_TEST(testRsetAndReuse);
    CPPUNIT_TEST(testAbortMidDataDropsConnection);
    CPPUNIT_TEST(testSmtputf8);
    CPPUNIT_TEST(testDataRefused);
    CPPUNIT_TEST(testIdleConnectionClosedByServer);
    CPPUNIT_TEST(testSmtpRelayOne);
    CPPUNIT_TEST(testSmtpRepliesAreOurs);
    CPPUNIT_TEST(testSmtpParametersOnlyWhenOffered);
    CPPUNIT_TEST(testSmtpCarries);
    CPPUNIT_TEST(testSmtpDsnPassedOn);
    CPPUNIT_TEST(testSmtpDsnDropped);
    CPPUNIT_TEST(testSmtpDsnAfterEnvelopeChanged);
    CPPUNIT_TEST(testSmtpRequireTlsNeedsTls);
    CPPUNIT_TEST(testSmtpSmarthostDown);
    CPPUNIT_TEST(testSmtpNoReplyAfterDot);
    CPPUNIT_TEST(testSmtpStarttlsRequiredNotOffered);
    CPPUNIT_TEST(testSmtpAuth);
    CPPUNIT_TEST(testSmtpConfigure);
    CPPUNIT_TEST(testSmtpReuseAcrossSessions);
    CPPUNIT_TEST_SUITE_END();

  public:
    void setUp() override
    {
        char tmpl[] = "/tmp/esmtp-lmtp-test-XXXXXX";
        CPPUNIT_ASSERT(mkdtemp(tmpl) != nullptr);
        dir_ = tmpl;
        sock_ = (dir_ / "lmtp.sock").string();
    }
    void tearDown() override
    {
        std::error_code ec;
        fs::remove_all(dir_, ec);
    }

    void testParseTarget()
    {
        SocketTarget t;
        std::string e;
        CPPUNIT_ASSERT(esmtp::parse_socket_target("127.0.0.1:24", t, e));
        CPPUNIT_ASSERT(!t.is_unix);
        CPPUNIT_ASSERT_EQUAL(std::string("127.0.0.1"), t.host);
        CPPUNIT_ASSERT_EQUAL(std::string("24"), t.port);
        CPPUNIT_ASSERT_EQUAL(std::string("127.0.0.1:24"), t.to_string());
        CPPUNIT_ASSERT(esmtp::parse_socket_target("[::1]:2424", t, e));
        CPPUNIT_ASSERT_EQUAL(std::string("::1"), t.host);
        CPPUNIT_ASSERT_EQUAL(std::string("2424"), t.port);
        CPPUNIT_ASSERT_EQUAL(std::string("[::1]:2424"), t.to_string());
        CPPUNIT_ASSERT(esmtp::parse_socket_target("lmtp.example.org:65535", t, e));
        CPPUNIT_ASSERT_EQUAL(std::string("lmtp.example.org"), t.host);
        CPPUNIT_ASSERT(esmtp::parse_socket_target("unix:/run/dovecot/lmtp", t, e));
        CPPUNIT_ASSERT(t.is_unix);
        CPPUNIT_ASSERT_EQUAL(std::string("/run/dovecot/lmtp"), t.path);
        CPPUNIT_ASSERT_EQUAL(std::string("unix:/run/dovecot/lmtp"), t.to_string());

        for (const char *bad :
             {"", "localhost", "localhost:", ":24", "host:0", "host:65536", "host:24x", "host:lmtp", "::1:24", "[::1]",
              "[::1]24", "[::1]:", "[nonsense]:24", "[]:24", "unix:", "unix:relative/path", "host:24:25"}) {
            e.clear();
            CPPUNIT_ASSERT_MESSAGE(bad, !esmtp::parse_socket_target(bad, t, e));
            CPPUNIT_ASSERT_MESSAGE(bad, !e.empty());
        }
        CPPUNIT_ASSERT(!esmtp::parse_socket_target("unix:/" + std::string(200, 'x'), t, e));
    }

    void testConfigure()
    {
        configure_error({});
        configure_error({"nohostport"});
        configure_error({"127.0.0.1:24", "timeout=0"});
        configure_error({"127.0.0.1:24", "timeout=x"});
        configure_error({"127.0.0.1:24", "bogus=1"});
        std::string error;
        CPPUNIT_ASSERT(configure({"[::1]:24", "timeout=5"}, error));
        CPPUNIT_ASSERT(configure({"unix:/run/lmtp"}, error));
    }

    void testDotStuffingSimple()
    {
        CPPUNIT_ASSERT_EQUAL(std::string("a\r\n..b\r\n.\r\n"), stuff_all({"a\r\n.b\r\n"}));
        CPPUNIT_ASSERT_EQUAL(std::string("..\r\n.\r\n"), stuff_all({".\r\n"}));
        CPPUNIT_ASSERT_EQUAL(std::string("...x\r\n.\r\n"), stuff_all({"..x\r\n"}));
        // the dot starts a line in the middle of a chunk, and across chunks
        CPPUNIT_ASSERT_EQUAL(std::string("a\r\n..\r\nb\r\n..c\r\n.\r\n"), stuff_all({"a\r\n.\r\nb\r\n", ".c\r\n"}));
        CPPUNIT_ASSERT_EQUAL(std::string("a\r\n..c\r\n.\r\n"), stuff_all({"a\r", "\n", ".", "c\r\n"}));
        // not at a line start: untouched
        CPPUNIT_ASSERT_EQUAL(std::string("a.b\r\n.\r\n"), stuff_all({"a", ".b\r\n"}));
        // a bare LF starts a line too (a lenient server would end there)
        CPPUNIT_ASSERT_EQUAL(std::string("a\n..\r\n.\r\n"), stuff_all({"a\n", ".\r\n"}));
    }

    void testDotStuffingEveryChunkBoundary()
    {
        const std::string content = ".first\r\nsecond\r\n.\r\n..\r\nx.y\r\n\r\n.\r\n.end\n.lf\r\n";
        const std::string expect = stuff_all({content});
        std::string back;
        CPPUNIT_ASSERT(unstuff(expect, back));
        CPPUNIT_ASSERT_EQUAL(content, back);
        // every split into two and three chunks gives the same wire bytes
        for (std::size_t i = 0; i <= content.size(); ++i) {
            CPPUNIT_ASSERT_EQUAL(expect, stuff_all({content.substr(0, i), content.substr(i)}));
            for (std::size_t j = i; j <= content.size(); ++j)
                CPPUNIT_ASSERT_EQUAL(expect,
                                     stuff_all({content.substr(0, i), content.substr(i, j - i), content.substr(j)}));
        }
        // and byte by byte
        std::vector<std::string> bytes;
        for (char c : content)
            bytes.emplace_back(1, c);
        CPPUNIT_ASSERT_EQUAL(expect, stuff_all(bytes));
    }

    void testDotStuffingEnd()
    {
        // content ending without CRLF (BDAT, or a last line without end) gets one
        CPPUNIT_ASSERT_EQUAL(std::string("abc\r\n.\r\n"), stuff_all({"abc"}));
        CPPUNIT_ASSERT_EQUAL(std::string("abc\r\r\n.\r\n"), stuff_all({"abc\r"}));
        CPPUNIT_ASSERT_EQUAL(std::string("abc\n\r\n.\r\n"), stuff_all({"abc\n"}));
        CPPUNIT_ASSERT_EQUAL(std::string("abc\r\n.\r\n"), stuff_all({"abc\r", "\n"}));
        CPPUNIT_ASSERT_EQUAL(std::string("x\r\n.\r\n"), stuff_all({"x\r\n", ""}));
        CPPUNIT_ASSERT_EQUAL(std::string(".\r\n"), stuff_all({}));
        // finish() resets: a second message starts at a line start
        DotStuffer d;
        std::string out;
        d.feed("a", out);
        d.finish(out);
        d.feed(".b\r\n", out);
        d.finish(out);
        CPPUNIT_ASSERT_EQUAL(std::string("a\r\n.\r\n..b\r\n.\r\n"), out);
    }

    void testReplyParserMultiLine()
    {
        ReplyParser p;
        p.feed("250-lmtp.test\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES\r\n550 5.1.1 <x@y>: unknown\r\n");
        auto r = p.next();
        CPPUNIT_ASSERT(r);
        CPPUNIT_ASSERT_EQUAL(250, r->code);
        CPPUNIT_ASSERT_EQUAL(std::string(), r->enhanced);
        CPPUNIT_ASSERT_EQUAL(std::size_t(3), r->lines.size());
        CPPUNIT_ASSERT_EQUAL(std::string("ENHANCEDSTATUSCODES"), r->lines[2]);
        r = p.next();
        CPPUNIT_ASSERT(r);
        CPPUNIT_ASSERT_EQUAL(550, r->code);
        CPPUNIT_ASSERT_EQUAL(std::string("5.1.1"), r->enhanced);
        CPPUNIT_ASSERT_EQUAL(std::string("<x@y>: unknown"), r->lines.at(0));
        CPPUNIT_ASSERT(!p.next());
        CPPUNIT_ASSERT(!p.bad());

        // enhanced code on every line of a multi-line reply; LF-only lines;
        // a bare code; a code of another class is text
        p.feed("452-4.2.2 mailbox full\n452 4.2.2 try later\r\n250\r\n451 5.1.1 odd\r\n250 2.1.5\r\n");
        r = p.next();
        CPPUNIT_ASSERT_EQUAL(452, r->code);
        CPPUNIT_ASSERT_EQUAL(std::string("4.2.2"), r->enhanced);
        CPPUNIT_ASSERT_EQUAL(std::string("mailbox full"), r->lines.at(0));
        CPPUNIT_ASSERT_EQUAL(std::string("try later"), r->lines.at(1));
        r = p.next();
        CPPUNIT_ASSERT_EQUAL(250, r->code);
        CPPUNIT_ASSERT_EQUAL(std::string(""), r->lines.at(0));
        r = p.next();
        CPPUNIT_ASSERT_EQUAL(451, r->code);
        CPPUNIT_ASSERT_EQUAL(std::string(), r->enhanced);
        CPPUNIT_ASSERT_EQUAL(std::string("5.1.1 odd"), r->lines.at(0));
        r = p.next();
        CPPUNIT_ASSERT_EQUAL(std::string("2.1.5"), r->enhanced);
        CPPUNIT_ASSERT_EQUAL(std::string(""), r->lines.at(0));
    }

    void testReplyParserByteByByte()
    {
        const std::string wire = "220 hi\r\n250-a\r\n250-b\r\n250 2.0.0 c\r\n";
        ReplyParser p;
        std::vector<int> codes;
        std::size_t lines = 0;
        for (char c : wire) {
            p.feed(std::string(1, c));
            while (auto r = p.next()) {
                codes.push_back(r->code);
                lines += r->lines.size();
            }
        }
        CPPUNIT_ASSERT(codes == std::vector<int>({220, 250}));
        CPPUNIT_ASSERT_EQUAL(std::size_t(4), lines);
        CPPUNIT_ASSERT(!p.buffered());
    }

    void testReplyParserMalformed()
    {
        for (const char *bad :
             {"hello\r\n", "25\r\n", "250x\r\n", "250-a\r\n251 b\r\n", "199 x\r\n", "600 x\r\n", "2a0 x\r\n"}) {
            ReplyParser p;
            p.feed(bad);
            CPPUNIT_ASSERT_MESSAGE(bad, !p.next());
            CPPUNIT_ASSERT_MESSAGE(bad, p.bad());
        }
        ReplyParser p;
        p.feed("250 " + std::string(10000, 'x')); // no line end, ever
        CPPUNIT_ASSERT(!p.next());
        CPPUNIT_ASSERT(p.bad());
    }

    void testDeliverOne()
    {
        FakeLmtp srv(sock_);
        srv.data_replies = {"250 2.0.0 <bob@example.org> delivered\r\n"};
        srv.start();
        std::string trace;
        {
            H m;
            use_lmtp(m, {"unix:" + sock_});
            m.ehlo();
            CPPUNIT_ASSERT(m.send("MAIL FROM:<alice@example.com> BODY=8BITMIME\r\n").rfind("250 ", 0) == 0);
            CPPUNIT_ASSERT_EQUAL(std::string("250 2.0.0 ok\r\n"), m.send("RCPT TO:<bob@example.org>\r\n"));
            CPPUNIT_ASSERT(m.send("DATA\r\n").rfind("354 ", 0) == 0);
            trace = std::string(m.s().trace_headers());
            std::string out = m.send("Subject: x\r\n\r\n..dot line\r\n\xff\xfe 8bit\r\n.\r\n");
            CPPUNIT_ASSERT_MESSAGE(out, out.rfind("250 2.0.0 Ok: queued as ", 0) == 0);
            CPPUNIT_ASSERT(m.send("QUIT\r\n").rfind("221 ", 0) == 0);
        }
        srv.stop();
        std::vector<std::string> expect{"LHLO mx.example.org", "MAIL FROM:<alice@example.com> BODY=8BITMIME",
                                        "RCPT TO:<bob@example.org>", "DATA", "QUIT"};
        CPPUNIT_ASSERT(srv.commands == expect);
        CPPUNIT_ASSERT_EQUAL(std::size_t(1), srv.data.size());
        std::string content;
        CPPUNIT_ASSERT(unstuff(srv.data[0], content));
        CPPUNIT_ASSERT_EQUAL(trace + "Subject: x\r\n\r\n.dot line\r\n\xff\xfe 8bit\r\n", content);
        CPPUNIT_ASSERT(srv.data[0].find("\r\n..dot line\r\n") != std::string::npos);
    }

    void testRcptRepliesMappedBack()
    {
        FakeLmtp srv(sock_);
        srv.replies["RCPT TO:<nobody@example.org>"] = "550 5.1.1 <nobody@example.org>: no such user\r\n";
        srv.replies["RCPT TO:<full@example.org>"] = "452-4.2.2 mailbox full\r\n452 4.2.2 really\r\n";
        srv.replies["RCPT TO:<plain@example.org>"] = "550 no enhanced code here\r\n";
        srv.replies["RCPT TO:<ctl@example.org>"] = "550 5.7.1 bell\x07 here\r\n";
        srv.start();
        H m;
        use_lmtp(m, {"unix:" + sock_});
        m.ehlo();
        m.send("MAIL FROM:<a@example.com>\r\n");
        CPPUNIT_ASSERT_EQUAL(std::string("550 5.1.1 <nobody@example.org>: no such user\r\n"),
                             m.send("RCPT TO:<nobody@example.org>\r\n"));
        CPPUNIT_ASSERT_EQUAL(std::string("452-4.2.2 mailbox full\r\n452 4.2.2 really\r\n"),
                             m.send("RCPT TO:<full@example.org>\r\n"));
        std::string out = m.send("RCPT TO:<plain@example.org>\r\n");
        CPPUNIT_ASSERT_MESSAGE(out,
                               out.rfind("550 ", 0) == 0 && out.find("no enhanced code here") != std::string::npos);
        CPPUNIT_ASSERT_EQUAL(std::string("550 5.7.1 bell? here\r\n"), m.send("RCPT TO:<ctl@example.org>\r\n"));
        CPPUNIT_ASSERT_EQUAL(std::string("503 5.5.1 Error: need RCPT command\r\n"), m.send("DATA\r\n"));
    }

    // n recipients, all accepted at RCPT; `replies` after the dot
    std::string run_fold(const std::vector<std::string> &replies, FakeLmtp &srv)
    {
        srv.data_replies = replies;
        srv.start();
        H m;
        use_lmtp(m, {"unix:" + sock_});
        m.ehlo();
        std::vector<std::string> to;
        for (std::size_t i = 0; i < replies.size(); ++i)
            to.push_back("r" + std::to_string(i) + "@example.org");
        std::vector<std::string> r = m.transaction("a@example.com", to, "Subject: x\r\n\r\nbody\r\n");
        for (std::size_t i = 0; i < to.size(); ++i)
            CPPUNIT_ASSERT(r[i + 1].rfind("250 ", 0) == 0);
        CPPUNIT_ASSERT(r[to.size() + 1].rfind("354 ", 0) == 0);
        std::string out = r.back();
        // the connection is still in step: a second transaction works
        {
            std::lock_guard<std::mutex> l(srv.mu);
            srv.data_replies.assign(1, "250 2.0.0 ok\r\n");
        }
        r = m.transaction("a@example.com", {"again@example.org"}, "x\r\n");
        CPPUNIT_ASSERT(r[1].rfind("250 ", 0) == 0);
        CPPUNIT_ASSERT(r[2].rfind("354 ", 0) == 0);
        std::string second = r.back();
        CPPUNIT_ASSERT_MESSAGE(second, second.rfind("250 2.0.0 Ok: queued as", 0) == 0);
        return out;
    }

    void testFoldAllAccepted()
    {
        FakeLmtp srv(sock_);
        std::string out = run_fold({"250 2.0.0 ok\r\n", "250 2.0.0 ok\r\n", "250 2.0.0 ok\r\n"}, srv);
        CPPUNIT_ASSERT_MESSAGE(out, out.rfind("250 2.0.0 Ok: queued as ", 0) == 0);
        srv.stop();
        CPPUNIT_ASSERT_EQUAL(1, srv.connections); // one LMTP connection per SMTP session
    }

    void testFoldSingleFailure()
    {
        FakeLmtp srv(sock_);
        CPPUNIT_ASSERT_EQUAL(std::string("552 5.2.2 over quota\r\n"), run_fold({"552 5.2.2 over quota\r\n"}, srv));
    }

    void testFoldAllPermanent()
    {
        FakeLmtp srv(sock_);
        CPPUNIT_ASSERT_EQUAL(std::string("552 5.2.2 first\r\n"),
                             run_fold({"552 5.2.2 first\r\n", "550 5.1.1 second\r\n"}, srv));
    }

    void testFoldMixed()
    {
        {
            FakeLmtp srv(sock_);
            std::string out = run_fold({"250 2.0.0 ok\r\n", "550 5.1.1 gone\r\n", "452 4.2.2 full\r\n"}, srv);
            CPPUNIT_ASSERT_EQUAL(
                std::string("451 4.3.0 Delivery failed for <r1@example.org>, <r2@example.org>; try again later\r\n"),
                out);
        }
        fs::remove(sock_);
        {
            FakeLmtp srv(sock_); // temporary and permanent, none delivered: still 451
            std::string out = run_fold({"451 4.2.0 later\r\n", "550 5.1.1 gone\r\n"}, srv);
            CPPUNIT_ASSERT_MESSAGE(out, out.rfind("451 4.3.0 Delivery failed for <r0@example.org>, <r1@", 0) == 0);
        }
    }

    void testServerDown()
    {
        H m;
        use_lmtp(m, {"unix:" + sock_}); // nobody listens there
        m.ehlo();
        m.send("MAIL FROM:<a@example.com>\r\n");
        CPPUNIT_ASSERT_EQUAL(std::string("451 4.4.1 LMTP server unavailable\r\n"),
                             m.send("RCPT TO:<b@example.org>\r\n"));
        CPPUNIT_ASSERT_EQUAL(std::string("451 4.4.1 LMTP server unavailable\r\n"),
                             m.send("RCPT TO:<c@example.org>\r\n"));
        // TCP too: a port nobody listens on
        H t;
        use_lmtp(t, {"127.0.0.1:1", "timeout=2"});
        t.ehlo();
        t.send("MAIL FROM:<a@example.com>\r\n");
        CPPUNIT_ASSERT_EQUAL(std::string("451 4.4.1 LMTP server unavailable\r\n"),
                             t.send("RCPT TO:<b@example.org>\r\n"));
        // the server comes up: the next RCPT connects
        FakeLmtp srv(sock_);
        srv.start();
        CPPUNIT_ASSERT_EQUAL(std::string("250 2.0.0 ok\r\n"), m.send("RCPT TO:<d@example.org>\r\n"));
    }

    // Issue 8 defect 18: an LMTP server that cannot be reached is the
    // administrator's problem: each refusal says so in httpd's error log.
    void testServerDownIsAnError()
    {
        H h;
        use_lmtp(h, {"unix:" + sock_});
        h.ehlo();
        h.send("MAIL FROM:<a@example.com>\r\n");
        CPPUNIT_ASSERT_EQUAL(std::string("451 4.4.1 LMTP server unavailable\r\n"),
                             h.send("RCPT TO:<b@example.org>\r\n"));
        CPPUNIT_ASSERT_EQUAL(std::size_t(1), h.log.errors.size());
        CPPUNIT_ASSERT_MESSAGE(h.log.errors[0], h.log.errors[0].find(sock_) != std::string::npos);
        CPPUNIT_ASSERT_MESSAGE(h.log.errors[0], h.log.errors[0].find(std::strerror(ENOENT)) != std::string::npos);
    }

    // check(): a unix socket's directory must be reachable; the socket
    // itself may appear later (the LMTP server not started yet).
    void testCheck()
    {
        std::string error, why;
        auto f = configure({"unix:" + sock_}, error);
        CPPUNIT_ASSERT_MESSAGE(why, f->check(why));
        f = configure({"unix:" + (dir_ / "nodir/lmtp.sock").string()}, error);
        CPPUNIT_ASSERT(!f->check(why));
        CPPUNIT_ASSERT_MESSAGE(why, why.find((dir_ / "nodir").string()) != std::string::npos);
        CPPUNIT_ASSERT_MESSAGE(why, why.find(std::strerror(ENOENT)) != std::string::npos);
        std::ofstream(dir_ / "file") << "x";
        f = configure({"unix:" + (dir_ / "file/lmtp.sock").string()}, error);
        CPPUNIT_ASSERT(!f->check(why));
        // TCP: nothing to check before connecting
        f = configure({"127.0.0.1:1"}, error);
        CPPUNIT_ASSERT_MESSAGE(why, f->check(why));
    }

    void testBadGreeting()
    {
        FakeLmtp srv(sock_);
        srv.greeting = "554 go away\r\n";
        srv.start();
        H m;
        use_lmtp(m, {"unix:" + sock_});
        m.ehlo();
        m.send("MAIL FROM:<a@example.com>\r\n");
        CPPUNIT_ASSERT_EQUAL(std::string("451 4.4.1 LMTP server unavailable\r\n"),
                             m.send("RCPT TO:<b@example.org>\r\n"));
        {
            std::lock_guard<std::mutex> l(srv.mu);
            srv.greeting = "220 ok\r\n";
            srv.lhlo_reply = "500 what\r\n";
        }
        CPPUNIT_ASSERT_EQUAL(std::string("451 4.4.1 LMTP server unavailable\r\n"),
                             m.send("RCPT TO:<b@example.org>\r\n"));
    }

    void testConnectionLostMidTransaction()
    {
        FakeLmtp srv(sock_);
        srv.replies["RCPT TO:<crash@example.org>"] = "<close>";
        srv.start();
        H m;
        use_lmtp(m, {"unix:" + sock_});
        m.ehlo();
        m.send("MAIL FROM:<a@example.com>\r\n");
        CPPUNIT_ASSERT_EQUAL(std::string("250 2.0.0 ok\r\n"), m.send("RCPT TO:<b@example.org>\r\n"));
        CPPUNIT_ASSERT_EQUAL(std::string("451 4.4.2 LMTP connection lost; try again later\r\n"),
                             m.send("RCPT TO:<crash@example.org>\r\n"));
        // b@ was accepted by a connection that is gone: the transaction
        // cannot be delivered, whatever comes next
        CPPUNIT_ASSERT_EQUAL(std::string("451 4.4.2 LMTP connection lost; try again later\r\n"),
                             m.send("RCPT TO:<c@example.org>\r\n"));
        CPPUNIT_ASSERT_EQUAL(std::string("451 4.4.2 LMTP connection lost; try again later\r\n"), m.send("DATA\r\n"));
        // a new transaction gets a new connection
        {
            std::lock_guard<std::mutex> l(srv.mu);
            srv.data_replies = {"250 2.0.0 ok\r\n"};
        }
        CPPUNIT_ASSERT(m.send("RSET\r\nMAIL FROM:<a@example.com>\r\n").find("250 ") == 0);
        CPPUNIT_ASSERT_EQUAL(std::string("250 2.0.0 ok\r\n"), m.send("RCPT TO:<b@example.org>\r\n"));
        CPPUNIT_ASSERT(m.send("DATA\r\n").rfind("354 ", 0) == 0);
        CPPUNIT_ASSERT(m.send("x\r\n.\r\n").rfind("250 2.0.0 Ok: queued as", 0) == 0);
        m.s().end();
        srv.stop();
        CPPUNIT_ASSERT_EQUAL(2, srv.connections);
    }

    void testConnectionLostAfterDot()
    {
        FakeLmtp srv(sock_);
        srv.data_replies = {"250 2.0.0 ok\r\n", "<close>"};
        srv.start();
        H m;
        use_lmtp(m, {"unix:" + sock_});
        m.ehlo();
        m.send("MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\nRCPT TO:<c@example.org>\r\n");
        CPPUNIT_ASSERT(m.send("DATA\r\n").rfind("354 ", 0) == 0);
        CPPUNIT_ASSERT_EQUAL(std::string("451 4.4.2 LMTP connection lost; try again later\r\n"), m.send("x\r\n.\r\n"));
        CPPUNIT_ASSERT_EQUAL(0u, m.s().messages_accepted());
    }

    void testRsetAndReuse()
    {
        FakeLmtp srv(sock_);
        srv.start();
        {
            H m;
            use_lmtp(m, {"unix:" + sock_});
            m.ehlo();
            m.send("MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\n");
            CPPUNIT_ASSERT(m.send("RSET\r\n").rfind("250 ", 0) == 0);
            m.send("MAIL FROM:<a2@example.com>\r\nRCPT TO:<b2@example.org>\r\n");
            CPPUNIT_ASSERT(m.send("QUIT\r\n").rfind("221 ", 0) == 0);
        }
        srv.stop();
        std::vector<std::string> expect{"LHLO mx.example.org",
                                        "MAIL FROM:<a@example.com>",
                                        "RCPT TO:<b@example.org>",
                                        "RSET",
                                        "MAIL FROM:<a2@example.com>",
                                        "RCPT TO:<b2@example.org>",
                                        "RSET",
                                        "QUIT"};
        CPPUNIT_ASSERT_EQUAL(expect.size(), srv.commands.size());
        CPPUNIT_ASSERT(srv.commands == expect);
        CPPUNIT_ASSERT_EQUAL(1, srv.connections);
    }

    void testAbortMidDataDropsConnection()
    {
        FakeLmtp srv(sock_);
        srv.start();
        {
            H m;
            use_lmtp(m, {"unix:" + sock_});
            m.ehlo();
            m.send("MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n");
            m.send("Subject: cut\r\n\r\nhalf a bo");
            m.s().end(); // client gone mid-DATA: the LMTP server must not get a final dot
        }
        srv.stop();
        CPPUNIT_ASSERT(srv.data.empty());
        CPPUNIT_ASSERT_EQUAL(std::string("DATA"), srv.commands.back()); // no QUIT inside DATA
    }

    void testSmtputf8()
    {
        FakeLmtp srv(sock_);
        srv.lhlo_reply = "250-lmtp.test\r\n250 8BITMIME\r\n";
        srv.start();
        H m;
        use_lmtp(m, {"unix:" + sock_});
        m.ehlo();
        CPPUNIT_ASSERT(m.send("MAIL FROM:<a@example.com> SMTPUTF8\r\n").rfind("250 ", 0) == 0);
        CPPUNIT_ASSERT_EQUAL(std::string("553 5.6.7 LMTP server does not support SMTPUTF8\r\n"),
                             m.send("RCPT TO:<b@example.org>\r\n"));
        m.send("RSET\r\nMAIL FROM:<a@example.com>\r\n");
        CPPUNIT_ASSERT_EQUAL(std::string("250 2.0.0 ok\r\n"), m.send("RCPT TO:<b@example.org>\r\n"));
        m.s().end();
        srv.stop();
        for (const auto &c : srv.commands)
            CPPUNIT_ASSERT_MESSAGE(c, c.find("SMTPUTF8") == std::string::npos);
    }

    void testDataRefused()
    {
        FakeLmtp srv(sock_);
        srv.replies["DATA"] = "554 5.6.0 no data today\r\n";
        srv.start();
        H m;
        use_lmtp(m, {"unix:" + sock_});
        m.ehlo();
        m.send("MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\n");
        CPPUNIT_ASSERT_EQUAL(std::string("554 5.6.0 no data today\r\n"), m.send("DATA\r\n"));
    }

    void testIdleConnectionClosedByServer()
    {
        FakeLmtp srv(sock_);
        // the server closes the connection after the first message (as one
        // with an idle timeout would between transactions), unnoticed
        srv.data_replies = {"250 2.0.0 ok\r\n", "<close>"};
        srv.start();
        {
            H m;
            use_lmtp(m, {"unix:" + sock_});
            m.ehlo();
            m.send("MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n");
            CPPUNIT_ASSERT(m.send("x\r\n.\r\n").rfind("250 2.0.0 Ok: queued as", 0) == 0);
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
            m.send("MAIL FROM:<a@example.com>\r\n");
            CPPUNIT_ASSERT_EQUAL(std::string("250 2.0.0 ok\r\n"), m.send("RCPT TO:<c@example.org>\r\n"));
            m.s().end();
        }
        srv.stop();
        CPPUNIT_ASSERT_EQUAL(2, srv.connections);
    }

  private:
    fs::path dir_;
    std::string sock_;

    // SMTP mode: EHLO, MAIL when the client sends MAIL, one reply after the
    // dot (ours only after the smarthost's 250), our Received but no
    // Return-Path, both queue ids in the log.
    void testSmtpRelayOne()
    {
        FakeLmtp srv(sock_);
        srv.replies["EHLO"] = kEhlo;
        srv.replies["MAIL"] = "250 2.1.0 sender ok\r\n";
        srv.data_replies = {"250 2.0.0 Ok: queued as 4XyZ123\r\n"};
        srv.start();
        std::string trace, qid;
        std::vector<std::string> at_mail;
        H m;
        {
            use_smtp(m, {"unix:" + sock_});
            m.ehlo();
            CPPUNIT_ASSERT(m.send("MAIL FROM:<alice@example.com>\r\n").rfind("250 ", 0) == 0);
            at_mail = locked_commands(srv);
            CPPUNIT_ASSERT(m.send("RCPT TO:<bob@example.net>\r\n").rfind("250 ", 0) == 0);
            CPPUNIT_ASSERT(m.send("RCPT TO:<carol@example.net>\r\n").rfind("250 ", 0) == 0);
            CPPUNIT_ASSERT(m.send("DATA\r\n").rfind("354 ", 0) == 0);
            trace = std::string(m.s().trace_headers());
            qid = std::string(m.s().queue_id());
            std::string out = m.send("Subject: x\r\n\r\n..dot\r\n.\r\n");
            CPPUNIT_ASSERT_MESSAGE(out, out.rfind("250 2.0.0 Ok: queued as " + qid, 0) == 0);
            CPPUNIT_ASSERT(m.send("QUIT\r\n").rfind("221 ", 0) == 0);
        }
        srv.stop();
        // MAIL went out at the client's MAIL, not with the first RCPT
        CPPUNIT_ASSERT_EQUAL(std::size_t(2), at_mail.size());
        CPPUNIT_ASSERT_EQUAL(std::string("MAIL FROM:<alice@example.com>"), at_mail[1]);
        std::vector<std::string> expect{"EHLO mx.example.org", "MAIL FROM:<alice@example.com>",
                                        "RCPT TO:<bob@example.net>", "RCPT TO:<carol@example.net>", "DATA"};
        CPPUNIT_ASSERT(srv.commands == expect); // (QUIT comes with the session's end)
        std::string content;
        CPPUNIT_ASSERT(unstuff(srv.data.at(0), content));
        CPPUNIT_ASSERT(trace.rfind("Return-Path: <alice@example.com>\r\nReceived: ", 0) == 0);
        CPPUNIT_ASSERT_EQUAL(trace.substr(trace.find("Received: ")) + "Subject: x\r\n\r\n.dot\r\n", content);
        CPPUNIT_ASSERT(m.log.has("relayed " + qid + " for 2 recipient(s)"));
        CPPUNIT_ASSERT(m.log.has("queued as 4XyZ123"));
    }

    std::vector<std::string> locked_commands(FakeLmtp &srv)
    {
        std::lock_guard<std::mutex> l(srv.mu);
        return srv.commands;
    }

    // Its 550 is our 550 (MAIL, RCPT, after the dot), its 4xx our 4xx.
    void testSmtpRepliesAreOurs()
    {
        FakeLmtp srv(sock_);
        srv.replies["EHLO"] = kEhlo;
        srv.replies["MAIL FROM:<spammer@example.com>"] = "550 5.7.1 Sender blocked\r\n";
        srv.replies["RCPT TO:<nobody@example.net>"] = "550 5.1.1 <nobody@example.net>: User unknown\r\n";
        srv.replies["RCPT TO:<later@example.net>"] = "450 4.2.0 Mailbox busy\r\n";
        srv.data_replies = {"554 5.7.1 Message rejected as spam\r\n"};
        srv.start();
        H m;
        use_smtp(m, {"unix:" + sock_});
        m.ehlo();
        CPPUNIT_ASSERT_EQUAL(std::string("550 5.7.1 Sender blocked\r\n"),
                             m.send("MAIL FROM:<spammer@example.com>\r\n"));
        CPPUNIT_ASSERT(m.send("MAIL FROM:<alice@example.com>\r\n").rfind("250 ", 0) == 0);
        CPPUNIT_ASSERT_EQUAL(std::string("550 5.1.1 <nobody@example.net>: User unknown\r\n"),
                             m.send("RCPT TO:<nobody@example.net>\r\n"));
        CPPUNIT_ASSERT_EQUAL(std::string("450 4.2.0 Mailbox busy\r\n"), m.send("RCPT TO:<later@example.net>\r\n"));
        CPPUNIT_ASSERT(m.send("RCPT TO:<bob@example.net>\r\n").rfind("250 ", 0) == 0);
        CPPUNIT_ASSERT(m.send("DATA\r\n").rfind("354 ", 0) == 0);
        CPPUNIT_ASSERT_EQUAL(std::string("554 5.7.1 Message rejected as spam\r\n"),
                             m.send("Subject: x\r\n\r\nhi\r\n.\r\n"));
        // and a temporary refusal of the message is a temporary refusal
        srv.data_replies = {"452 4.3.1 Insufficient system storage\r\n"};
        CPPUNIT_ASSERT(m.send("MAIL FROM:<alice@example.com>\r\n").rfind("250 ", 0) == 0);
        CPPUNIT_ASSERT(m.send("RCPT TO:<bob@example.net>\r\n").rfind("250 ", 0) == 0);
        CPPUNIT_ASSERT(m.send("DATA\r\n").rfind("354 ", 0) == 0);
        CPPUNIT_ASSERT_EQUAL(std::string("452 4.3.1 Insufficient system storage\r\n"),
                             m.send("Subject: x\r\n\r\nhi\r\n.\r\n"));
    }

    // SIZE and BODY=8BITMIME go on only when the smarthost offers them;
    // SMTPUTF8 not offered refuses the sender (the addresses could not be
    // passed on).
    void testSmtpParametersOnlyWhenOffered()
    {
        {
            FakeLmtp srv(sock_);
            srv.replies["EHLO"] = kEhlo;
            srv.start();
            H m;
            use_smtp(m, {"unix:" + sock_});
            m.ehlo();
            CPPUNIT_ASSERT(m.send("MAIL FROM:<a@example.com> SIZE=1234 BODY=8BITMIME\r\n").rfind("250 ", 0) == 0);
            CPPUNIT_ASSERT_EQUAL(std::string("MAIL FROM:<a@example.com> BODY=8BITMIME SIZE=1234"),
                                 locked_commands(srv).at(1));
        }
        fs::remove(sock_);
        FakeLmtp srv(sock_);
        srv.replies["EHLO"] = "250-smarthost.test\r\n250 PIPELINING\r\n";
        srv.start();
        H m;
        use_smtp(m, {"unix:" + sock_});
        m.ehlo();
        CPPUNIT_ASSERT(m.send("MAIL FROM:<a@example.com> SIZE=1234 BODY=8BITMIME\r\n").rfind("250 ", 0) == 0);
        CPPUNIT_ASSERT_EQUAL(std::string("MAIL FROM:<a@example.com>"), locked_commands(srv).at(1));
        CPPUNIT_ASSERT(m.send("RSET\r\n").rfind("250 ", 0) == 0);
        CPPUNIT_ASSERT_EQUAL(std::string("553 5.6.7 Smarthost does not support SMTPUTF8\r\n"),
                             m.send("MAIL FROM:<a@example.com> SMTPUTF8\r\n"));
    }

    // What the module may offer for the handler (HandlerFactory::carries()):
    // DSN for smtp; REQUIRETLS only with verified TLS to the smarthost; an
    // LMTP server, a final destination, neither.
    void testSmtpCarries()
    {
        std::string error;
        auto f = configure_smtp({"unix:" + sock_}, error);
        CPPUNIT_ASSERT_MESSAGE(error, f);
        CPPUNIT_ASSERT_EQUAL(unsigned(esmtp::carries_dsn), f->carries());
        f = configure_smtp({"smtp.example.net:587"}, error); // tls=starttls, the system's trust store
        CPPUNIT_ASSERT_MESSAGE(error, f);
        CPPUNIT_ASSERT_EQUAL(unsigned(esmtp::carries_dsn | esmtp::carries_requiretls), f->carries());
        f = configure_smtp({"smtp.example.net:465", "tls=implicit"}, error);
        CPPUNIT_ASSERT_EQUAL(unsigned(esmtp::carries_dsn | esmtp::carries_requiretls), f->carries());
        f = configure_smtp({"smtp.example.net:25", "tls=none"}, error);
        CPPUNIT_ASSERT_EQUAL(unsigned(esmtp::carries_dsn), f->carries());
        f = configure({"unix:" + sock_}, error);
        CPPUNIT_ASSERT_EQUAL(0u, f->carries());
        f = configure({"127.0.0.1:24"}, error);
        CPPUNIT_ASSERT_EQUAL(0u, f->carries());
    }

    // A smarthost offering DSN gets RET, ENVID, NOTIFY and ORCPT as the
    // client sent them (NOTIFY upper-cased).
    void testSmtpDsnPassedOn()
    {
        FakeLmtp srv(sock_);
        srv.replies["EHLO"] = "250-smarthost.test\r\n250-PIPELINING\r\n250-DSN\r\n250 SIZE 1000000\r\n";
        srv.start();
        H m;
        use_smtp(m, {"unix:" + sock_});
        m.start();
        std::string ehlo = m.send("EHLO client.example\r\n");
        CPPUNIT_ASSERT_MESSAGE(ehlo, ehlo.find("250 DSN\r\n") != std::string::npos);
        CPPUNIT_ASSERT(m.send("MAIL FROM:<a@example.com> RET=hdrs ENVID=Q+2B1 SIZE=99\r\n").rfind("250 ", 0) == 0);
        CPPUNIT_ASSERT(
            m.send("RCPT TO:<b@example.net> NOTIFY=success,delay ORCPT=rfc822;b@example.net\r\n").rfind("250 ", 0) ==
            0);
        CPPUNIT_ASSERT(m.send("RCPT TO:<c@example.net>\r\n").rfind("250 ", 0) == 0);
        CPPUNIT_ASSERT(m.send("RCPT TO:<d@example.net> NOTIFY=NEVER\r\n").rfind("250 ", 0) == 0);
        auto cmds = locked_commands(srv);
        CPPUNIT_ASSERT_EQUAL(std::size_t(5), cmds.size());
        CPPUNIT_ASSERT_EQUAL(std::string("MAIL FROM:<a@example.com> SIZE=99 RET=HDRS ENVID=Q+2B1"), cmds[1]);
        CPPUNIT_ASSERT_EQUAL(std::string("RCPT TO:<b@example.net> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;b@example.net"),
                             cmds[2]);
        CPPUNIT_ASSERT_EQUAL(std::string("RCPT TO:<c@example.net>"), cmds[3]);
        CPPUNIT_ASSERT_EQUAL(std::string("RCPT TO:<d@example.net> NOTIFY=NEVER"), cmds[4]);
        CPPUNIT_ASSERT(!m.log.has("does not offer DSN"));
    }

    // RFC 3461 4.1: a smarthost without DSN gets the transaction without
    // the parameters (the log says so); nothing is refused.
    void testSmtpDsnDropped()
    {
        FakeLmtp srv(sock_);
        srv.replies["EHLO"] = kEhlo;
        srv.data_replies = {"250 2.0.0 Ok: queued as 77\r\n"};
        srv.start();
        H m;
        m.cfg.log_level = 2;
        use_smtp(m, {"unix:" + sock_});
        m.ehlo();
        CPPUNIT_ASSERT(m.send("MAIL FROM:<a@example.com> RET=FULL ENVID=x\r\n").rfind("250 ", 0) == 0);
        CPPUNIT_ASSERT(
            m.send("RCPT TO:<b@example.net> NOTIFY=FAILURE ORCPT=rfc822;b@example.net\r\n").rfind("250 ", 0) == 0);
        CPPUNIT_ASSERT(m.send("DATA\r\n").rfind("354 ", 0) == 0);
        CPPUNIT_ASSERT(m.send("Subject: x\r\n\r\nhi\r\n.\r\n").rfind("250 ", 0) == 0);
        auto cmds = locked_commands(srv);
        CPPUNIT_ASSERT_EQUAL(std::string("MAIL FROM:<a@example.com>"), cmds.at(1));
        CPPUNIT_ASSERT_EQUAL(std::string("RCPT TO:<b@example.net>"), cmds.at(2));
        CPPUNIT_ASSERT(m.log.has("does not offer DSN: RET/ENVID not passed on"));
        CPPUNIT_ASSERT(m.log.has("does not offer DSN: NOTIFY/ORCPT not passed on"));
    }

    // A milter added recipients after RCPT: MAIL and RCPT go again, with
    // the DSN parameters of each recipient that are valid (a milter's
    // own are checked like a client's).
    void testSmtpDsnAfterEnvelopeChanged()
    {
        FakeLmtp srv(sock_);
        srv.replies["EHLO"] = "250-smarthost.test\r\n250 DSN\r\n";
        srv.start();
        std::string error;
        auto factory = configure_smtp({"unix:" + sock_}, error);
        CPPUNIT_ASSERT_MESSAGE(error, factory);
        H m;
        m.use(factory);
        std::vector<esmtp::Recipient> extra(2);
        extra[0].path.mailbox = "added@example.net";
        extra[0].params = {{"NOTIFY", "delay"}, {"ORCPT", "rfc822;added@example.net"}};
        extra[1].path.mailbox = "odd@example.net";
        extra[1].params = {{"NOTIFY", "NEVER,DELAY"}, {"ORCPT", "no-type"}, {"XTRA", "1"}};
        m.make_handler = [factory, extra] { return std::make_unique<AddRecipients>(factory->create(), extra); };
        m.ehlo();
        CPPUNIT_ASSERT(m.send("MAIL FROM:<a@example.com> RET=FULL\r\n").rfind("250 ", 0) == 0);
        CPPUNIT_ASSERT(m.send("RCPT TO:<b@example.net> NOTIFY=FAILURE\r\n").rfind("250 ", 0) == 0);
        CPPUNIT_ASSERT(m.send("DATA\r\n").rfind("354 ", 0) == 0);
        auto cmds = locked_commands(srv);
        std::vector<std::string> expect{"EHLO mx.example.org",
                                        "MAIL FROM:<a@example.com> RET=FULL",
                                        "RCPT TO:<b@example.net> NOTIFY=FAILURE",
                                        "RSET",
                                        "MAIL FROM:<a@example.com> RET=FULL",
                                        "RCPT TO:<b@example.net> NOTIFY=FAILURE",
                                        "RCPT TO:<added@example.net> NOTIFY=DELAY ORCPT=rfc822;added@example.net",
                                        "RCPT TO:<odd@example.net>",
                                        "DATA"};
        CPPUNIT_ASSERT_EQUAL(expect.size(), cmds.size());
        for (std::size_t i = 0; i < expect.size(); ++i)
            CPPUNIT_ASSERT_EQUAL(expect[i], cmds[i]);
    }

    // REQUIRETLS never goes out over a connection without TLS, whatever
    // the smarthost offers: 550 5.7.30 (RFC 8689 5), and the connection
    // stays usable. (The module offers REQUIRETLS only for tls=starttls or
    // implicit: here the session is told to, to test the handler's own
    // check.)
    void testSmtpRequireTlsNeedsTls()
    {
        FakeLmtp srv(sock_);
        srv.replies["EHLO"] = "250-smarthost.test\r\n250-REQUIRETLS\r\n250 DSN\r\n";
        srv.start();
        H m;
        use_smtp(m, {"unix:" + sock_});
        m.cfg.handler_carries |= esmtp::carries_requiretls;
        m.conn.tls = true;
        m.conn.tls_info.active = true;
        m.ehlo();
        CPPUNIT_ASSERT_EQUAL(std::string("550 5.7.30 REQUIRETLS support required\r\n"),
                             m.send("MAIL FROM:<a@example.com> REQUIRETLS\r\n"));
        CPPUNIT_ASSERT(m.send("MAIL FROM:<a@example.com>\r\n").rfind("250 ", 0) == 0);
        auto cmds = locked_commands(srv);
        CPPUNIT_ASSERT_EQUAL(std::size_t(2), cmds.size());
        CPPUNIT_ASSERT_EQUAL(std::string("MAIL FROM:<a@example.com>"), cmds[1]);
    }

    // Down: 451 at MAIL, nothing acknowledged, and the error log says why.
    void testSmtpSmarthostDown()
    {
        H m;
        use_smtp(m, {"unix:" + sock_});
        m.ehlo();
        CPPUNIT_ASSERT_EQUAL(std::string("451 4.4.1 Smarthost unavailable; try again later\r\n"),
                             m.send("MAIL FROM:<a@example.com>\r\n"));
        CPPUNIT_ASSERT(m.send("RCPT TO:<b@example.net>\r\n").rfind("503 ", 0) == 0);
        CPPUNIT_ASSERT_EQUAL(std::size_t(1), m.log.errors.size());
        CPPUNIT_ASSERT(m.log.errors[0].rfind("smtp: cannot connect to unix:" + sock_, 0) == 0);
    }

    // The smarthost takes the message but closes before its reply: 451,
    // never our 250.
    void testSmtpNoReplyAfterDot()
    {
        FakeLmtp srv(sock_);
        srv.replies["EHLO"] = kEhlo;
        srv.data_replies = {"<close>"};
        srv.start();
        H m;
        use_smtp(m, {"unix:" + sock_});
        m.ehlo();
        m.send("MAIL FROM:<a@example.com>\r\n");
        m.send("RCPT TO:<b@example.net>\r\n");
        CPPUNIT_ASSERT(m.send("DATA\r\n").rfind("354 ", 0) == 0);
        CPPUNIT_ASSERT_EQUAL(std::string("451 4.4.2 Smarthost connection lost; try again later\r\n"),
                             m.send("Subject: x\r\n\r\nhi\r\n.\r\n"));
    }

    // tls=starttls is required: a smarthost that does not offer STARTTLS
    // gets no MAIL, the client a 451.
    void testSmtpStarttlsRequiredNotOffered()
    {
        FakeLmtp srv(sock_);
        srv.replies["EHLO"] = kEhlo;
        srv.start();
        H m;
        use_smtp(m, {"unix:" + sock_, "tls=starttls", "servername=smarthost.test"});
        m.ehlo();
        CPPUNIT_ASSERT_EQUAL(std::string("451 4.4.1 Smarthost unavailable; try again later\r\n"),
                             m.send("MAIL FROM:<a@example.com>\r\n"));
        srv.stop();
        CPPUNIT_ASSERT(srv.commands == std::vector<std::string>{"EHLO mx.example.org"});
        CPPUNIT_ASSERT_EQUAL(std::size_t(1), m.log.errors.size());
        CPPUNIT_ASSERT_MESSAGE(m.log.errors[0], m.log.errors[0].find("does not offer STARTTLS") != std::string::npos);
    }

    // AUTH PLAIN when offered, LOGIN otherwise; a refused AUTH is a 451
    // and an error for the administrator; the password is never logged.
    void testSmtpAuth()
    {
        std::string cred = (dir_ / "secret").string();
        std::ofstream(cred) << "alice:s3cr:t\n";
        {
            FakeLmtp srv(sock_);
            srv.replies["EHLO"] = "250-smarthost.test\r\n250 AUTH LOGIN PLAIN\r\n";
            srv.replies["AUTH"] = "235 2.7.0 Authentication successful\r\n";
            srv.start();
            H m;
            use_smtp(m, {"unix:" + sock_, "auth=" + cred});
            m.ehlo();
            CPPUNIT_ASSERT(m.send("MAIL FROM:<a@example.com>\r\n").rfind("250 ", 0) == 0);
            srv.stop();
            CPPUNIT_ASSERT_EQUAL(std::string("AUTH PLAIN ") + esmtp::base64_encode(std::string("\0alice\0s3cr:t", 13)),
                                 srv.commands.at(1));
            for (const auto &r : m.log.records)
                CPPUNIT_ASSERT_MESSAGE(r.second, r.second.find("s3cr") == std::string::npos);
        }
        fs::remove(sock_);
        {
            FakeLmtp srv(sock_);
            srv.replies["EHLO"] = "250-smarthost.test\r\n250 AUTH LOGIN\r\n";
            srv.replies["AUTH"] = "334 VXNlcm5hbWU6\r\n";
            srv.replies[esmtp::base64_encode("alice")] = "334 UGFzc3dvcmQ6\r\n";
            srv.replies[esmtp::base64_encode("s3cr:t")] = "235 2.7.0 ok\r\n";
            srv.start();
            H m;
            use_smtp(m, {"unix:" + sock_, "auth=" + cred});
            m.ehlo();
            CPPUNIT_ASSERT(m.send("MAIL FROM:<a@example.com>\r\n").rfind("250 ", 0) == 0);
        }
        fs::remove(sock_);
        FakeLmtp srv(sock_);
        srv.replies["EHLO"] = "250-smarthost.test\r\n250 AUTH PLAIN\r\n";
        srv.replies["AUTH"] = "535 5.7.8 Authentication credentials invalid\r\n";
        srv.start();
        H m;
        use_smtp(m, {"unix:" + sock_, "auth=" + cred});
        m.ehlo();
        CPPUNIT_ASSERT_EQUAL(std::string("451 4.4.1 Smarthost unavailable; try again later\r\n"),
                             m.send("MAIL FROM:<a@example.com>\r\n"));
        CPPUNIT_ASSERT_EQUAL(std::size_t(1), m.log.errors.size());
        CPPUNIT_ASSERT_MESSAGE(m.log.errors[0], m.log.errors[0].find("AUTH as alice failed: 535") != std::string::npos);
    }

    void testSmtpConfigure()
    {
        std::string cred = (dir_ / "secret").string();
        std::ofstream(cred) << "alice:pw\n";
        std::string bad = (dir_ / "bad").string();
        std::ofstream(bad) << "no colon\n";
        auto error_of = [](const std::vector<std::string> &args) {
            std::string error;
            CPPUNIT_ASSERT(!configure_smtp(args, error));
            CPPUNIT_ASSERT_MESSAGE(error, error.rfind("ESMTPHandler smtp: ", 0) == 0);
            return error;
        };
        std::string error;
        // TLS by default over TCP: the system store loads
        CPPUNIT_ASSERT_MESSAGE(error, configure_smtp({"smtp.example.net:587", "auth=" + cred}, error));
        CPPUNIT_ASSERT_MESSAGE(error, configure_smtp({"smtp.example.net:465", "tls=implicit"}, error));
        CPPUNIT_ASSERT(error_of({"smtp.example.net:587", "tls=maybe"}).find("tls must be") != std::string::npos);
        CPPUNIT_ASSERT(error_of({"smtp.example.net:587", "tls=none", "auth=" + cred}).find("in the clear") !=
                       std::string::npos);
        CPPUNIT_ASSERT(error_of({"smtp.example.net:587", "auth=" + bad}).find("USER:PASSWORD") != std::string::npos);
        CPPUNIT_ASSERT(error_of({"smtp.example.net:587", "auth=/nonexistent"}).find("cannot read auth=") !=
                       std::string::npos);
        CPPUNIT_ASSERT(error_of({"smtp.example.net:587", "ca=/nonexistent"}).find("cannot load ca=") !=
                       std::string::npos);
        CPPUNIT_ASSERT(error_of({"smtp.example.net:587", "tls=none", "ca=" + cred}).find("need tls=") !=
                       std::string::npos);
        CPPUNIT_ASSERT(error_of({"unix:/run/relay", "tls=starttls"}).find("servername=") != std::string::npos);
        CPPUNIT_ASSERT(error_of({"smtp.example.net:587", "cert=" + cred}).find("cannot use cert=") !=
                       std::string::npos);
        error_of({"smtp.example.net:587", "tls"});
        error_of({"smtp.example.net:587", "bogus=1"});
    }

    // One session's connection serves the next (no second greeting, EHLO or
    // AUTH), up to reuse=N per child, not after idle=SECONDS, when the
    // pool's timer says QUIT on it; reuse=0 quits at once.
    void testSmtpReuseAcrossSessions()
    {
        auto relay_one = [&](const std::shared_ptr<esmtp::HandlerFactory> &f) {
            H m;
            m.use(f);
            m.ehlo();
            CPPUNIT_ASSERT(m.send("MAIL FROM:<a@example.com>\r\n").rfind("250 ", 0) == 0);
            CPPUNIT_ASSERT(m.send("RCPT TO:<b@example.net>\r\n").rfind("250 ", 0) == 0);
            CPPUNIT_ASSERT(m.send("DATA\r\n").rfind("354 ", 0) == 0);
            CPPUNIT_ASSERT(m.send("Subject: x\r\n\r\nhi\r\n.\r\n").rfind("250 ", 0) == 0);
            CPPUNIT_ASSERT(m.send("QUIT\r\n").rfind("221 ", 0) == 0);
        };
        auto ehlos = [&](FakeLmtp &srv) {
            auto c = locked_commands(srv);
            return std::count_if(c.begin(), c.end(), [](const std::string &l) { return l.rfind("EHLO ", 0) == 0; });
        };
        std::string error;
        {
            FakeLmtp srv(sock_);
            srv.replies["EHLO"] = kEhlo;
            srv.data_replies = {"250 2.0.0 Ok: queued as X\r\n"};
            srv.start();
            auto f = configure_smtp({"unix:" + sock_}, error); // reuse=4 by default
            CPPUNIT_ASSERT_MESSAGE(error, f);
            relay_one(f);
            relay_one(f);
            relay_one(f);
            CPPUNIT_ASSERT_EQUAL(1L, static_cast<long>(ehlos(srv)));
            auto c = locked_commands(srv);
            CPPUNIT_ASSERT(std::find(c.begin(), c.end(), "QUIT") == c.end());
        }
        fs::remove(sock_);
        {
            FakeLmtp srv(sock_);
            srv.replies["EHLO"] = kEhlo;
            srv.data_replies = {"250 2.0.0 Ok: queued as X\r\n"};
            srv.start();
            auto f = configure_smtp({"unix:" + sock_, "reuse=0"}, error);
            CPPUNIT_ASSERT_MESSAGE(error, f);
            relay_one(f);
            relay_one(f);
            CPPUNIT_ASSERT_EQUAL(2L, static_cast<long>(ehlos(srv)));
            auto c = locked_commands(srv);
            CPPUNIT_ASSERT_EQUAL(2L, static_cast<long>(std::count(c.begin(), c.end(), "QUIT")));
        }
        fs::remove(sock_);
        {
            FakeLmtp srv(sock_);
            srv.replies["EHLO"] = kEhlo;
            srv.data_replies = {"250 2.0.0 Ok: queued as X\r\n"};
            srv.start();
            auto f = configure_smtp({"unix:" + sock_, "idle=1"}, error);
            CPPUNIT_ASSERT_MESSAGE(error, f);
            relay_one(f);
            // the pool's timer says QUIT once idle=1 is up, without another session
            const auto kept = std::chrono::steady_clock::now();
            auto quits = [&] {
                auto c = locked_commands(srv);
                return std::count(c.begin(), c.end(), "QUIT");
            };
            while (quits() == 0 && std::chrono::steady_clock::now() - kept < std::chrono::seconds(10))
                std::this_thread::sleep_for(std::chrono::milliseconds(20));
            CPPUNIT_ASSERT_EQUAL(1L, static_cast<long>(quits()));
            CPPUNIT_ASSERT(std::chrono::steady_clock::now() - kept >= std::chrono::milliseconds(500));
            relay_one(f); // the fake serves one connection at a time: the old one must be gone
            CPPUNIT_ASSERT_EQUAL(2L, static_cast<long>(ehlos(srv)));
        }
        configure_error_smtp({"unix:" + sock_, "reuse=-1"});
        configure_error_smtp({"unix:" + sock_, "idle=0"});
    }

    void configure_error_smtp(const std::vector<std::string> &args)
    {
        std::string error;
        CPPUNIT_ASSERT(!configure_smtp(args, error));
        CPPUNIT_ASSERT_MESSAGE(error, error.rfind("ESMTPHandler smtp: ", 0) == 0);
    }
};

CPPUNIT_TEST_SUITE_REGISTRATION(LmtpTest);
