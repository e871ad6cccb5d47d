// Milters: the codec (engine/milter_codec), and whole sessions through the
// milter handler (milter/) against a fake filter on a unix socket that
// answers by a script: negotiation, macros, every verdict, every
// modification, and filters that are down, stall or speak garbage.

#include "engine/milter_codec.hpp"
#include "milter/handler.hpp"
#include "session_harness.hpp"

#include <cppunit/extensions/HelperMacros.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <chrono>
#include <filesystem>
#include <functional>
#include <mutex>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <thread>
#include <unistd.h>

namespace fs = std::filesystem;
using namespace esmtp;
using namespace esmtp::milter;
using esmtp::test::Harness;

namespace
{

std::string u32(std::uint32_t v)
{
    std::string s;
    s.push_back(char(v >> 24));
    s.push_back(char(v >> 16));
    s.push_back(char(v >> 8));
    s.push_back(char(v));
    return s;
}

std::string pkt(char c, std::string_view d = {})
{
    std::string o;
    put_packet(o, c, d);
    return o;
}

std::string cstr(std::string_view s)
{
    return std::string(s) + '\0';
}

// A filter that accepts one connection and answers each packet by `script`
// (command, data) -> raw reply bytes ("" sends nothing). It records what it
// received. OPTNEG is answered with `actions` and `steps`.
class FakeMilter
{
  public:
    using Script = std::function<std::string(char, const std::string &)>;
    std::uint32_t actions = 0x1ff;
    std::uint32_t steps = 0;
    Script script;
    std::mutex mu;
    std::vector<std::pair<char, std::string>> seen;
    std::string path;

    FakeMilter()
    {
        static std::atomic<int> n{0};
        path = (fs::temp_directory_path() /
                ("esmtp-milter-test-" + std::to_string(::getpid()) + "-" + std::to_string(n++)))
                   .string();
        ::unlink(path.c_str());
        lfd_ = ::socket(AF_UNIX, SOCK_STREAM, 0);
        sockaddr_un sun{};
        sun.sun_family = AF_UNIX;
        std::strncpy(sun.sun_path, path.c_str(), sizeof sun.sun_path - 1);
        ::bind(lfd_, reinterpret_cast<sockaddr *>(&sun), sizeof sun);
        ::listen(lfd_, 4);
    }
    ~FakeMilter()
    {
        stop_ = true;
        if (th_.joinable())
            th_.join();
        ::close(lfd_);
        ::unlink(path.c_str());
    }
    void run()
    {
        th_ = std::thread([this] { serve(); });
    }
    // Wait (at most 10 s) until the MTA side closed the connection and
    // everything it sent was read.
    void wait_closed()
    {
        for (int i = 0; i < 1000 && !done_; ++i)
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    std::string commands()
    {
        std::lock_guard<std::mutex> g(mu);
        std::string s;
        for (auto &p : seen)
            s += p.first;
        return s;
    }
    std::string data_of(char c, int nth = 0)
    {
        std::lock_guard<std::mutex> g(mu);
        for (auto &p : seen)
            if (p.first == c && nth-- == 0)
                return p.second;
        return "<none>";
    }

  private:
    void serve()
    {
        pollfd pf{lfd_, POLLIN, 0};
        while (!stop_ && ::poll(&pf, 1, 50) == 0) {
        }
        if (stop_)
            return;
        int fd = ::accept(lfd_, nullptr, nullptr);
        struct Done {
            std::atomic<bool> &d;
            ~Done() { d = true; }
        } done{done_};
        std::string buf;
        char tmp[65536];
        while (!stop_) {
            pollfd p{fd, POLLIN, 0};
            if (::poll(&p, 1, 50) <= 0)
                continue;
            ssize_t n = ::read(fd, tmp, sizeof tmp);
            if (n <= 0)
                break;
            buf.append(tmp, std::size_t(n));
            while (buf.size() >= 4) {
                std::uint32_t len = std::uint32_t((unsigned char)buf[0]) << 24 |
                                    std::uint32_t((unsigned char)buf[1]) << 16 |
                                    std::uint32_t((unsigned char)buf[2]) << 8 | (unsigned char)buf[3];
                if (buf.size() < 4 + len)
                    break;
                char c = buf[4];
                std::string d = buf.substr(5, len - 1);
                buf.erase(0, 4 + len);
                {
                    std::lock_guard<std::mutex> g(mu);
                    seen.emplace_back(c, d);
                }
                std::string out;
                if (c == 'O')
                    out = pkt('O', u32(6) + u32(actions) + u32(steps));
                else if (c == 'D' || c == 'A' || c == 'Q')
                    out = "";
                else if (script)
                    out = script(c, d);
                else
                    out = pkt('c');
                if (out == "PROGRESS") {
                    for (int i = 0; i < 4; ++i) {
                        std::this_thread::sleep_for(std::chrono::milliseconds(800));
                        std::string pr = pkt('p');
                        if (::write(fd, pr.data(), pr.size()) < 0)
                            break;
                    }
                    out = pkt('c');
                }
                if (out == "CLOSE") {
                    ::close(fd);
                    return;
                }
                if (!out.empty() && ::write(fd, out.data(), out.size()) < 0)
                    break;
            }
        }
        ::close(fd);
    }

    int lfd_ = -1;
    std::atomic<bool> stop_{false};
    std::atomic<bool> done_{false};
    std::thread th_;
};

std::shared_ptr<Config> config_for(const std::string &path, const std::string &opts = "")
{
    auto c = std::make_shared<Config>();
    Spec s;
    std::string err;
    std::vector<std::string> args{"unix:" + path};
    if (!opts.empty())
        args.push_back(opts);
    CPPUNIT_ASSERT_MESSAGE(err, parse_spec(args, s, err));
    c->milters.push_back(s);
    return c;
}

void use_milter(Harness &h, std::shared_ptr<Config> c)
{
    auto rec = h.rec;
    h.make_handler = [rec, c] { return wrap(std::make_unique<test::RecordingHandler>(rec), c); };
}

const char *kMessage = "Subject: hello\r\nX-Folded: a\r\n\tb\r\n\r\nbody line\r\n";

std::string deliver(Harness &h, const std::string &rcpts = "RCPT TO:<a@example.org>\r\n")
{
    std::string out = h.send("EHLO c.example\r\n");
    out += h.send("MAIL FROM:<s@example.net>\r\n");
    out += h.send(rcpts);
    out += h.send("DATA\r\n");
    out += h.send(test::data_section(kMessage));
    return out;
}

} // namespace

class MilterTest : public CppUnit::TestFixture
{
    CPPUNIT_TEST_SUITE(MilterTest);
    CPPUNIT_TEST(encodes_commands);
    CPPUNIT_TEST(splits_body_chunks);
    CPPUNIT_TEST(reader_bounds_lengths);
    CPPUNIT_TEST(decodes_replies);
    CPPUNIT_TEST(replycode_syntax);
    CPPUNIT_TEST(parses_directive);
    CPPUNIT_TEST(session_negotiates_and_sends_macros);
    CPPUNIT_TEST(auth_login_macro_and_view);
    CPPUNIT_TEST(reject_at_rcpt_rejects_that_recipient_only);
    CPPUNIT_TEST(replycode_multiline_sent_as_given);
    CPPUNIT_TEST(modifications_reach_the_handler);
    CPPUNIT_TEST(header_leading_space_rule);
    CPPUNIT_TEST(discard_delivers_nothing);
    CPPUNIT_TEST(progress_restarts_the_timeout);
    CPPUNIT_TEST(down_milter_gets_default_action);
    CPPUNIT_TEST(stalled_milter_times_out);
    CPPUNIT_TEST(garbage_gets_default_action);
    CPPUNIT_TEST(close_mid_message_gets_default_action);
    CPPUNIT_TEST(unknown_and_abort_reach_the_filter);
    CPPUNIT_TEST(milters_in_order);
    CPPUNIT_TEST(shutdown_closes_the_session);
    CPPUNIT_TEST(bdat_goes_through_milters);
    CPPUNIT_TEST(skipped_and_unanswered_steps);
    CPPUNIT_TEST(unnegotiated_modification_is_an_error);
    CPPUNIT_TEST(spool_dir_unusable);
    CPPUNIT_TEST(change_header_index_and_append);
    CPPUNIT_TEST(tls_macros_at_helo);
    CPPUNIT_TEST(refusal_at_end_aborts_later_filters);
    CPPUNIT_TEST_SUITE_END();

  public:
    void encodes_commands()
    {
        std::string o;
        encode_connect(o, "host", '4', 0x1234, "1.2.3.4");
        CPPUNIT_ASSERT_EQUAL(pkt('C', cstr("host") + "4\x12\x34" + cstr("1.2.3.4")), o);
        o.clear();
        encode_mail(o, "a@b", {"SIZE=10"});
        CPPUNIT_ASSERT_EQUAL(pkt('M', cstr("<a@b>") + cstr("SIZE=10")), o);
        o.clear();
        encode_macros(o, 'C', {{"j", "mx"}, {"{client_addr}", "1.2.3.4"}});
        CPPUNIT_ASSERT_EQUAL(pkt('D', "C" + cstr("j") + cstr("mx") + cstr("{client_addr}") + cstr("1.2.3.4")), o);
        o.clear();
        encode_optneg(o, 6, 0x1ff, 0x1f);
        CPPUNIT_ASSERT_EQUAL(std::string("\0\0\0\x0dO", 5) + u32(6) + u32(0x1ff) + u32(0x1f), o);
        o.clear();
        encode_header(o, "Subject", std::string("a\0b", 3));
        CPPUNIT_ASSERT_EQUAL(pkt('L', cstr("Subject") + cstr("a")), o); // a NUL cuts the value
    }

    void splits_body_chunks()
    {
        std::string o;
        encode_body(o, std::string(65535 * 2 + 10, 'x'));
        PacketReader r;
        r.feed(o);
        Packet p;
        std::vector<std::size_t> sizes;
        while (r.next(p) == PacketReader::Status::packet) {
            CPPUNIT_ASSERT_EQUAL('B', p.command);
            sizes.push_back(p.data.size());
        }
        CPPUNIT_ASSERT_EQUAL(std::size_t(3), sizes.size());
        CPPUNIT_ASSERT_EQUAL(std::size_t(65535), sizes[0]);
        CPPUNIT_ASSERT_EQUAL(std::size_t(10), sizes[2]);
    }

    void reader_bounds_lengths()
    {
        PacketReader r(100);
        Packet p;
        r.feed(std::string("\0\0\0", 3));
        CPPUNIT_ASSERT(r.next(p) == PacketReader::Status::need_more);
        r.feed(std::string("\x02", 1) + "c");
        CPPUNIT_ASSERT(r.next(p) == PacketReader::Status::need_more);
        r.feed("x");
        CPPUNIT_ASSERT(r.next(p) == PacketReader::Status::packet);
        CPPUNIT_ASSERT_EQUAL(std::string("x"), p.data);
        r.feed(u32(101) + "c");
        CPPUNIT_ASSERT(r.next(p) == PacketReader::Status::garbage);
        CPPUNIT_ASSERT(r.next(p) == PacketReader::Status::garbage); // stays garbage
        PacketReader z;
        z.feed(u32(0));
        CPPUNIT_ASSERT(z.next(p) == PacketReader::Status::garbage);
    }

    void decodes_replies()
    {
        Response r;
        std::string e;
        using K = Response::Kind;
        for (auto [c, k] : {std::pair{'a', K::accept},
                            {'c', K::continue_},
                            {'r', K::reject},
                            {'t', K::tempfail},
                            {'d', K::discard},
                            {'p', K::progress},
                            {'s', K::skip},
                            {'4', K::shutdown},
                            {'f', K::connfail}}) {
            CPPUNIT_ASSERT(decode(Packet{c, ""}, r, e));
            CPPUNIT_ASSERT(r.kind == k);
        }
        CPPUNIT_ASSERT(decode(Packet{'m', u32(2) + cstr("Subject") + cstr("new")}, r, e));
        CPPUNIT_ASSERT(r.kind == K::change_header && r.index == 2 && r.name == "Subject" && r.value == "new");
        CPPUNIT_ASSERT(!decode(Packet{'m', "\0\0"}, r, e));                       // short index
        CPPUNIT_ASSERT(!decode(Packet{'h', cstr("Sub ject") + cstr("v")}, r, e)); // bad name
        CPPUNIT_ASSERT(!decode(Packet{'h', cstr("X") + "v"}, r, e));              // no NUL
        CPPUNIT_ASSERT(!decode(Packet{'h', cstr("X") + cstr("a\nb")}, r, e));     // LF not folding
        CPPUNIT_ASSERT(decode(Packet{'h', cstr("X") + cstr("a\n\tb")}, r, e));
        CPPUNIT_ASSERT(decode(Packet{'2', cstr("<x@y>") + cstr("NOTIFY=NEVER")}, r, e));
        CPPUNIT_ASSERT(r.kind == K::add_rcpt_par && r.name == "<x@y>" && r.value == "NOTIFY=NEVER");
        CPPUNIT_ASSERT(!decode(Packet{'+', cstr("")}, r, e));
        CPPUNIT_ASSERT(!decode(Packet{'Z', ""}, r, e));
        CPPUNIT_ASSERT(!decode(Packet{'O', "short"}, r, e));
    }

    void replycode_syntax()
    {
        Reply r;
        std::string e;
        CPPUNIT_ASSERT(parse_replycode("550 5.7.1 go away", r, e));
        CPPUNIT_ASSERT_EQUAL(550, r.code);
        CPPUNIT_ASSERT_EQUAL(std::string("5.7.1"), r.enhanced);
        CPPUNIT_ASSERT_EQUAL(std::string("go away"), r.lines.at(0));
        CPPUNIT_ASSERT(parse_replycode("451-4.7.1 one\r\n451-4.7.1 two\r\n451 4.7.1 three", r, e));
        CPPUNIT_ASSERT_EQUAL(std::size_t(3), r.lines.size());
        CPPUNIT_ASSERT_EQUAL(std::string("three"), r.lines[2]);
        CPPUNIT_ASSERT(parse_replycode("554 no enhanced code", r, e));
        CPPUNIT_ASSERT(r.enhanced.empty());
        CPPUNIT_ASSERT(!parse_replycode("250 2.0.0 ok", r, e));    // only 4xx/5xx
        CPPUNIT_ASSERT(!parse_replycode("550 4.7.1 class", r, e)); // class disagrees
        CPPUNIT_ASSERT(!parse_replycode("550-x\r\n551 y", r, e));  // codes differ
        CPPUNIT_ASSERT(!parse_replycode("550 x\r\n550 y", r, e));  // continuation missing
        CPPUNIT_ASSERT(!parse_replycode("550 bad\x01text", r, e)); // control character
        CPPUNIT_ASSERT(!parse_replycode("5x0 nope", r, e));
    }

    void parses_directive()
    {
        Spec s;
        std::string e;
        CPPUNIT_ASSERT(parse_spec({"inet:127.0.0.1:8891"}, s, e));
        CPPUNIT_ASSERT(s.connect_timeout == 30 && s.command_timeout == 30 && s.content_timeout == 300);
        CPPUNIT_ASSERT(s.default_action == DefaultAction::tempfail);
        CPPUNIT_ASSERT(parse_spec({"inet6:[::1]:8891", "command_timeout=5", "default_action=accept"}, s, e));
        CPPUNIT_ASSERT(s.command_timeout == 5 && s.default_action == DefaultAction::accept);
        CPPUNIT_ASSERT(parse_spec({"unix:/run/m.sock", "content_timeout=9", "connect_timeout=2"}, s, e));
        CPPUNIT_ASSERT(s.target.is_unix && s.content_timeout == 9 && s.connect_timeout == 2);
        CPPUNIT_ASSERT(!parse_spec({"127.0.0.1:8891"}, s, e));
        CPPUNIT_ASSERT(!parse_spec({"inet:[::1]:8891"}, s, e));
        CPPUNIT_ASSERT(!parse_spec({"inet:h:1", "default_action=maybe"}, s, e));
        CPPUNIT_ASSERT(!parse_spec({"inet:h:1", "command_timeout=0"}, s, e));
        CPPUNIT_ASSERT(!parse_spec({"inet:h:1", "colour=blue"}, s, e));
    }

    // issue 10: {auth_authen} with MAIL after AUTH, and
    // the wrapped handler still sees the login and ESMTPA
    void auth_login_macro_and_view()
    {
        FakeMilter m;
        m.run();
        struct Yes final : esmtp::Authenticator {
            std::optional<esmtp::AuthVerdict> check(const esmtp::AuthRequest &) override
            {
                return esmtp::AuthVerdict::granted;
            }
        } yes;
        Harness h;
        h.cfg.auth_mechanisms = esmtp::mech_plain;
        h.cfg.auth_require_tls = false;
        use_milter(h, config_for(m.path));
        CPPUNIT_ASSERT(h.start().starts_with("220 "));
        h.session->set_authenticator(&yes);
        h.send("EHLO c.example\r\n");
        std::string x = h.send("AUTH PLAIN " + esmtp::base64_encode(std::string("\0carol\0pw", 9)) + "\r\n");
        CPPUNIT_ASSERT_MESSAGE(x, x.starts_with("235 "));
        std::string out = deliver(h);
        CPPUNIT_ASSERT_MESSAGE(out, out.find("250 2.0.0 Ok: queued as") != std::string::npos);
        h.send("QUIT\r\n");
        h.session.reset();
        m.wait_closed();
        CPPUNIT_ASSERT(m.data_of('D', 1).find(cstr("{auth_authen}") + cstr("carol")) != std::string::npos);
        CPPUNIT_ASSERT_EQUAL(std::string("carol"), h.rec->auth_user_at_data);
        CPPUNIT_ASSERT_EQUAL(std::string("ESMTPA"), h.rec->protocol_at_data);
    }

    void session_negotiates_and_sends_macros()
    {
        FakeMilter m;
        m.run();
        Harness h;
        use_milter(h, config_for(m.path));
        CPPUNIT_ASSERT(h.start().starts_with("220 "));
        std::string out = deliver(h);
        CPPUNIT_ASSERT_MESSAGE(out, out.find("250 2.0.0 Ok: queued as") != std::string::npos);
        h.send("QUIT\r\n");
        h.session.reset();
        m.wait_closed();
        std::string cmds = m.commands();
        // OPTNEG, macros + CONNECT, HELO, MAIL, RCPT, DATA, headers, EOH, body, EOB, QUIT
        CPPUNIT_ASSERT_EQUAL(std::string("ODCHDMDRDTLLDNBDEQ"), cmds);
        std::string conn_macros = m.data_of('D', 0);
        CPPUNIT_ASSERT(conn_macros.find(cstr("{client_addr}") + cstr("192.0.2.7")) != std::string::npos);
        CPPUNIT_ASSERT(conn_macros.find(cstr("j") + cstr("mx.example.org")) != std::string::npos);
        CPPUNIT_ASSERT(conn_macros.find(cstr("{client_port}") + cstr("40000")) != std::string::npos);
        CPPUNIT_ASSERT(m.data_of('D', 1).find(cstr("{mail_addr}") + cstr("s@example.net")) != std::string::npos);
        CPPUNIT_ASSERT(m.data_of('D', 2).find(cstr("{rcpt_addr}") + cstr("a@example.org")) != std::string::npos);
        CPPUNIT_ASSERT_EQUAL(cstr("<s@example.net>"), m.data_of('M'));
        CPPUNIT_ASSERT_EQUAL(std::string("body line\r\n"), m.data_of('B'));
        // the handler got the message as sent
        CPPUNIT_ASSERT_EQUAL(std::string(kMessage), h.rec->content);
    }

    void reject_at_rcpt_rejects_that_recipient_only()
    {
        FakeMilter m;
        m.script = [](char c, const std::string &d) {
            if (c == 'R' && d.find("bad@") != std::string::npos)
                return pkt('r');
            return pkt('c');
        };
        m.run();
        Harness h;
        use_milter(h, config_for(m.path));
        h.start();
        std::string out = deliver(h, "RCPT TO:<bad@example.org>\r\nRCPT TO:<good@example.org>\r\n");
        CPPUNIT_ASSERT_MESSAGE(out, out.find("550 5.7.1 Command rejected") != std::string::npos);
        CPPUNIT_ASSERT_MESSAGE(out, out.find("250 2.0.0 Ok: queued") != std::string::npos);
        CPPUNIT_ASSERT_EQUAL(std::size_t(1), h.rec->env_at_data.recipients.size());
        CPPUNIT_ASSERT_EQUAL(std::string("good@example.org"), h.rec->env_at_data.recipients[0].path.mailbox);
    }

    void replycode_multiline_sent_as_given()
    {
        FakeMilter m;
        m.script = [](char c, const std::string &) {
            if (c == 'M')
                return pkt('y', cstr("550-5.7.1 first line\r\n550 5.7.1 second line"));
            return pkt('c');
        };
        m.run();
        Harness h;
        use_milter(h, config_for(m.path));
        h.start();
        h.send("EHLO c\r\n");
        std::string out = h.send("MAIL FROM:<s@example.net>\r\n");
        CPPUNIT_ASSERT_EQUAL(std::string("550-5.7.1 first line\r\n550 5.7.1 second line\r\n"), out);
        CPPUNIT_ASSERT_EQUAL(1, h.rec->aborts); // the handler had accepted MAIL
        // a malformed REPLYCODE is garbage: the default action
        FakeMilter m2;
        m2.script = [](char c, const std::string &) { return c == 'M' ? pkt('y', cstr("250 2.0.0 sure")) : pkt('c'); };
        m2.run();
        Harness h2;
        use_milter(h2, config_for(m2.path));
        h2.start();
        h2.send("EHLO c\r\n");
        CPPUNIT_ASSERT_EQUAL(std::string("451 4.7.1 Service unavailable - try again later\r\n"),
                             h2.send("MAIL FROM:<s@example.net>\r\n"));
    }

    void modifications_reach_the_handler()
    {
        FakeMilter m;
        m.script = [](char c, const std::string &) {
            if (c != 'E')
                return pkt('c');
            return pkt('h', cstr("X-Added") + cstr("yes")) + pkt('i', u32(0) + cstr("X-First") + cstr("top")) +
                   pkt('m', u32(1) + cstr("Subject") + cstr("changed")) +
                   pkt('m', u32(1) + cstr("X-Folded") + cstr("")) + pkt('b', "new body\n") +
                   pkt('b', "second line\r\n") + pkt('+', cstr("<added@example.org>")) +
                   pkt('-', cstr("<a@example.org>")) + pkt('e', cstr("<new@example.net>")) +
                   pkt('q', cstr("looks odd")) + pkt('c');
        };
        m.run();
        Harness h;
        use_milter(h, config_for(m.path));
        h.start();
        std::string out = deliver(h);
        CPPUNIT_ASSERT_MESSAGE(out, out.find("250 2.0.0 Ok: queued") != std::string::npos);
        CPPUNIT_ASSERT_EQUAL(std::string("X-Quarantine: looks odd\r\nX-First: top\r\nSubject: changed\r\n"
                                         "X-Added: yes\r\n\r\nnew body\r\nsecond line\r\n"),
                             h.rec->content);
        CPPUNIT_ASSERT(h.log.has("quarantine: looks odd"));
        CPPUNIT_ASSERT_MESSAGE(h.rec->trace_at_eom,
                               h.rec->trace_at_eom.starts_with("Return-Path: <new@example.net>\r\n"));
        CPPUNIT_ASSERT_EQUAL(0, h.rec->aborts);
    }

    void header_leading_space_rule()
    {
        // without HDR_LEADSPC: values go without the space, one comes back
        FakeMilter m;
        m.script = [](char c, const std::string &) {
            return c == 'E' ? pkt('h', cstr("X-A") + cstr("v")) + pkt('c') : pkt('c');
        };
        m.run();
        Harness h;
        use_milter(h, config_for(m.path));
        h.start();
        deliver(h);
        CPPUNIT_ASSERT_EQUAL(cstr("Subject") + cstr("hello"), m.data_of('L', 0));
        CPPUNIT_ASSERT_EQUAL(cstr("X-Folded") + cstr("a\n\tb"), m.data_of('L', 1));
        CPPUNIT_ASSERT(h.rec->content.find("X-A: v\r\n") != std::string::npos);
        // with it: values as they are, and what the filter sends is taken as is
        FakeMilter m2;
        m2.steps = p_hdr_leadspc;
        m2.script = [](char c, const std::string &) {
            return c == 'E' ? pkt('h', cstr("X-A") + cstr("  v\n\tw")) + pkt('c') : pkt('c');
        };
        m2.run();
        Harness h2;
        use_milter(h2, config_for(m2.path));
        h2.start();
        deliver(h2);
        CPPUNIT_ASSERT_EQUAL(cstr("Subject") + cstr(" hello"), m2.data_of('L', 0));
        CPPUNIT_ASSERT(h2.rec->content.find("X-A:  v\r\n\tw\r\n") != std::string::npos);
    }

    void discard_delivers_nothing()
    {
        FakeMilter m;
        m.script = [](char c, const std::string &) { return c == 'E' ? pkt('d') : pkt('c'); };
        m.run();
        Harness h;
        use_milter(h, config_for(m.path));
        h.start();
        std::string out = deliver(h);
        CPPUNIT_ASSERT_MESSAGE(out, out.find("250 2.0.0 Ok: queued as") != std::string::npos);
        CPPUNIT_ASSERT(!h.rec->saw("eom"));
        CPPUNIT_ASSERT_EQUAL(1, h.rec->aborts);
        CPPUNIT_ASSERT(h.log.has("discarded by unix:" + m.path));
    }

    void progress_restarts_the_timeout()
    {
        // 4 x 0.8 s with PROGRESS in between: more than the 2 s content
        // timeout in all, but never 2 s without a word
        FakeMilter m;
        m.script = [](char c, const std::string &) { return c == 'E' ? std::string("PROGRESS") : pkt('c'); };
        m.run();
        Harness h;
        use_milter(h, config_for(m.path, "content_timeout=2"));
        h.start();
        auto t0 = std::chrono::steady_clock::now();
        std::string out = deliver(h);
        CPPUNIT_ASSERT_MESSAGE(out, out.find("250 2.0.0 Ok: queued") != std::string::npos);
        CPPUNIT_ASSERT(h.log.errors.empty());
        CPPUNIT_ASSERT(std::chrono::steady_clock::now() - t0 > std::chrono::seconds(3));
    }

    void down_milter_gets_default_action()
    {
        std::string path = (fs::temp_directory_path() / "esmtp-milter-nobody-listens").string();
        // a greeting is 220, 554 or 421 (RFC 5321 4.3.2): tempfail at CONNECT is a 421
        for (auto [act, greeting] : {std::pair{"tempfail", "421 "}, {"reject", "554 "}, {"accept", "220 "}}) {
            Harness h;
            use_milter(h, config_for(path, std::string("default_action=") + act));
            std::string g = h.start();
            CPPUNIT_ASSERT_MESSAGE(g, g.starts_with(greeting));
            if (std::string(act) == "accept") {
                std::string out = deliver(h);
                CPPUNIT_ASSERT_MESSAGE(out, out.find("250 2.0.0 Ok: queued") != std::string::npos);
            }
            CPPUNIT_ASSERT(!h.log.errors.empty());
            CPPUNIT_ASSERT(h.log.errors.front().find("milter unix:" + path) != std::string::npos);
        }
    }

    void stalled_milter_times_out()
    {
        FakeMilter m;
        m.script = [](char c, const std::string &) { return c == 'R' ? std::string() : pkt('c'); };
        m.run();
        Harness h;
        use_milter(h, config_for(m.path, "command_timeout=1"));
        h.start();
        auto t0 = std::chrono::steady_clock::now();
        h.send("EHLO c\r\n");
        h.send("MAIL FROM:<s@example.net>\r\n");
        std::string out = h.send("RCPT TO:<a@example.org>\r\n");
        auto secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        CPPUNIT_ASSERT_EQUAL(std::string("451 4.7.1 Service unavailable - try again later\r\n"), out);
        CPPUNIT_ASSERT(secs >= 0.9 && secs < 10);
        CPPUNIT_ASSERT(h.log.errors.at(0).find("timed out") != std::string::npos);
        // from then on the default action answers without asking
        CPPUNIT_ASSERT(h.send("RCPT TO:<b@example.org>\r\n").starts_with("451 4.7.1"));
    }

    void garbage_gets_default_action()
    {
        FakeMilter m;
        m.script = [](char c, const std::string &) {
            return c == 'H' ? std::string("\xff\xff\xff\xffjunk") : pkt('c');
        };
        m.run();
        Harness h;
        use_milter(h, config_for(m.path, "default_action=reject"));
        h.start();
        CPPUNIT_ASSERT_EQUAL(std::string("550 5.7.1 Command rejected\r\n"), h.send("HELO c\r\n"));
        CPPUNIT_ASSERT(h.log.errors.at(0).find("garbage") != std::string::npos);
    }

    void close_mid_message_gets_default_action()
    {
        FakeMilter m;
        m.script = [](char c, const std::string &) { return c == 'B' ? std::string("CLOSE") : pkt('c'); };
        m.run();
        Harness h;
        use_milter(h, config_for(m.path));
        h.start();
        std::string out = deliver(h);
        CPPUNIT_ASSERT_MESSAGE(out, out.find("451 4.7.1 Service unavailable") != std::string::npos);
        CPPUNIT_ASSERT(!h.rec->saw("eom"));
        CPPUNIT_ASSERT_EQUAL(1, h.rec->aborts);
    }

    void unknown_and_abort_reach_the_filter()
    {
        FakeMilter m;
        m.script = [](char c, const std::string &) {
            return c == 'U' ? pkt('y', cstr("502 5.5.1 not here")) : pkt('c');
        };
        m.run();
        Harness h;
        use_milter(h, config_for(m.path));
        h.start();
        h.send("EHLO c\r\n");
        CPPUNIT_ASSERT_EQUAL(std::string("502 5.5.1 not here\r\n"), h.send("FROB x\r\n"));
        h.send("MAIL FROM:<s@example.net>\r\n");
        h.send("RSET\r\n");
        h.send("QUIT\r\n");
        h.session.reset();
        m.wait_closed();
        CPPUNIT_ASSERT_EQUAL(std::string("ODCHUDMAQ"), m.commands());
        CPPUNIT_ASSERT_EQUAL(cstr("FROB x"), m.data_of('U'));
        CPPUNIT_ASSERT_EQUAL(1, h.rec->aborts);
    }

    void milters_in_order()
    {
        // both see the message; modifications apply in order; the first
        // refusal decides and the later filter is not asked
        FakeMilter a, b;
        a.script = [](char c, const std::string &d) {
            if (c == 'R' && d.find("no@") != std::string::npos)
                return pkt('r');
            return c == 'E' ? pkt('h', cstr("X-One") + cstr("1")) + pkt('c') : pkt('c');
        };
        b.script = [](char c, const std::string &) {
            return c == 'E' ? pkt('h', cstr("X-Two") + cstr("2")) + pkt('c') : pkt('c');
        };
        a.run();
        b.run();
        auto cfg = config_for(a.path);
        cfg->milters.push_back(config_for(b.path)->milters[0]);
        Harness h;
        use_milter(h, cfg);
        h.start();
        std::string out = deliver(h, "RCPT TO:<no@example.org>\r\nRCPT TO:<a@example.org>\r\n");
        CPPUNIT_ASSERT_MESSAGE(out, out.find("250 2.0.0 Ok: queued") != std::string::npos);
        CPPUNIT_ASSERT(h.rec->content.find("X-One: 1\r\nX-Two: 2\r\n") != std::string::npos);
        std::string bc = b.commands();
        CPPUNIT_ASSERT_EQUAL(std::size_t(1), std::size_t(std::count(bc.begin(), bc.end(), 'R')));
        CPPUNIT_ASSERT_EQUAL(cstr("<a@example.org>"), b.data_of('R'));
    }

    void shutdown_closes_the_session()
    {
        FakeMilter m;
        m.script = [](char c, const std::string &) { return c == 'M' ? pkt('4') : pkt('c'); };
        m.run();
        Harness h;
        use_milter(h, config_for(m.path));
        h.start();
        h.send("EHLO c\r\n");
        std::string out = h.send("MAIL FROM:<s@example.net>\r\n");
        CPPUNIT_ASSERT_MESSAGE(out, out.starts_with("421 4.7.0 "));
        CPPUNIT_ASSERT(h.session->closing());
    }

    void bdat_goes_through_milters()
    {
        FakeMilter m;
        m.script = [](char c, const std::string &) {
            return c == 'E' ? pkt('h', cstr("X-Bdat") + cstr("seen")) + pkt('c') : pkt('c');
        };
        m.run();
        Harness h;
        use_milter(h, config_for(m.path));
        h.start();
        h.send("EHLO c\r\n");
        h.send("MAIL FROM:<s@example.net>\r\n");
        h.send("RCPT TO:<a@example.org>\r\n");
        std::string part1 = "Subject: b\r\n\r\nfirst ";
        std::string part2 = "second\r\n";
        h.send("BDAT " + std::to_string(part1.size()) + "\r\n" + part1);
        std::string out = h.send("BDAT " + std::to_string(part2.size()) + " LAST\r\n" + part2);
        CPPUNIT_ASSERT_MESSAGE(out, out.starts_with("250 2.0.0 Ok: queued"));
        CPPUNIT_ASSERT_EQUAL(std::string("Subject: b\r\nX-Bdat: seen\r\n\r\nfirst second\r\n"), h.rec->content);
        CPPUNIT_ASSERT_EQUAL(std::string("first second\r\n"), m.data_of('B'));
    }

    void skipped_and_unanswered_steps()
    {
        FakeMilter m;
        m.steps = p_nohelo | p_nr_rcpt | p_nohdrs | p_nr_body | p_noeoh;
        std::atomic<int> answered_rcpt{0};
        m.script = [&](char c, const std::string &) {
            if (c == 'R') {
                ++answered_rcpt;
                return std::string(); // no reply: none is expected
            }
            if (c == 'B')
                return std::string();
            return pkt('c');
        };
        m.run();
        Harness h;
        use_milter(h, config_for(m.path));
        h.start();
        std::string out = deliver(h);
        CPPUNIT_ASSERT_MESSAGE(out, out.find("250 2.0.0 Ok: queued") != std::string::npos);
        h.send("QUIT\r\n");
        h.session.reset();
        m.wait_closed();
        CPPUNIT_ASSERT_EQUAL(std::string("ODCDMDRDTBDEQ"), m.commands());
        CPPUNIT_ASSERT_EQUAL(1, answered_rcpt.load());
    }

    void unnegotiated_modification_is_an_error()
    {
        FakeMilter m;
        m.actions = act_addhdrs; // not CHGBODY
        m.script = [](char c, const std::string &) { return c == 'E' ? pkt('b', "x\r\n") + pkt('c') : pkt('c'); };
        m.run();
        Harness h;
        use_milter(h, config_for(m.path));
        h.start();
        std::string out = deliver(h);
        CPPUNIT_ASSERT_MESSAGE(out, out.find("451 4.7.1") != std::string::npos);
        CPPUNIT_ASSERT(h.log.errors.at(0).find("REPLBODY without negotiating it") != std::string::npos);
    }

    void spool_dir_unusable()
    {
        FakeMilter m;
        m.run();
        auto cfg = config_for(m.path);
        cfg->spool_dir = "/nonexistent/esmtp-spool";
        Harness h;
        use_milter(h, cfg);
        h.start();
        std::string out = deliver(h);
        CPPUNIT_ASSERT_MESSAGE(out, out.find("451 4.3.0") != std::string::npos);
        CPPUNIT_ASSERT(!h.rec->saw("eom"));
        CPPUNIT_ASSERT(!h.log.errors.empty());
        CPPUNIT_ASSERT(h.log.errors.at(0).find("/nonexistent/esmtp-spool") != std::string::npos);
    }

    void change_header_index_and_append()
    {
        FakeMilter m;
        m.script = [](char c, const std::string &) {
            if (c != 'E')
                return pkt('c');
            // the 2nd "x-d" (case-insensitive), and one past the last: added
            return pkt('m', u32(2) + cstr("x-d") + cstr("second")) + pkt('m', u32(5) + cstr("X-New") + cstr("n")) +
                   pkt('c');
        };
        m.run();
        Harness h;
        use_milter(h, config_for(m.path));
        h.start();
        h.send("EHLO c\r\n");
        h.send("MAIL FROM:<s@example.net>\r\n");
        h.send("RCPT TO:<a@example.org>\r\n");
        h.send("DATA\r\n");
        std::string out = h.send(test::data_section("X-D: 1\r\nX-D: 2\r\nX-D: 3\r\n\r\nb\r\n"));
        CPPUNIT_ASSERT_MESSAGE(out, out.starts_with("250 "));
        CPPUNIT_ASSERT_EQUAL(std::string("X-D: 1\r\nX-D: second\r\nX-D: 3\r\nX-New: n\r\n\r\nb\r\n"), h.rec->content);
    }

    void tls_macros_at_helo()
    {
        FakeMilter m;
        m.run();
        Harness h;
        h.conn.tls = true;
        h.conn.tls_info.active = true;
        h.conn.tls_info.protocol = "TLSv1.3";
        h.conn.tls_info.cipher = "TLS_AES_256_GCM_SHA384";
        use_milter(h, config_for(m.path));
        h.start();
        h.send("EHLO c\r\n");
        h.send("QUIT\r\n");
        h.session.reset();
        m.wait_closed();
        CPPUNIT_ASSERT_EQUAL(std::string("ODCDHQ"), m.commands());
        CPPUNIT_ASSERT_EQUAL(std::string("H") + cstr("{tls_version}") + cstr("TLSv1.3") + cstr("{cipher}") +
                                 cstr("TLS_AES_256_GCM_SHA384"),
                             m.data_of('D', 1));
    }

    void refusal_at_end_aborts_later_filters()
    {
        FakeMilter a, b;
        a.script = [](char c, const std::string &) { return c == 'E' ? pkt('t') : pkt('c'); };
        a.run();
        b.run();
        auto cfg = config_for(a.path);
        cfg->milters.push_back(config_for(b.path)->milters[0]);
        Harness h;
        use_milter(h, cfg);
        h.start();
        std::string out = deliver(h);
        CPPUNIT_ASSERT_MESSAGE(out, out.find("451 4.7.1 Service unavailable") != std::string::npos);
        h.send("QUIT\r\n");
        h.session.reset();
        a.wait_closed();
        b.wait_closed();
        CPPUNIT_ASSERT_EQUAL(std::string("ODCHDMDRDTLLDNBDEQ"), a.commands());
        CPPUNIT_ASSERT_EQUAL(std::string("ODCHDMDRDTAQ"), b.commands()); // no content, an ABORT
        CPPUNIT_ASSERT_EQUAL(1, h.rec->aborts);
    }
};

CPPUNIT_TEST_SUITE_REGISTRATION(MilterTest);
