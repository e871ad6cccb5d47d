#include "handlers/stream_socket.hpp"

#include "engine/text.hpp"

#include <arpa/inet.h>
#include <cstring>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/un.h>

namespace esmtp
{

std::string SocketTarget::to_string() const
{
    if (is_unix)
        return "unix:" + path;
    if (host.find(':') != std::string::npos)
        return "[" + host + "]:" + port;
    return host + ":" + port;
}

namespace
{

bool valid_port(std::string_view p)
{
    unsigned v = 0;
    return parse_decimal(p, 5, 65535, v) && v >= 1;
}

} // namespace

bool parse_socket_target(std::string_view spec, SocketTarget &out, std::string &error)
{
    out = SocketTarget{};
    if (spec.starts_with("unix:")) {
        std::string_view path = spec.substr(5);
        if (path.empty() || path.front() != '/') {
            error = "the socket path of unix: must be absolute";
            return false;
        }
        if (path.size() >= sizeof(sockaddr_un::sun_path)) {
            error = "the socket path is too long for a unix socket";
            return false;
        }
        out.is_unix = true;
        out.path = path;
        return true;
    }
    std::string_view host, port;
    if (spec.starts_with('[')) {
        std::size_t close = spec.find(']');
        if (close == std::string_view::npos || close + 1 >= spec.size() || spec[close + 1] != ':') {
            error = "expected [IPv6-ADDRESS]:PORT, not '" + std::string(spec) + "'";
            return false;
        }
        host = spec.substr(1, close - 1);
        port = spec.substr(close + 2);
        in6_addr a;
        if (inet_pton(AF_INET6, std::string(host).c_str(), &a) != 1) {
            error = "'" + std::string(host) + "' is not an IPv6 address";
            return false;
        }
    } else {
        std::size_t colon = spec.find(':');
        if (colon == std::string_view::npos || spec.find(':', colon + 1) != std::string_view::npos) {
            error = "expected HOST:PORT, [IPv6-ADDRESS]:PORT or unix:/PATH, not '" + std::string(spec) + "'";
            return false;
        }
        host = spec.substr(0, colon);
        port = spec.substr(colon + 1);
    }
    if (host.empty()) {
        error = "missing host in '" + std::string(spec) + "'";
        return false;
    }
    if (!valid_port(port)) {
        error = "the port must be a number between 1 and 65535 in '" + std::string(spec) + "'";
        return false;
    }
    out.host = host;
    out.port = port;
    return true;
}

namespace
{

// getaddrinfo's list, freed with its scope.
struct AddrInfo {
    addrinfo *list = nullptr;
    AddrInfo() = default;
    AddrInfo(const AddrInfo &) = delete;
    AddrInfo &operator=(const AddrInfo &) = delete;
    ~AddrInfo()
    {
        if (list)
            freeaddrinfo(list);
    }
};

// A non-blocking connect with a deadline; the socket stays non-blocking (all
// later I/O goes through poll()).
Fd connect_to(const sockaddr *addr, socklen_t len, std::chrono::steady_clock::time_point deadline, std::string &error)
{
    Fd fd(::socket(addr->sa_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!fd) {
        error = std::string("socket: ") + std::strerror(errno);
        return fd;
    }
    if (::connect(fd.get(), addr, len) == 0)
        return fd;
    if (errno != EINPROGRESS && errno != EINTR) {
        error = std::strerror(errno);
        return Fd();
    }
    if (!wait_for(fd.get(), POLLOUT, deadline)) {
        error = "connect timed out";
        return Fd();
    }
    int err = 0;
    socklen_t elen = sizeof err;
    if (::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &elen) != 0 || err != 0) {
        error = std::strerror(err ? err : errno);
        return Fd();
    }
    return fd;
}

} // namespace

Fd connect_socket(const SocketTarget &t, std::chrono::steady_clock::time_point deadline, std::string &error)
{
    if (t.is_unix) {
        sockaddr_un sun{};
        sun.sun_family = AF_UNIX;
        std::memcpy(sun.sun_path, t.path.c_str(), t.path.size() + 1); // length checked by parse_socket_target
        return connect_to(reinterpret_cast<const sockaddr *>(&sun), sizeof sun, deadline, error);
    }
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV | AI_ADDRCONFIG;
    AddrInfo ai;
    int rc = ::getaddrinfo(t.host.c_str(), t.port.c_str(), &hints, &ai.list);
    if (rc != 0) {
        // AI_ADDRCONFIG hides ::1 on hosts with only loopback IPv6; retry without
        hints.ai_flags = AI_NUMERICSERV;
        rc = ::getaddrinfo(t.host.c_str(), t.port.c_str(), &hints, &ai.list);
    }
    if (rc != 0) {
        error = std::string("cannot resolve ") + t.host + ": " + gai_strerror(rc);
        return Fd();
    }
    for (addrinfo *a = ai.list; a; a = a->ai_next) {
        Fd fd = connect_to(a->ai_addr, a->ai_addrlen, deadline, error);
        if (fd) {
            int one = 1; // commands are small and wait for their reply
            ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            return fd;
        }
    }
    return Fd();
}

} // namespace esmtp
