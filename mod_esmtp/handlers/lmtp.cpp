#include "engine/auth.hpp"
#include "engine/dsn.hpp"
#include "engine/text.hpp"
#include "handlers/client_stream.hpp"
#include "handlers/lmtp.hpp"
#include "handlers/stream_socket.hpp"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fcntl.h>
#include <fstream>
#include <mutex>
#include <optional>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>
#include <utility>
#include <vector>

namespace esmtp
{

namespace lmtp
{

// ---------------------------------------------------------------- dot-stuffing

void DotStuffer::feed(std::string_view in, std::string &out)
{
    if (in.empty())
        return;
    if (in.size() >= 2) {
        before_last_ = in[in.size() - 2];
        last_ = in.back();
    } else {
        before_last_ = last_;
        last_ = in.back();
    }
    any_ = true;
    while (!in.empty()) {
        if (bol_ && in.front() == '.')
            out += '.';
        std::size_t nl = in.find('\n');
        std::size_t len = nl == std::string_view::npos ? in.size() : nl + 1;
        out.append(in.data(), len);
        bol_ = nl != std::string_view::npos;
        in.remove_prefix(len);
    }
}

void DotStuffer::finish(std::string &out)
{
    // "." must follow a CRLF; content that ended without one (BDAT, or a
    // bare LF) gets one added, else the server would not see the end.
    if (any_ && !(before_last_ == '\r' && last_ == '\n'))
        out += "\r\n";
    out += ".\r\n";
    reset();
}

// ---------------------------------------------------------------- replies

namespace
{

// Replies are short; a longer line means the peer is not an LMTP server.
constexpr std::size_t kMaxReplyLine = 4096;
constexpr std::size_t kMaxReplyLines = 200;

bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

// Length of an RFC 3463 code ("x.y.z" + a space or end) of class `cls` at
// the start of `t`, or 0.
std::size_t enhanced_length(std::string_view t, char cls)
{
    if (t.size() < 5 || t[0] != cls || t[1] != '.')
        return 0;
    std::size_t i = 2;
    for (int part = 0; part < 2; ++part) {
        std::size_t start = i;
        while (i < t.size() && is_digit(t[i]) && i - start < 3)
            ++i;
        if (i == start)
            return 0;
        if (part == 0) {
            if (i >= t.size() || t[i] != '.')
                return 0;
            ++i;
        }
    }
    if (i < t.size() && t[i] != ' ')
        return 0;
    return i;
}

} // namespace

std::optional<ServerReply> ReplyParser::next()
{
    if (bad_)
        return std::nullopt;
    ServerReply r;
    std::size_t pos = 0;
    for (;;) {
        std::size_t nl = buf_.find('\n', pos);
        if (nl == std::string::npos) {
            if (buf_.size() - pos > kMaxReplyLine)
                bad_ = true;
            return std::nullopt; // incomplete: wait for more
        }
        std::string_view line(buf_.data() + pos, nl - pos);
        pos = nl + 1;
        if (!line.empty() && line.back() == '\r')
            line.remove_suffix(1);
        if (line.size() > kMaxReplyLine || line.size() < 3 || !is_digit(line[0]) || !is_digit(line[1]) ||
            !is_digit(line[2]) || (line.size() > 3 && line[3] != ' ' && line[3] != '-') || line[0] < '2' ||
            line[0] > '5') {
            bad_ = true;
            return std::nullopt;
        }
        int code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
        if (r.lines.empty())
            r.code = code;
        else if (code != r.code) {
            bad_ = true;
            return std::nullopt;
        }
        bool more = line.size() > 3 && line[3] == '-';
        std::string_view text = line.size() > 4 ? line.substr(4) : std::string_view();
        if (std::size_t n = enhanced_length(text, line[0])) {
            if (r.lines.empty())
                r.enhanced = text.substr(0, n);
            text.remove_prefix(n);
            if (!text.empty())
                text.remove_prefix(1); // the space after the code
        }
        r.lines.emplace_back(text);
        if (r.lines.size() > kMaxReplyLines) {
            bad_ = true;
            return std::nullopt;
        }
        if (!more) {
            buf_.erase(0, pos);
            return r;
        }
    }
}

} // namespace lmtp

namespace
{

using lmtp::ServerReply;
using clock_type = std::chrono::steady_clock;

constexpr int kDefaultTimeout = 60;
// Message content goes to the server in blocks of about this size.
constexpr std::size_t kSendBlock = 64 * 1024;

enum class TlsMode { none, starttls, implicit };

struct Settings {
    bool smtp = false; // SMTP to a smarthost (EHLO, one reply after the dot); else LMTP
    SocketTarget target;
    int timeout = kDefaultTimeout;
    TlsMode tls = TlsMode::none;
    std::string server_name; // the name its certificate must carry
    std::shared_ptr<ssl_ctx_st> tls_ctx;
    bool tls_verified = false; // the certificate and its name are checked (REQUIRETLS)
    std::string auth_user;     // AUTH to the server when not empty
    std::string auth_password;
    std::size_t reuse = 0; // idle connections kept per child for later sessions
    int idle = 30;         // seconds one may stay idle before it is not used again
    std::string tag() const { return smtp ? "smtp: " : "lmtp: "; }
};

// What the server offered in its EHLO/LHLO reply.
struct Extensions {
    bool eightbitmime = false;
    bool smtputf8 = false;
    bool size = false;
    bool starttls = false;
    bool dsn = false;        // RFC 3461
    bool requiretls = false; // RFC 8689
    bool auth_plain = false;
    bool auth_login = false;
};

// The text of a reply for the txlog: code, enhanced code, first line.
std::string describe(const ServerReply &r)
{
    std::string s = std::to_string(r.code);
    if (!r.enhanced.empty())
        s += " " + r.enhanced;
    if (!r.lines.empty())
        s += " " + r.lines.front();
    return s;
}

// The LMTP server's reply for our client. Control characters in its text
// are replaced: they have no business in a reply line.
Reply to_reply(const ServerReply &r)
{
    std::vector<std::string> lines = r.lines.empty() ? std::vector<std::string>{""} : r.lines;
    for (auto &l : lines)
        for (auto &c : l)
            if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f)
                c = '?';
    return Reply(r.code, std::move(lines), r.enhanced);
}

// Commands (and addresses in them) must not carry line breaks; the address
// parser does not let any through, but a CR or LF here would let the client
// inject LMTP commands, so make sure.
bool safe_line(std::string_view s)
{
    return s.find_first_of("\r\n", 0) == std::string_view::npos && s.find('\0') == std::string_view::npos;
}

// The idle connections of one ESMTPHandler line in this child, kept for
// the next session (reuse=N, idle=SECONDS): a session saves the greeting,
// EHLO, STARTTLS and AUTH round trips. Any thread of the child may take or
// give one. A thread of the pool's own (started by the first give(), so
// only in a child, never before a fork) says QUIT on each connection when
// its idle time is up: an idle connection lasts `idle` seconds, not until
// the child's next session.
class IdlePool;

// The pools whose sweeper runs in this process. At exit() the sweepers are
// stopped first: this object is built by the first sweeper, in a child,
// after OpenSSL set up its own exit handler, so its destructor runs before
// OpenSSL frees its state under a sweeper's SSL_write.
class Sweepers
{
  public:
    static Sweepers &get()
    {
        static Sweepers s;
        return s;
    }
    Sweepers() = default;
    Sweepers(const Sweepers &) = delete;
    Sweepers &operator=(const Sweepers &) = delete;
    ~Sweepers() { stop_all(); }
    void add(IdlePool *p)
    {
        std::lock_guard<std::mutex> l(mu_);
        pools_.push_back(p);
    }
    void remove(IdlePool *p)
    {
        std::lock_guard<std::mutex> l(mu_);
        std::erase(pools_, p);
    }
    void stop_all();

  private:
    std::mutex mu_;
    std::vector<IdlePool *> pools_;
};

class IdlePool
{
  public:
    struct Entry {
        ClientStream conn;
        Extensions ext;
        clock_type::time_point since;
    };
    IdlePool(std::size_t max, int idle_seconds) : max_(max), idle_(idle_seconds) {}
    IdlePool(const IdlePool &) = delete;
    IdlePool &operator=(const IdlePool &) = delete;
    ~IdlePool()
    {
        if (sweeper_.joinable())
            Sweepers::get().remove(this);
        stop();
    }
    // Ends the sweeper, which says QUIT on the connections left.
    void stop()
    {
        {
            std::lock_guard<std::mutex> l(mu_);
            stopping_ = true;
        }
        wake_.notify_all();
        if (sweeper_.joinable() && sweeper_.get_id() != std::this_thread::get_id())
            sweeper_.join();
    }

    // The most recently idle connection that is young enough and quiet (the
    // server has not closed it or said 421), if any.
    std::optional<Entry> take()
    {
        std::vector<Entry> stale; // closed outside the lock
        std::optional<Entry> found;
        {
            std::lock_guard<std::mutex> l(mu_);
            const auto now = clock_type::now();
            while (!entries_.empty() && !found) {
                Entry e = std::move(entries_.back());
                entries_.pop_back();
                if (now - e.since <= idle_ && quiet(e.conn))
                    found = std::move(e);
                else
                    stale.push_back(std::move(e));
            }
        }
        return found;
    }
    // Keeps `conn` (moved from) when there is room.
    bool give(ClientStream &conn, const Extensions &ext)
    {
        if (max_ == 0)
            return false;
        std::vector<Entry> stale;
        std::lock_guard<std::mutex> l(mu_);
        const auto now = clock_type::now();
        move_expired(now, stale);
        if (entries_.size() >= max_ || stopping_)
            return false;
        entries_.push_back(Entry{std::move(conn), ext, now});
        if (!sweeper_.joinable()) {
            start_sweeper();
        } else if (entries_.size() == 1)
            wake_.notify_one(); // it waits for an entry
        return true;
    }

  private:
    // With every signal blocked: httpd's handlers (prefork's SIGTERM, the
    // MPMs' restart signals) must run on httpd's threads, not on this one.
    // Without a thread (none to be had) idle connections still go at the
    // next take() or give(), as before.
    void start_sweeper()
    {
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_BLOCK, &all, &old);
        try {
            sweeper_ = std::thread([this] { sweep(); });
            Sweepers::get().add(this);
        } catch (const std::exception &) {
        }
        pthread_sigmask(SIG_SETMASK, &old, nullptr);
    }
    // The entries past their idle time (the oldest first) into `out`. With
    // mu_ held.
    void move_expired(clock_type::time_point now, std::vector<Entry> &out)
    {
        while (!entries_.empty() && now - entries_.front().since >= idle_) {
            out.push_back(std::move(entries_.front()));
            entries_.erase(entries_.begin());
        }
    }
    // The sweeper: sleeps until the oldest entry's idle time is up, then
    // ends those connections with a QUIT; when the pool stops (the child
    // ends), all of them, so that the server hears QUIT rather than a close.
    void sweep()
    {
        std::unique_lock<std::mutex> l(mu_);
        for (;;) {
            std::vector<Entry> ending;
            const bool last = stopping_;
            if (last) {
                ending.swap(entries_);
            } else if (entries_.empty()) {
                wake_.wait(l);
                continue;
            } else if (const auto due = entries_.front().since + idle_; clock_type::now() < due) {
                wake_.wait_until(l, due);
                continue;
            } else {
                move_expired(clock_type::now(), ending);
            }
            l.unlock();
            // one second for them all: a dead server must not keep the
            // others open
            const auto deadline = clock_type::now() + std::chrono::seconds(1);
            for (Entry &e : ending)
                say_quit(e.conn, deadline);
            if (last)
                return;
            ending.clear();
            l.lock();
        }
    }
    static void say_quit(ClientStream &c, clock_type::time_point deadline)
    {
        if (!quiet(c) || !c.send_all("QUIT\r\n", deadline))
            return;
        char buf[512];
        c.recv_some(buf, sizeof buf, deadline); // the 221, if it comes in time
    }

    // Nothing to read: a server that closed or announced 421 is readable.
    static bool quiet(const ClientStream &c)
    {
        pollfd p{c.fd(), POLLIN, 0};
        return ::poll(&p, 1, 0) == 0;
    }

    const std::size_t max_;
    const std::chrono::seconds idle_;
    std::mutex mu_;
    std::condition_variable wake_; // the sweeper: an entry arrived, or stop
    std::vector<Entry> entries_;   // oldest first
    bool stopping_ = false;
    std::thread sweeper_;
};

void Sweepers::stop_all()
{
    std::vector<IdlePool *> pools;
    {
        std::lock_guard<std::mutex> l(mu_);
        pools.swap(pools_);
    }
    for (IdlePool *p : pools)
        p->stop();
}

class LmtpHandler final : public Handler
{
    // If an exception (bad_alloc...) leaves a method halfway through a
    // command, the connection is out of step with the server: drop it, and
    // the transaction with it when the server had accepted recipients.
    class DropOnException
    {
      public:
        explicit DropOnException(LmtpHandler &h) : h_(h) {}
        DropOnException(const DropOnException &) = delete;
        DropOnException &operator=(const DropOnException &) = delete;
        ~DropOnException()
        {
            if (std::uncaught_exceptions() > pending_) {
                h_.lost_ = h_.lost_ || h_.in_data_ || !h_.accepted_.empty();
                h_.close();
            }
        }

      private:
        LmtpHandler &h_;
        const int pending_ = std::uncaught_exceptions();
    };

  public:
    LmtpHandler(std::shared_ptr<const Settings> s, std::shared_ptr<IdlePool> pool)
        : settings_(std::move(s)), pool_(std::move(pool))
    {
    }

    Reply mail(SessionView &s, const Path &, const Params &) override
    {
        // A transaction the server still has open (DATA refused and the
        // client went on) is reset first.
        end_transaction(s);
        // A smarthost's verdict on the sender is the client's at MAIL; an
        // LMTP server gets MAIL with the first recipient (it is the final
        // destination: its verdict on the sender is no news).
        if (settings_->smtp) {
            DropOnException guard(*this);
            return begin(s);
        }
        return {};
    }

    Reply rcpt(SessionView &s, const Path &to, const Params &params) override
    {
        DropOnException guard(*this);
        if (lost_)
            return lost_reply();
        if (!mail_sent_)
            if (Reply r = begin(s); !r.empty())
                return r;
        if (std::any_of(params.begin(), params.end(),
                        [](const Param &p) { return p.keyword == "NOTIFY" || p.keyword == "ORCPT"; }))
            dsn_dropped(s, "NOTIFY/ORCPT");
        ServerReply r;
        if (!exchange(s, rcpt_command(to, params), r))
            return lost_reply();
        if (r.code / 100 == 2)
            accepted_.push_back(to.mailbox);
        else
            s.log(2, tag() + "RCPT <" + to.mailbox + ">: " + describe(r));
        return to_reply(r);
    }

    // MAIL at the server, connecting first when needed. Empty when it
    // accepted the sender.
    Reply begin(SessionView &s)
    {
        // The server may have closed an idle connection since the last
        // transaction: nothing of this transaction is lost then, so one
        // fresh connection is tried.
        bool reused = bool(conn_);
        if (!conn_) {
            if (auto idle = pool_->take()) {
                conn_ = std::move(idle->conn);
                ext_ = idle->ext;
                parser_.clear();
                reused = true;
                s.log(3, tag() + "reusing an idle connection to " + settings_->target.to_string());
            } else if (!open(s)) {
                return unavailable_reply();
            }
        }
        const Envelope &env = s.envelope();
        std::string cmd;
        if (Reply refused = mail_command(env, cmd); !refused.empty())
            return refused;
        if (!env.dsn_ret.empty() || !env.dsn_envid.empty())
            dsn_dropped(s, "RET/ENVID");
        ServerReply r;
        bool ok = exchange(s, cmd, r);
        if (!ok && reused && !lost_) {
            if (!open(s))
                return unavailable_reply();
            ok = exchange(s, cmd, r);
        }
        if (!ok)
            return lost_reply();
        if (r.code / 100 != 2) {
            s.log(1, tag() + settings_->target.to_string() + " refused MAIL: " + describe(r));
            return to_reply(r); // the sender is this recipient's problem too
        }
        mail_sent_ = true;
        sent_sender_ = env.sender.mailbox;
        return {};
    }

    Reply data(SessionView &s) override
    {
        DropOnException guard(*this);
        if (lost_ || !conn_ || accepted_.empty())
            return lost_reply();
        if (envelope_changed(s.envelope()))
            if (Reply r = resend_envelope(s, s.envelope()); !r.empty())
                return r;
        ServerReply r;
        if (!exchange(s, "DATA", r))
            return lost_reply();
        if (r.code != 354) {
            if (r.code / 100 == 2 || r.code / 100 == 3) // nonsense: not a server we understand
                return drop(s, "unexpected reply to DATA: " + describe(r));
            return to_reply(r);
        }
        in_data_ = true;
        out_.clear();
        stuffer_.reset();
        std::string_view trace = s.trace_headers();
        // Return-Path is for final delivery (RFC 5321 4.4): a relay passes
        // on only its Received.
        if (settings_->smtp && trace.starts_with("Return-Path:"))
            trace.remove_prefix(std::min(trace.size(), trace.find('\n') + 1));
        stuffer_.feed(trace, out_);
        return {};
    }
    void header(SessionView &s, const HeaderField &f) override { content(s, f.raw); }
    void eoh(SessionView &s, std::string_view raw) override { content(s, raw); }
    void body(SessionView &s, std::string_view chunk) override { content(s, chunk); }

    Reply eom(SessionView &s) override
    {
        DropOnException guard(*this);
        if (lost_ || !in_data_)
            return lost_reply();
        stuffer_.finish(out_);
        if (!send_out(s))
            return lost_reply();
        in_data_ = false;
        if (settings_->smtp)
            return relayed(s);
        // RFC 2033 4.2: one reply per recipient accepted at RCPT, in order.
        std::vector<ServerReply> replies;
        for (const auto &rcpt : accepted_) {
            ServerReply r;
            if (!read_reply(s, r)) {
                // Some recipients may have been delivered already; the
                // client retries the lot (a duplicate is better than a loss).
                drop(s, "connection lost after DATA (at <" + rcpt + ">)");
                return lost_reply();
            }
            if (r.code / 100 != 2)
                s.log(1, tag() + "<" + rcpt + ">: " + describe(r));
            replies.push_back(std::move(r));
        }
        std::vector<std::string> rcpts = std::move(accepted_);
        accepted_.clear();
        mail_sent_ = false; // the LMTP transaction is over, whatever the replies
        for (const auto &r : replies)
            if (r.code == 421) { // the server closes the channel after this
                close();
                break;
            }
        return fold(s, rcpts, replies);
    }

    void abort(SessionView &s) override { end_transaction(s); }

    void disconnect(SessionView &s) override
    {
        if (conn_ && !in_data_ && !lost_ && !mail_sent_ && !parser_.buffered() && pool_->give(conn_, ext_)) {
            s.log(3, tag() + "connection to " + settings_->target.to_string() + " kept for the next session");
            close();
            return;
        }
        if (conn_ && !in_data_ && !lost_) {
            // Be polite, but do not let a slow server hold the session.
            ServerReply r;
            int t = std::min(settings_->timeout, 5);
            if (send_all("QUIT\r\n", t))
                read_reply_within(r, t);
        }
        close();
    }

  private:
    // SMTP: the smarthost's one reply after the final dot is ours. Our 250
    // (the module's, with our queue id) only after its 250.
    Reply relayed(SessionView &s)
    {
        ServerReply r;
        bool got = read_reply(s, r);
        std::size_t n = accepted_.size();
        accepted_.clear();
        mail_sent_ = false;
        if (!got) {
            // It may have taken the message just before the connection
            // broke: the client retries, a duplicate rather than a loss.
            drop(s, "no reply after the message");
            return lost_reply();
        }
        if (r.code == 421) {
            close();
            s.log(1, tag() + settings_->target.to_string() + " closing after the message: " + describe(r));
            return lost_reply();
        }
        if (r.code / 100 != 2) {
            s.log(1, tag() + settings_->target.to_string() + " refused the message: " + describe(r));
            return to_reply(r);
        }
        s.log(1, tag() + "relayed " + std::string(s.queue_id()) + " for " + std::to_string(n) + " recipient(s) to " +
                     settings_->target.to_string() + ": " + describe(r));
        return {};
    }

    // One SMTP reply for the whole message.
    Reply fold(SessionView &s, const std::vector<std::string> &rcpts, const std::vector<ServerReply> &replies)
    {
        std::size_t failed = 0, permanent = 0;
        for (const auto &r : replies) {
            if (r.code / 100 != 2) {
                ++failed;
                if (r.code / 100 == 5)
                    ++permanent;
            }
        }
        if (failed == 0) {
            s.log(3, tag() + "delivered to " + std::to_string(rcpts.size()) + " recipient(s) via " +
                         settings_->target.to_string());
            return {}; // module default: 250 2.0.0 Ok: queued as QID
        }
        if (replies.size() == 1)
            return to_reply(replies.front());
        if (permanent == replies.size()) {
            // Nobody got it and nobody ever will: the first reason is as good
            // as any.
            for (const auto &r : replies)
                if (r.code / 100 != 2)
                    return to_reply(r);
        }
        // A mix: SMTP has a single reply for DATA, so the whole message is
        // tempfailed and the client retries every recipient. Those already
        // delivered get it twice; that is better than losing it for those
        // that failed temporarily (or than bouncing it for all).
        std::string names;
        for (std::size_t i = 0; i < replies.size(); ++i) {
            if (replies[i].code / 100 == 2)
                continue;
            std::string next = (names.empty() ? "" : ", ") + ("<" + rcpts[i] + ">");
            if (names.size() + next.size() > 300) {
                names += ", ...";
                break;
            }
            names += next;
        }
        return Reply(451, "Delivery failed for " + names + "; try again later", "4.3.0");
    }

    // MAIL FROM for the envelope, or the refusal when the LMTP server
    // cannot take it.
    Reply mail_command(const Envelope &env, std::string &cmd) const
    {
        cmd = "MAIL FROM:<" + env.sender.mailbox + ">";
        if (env.smtputf8) {
            if (!ext_.smtputf8)
                return Reply(553,
                             settings_->smtp ? "Smarthost does not support SMTPUTF8"
                                             : "LMTP server does not support SMTPUTF8",
                             "5.6.7");
            cmd += " SMTPUTF8";
        }
        if (env.body_type == "8BITMIME" && ext_.eightbitmime)
            cmd += " BODY=8BITMIME";
        if (env.declared_size && ext_.size)
            cmd += " SIZE=" + std::to_string(env.declared_size);
        // RFC 3461 4.1: a relay whose next hop does not offer DSN drops the
        // parameters (it would then owe "relayed" notices: mod_esmtp sends
        // no notices of its own, see README "Sending mail out").
        if (passes_dsn()) {
            if (!env.dsn_ret.empty())
                cmd += " RET=" + env.dsn_ret;
            if (!env.dsn_envid.empty())
                cmd += " ENVID=" + env.dsn_envid;
        }
        // RFC 8689 4.2.1: on only over verified TLS to a next hop that
        // offers it; otherwise the message is refused (section 5's code).
        if (env.requiretls) {
            if (!ext_.requiretls || !conn_.tls())
                return Reply(550, "REQUIRETLS support required", "5.7.30");
            cmd += " REQUIRETLS";
        }
        return {};
    }

    // RCPT TO with the DSN parameters the client gave, when they go on.
    // (Checked again: a milter's added recipient brings its own.)
    std::string rcpt_command(const Path &to, const Params &params) const
    {
        std::string cmd = "RCPT TO:<" + to.mailbox + ">";
        if (passes_dsn())
            for (const Param &p : params) {
                if (p.keyword == "NOTIFY" && valid_notify(p.value))
                    cmd += " NOTIFY=" + upper(p.value);
                else if (p.keyword == "ORCPT" && valid_orcpt(p.value))
                    cmd += " ORCPT=" + p.value;
            }
        return cmd;
    }
    bool passes_dsn() const { return settings_->smtp && ext_.dsn; }
    void dsn_dropped(SessionView &s, std::string_view what)
    {
        if (settings_->smtp && !ext_.dsn)
            s.log(2, tag() + settings_->target.to_string() + " does not offer DSN: " + std::string(what) +
                         " not passed on");
    }
    static std::string upper(std::string v)
    {
        for (auto &c : v)
            c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
        return v;
    }

    // With ESMTPMilter the handler's data() runs after the filters, which
    // may have changed the sender or added and deleted recipients after the
    // LMTP server got MAIL and RCPT.
    bool envelope_changed(const Envelope &env) const
    {
        if (env.sender.mailbox != sent_sender_ || env.recipients.size() != accepted_.size())
            return true;
        for (std::size_t i = 0; i < accepted_.size(); ++i)
            if (env.recipients[i].path.mailbox != accepted_[i])
                return true;
        return false;
    }

    // The LMTP transaction again, with the envelope as the filters left it:
    // RSET, MAIL, a RCPT each. A recipient refused for good now (one a
    // filter added, which the client never saw) cannot be bounced from
    // here: it goes to the error log and the others get the message; a
    // temporary refusal tempfails the message (the client retries, the
    // filter adds the recipient again).
    Reply resend_envelope(SessionView &s, const Envelope &env)
    {
        s.log(2, tag() + "the envelope changed after RCPT (milter): MAIL and RCPT again");
        ServerReply r;
        if (!exchange(s, "RSET", r))
            return lost_reply();
        if (r.code / 100 != 2)
            return drop(s, "RSET failed");
        mail_sent_ = false;
        accepted_.clear();
        std::string cmd;
        if (Reply refused = mail_command(env, cmd); !refused.empty())
            return refused;
        if (!exchange(s, cmd, r))
            return lost_reply();
        if (r.code / 100 != 2)
            return to_reply(r);
        mail_sent_ = true;
        sent_sender_ = env.sender.mailbox;
        std::optional<Reply> first_refusal;
        for (const auto &rcpt : env.recipients) {
            if (!exchange(s, rcpt_command(rcpt.path, rcpt.params), r))
                return lost_reply();
            if (r.code / 100 == 2) {
                accepted_.push_back(rcpt.path.mailbox);
                continue;
            }
            if (r.code / 100 == 4)
                return Reply(451, "Delivery failed for <" + rcpt.path.mailbox + ">; try again later", "4.3.0");
            s.error(tag() + settings_->target.to_string() + " refused <" + rcpt.path.mailbox +
                    "> after the envelope changed (not delivered to it): " + describe(r));
            if (!first_refusal)
                first_refusal = to_reply(r);
        }
        if (accepted_.empty()) // (the milter wrapper never hands over an envelope without recipients)
            return first_refusal ? *first_refusal : Reply(554, "No valid recipients", "5.5.1");
        return {};
    }

    // Content for the LMTP server, stuffed and sent in blocks.
    void content(SessionView &s, std::string_view bytes)
    {
        DropOnException guard(*this);
        if (!in_data_ || lost_)
            return;
        stuffer_.feed(bytes, out_);
        if (out_.size() >= kSendBlock)
            send_out(s);
    }
    bool send_out(SessionView &s)
    {
        bool ok = send_all(out_, settings_->timeout);
        out_.clear();
        if (out_.capacity() > 4 * kSendBlock)
            out_.shrink_to_fit();
        if (!ok)
            drop(s, "cannot send the message");
        return ok;
    }

    // Connect, read the greeting, LHLO/EHLO, STARTTLS and EHLO again, AUTH,
    // as configured. False (and logged) on any failure.
    bool open(SessionView &s)
    {
        const auto deadline = clock_type::now() + std::chrono::seconds(settings_->timeout);
        std::string error;
        Fd fd = connect_socket(settings_->target, deadline, error);
        if (!fd) {
            // every RCPT refused for it says so in the error log: the
            // administrator has a server to start or a path to fix
            s.error(tag() + "cannot connect to " + settings_->target.to_string() + ": " + error);
            return false;
        }
        conn_ = ClientStream(std::move(fd));
        parser_.clear();
        ext_ = {};
        if (settings_->tls == TlsMode::implicit &&
            !conn_.start_tls(settings_->tls_ctx, settings_->server_name, deadline, error)) {
            unavailable(s, "TLS: " + error);
            return false;
        }
        ServerReply r;
        if (!read_reply(s, r)) {
            unavailable(s, "no greeting");
            return false;
        }
        if (r.code != 220) {
            unavailable(s, "bad greeting: " + describe(r));
            return false;
        }
        if (!hello(s))
            return false;
        if (settings_->tls == TlsMode::starttls) {
            // Required: without it, nothing is sent (no plaintext fallback).
            if (!ext_.starttls) {
                unavailable(s, "does not offer STARTTLS (tls=starttls)");
                return false;
            }
            if (!send_all("STARTTLS\r\n", settings_->timeout) || !read_reply(s, r) || r.code != 220) {
                unavailable(s, "STARTTLS refused: " + describe(r));
                return false;
            }
            if (parser_.buffered()) { // RFC 3207 6: nothing may come before the handshake
                unavailable(s, "data after the STARTTLS reply");
                return false;
            }
            if (!conn_.start_tls(settings_->tls_ctx, settings_->server_name,
                                 clock_type::now() + std::chrono::seconds(settings_->timeout), error)) {
                unavailable(s, "TLS: " + error);
                return false;
            }
            if (!hello(s))
                return false;
        }
        return settings_->auth_user.empty() || authenticate(s);
    }

    // LHLO or EHLO, and what the server offers.
    bool hello(SessionView &s)
    {
        std::string cmd = (settings_->smtp ? "EHLO " : "LHLO ") + std::string(s.hostname());
        ServerReply r;
        if (!safe_line(cmd) || !send_all(cmd + "\r\n", settings_->timeout) || !read_reply(s, r) || r.code != 250) {
            unavailable(s, cmd.substr(0, 4) + " refused: " + describe(r));
            return false;
        }
        ext_ = {};
        for (std::size_t i = 1; i < r.lines.size(); ++i) {
            std::string line = r.lines[i];
            for (auto &c : line)
                c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
            std::string kw = line.substr(0, line.find(' '));
            if (kw == "8BITMIME")
                ext_.eightbitmime = true;
            else if (kw == "SMTPUTF8")
                ext_.smtputf8 = true;
            else if (kw == "SIZE")
                ext_.size = true;
            else if (kw == "STARTTLS")
                ext_.starttls = true;
            else if (kw == "DSN")
                ext_.dsn = true;
            else if (kw == "REQUIRETLS")
                ext_.requiretls = true;
            else if (kw == "AUTH") {
                std::string mechs = line.substr(4) + " ";
                ext_.auth_plain = mechs.find(" PLAIN ") != std::string::npos;
                ext_.auth_login = mechs.find(" LOGIN ") != std::string::npos;
            }
        }
        return true;
    }

    // AUTH PLAIN, or LOGIN when PLAIN is not offered (RFC 4954). The
    // credentials never reach a log.
    bool authenticate(SessionView &s)
    {
        const std::string &user = settings_->auth_user;
        const std::string &password = settings_->auth_password;
        ServerReply r;
        auto step = [&](const std::string &line) {
            return send_all(line + "\r\n", settings_->timeout) && read_reply(s, r);
        };
        bool sent;
        if (ext_.auth_plain)
            sent = step("AUTH PLAIN " + base64_encode(std::string(1, '\0') + user + '\0' + password));
        else if (ext_.auth_login)
            sent = step("AUTH LOGIN") && r.code == 334 && step(base64_encode(user)) && r.code == 334 &&
                   step(base64_encode(password));
        else {
            unavailable(s, "offers no AUTH PLAIN or LOGIN (auth= is set)");
            return false;
        }
        if (!sent || r.code != 235) {
            unavailable(s, "AUTH as " + user + " failed: " + describe(r));
            return false;
        }
        s.log(2, tag() + "authenticated to " + settings_->target.to_string() + " as " + user);
        return true;
    }

    // Send a command and read its reply. False when the connection is lost
    // (it is then dropped). A 421 means the server is closing the channel:
    // that is a lost connection too, not the client's business.
    bool exchange(SessionView &s, const std::string &cmd, ServerReply &r)
    {
        if (!conn_)
            return false;
        if (!safe_line(cmd)) {
            drop(s, "refusing to send a command with a line break");
            return false;
        }
        if (!send_all(cmd + "\r\n", settings_->timeout)) {
            drop(s, "cannot send " + cmd.substr(0, cmd.find(' ')));
            return false;
        }
        if (!read_reply(s, r)) {
            drop(s, "no reply to " + cmd.substr(0, cmd.find(' ')));
            return false;
        }
        if (r.code == 421) {
            drop(s, "server closing: " + describe(r));
            return false;
        }
        return true;
    }

    bool read_reply(SessionView &, ServerReply &r) { return read_reply_within(r, settings_->timeout); }

    bool read_reply_within(ServerReply &r, int seconds)
    {
        if (!conn_)
            return false;
        const auto deadline = clock_type::now() + std::chrono::seconds(seconds);
        char buf[4096];
        for (;;) {
            if (auto next = parser_.next()) {
                r = std::move(*next);
                return true;
            }
            if (parser_.bad())
                return false;
            long n = conn_.recv_some(buf, sizeof buf, deadline);
            if (n <= 0)
                return false; // EOF, error or timeout
            parser_.feed(std::string_view(buf, static_cast<std::size_t>(n)));
        }
    }

    bool send_all(std::string_view data, int seconds)
    {
        return conn_.send_all(data, clock_type::now() + std::chrono::seconds(seconds));
    }

    // The transaction at the LMTP server ends without a message: RSET, or
    // drop the connection when RSET is impossible (mid-DATA) or fails.
    void end_transaction(SessionView &s)
    {
        DropOnException guard(*this);
        if (conn_ && in_data_) {
            // Only closing the connection stops a DATA in progress without
            // delivering it (the final "." is never sent).
            drop(s, "transaction aborted during DATA");
        } else if (conn_ && mail_sent_) {
            ServerReply r;
            if (!exchange(s, "RSET", r) || r.code / 100 != 2)
                drop(s, "RSET failed");
        }
        mail_sent_ = false;
        in_data_ = false;
        lost_ = false;
        accepted_.clear();
        out_.clear();
        stuffer_.reset();
    }

    // Close the connection after a failure. If the LMTP server had accepted
    // recipients of this transaction, they are gone with it: the rest of the
    // transaction is refused (lost_) so that the client retries it all.
    Reply drop(SessionView &s, const std::string &why)
    {
        s.log(1, tag() + settings_->target.to_string() + ": " + why + "; connection dropped");
        if (mail_sent_ || in_data_)
            lost_ = !accepted_.empty() || in_data_;
        close();
        return lost_reply();
    }

    // A new connection that did not get as far as LHLO: the LMTP server
    // does not work, which the error log must say.
    void unavailable(SessionView &s, const std::string &why)
    {
        s.error(tag() + settings_->target.to_string() + ": " + why);
        drop(s, why);
    }

    void close()
    {
        conn_.reset();
        parser_.clear();
        mail_sent_ = false;
        in_data_ = false;
        out_.clear();
    }

    Reply lost_reply() const
    {
        return Reply(451,
                     settings_->smtp ? "Smarthost connection lost; try again later"
                                     : "LMTP connection lost; try again later",
                     "4.4.2");
    }
    Reply unavailable_reply() const
    {
        return Reply(451, settings_->smtp ? "Smarthost unavailable; try again later" : "LMTP server unavailable",
                     "4.4.1");
    }
    std::string tag() const { return settings_->tag(); }

    std::shared_ptr<const Settings> settings_;
    std::shared_ptr<IdlePool> pool_;
    ClientStream conn_;
    lmtp::ReplyParser parser_;
    lmtp::DotStuffer stuffer_;
    std::string out_;
    Extensions ext_;                    // of the current connection
    bool mail_sent_ = false;            // MAIL accepted by the LMTP server in this transaction
    bool in_data_ = false;              // DATA accepted, content being sent
    bool lost_ = false;                 // connection lost with recipients accepted: refuse the rest
    std::vector<std::string> accepted_; // recipients the LMTP server accepted, in order
    std::string sent_sender_;           // MAIL FROM the LMTP server got in this transaction
};

class LmtpFactory final : public HandlerFactory
{
  public:
    explicit LmtpFactory(Settings s)
        : settings_(std::make_shared<const Settings>(std::move(s))),
          pool_(std::make_shared<IdlePool>(settings_->reuse, settings_->idle))
    {
    }
    std::unique_ptr<Handler> create() override { return std::make_unique<LmtpHandler>(settings_, pool_); }

    // The smtp handler passes DSN's parameters on (or drops them where the
    // smarthost does not offer DSN, as RFC 3461 4.1 allows a relay), and
    // REQUIRETLS when it reaches the smarthost over verified TLS. An LMTP
    // server is a final destination: it gets neither.
    unsigned carries() const override
    {
        if (!settings_->smtp)
            return 0;
        unsigned c = carries_dsn;
        if (settings_->tls != TlsMode::none && settings_->tls_verified)
            c |= carries_requiretls;
        return c;
    }

    // As the server's user, at child start: for a unix socket, its
    // directory must be reachable and the socket, if it exists yet (the
    // LMTP server may start later), writable. For TCP there is nothing to
    // check before connecting.
    bool check(std::string &why) const override
    {
        const SocketTarget &t = settings_->target;
        if (!t.is_unix)
            return true;
        auto slash = t.path.rfind('/');
        std::string dir = slash == 0 || slash == std::string::npos ? "/" : t.path.substr(0, slash);
        struct stat st;
        if (::stat(dir.c_str(), &st) != 0 || (!S_ISDIR(st.st_mode) && (errno = ENOTDIR)) ||
            ::faccessat(AT_FDCWD, dir.c_str(), X_OK, AT_EACCESS) != 0) {
            why = settings_->tag() + "cannot reach the directory " + dir + " of unix:" + t.path + ": " +
                  std::strerror(errno) + running_as();
            return false;
        }
        if (::stat(t.path.c_str(), &st) == 0 && ::faccessat(AT_FDCWD, t.path.c_str(), W_OK, AT_EACCESS) != 0) {
            why = settings_->tag() + "cannot write to unix:" + t.path + ": " + std::strerror(errno) + running_as();
            return false;
        }
        return true;
    }

  private:
    std::shared_ptr<const Settings> settings_;
    std::shared_ptr<IdlePool> pool_; // created in the parent, empty at fork: per child
};

} // namespace

namespace
{

// A decimal between lo and hi, or false.
bool parse_number(const std::string &v, long lo, long hi, long &out)
{
    char *end = nullptr;
    errno = 0;
    long n = v.empty() ? 0 : std::strtol(v.c_str(), &end, 10);
    if (v.empty() || *end != '\0' || errno != 0 || n < lo || n > hi)
        return false;
    out = n;
    return true;
}

// auth=FILE: its first line is USER:PASSWORD. Read at configuration time,
// as root, so the file can be readable by root alone.
bool read_credentials(const std::string &file, Settings &s, std::string &why)
{
    std::ifstream in(file);
    std::string line;
    if (!in || !std::getline(in, line)) {
        why = "cannot read auth=" + file + ": " + std::strerror(errno ? errno : ENOENT);
        return false;
    }
    if (!line.empty() && line.back() == '\r')
        line.pop_back();
    auto colon = line.find(':');
    if (colon == std::string::npos || colon == 0 || colon + 1 == line.size()) {
        why = "auth=" + file + ": the first line must be USER:PASSWORD";
        return false;
    }
    s.auth_user = line.substr(0, colon);
    s.auth_password = line.substr(colon + 1);
    return true;
}

} // namespace

std::shared_ptr<HandlerFactory> LmtpProvider::configure(const HandlerContext &ctx, const std::vector<std::string> &args,
                                                        std::string &error) const
{
    const bool smtp = dialect_ == Dialect::smtp;
    const std::string prefix = ctx.directive + (smtp ? " smtp: " : " lmtp: ");
    const char *usage = "HOST:PORT|[IPv6]:PORT|unix:/PATH [timeout=SECONDS] [tls=starttls|implicit|none] "
                        "[ca=FILE] [cert=FILE] [key=FILE] [servername=NAME] [auth=FILE] [reuse=N] [idle=SECONDS]";
    if (args.empty()) {
        error = prefix + "expects " + usage;
        return nullptr;
    }
    Settings s;
    s.smtp = smtp;
    std::string why;
    if (!parse_socket_target(args[0], s.target, why)) {
        error = prefix + why;
        return nullptr;
    }
    // A smarthost is reached over the network: TLS unless told otherwise.
    s.tls = smtp && !s.target.is_unix ? TlsMode::starttls : TlsMode::none;
    s.reuse = smtp ? 4 : 0;
    TlsClientSettings tls;
    std::string auth_file;
    for (std::size_t i = 1; i < args.size(); ++i) {
        const std::string &a = args[i];
        auto eq = a.find('=');
        const std::string key = eq == std::string::npos ? a : a.substr(0, eq);
        const std::string v = eq == std::string::npos ? "" : a.substr(eq + 1);
        if (eq == std::string::npos || (v.empty() && key != "servername")) {
            error = prefix + "option '" + a + "' needs a value (" + usage + ")";
            return nullptr;
        }
        if (key == "timeout") {
            unsigned t = 0;
            if (!parse_seconds(v, 3600, t)) {
                error = prefix + "timeout must be a number of seconds between 1 and 3600, not '" + v + "'";
                return nullptr;
            }
            s.timeout = static_cast<int>(t);
        } else if (key == "reuse" || key == "idle") {
            long n = 0;
            long lo = key == "reuse" ? 0 : 1, hi = key == "reuse" ? 1000 : 3600;
            if (!parse_number(v, lo, hi, n)) {
                error = prefix + key + " must be a number between " + std::to_string(lo) + " and " +
                        std::to_string(hi) + ", not '" + v + "'";
                return nullptr;
            }
            if (key == "reuse")
                s.reuse = static_cast<std::size_t>(n);
            else
                s.idle = static_cast<int>(n);
        } else if (key == "tls") {
            if (v == "starttls")
                s.tls = TlsMode::starttls;
            else if (v == "implicit")
                s.tls = TlsMode::implicit;
            else if (v == "none")
                s.tls = TlsMode::none;
            else {
                error = prefix + "tls must be starttls, implicit or none, not '" + v + "'";
                return nullptr;
            }
        } else if (key == "ca")
            tls.ca_file = v;
        else if (key == "cert")
            tls.cert_file = v;
        else if (key == "key")
            tls.key_file = v;
        else if (key == "servername")
            s.server_name = v;
        else if (key == "auth")
            auth_file = v;
        else {
            error = prefix + "unknown option '" + a + "' (expected " + usage + ")";
            return nullptr;
        }
    }
    if (s.tls != TlsMode::none) {
        if (s.server_name.empty() && s.target.is_unix) {
            error = prefix + "tls=" + (s.tls == TlsMode::implicit ? "implicit" : "starttls") +
                    " over a unix socket needs servername=NAME (the name the certificate must carry)";
            return nullptr;
        }
        if (s.server_name.empty())
            s.server_name = s.target.host;
        tls.server_name = s.server_name;
        s.tls_verified = tls.verify;
        s.tls_ctx = make_tls_client_context(tls, why);
        if (!s.tls_ctx) {
            error = prefix + why;
            return nullptr;
        }
    } else if (!tls.ca_file.empty() || !tls.cert_file.empty() || !tls.key_file.empty()) {
        error = prefix + "ca=, cert= and key= need tls=starttls or tls=implicit";
        return nullptr;
    }
    if (!auth_file.empty()) {
        if (s.tls == TlsMode::none && !s.target.is_unix) {
            error = prefix + "auth= needs tls=starttls or tls=implicit: the password would cross the network in "
                             "the clear";
            return nullptr;
        }
        if (!read_credentials(auth_file, s, why)) {
            error = prefix + why;
            return nullptr;
        }
    }
    return std::make_shared<LmtpFactory>(std::move(s));
}

} // namespace esmtp
