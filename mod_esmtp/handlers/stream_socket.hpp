// A client's stream socket to a server, as the lmtp handler and the milter
// client use it: where the server listens (HOST:PORT, [IPv6]:PORT or
// unix:/PATH), a non-blocking connect with a deadline, and poll/send with
// deadlines, so that a server that is down or slow costs at most the
// configured timeout. Both clients depend on this file, not on each other.
#pragma once

#include "handlers/fd.hpp"

#include <cerrno>
#include <chrono>
#include <poll.h>
#include <string>
#include <string_view>
#include <sys/socket.h>

namespace esmtp
{

// Where a server listens.
struct SocketTarget {
    bool is_unix = false;
    std::string path; // unix socket (is_unix)
    std::string host; // name or address, without brackets
    std::string port; // decimal
    std::string to_string() const;
};

// "HOST:PORT", "[IPv6]:PORT" or "unix:/absolute/path". False with `error`
// set when `spec` is none of these.
bool parse_socket_target(std::string_view spec, SocketTarget &out, std::string &error);

// A connected, non-blocking stream socket to `t` (TCP_NODELAY), or an
// invalid Fd with `error` set when the deadline passes first.
Fd connect_socket(const SocketTarget &t, std::chrono::steady_clock::time_point deadline, std::string &error);

// Milliseconds until `deadline` for poll(2): 0 when it has passed.
inline int ms_left(std::chrono::steady_clock::time_point deadline)
{
    auto ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
    return ms <= 0 ? 0 : ms > 0x7fffffff ? 0x7fffffff : static_cast<int>(ms);
}

// Wait for `events` on fd until `deadline`; false on timeout or error.
inline bool wait_for(int fd, short events, std::chrono::steady_clock::time_point deadline)
{
    for (;;) {
        int left = ms_left(deadline);
        if (left == 0)
            return false;
        pollfd p{fd, events, 0};
        int r = ::poll(&p, 1, left);
        if (r > 0)
            return true;
        if (r < 0 && errno != EINTR)
            return false;
    }
}

// Sends all of `data` on a non-blocking socket, waiting (wait_for) until
// `deadline` whenever it is full. error: errno tells why.
enum class SendResult { ok, timeout, error };
inline SendResult send_all(int fd, std::string_view data, std::chrono::steady_clock::time_point deadline)
{
    while (!data.empty()) {
        ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
        if (n > 0) {
            data.remove_prefix(static_cast<std::size_t>(n));
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (!wait_for(fd, POLLOUT, deadline))
                return SendResult::timeout;
            continue;
        }
        return SendResult::error;
    }
    return SendResult::ok;
}

} // namespace esmtp
