#include "engine/text.hpp"
#include "handlers/lmtp.hpp"
#include "handlers/stream_socket.hpp"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <utility>

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

struct Settings {
    SocketTarget target;
    int timeout = kDefaultTimeout;
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
    explicit LmtpHandler(std::shared_ptr<const Settings> s) : settings_(std::move(s)) {}

    Reply mail(SessionView &s, const Path &, const Params &) override
    {
        // A transaction the LMTP server still has open (DATA refused and
        // the client went on) is reset first.
        end_transaction(s);
        return {};
    }

    Reply rcpt(SessionView &s, const Path &to, const Params &) override
    {
        DropOnException guard(*this);
        if (lost_)
            return lost_reply();
        if (!mail_sent_) {
            // The server may have closed an idle connection since the last
            // transaction: nothing of this transaction is lost then, so one
            // fresh connection is tried.
            bool reused = bool(conn_);
            if (!conn_ && !open(s))
                return Reply(451, "LMTP server unavailable", "4.4.1");
            const Envelope &env = s.envelope();
            std::string cmd;
            if (Reply refused = mail_command(env, cmd); !refused.empty())
                return refused;
            ServerReply r;
            bool ok = command(s, cmd, r);
            if (!ok && reused && !lost_) {
                if (!open(s))
                    return Reply(451, "LMTP server unavailable", "4.4.1");
                ok = command(s, cmd, r);
            }
            if (!ok)
                return lost_reply();
            if (r.code / 100 != 2) {
                s.log(1, "lmtp: " + settings_->target.to_string() + " refused MAIL: " + describe(r));
                return to_reply(r); // the sender is this recipient's problem too
            }
            mail_sent_ = true;
            sent_sender_ = env.sender.mailbox;
        }
        ServerReply r;
        if (!command(s, "RCPT TO:<" + to.mailbox + ">", r))
            return lost_reply();
        if (r.code / 100 == 2)
            accepted_.push_back(to.mailbox);
        else
            s.log(2, "lmtp: RCPT <" + to.mailbox + ">: " + describe(r));
        return to_reply(r);
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
        if (!command(s, "DATA", r))
            return lost_reply();
        if (r.code != 354) {
            if (r.code / 100 == 2 || r.code / 100 == 3) // nonsense: not a server we understand
                return drop(s, "unexpected reply to DATA: " + describe(r));
            return to_reply(r);
        }
        in_data_ = true;
        out_.clear();
        stuffer_.reset();
        stuffer_.feed(s.trace_headers(), out_);
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
                s.log(1, "lmtp: <" + rcpt + ">: " + describe(r));
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
            s.log(3, "lmtp: delivered to " + std::to_string(rcpts.size()) + " recipient(s) via " +
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
            if (!has_smtputf8_)
                return Reply(553, "LMTP server does not support SMTPUTF8", "5.6.7");
            cmd += " SMTPUTF8";
        }
        if (env.body_type == "8BITMIME" && has_8bitmime_)
            cmd += " BODY=8BITMIME";
        return {};
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
        s.log(2, "lmtp: the envelope changed after RCPT (milter): MAIL and RCPT again");
        ServerReply r;
        if (!command(s, "RSET", r))
            return lost_reply();
        if (r.code / 100 != 2)
            return drop(s, "RSET failed");
        mail_sent_ = false;
        accepted_.clear();
        std::string cmd;
        if (Reply refused = mail_command(env, cmd); !refused.empty())
            return refused;
        if (!command(s, cmd, r))
            return lost_reply();
        if (r.code / 100 != 2)
            return to_reply(r);
        mail_sent_ = true;
        sent_sender_ = env.sender.mailbox;
        std::optional<Reply> first_refusal;
        for (const auto &rcpt : env.recipients) {
            if (!command(s, "RCPT TO:<" + rcpt.path.mailbox + ">", r))
                return lost_reply();
            if (r.code / 100 == 2) {
                accepted_.push_back(rcpt.path.mailbox);
                continue;
            }
            if (r.code / 100 == 4)
                return Reply(451, "Delivery failed for <" + rcpt.path.mailbox + ">; try again later", "4.3.0");
            s.error("lmtp: " + settings_->target.to_string() + " refused <" + rcpt.path.mailbox +
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

    // Connect, read the greeting, LHLO. False (and logged) on any failure.
    bool open(SessionView &s)
    {
        const auto deadline = clock_type::now() + std::chrono::seconds(settings_->timeout);
        std::string error;
        Fd fd = connect_socket(settings_->target, deadline, error);
        if (!fd) {
            // every RCPT refused for it says so in the error log: the
            // administrator has an LMTP server to start or a path to fix
            s.error("lmtp: cannot connect to " + settings_->target.to_string() + ": " + error);
            return false;
        }
        conn_ = std::move(fd);
        parser_.clear();
        has_8bitmime_ = has_smtputf8_ = false;
        ServerReply r;
        if (!read_reply(s, r)) {
            unavailable(s, "no greeting");
            return false;
        }
        if (r.code != 220) {
            unavailable(s, "bad greeting: " + describe(r));
            return false;
        }
        std::string lhlo = "LHLO " + std::string(s.hostname());
        if (!safe_line(lhlo) || !send_all(lhlo + "\r\n", settings_->timeout) || !read_reply(s, r) || r.code != 250) {
            unavailable(s, "LHLO refused: " + describe(r));
            return false;
        }
        for (std::size_t i = 1; i < r.lines.size(); ++i) {
            std::string kw = r.lines[i].substr(0, r.lines[i].find(' '));
            for (auto &c : kw)
                c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
            if (kw == "8BITMIME")
                has_8bitmime_ = true;
            else if (kw == "SMTPUTF8")
                has_smtputf8_ = true;
        }
        return true;
    }

    // Send a command and read its reply. False when the connection is lost
    // (it is then dropped). A 421 means the server is closing the channel:
    // that is a lost connection too, not the client's business.
    bool command(SessionView &s, const std::string &cmd, ServerReply &r)
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
            ssize_t n = ::recv(conn_.get(), buf, sizeof buf, 0);
            if (n > 0) {
                parser_.feed(std::string_view(buf, static_cast<std::size_t>(n)));
                continue;
            }
            if (n == 0)
                return false; // EOF
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                return false;
            if (!wait_for(conn_.get(), POLLIN, deadline))
                return false;
        }
    }

    bool send_all(std::string_view data, int seconds)
    {
        return conn_ &&
               esmtp::send_all(conn_.get(), data, clock_type::now() + std::chrono::seconds(seconds)) == SendResult::ok;
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
            if (!command(s, "RSET", r) || r.code / 100 != 2)
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
        s.log(1, "lmtp: " + settings_->target.to_string() + ": " + why + "; connection dropped");
        if (mail_sent_ || in_data_)
            lost_ = !accepted_.empty() || in_data_;
        close();
        return lost_reply();
    }

    // A new connection that did not get as far as LHLO: the LMTP server
    // does not work, which the error log must say.
    void unavailable(SessionView &s, const std::string &why)
    {
        s.error("lmtp: " + settings_->target.to_string() + ": " + why);
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

    static Reply lost_reply() { return Reply(451, "LMTP connection lost; try again later", "4.4.2"); }

    std::shared_ptr<const Settings> settings_;
    Fd conn_;
    lmtp::ReplyParser parser_;
    lmtp::DotStuffer stuffer_;
    std::string out_;
    bool has_8bitmime_ = false;
    bool has_smtputf8_ = false;
    bool mail_sent_ = false;            // MAIL accepted by the LMTP server in this transaction
    bool in_data_ = false;              // DATA accepted, content being sent
    bool lost_ = false;                 // connection lost with recipients accepted: refuse the rest
    std::vector<std::string> accepted_; // recipients the LMTP server accepted, in order
    std::string sent_sender_;           // MAIL FROM the LMTP server got in this transaction
};

class LmtpFactory final : public HandlerFactory
{
  public:
    explicit LmtpFactory(Settings s) : settings_(std::make_shared<const Settings>(std::move(s))) {}
    std::unique_ptr<Handler> create() override { return std::make_unique<LmtpHandler>(settings_); }

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
            why = "lmtp: cannot reach the directory " + dir + " of unix:" + t.path + ": " + std::strerror(errno) +
                  running_as();
            return false;
        }
        if (::stat(t.path.c_str(), &st) == 0 && ::faccessat(AT_FDCWD, t.path.c_str(), W_OK, AT_EACCESS) != 0) {
            why = "lmtp: cannot write to unix:" + t.path + ": " + std::strerror(errno) + running_as();
            return false;
        }
        return true;
    }

  private:
    std::shared_ptr<const Settings> settings_;
};

} // namespace

std::shared_ptr<HandlerFactory> LmtpProvider::configure(const HandlerContext &ctx, const std::vector<std::string> &args,
                                                        std::string &error) const
{
    const std::string prefix = ctx.directive + " lmtp: ";
    if (args.empty()) {
        error = prefix + "expects HOST:PORT|[IPv6]:PORT|unix:/PATH [timeout=SECONDS]";
        return nullptr;
    }
    Settings s;
    std::string why;
    if (!parse_socket_target(args[0], s.target, why)) {
        error = prefix + why;
        return nullptr;
    }
    for (std::size_t i = 1; i < args.size(); ++i) {
        const std::string &a = args[i];
        if (!a.starts_with("timeout=")) {
            error = prefix + "unknown option '" + a + "' (expected timeout=SECONDS)";
            return nullptr;
        }
        const std::string v = a.substr(8);
        unsigned t = 0;
        if (!parse_seconds(v, 3600, t)) {
            error = prefix + "timeout must be a number of seconds between 1 and 3600, not '" + v + "'";
            return nullptr;
        }
        s.timeout = static_cast<int>(t);
    }
    return std::make_shared<LmtpFactory>(std::move(s));
}

} // namespace esmtp
