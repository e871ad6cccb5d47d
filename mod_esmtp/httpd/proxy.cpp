#include "httpd/proxy.hpp"

#include "engine/proxy_protocol.hpp"
#include "httpd/mod_esmtp.hpp"
#include "httpd/tls.hpp"

#include <apr_network_io.h>
#include <apr_portable.h>
#include <apr_strings.h>
#include <http_connection.h>
#include <http_core.h>
#include <http_log.h>
#include <scoreboard.h>

#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <strings.h>
#include <cstring>

namespace esmtp
{

namespace
{

// What is peeked at once: a v1 header and most v2 ones in one read.
constexpr std::size_t kPeek = 16 * 1024;
enum class Got { header, refused, gone };

void refuse(conn_rec *c, int fd, const std::string &text)
{
    // Written to the socket itself: no TLS has started yet.
    std::string line = text + "\r\n";
    std::size_t off = 0;
    while (off < line.size()) {
        ssize_t n = ::send(fd, line.data() + off, line.size() - off, MSG_NOSIGNAL);
        if (n > 0) {
            off += static_cast<std::size_t>(n);
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            pollfd p{fd, POLLOUT, 0};
            if (::poll(&p, 1, 1000) > 0)
                continue;
        }
        break;
    }
    // The MPM's lingering close reads and drops the rest (of a bad header)
    // so that the close does not turn into a reset that loses the 421; its
    // flush must not start a handshake in mod_ssl's output filter.
    TlsFilters ssl;
    ssl.detach(c);
}

// Peek at what has arrived, let the parser take what belongs to the
// header, and remove exactly that from the socket. A parser that is still
// hungry has taken everything peeked, so nothing after the header is lost.
Got read_header(conn_rec *c, int fd, ProxyParser &parser, apr_time_t deadline)
{
    std::string buf(kPeek, '\0');
    while (parser.status() == ProxyParser::Status::more) {
        apr_time_t left = deadline - apr_time_now();
        if (left <= 0)
            return Got::refused;
        pollfd p{fd, POLLIN, 0};
        int r = ::poll(&p, 1, static_cast<int>(apr_time_as_msec(left)) + 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return Got::gone;
        if (r == 0)
            continue; // the deadline check above ends it
        ssize_t n = ::recv(fd, buf.data(), buf.size(), MSG_PEEK);
        if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK))
            continue;
        if (n <= 0)
            return Got::gone;
        std::size_t used = parser.feed(std::string_view(buf.data(), static_cast<std::size_t>(n)));
        std::size_t off = 0;
        while (off < used) {
            ssize_t m = ::recv(fd, buf.data(), used - off, 0);
            if (m < 0 && errno == EINTR)
                continue;
            if (m <= 0)
                return Got::gone; // cannot happen: these octets were there
            off += static_cast<std::size_t>(m);
        }
    }
    return Got::header;
}

} // namespace

std::string proxy_peer_refusal(conn_rec *c, const SessionConfig &sc)
{
    // mod_remoteip's RemoteIPProxyProtocol adds this filter to the
    // connections it takes the header from; the address it finds never
    // reaches c->client_ip (README, Behind a load balancer).
    bool remoteip = false;
    for (ap_filter_t *f = c->input_filters; f; f = f->next)
        if (f->frec && f->frec->name && !strcasecmp(f->frec->name, "REMOTEIP_INPUT"))
            remoteip = true;
    if (sc.proxy_protocol == ProxyAccept::off && !remoteip)
        return {};
    if (remoteip) {
        ap_log_cerror(APLOG_MARK, APLOG_ERR, 0, c,
                      "esmtp: mod_remoteip's RemoteIPProxyProtocol is on for this address: it hides the client's "
                      "address from mod_esmtp; turn it off and use ESMTPProxyProtocol");
        return "421 4.3.0 " + sc.hostname + " Service not available: server misconfigured";
    }
    const char *peer = c->client_ip ? c->client_ip : "";
    if (!sc.proxy_trusted.contains(peer)) {
        // Every connection to this server must come through the balancer:
        // a direct client is told so at once (README, PROXY protocol).
        ap_log_cerror(APLOG_MARK, APLOG_INFO, 0, c, "esmtp: %s is not in ESMTPProxyTrusted: refused", peer);
        return "421 4.7.0 " + sc.hostname + " Error: connections must come through the load balancer";
    }
    return {};
}

void send_raw_refusal(conn_rec *c, const std::string &text)
{
    apr_socket_t *sock = ap_get_conn_socket(c);
    apr_os_sock_t fd = -1;
    if (sock && apr_os_sock_get(&fd, sock) == APR_SUCCESS && fd >= 0)
        refuse(c, fd, text);
    else
        c->aborted = 1;
}

bool accept_proxy_header(conn_rec *c, const SessionConfig &sc, std::string &note)
{
    if (sc.proxy_protocol == ProxyAccept::off)
        return true;
    apr_socket_t *sock = ap_get_conn_socket(c);
    apr_os_sock_t fd = -1;
    if (!sock || apr_os_sock_get(&fd, sock) != APR_SUCCESS || fd < 0)
        return false;
    const std::string peer = c->client_ip ? c->client_ip : "";
    ProxyParser parser(sc.proxy_protocol);
    Got got = read_header(c, fd, parser, apr_time_now() + apr_time_from_sec(sc.proxy_timeout));
    if (got == Got::gone) {
        ap_log_cerror(APLOG_MARK, APLOG_DEBUG, 0, c, "esmtp: connection closed before the PROXY header ended");
        c->aborted = 1;
        return false;
    }
    if (parser.status() == ProxyParser::Status::more) {
        ap_log_cerror(APLOG_MARK, APLOG_INFO, 0, c, "esmtp: no complete PROXY header within ESMTPProxyTimeout (%us)",
                      sc.proxy_timeout);
        refuse(c, fd, "421 4.4.2 " + sc.hostname + " Error: timeout exceeded waiting for the PROXY header");
        return false;
    }
    if (parser.status() == ProxyParser::Status::error) {
        ap_log_cerror(APLOG_MARK, APLOG_INFO, 0, c, "esmtp: bad PROXY header: %s", parser.error().c_str());
        refuse(c, fd, "421 4.7.0 " + sc.hostname + " Error: bad PROXY header: " + parser.error());
        return false;
    }
    const ProxyHeader &h = parser.header();
    note = "PROXY v" + std::to_string(h.version) + " from " + peer;
    if (!h.authority.empty())
        note += " authority=" + h.authority;
    if (!h.unique_id.empty())
        note += " unique-id=" + h.unique_id;
    if (h.local) {
        note += " (LOCAL/UNKNOWN: the connection's own address)";
        return true;
    }
    apr_sockaddr_t *sa = nullptr;
    if (apr_sockaddr_info_get(&sa, nullptr, h.family == 4 ? APR_INET : APR_INET6,
                              static_cast<apr_port_t>(h.source_port), 0, c->pool) != APR_SUCCESS ||
        !sa)
        return false;
    std::memcpy(sa->ipaddr_ptr, h.source_bytes.data(), h.family == 4 ? 4 : 16);
    c->client_addr = sa;
    c->client_ip = apr_pstrdup(c->pool, h.source.c_str());
    // A name looked up for the balancer's address is not the client's.
    c->remote_host = nullptr;
    c->double_reverse = 0;
    ap_update_child_status_from_conn(static_cast<ap_sb_handle_t *>(c->sbh), SERVER_BUSY_READ, c);
    ap_log_cerror(APLOG_MARK, APLOG_DEBUG, 0, c, "esmtp: %s: client %s port %u", note.c_str(), c->client_ip,
                  h.source_port);
    return true;
}

} // namespace esmtp
