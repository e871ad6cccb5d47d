// One connection to one milter: a blocking client on a non-blocking socket
// driven by poll() with deadlines (handlers/stream_socket.hpp, shared with
// the lmtp handler), so that a filter that is down, slow or speaks garbage costs at
// most the configured timeout and never hangs a session. httpd-free: the
// unit tests run it against a fake filter on a unix socket.
//
// This lives in mod_esmtp/milter/ and not in engine/: the engine is
// sans-I/O (engine/milter_codec.* is the protocol); this does the I/O, and
// the milter handler (handler.hpp) wraps the configured handler with it.
#pragma once

#include "engine/milter_codec.hpp"
#include "handlers/stream_socket.hpp"

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace esmtp::milter
{

enum class DefaultAction { accept, reject, tempfail };

// One `ESMTPMilter` directive.
struct Spec {
    std::string name; // the socket as written: inet:127.0.0.1:8891
    SocketTarget target;
    unsigned connect_timeout = 30;                          // seconds, as Postfix's milter_connect_timeout
    unsigned command_timeout = 30;                          // milter_command_timeout
    unsigned content_timeout = 300;                         // milter_content_timeout
    DefaultAction default_action = DefaultAction::tempfail; // milter_default_action
};

// Every milter of one server, in order, and where messages are spooled.
struct Config {
    std::vector<Spec> milters;
    std::string spool_dir; // empty: $TMPDIR or /tmp
};

// Parse `inet:HOST:PORT|inet6:[ADDR]:PORT|unix:/PATH [connect_timeout=S]
// [command_timeout=S] [content_timeout=S] [default_action=...]`. False with
// `error` set.
bool parse_spec(const std::vector<std::string> &args, Spec &out, std::string &error);
const char *action_name(DefaultAction a);

class Client
{
  public:
    explicit Client(const Spec &spec) : spec_(spec) {}
    const Spec &spec() const { return spec_; }

    // Connect and negotiate (OPTNEG version 6). False with error() set.
    bool open();
    // What the filter negotiated.
    std::uint32_t actions() const { return actions_; }
    std::uint32_t steps() const { return steps_; }

    // Send `packets` (whole packets, the command last), then read replies
    // until a verdict, within `timeout` seconds (a PROGRESS restarts it).
    // Modifications (end of body) are appended to `mods` when it is given;
    // elsewhere they are a protocol error. False (the connection is closed,
    // error() says why) on a timeout, a lost connection or garbage.
    bool exchange(std::string_view packets, unsigned timeout, Response &verdict, std::vector<Response> *mods = nullptr);
    // Send without waiting for a reply (no-reply steps, ABORT, QUIT).
    bool send(std::string_view packets, unsigned timeout);
    void close() { fd_.reset(); }
    bool is_open() const { return fd_.valid(); }
    const std::string &error() const { return error_; }

  private:
    bool fail(std::string why);
    bool write_all(std::string_view data, unsigned timeout);

    const Spec &spec_;
    Fd fd_;
    PacketReader reader_;
    std::uint32_t actions_ = 0;
    std::uint32_t steps_ = 0;
    std::string error_;
};

} // namespace esmtp::milter
