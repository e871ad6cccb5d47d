// One test harness for esmtp::Session: a configurable SessionConfig and
// ConnectionInfo, any Handler (a recording one by default), a recording
// transaction log, and send() returning the replies the input produced.
//
//     esmtp::test::Harness h;                  // recording handler
//     h.cfg.limits.max_recipients = 3;         // before start()
//     h.start();                               // greeting
//     std::string out = h.send("EHLO x\r\n");  // replies to that input
//
// A test of another handler (maildir, pipe, lmtp) gives its factory to
// use() (or sets `make_handler`) before start(); `rec` then stays unused.
#pragma once

#include "engine/session.hpp"
#include <esmtp/provider.hpp>

#include <functional>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace esmtp::test
{

// What the recording handler saw, and how it answers. Shared with the test
// because the session owns the handler.
struct Record {
    std::vector<std::string> events; // consecutive "body" merged
    std::vector<std::string> headers;
    std::string body;
    std::string content; // raw header fields + eoh + body, byte for byte
    std::string trace_at_data, trace_at_eom, qid_at_eom, protocol_at_data, auth_user_at_data;
    Envelope env_at_data;
    std::vector<std::string> rcpts_seen;
    std::vector<std::string> command_names;         // Handler::command() calls
    std::vector<std::vector<std::string>> captures; // and their captures
    int aborts = 0;
    int disconnects = 0;
    int rcpt_calls = 0;

    // behaviour
    Reply connect_reply;
    Reply mail_reply;
    std::map<std::string, Reply> rcpt_replies; // by mailbox
    std::map<std::string, Reply> replies;      // by event name: "data", "eom", "quit", "command", ...
    std::vector<std::string> ehlo_add;         // keywords added at EHLO
    std::string throw_in;                      // event name: throw there once
    std::function<void(SessionView &)> on_connect;

    std::string event_string() const
    {
        std::string s;
        for (const auto &e : events)
            s += (s.empty() ? "" : " ") + e;
        return s;
    }
    bool saw(const std::string &e) const { return count(e) > 0; }
    int count(const std::string &e) const
    {
        int n = 0;
        for (const auto &x : events)
            n += x == e;
        return n;
    }
    Reply reply_for(const std::string &event) const
    {
        auto it = replies.find(event);
        return it == replies.end() ? Reply() : it->second;
    }
};

class RecordingHandler final : public Handler
{
  public:
    explicit RecordingHandler(std::shared_ptr<Record> r) : r_(std::move(r)) {}

    Reply connect(SessionView &s) override
    {
        event("connect");
        if (r_->on_connect)
            r_->on_connect(s);
        return r_->connect_reply;
    }
    Reply helo(SessionView &, std::string_view) override { return event("helo"); }
    Reply ehlo(SessionView &, std::string_view, std::vector<std::string> &ext) override
    {
        ext.insert(ext.end(), r_->ehlo_add.begin(), r_->ehlo_add.end());
        return event("ehlo");
    }
    Reply mail(SessionView &, const Path &, const Params &) override
    {
        event("mail");
        return r_->mail_reply;
    }
    Reply rcpt(SessionView &, const Path &to, const Params &) override
    {
        event("rcpt");
        ++r_->rcpt_calls;
        r_->rcpts_seen.push_back(to.mailbox);
        auto it = r_->rcpt_replies.find(to.mailbox);
        return it == r_->rcpt_replies.end() ? Reply() : it->second;
    }
    Reply data(SessionView &s) override
    {
        r_->content.clear();
        r_->env_at_data = s.envelope();
        r_->protocol_at_data = std::string(s.protocol());
        r_->auth_user_at_data = std::string(s.auth_user());
        r_->trace_at_data = std::string(s.trace_headers());
        return event("data");
    }
    void header(SessionView &, const HeaderField &f) override
    {
        event("header");
        r_->headers.emplace_back(f.name);
        r_->content.append(f.raw);
    }
    void eoh(SessionView &, std::string_view raw) override
    {
        event("eoh");
        r_->content.append(raw);
    }
    void body(SessionView &, std::string_view chunk) override
    {
        if (r_->events.empty() || r_->events.back() != "body")
            event("body");
        r_->body += chunk;
        r_->content.append(chunk);
    }
    Reply eom(SessionView &s) override
    {
        r_->trace_at_eom = std::string(s.trace_headers());
        r_->qid_at_eom = std::string(s.queue_id());
        return event("eom");
    }
    void abort(SessionView &) override
    {
        ++r_->aborts;
        event("abort");
    }
    Reply rset(SessionView &) override { return event("rset"); }
    Reply noop(SessionView &) override { return event("noop"); }
    Reply vrfy(SessionView &, std::string_view) override { return event("vrfy"); }
    Reply expn(SessionView &, std::string_view) override { return event("expn"); }
    Reply help(SessionView &, std::string_view) override { return event("help"); }
    Reply quit(SessionView &) override { return event("quit"); }
    Reply command(SessionView &, std::string_view name, const std::vector<std::string> &captures) override
    {
        r_->command_names.emplace_back(name);
        r_->captures.push_back(captures);
        return event("command");
    }
    Reply unknown(SessionView &, std::string_view) override { return event("unknown"); }
    void disconnect(SessionView &) override
    {
        ++r_->disconnects;
        event("disconnect");
    }

  private:
    // Records the event, throws if asked to, returns the configured reply.
    Reply event(const std::string &name)
    {
        r_->events.push_back(name);
        if (r_->throw_in == name) {
            r_->throw_in.clear();
            throw std::runtime_error("handler failure in " + name);
        }
        return r_->reply_for(name);
    }
    std::shared_ptr<Record> r_;
};

class RecordingLog final : public TxLogSink
{
  public:
    void write(int level, std::string_view record) override { records.emplace_back(level, std::string(record)); }
    void error(std::string_view text) override { errors.emplace_back(text); }
    // A record containing `text` was written (at any level).
    bool has(std::string_view text) const
    {
        for (const auto &r : records)
            if (r.second.find(text) != std::string::npos)
                return true;
        return false;
    }
    std::vector<std::pair<int, std::string>> records;
    std::vector<std::string> errors;
};

// What a client sends after DATA's 354: `content` (whole lines) dot-stuffed,
// then the final dot.
inline std::string data_section(std::string_view content)
{
    std::string out;
    bool bol = true;
    for (char c : content) {
        if (bol && c == '.')
            out += '.';
        out += c;
        bol = c == '\n';
    }
    return out + ".\r\n";
}

struct Harness {
    std::shared_ptr<Record> rec = std::make_shared<Record>();
    RecordingLog log;
    SessionConfig cfg;
    ConnectionInfo conn;
    // The handler of the next start(); the recording handler by default.
    std::function<std::unique_ptr<Handler>()> make_handler;
    std::unique_ptr<Session> session;
    // The live counters' sink of the next start()s (may stay null).
    SessionObserver *observer = nullptr;
    // The screen (DNSBL, greylist) of the next start()s (may stay null).
    Screen *screen = nullptr;

    Harness()
    {
        cfg.hostname = "mx.example.org";
        cfg.accept_domains = {"example.org"};
        conn.client_address = "192.0.2.7";
        conn.client_port = 40000;
        conn.local_address = "127.0.0.1";
    }

    // The sessions of the next start()s get their handler from `factory`
    // and accept any recipient domain: a test of a handler is about the
    // handler, not about the relay policy. What it carries on is offered,
    // as post_config does.
    void use(std::shared_ptr<HandlerFactory> factory)
    {
        make_handler = [factory] { return factory->create(); };
        cfg.accept_domains = {"*"};
        cfg.handler_carries = factory->carries();
    }
    // Create the session (with cfg and conn as they are now) and return the greeting.
    std::string start()
    {
        std::unique_ptr<Handler> handler = make_handler ? make_handler() : std::make_unique<RecordingHandler>(rec);
        session = std::make_unique<Session>(cfg, conn, std::move(handler), &log);
        session->set_observer(observer);
        session->set_screen(screen);
        session->start();
        return take();
    }
    // Feed `in` in one go; return what the session answered.
    std::string send(std::string_view in)
    {
        session->feed(in);
        return take();
    }
    // Feed one byte at a time (the worst case of TCP segmentation).
    std::string send_bytewise(std::string_view in)
    {
        std::string out;
        for (char c : in)
            out += send(std::string_view(&c, 1));
        return out;
    }
    std::string take()
    {
        std::string out = std::move(session->output());
        session->output().clear();
        return out;
    }
    // Greeting + EHLO (or HELO), output discarded.
    void ehlo()
    {
        start();
        send("EHLO client.example\r\n");
    }
    void helo()
    {
        start();
        send("HELO client.example\r\n");
    }
    // One transaction, a write per command: MAIL FROM:<from>, RCPT TO:<r>
    // for each of `to`, DATA and, if DATA got 354, data_section(content).
    // Returns the replies in that order; `trace` gets the trace headers the
    // session gives the handler (those it prepends to the message).
    std::vector<std::string> transaction(std::string_view from, const std::vector<std::string> &to,
                                         std::string_view content, std::string *trace = nullptr)
    {
        std::vector<std::string> replies{send("MAIL FROM:<" + std::string(from) + ">\r\n")};
        for (const auto &r : to)
            replies.push_back(send("RCPT TO:<" + r + ">\r\n"));
        replies.push_back(send("DATA\r\n"));
        if (replies.back().rfind("354 ", 0) != 0)
            return replies;
        if (trace)
            *trace = std::string(session->trace_headers());
        replies.push_back(send(data_section(content)));
        return replies;
    }
    Session &s() { return *session; }
};

// The reply lines of `out`, CRLF removed.
inline std::vector<std::string> lines_of(const std::string &out)
{
    std::vector<std::string> v;
    std::size_t pos = 0;
    while (pos < out.size()) {
        auto eol = out.find("\r\n", pos);
        if (eol == std::string::npos) {
            v.push_back(out.substr(pos));
            break;
        }
        v.push_back(out.substr(pos, eol - pos));
        pos = eol + 2;
    }
    return v;
}

} // namespace esmtp::test
