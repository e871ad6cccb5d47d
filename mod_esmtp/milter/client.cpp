#include "milter/client.hpp"

#include "engine/text.hpp"

#include <cerrno>
#include <chrono>
#include <cstring>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

namespace esmtp::milter
{

namespace
{

using clock_type = std::chrono::steady_clock;

// What one filter's modifications of one message may add up to (a replaced
// body included); the message limit applies after that.
constexpr std::size_t kMaxModOctets = 64 * 1024 * 1024;

clock_type::time_point deadline_in(unsigned seconds)
{
    return clock_type::now() + std::chrono::seconds(seconds);
}

} // namespace

const char *action_name(DefaultAction a)
{
    switch (a) {
    case DefaultAction::accept:
        return "accept";
    case DefaultAction::reject:
        return "reject";
    case DefaultAction::tempfail:
        return "tempfail";
    }
    return "?";
}

bool parse_spec(const std::vector<std::string> &args, Spec &out, std::string &error)
{
    out = Spec{};
    if (args.empty()) {
        error = "needs a socket: inet:HOST:PORT, inet6:[ADDRESS]:PORT or unix:/PATH";
        return false;
    }
    std::string_view sock = args[0];
    out.name = args[0];
    std::string_view rest;
    if (sock.starts_with("inet:")) {
        rest = sock.substr(5);
        if (rest.starts_with('[')) {
            error = "use inet6:[ADDRESS]:PORT for an IPv6 address, not '" + std::string(sock) + "'";
            return false;
        }
    } else if (sock.starts_with("inet6:")) {
        rest = sock.substr(6);
        if (!rest.starts_with('[')) {
            error = "expected inet6:[ADDRESS]:PORT, not '" + std::string(sock) + "'";
            return false;
        }
    } else if (sock.starts_with("unix:")) {
        rest = sock; // the parser takes "unix:/path"
    } else {
        error = "expected inet:HOST:PORT, inet6:[ADDRESS]:PORT or unix:/PATH, not '" + std::string(sock) + "'";
        return false;
    }
    if (!parse_socket_target(rest, out.target, error))
        return false;
    for (std::size_t i = 1; i < args.size(); ++i) {
        std::string_view a = args[i];
        std::size_t eq = a.find('=');
        std::string_view key = a.substr(0, eq), val = eq == std::string_view::npos ? "" : a.substr(eq + 1);
        unsigned *t = key == "connect_timeout"   ? &out.connect_timeout
                      : key == "command_timeout" ? &out.command_timeout
                      : key == "content_timeout" ? &out.content_timeout
                                                 : nullptr;
        if (t) {
            if (!parse_seconds(val, 999999, *t)) {
                error =
                    std::string(key) + " must be a number of seconds from 1 to 999999, not '" + std::string(val) + "'";
                return false;
            }
        } else if (key == "default_action") {
            if (val == "accept")
                out.default_action = DefaultAction::accept;
            else if (val == "reject")
                out.default_action = DefaultAction::reject;
            else if (val == "tempfail")
                out.default_action = DefaultAction::tempfail;
            else {
                error = "default_action must be accept, reject or tempfail, not '" + std::string(val) + "'";
                return false;
            }
        } else {
            error = "unknown option '" + std::string(a) +
                    "' (connect_timeout=, command_timeout=, content_timeout=, default_action=)";
            return false;
        }
    }
    return true;
}

bool Client::fail(std::string why)
{
    error_ = std::move(why);
    fd_.reset();
    reader_.clear();
    return false;
}

bool Client::write_all(std::string_view data, unsigned timeout)
{
    switch (send_all(fd_.get(), data, deadline_in(timeout))) {
    case SendResult::ok:
        return true;
    case SendResult::timeout:
        return fail("write timed out after " + std::to_string(timeout) + "s");
    case SendResult::error:
        break;
    }
    return fail(std::string("write failed: ") + std::strerror(errno));
}

bool Client::open()
{
    error_.clear();
    reader_.clear();
    reader_ = PacketReader();
    fd_ = connect_socket(spec_.target, deadline_in(spec_.connect_timeout), error_);
    if (!fd_)
        return fail("cannot connect: " + error_);
    std::string out;
    encode_optneg(out, kVersion, kActionsSupported, kStepsSupported);
    Response r;
    if (!exchange(out, spec_.command_timeout, r))
        return false;
    if (r.kind != Response::Kind::optneg)
        return fail(std::string("negotiation answered ") + kind_name(r.kind));
    // libmilter of sendmail 8.14+ speaks 6; 2 is the oldest anyone runs
    if (r.version < 2 || r.version > kVersion)
        return fail("filter speaks milter protocol version " + std::to_string(r.version));
    if (r.actions & ~kActionsSupported)
        return fail("filter wants actions this MTA does not have (" + std::to_string(r.actions) + ")");
    if (r.steps & ~kStepsSupported)
        return fail("filter wants protocol steps this MTA does not have (" + std::to_string(r.steps) + ")");
    actions_ = r.actions;
    steps_ = r.steps;
    return true;
}

bool Client::send(std::string_view packets, unsigned timeout)
{
    if (!fd_)
        return false;
    return write_all(packets, timeout);
}

bool Client::exchange(std::string_view packets, unsigned timeout, Response &verdict, std::vector<Response> *mods)
{
    if (!fd_)
        return fail(error_.empty() ? "not connected" : error_);
    if (!write_all(packets, timeout))
        return false;
    auto deadline = deadline_in(timeout);
    std::size_t mod_octets = 0;
    char buf[16384];
    for (;;) {
        Packet p;
        switch (reader_.next(p)) {
        case PacketReader::Status::garbage:
            return fail("garbage from filter (bad packet length)");
        case PacketReader::Status::packet: {
            Response r;
            std::string why;
            if (!decode(p, r, why))
                return fail("garbage from filter: " + why);
            if (r.kind == Response::Kind::progress) {
                deadline = deadline_in(timeout); // the filter is alive: a new timeout
                continue;
            }
            if (r.kind == Response::Kind::setsymlist)
                continue;
            if (r.is_modification()) {
                if (!mods)
                    return fail(std::string("modification ") + kind_name(r.kind) + " outside end of message");
                // bounded memory: modifications are held until the verdict
                mod_octets += r.name.size() + r.value.size() + 64;
                if (mod_octets > kMaxModOctets)
                    return fail("modifications bigger than " + std::to_string(kMaxModOctets) + " octets");
                mods->push_back(std::move(r));
                continue;
            }
            verdict = std::move(r);
            return true;
        }
        case PacketReader::Status::need_more:
            break;
        }
        if (!wait_for(fd_.get(), POLLIN, deadline))
            return fail("timed out after " + std::to_string(timeout) + "s waiting for a reply");
        ssize_t n = ::recv(fd_.get(), buf, sizeof buf, 0);
        if (n == 0)
            return fail("filter closed the connection");
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)
                continue;
            return fail(std::string("read failed: ") + std::strerror(errno));
        }
        reader_.feed(std::string_view(buf, static_cast<std::size_t>(n)));
    }
}

} // namespace esmtp::milter
