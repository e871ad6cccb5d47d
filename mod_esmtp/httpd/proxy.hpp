// PROXY protocol glue (ESMTPProxyProtocol): the header is parsed by the
// engine (engine/proxy_protocol.hpp); this reads it off the socket.
#pragma once

#include "engine/defaults.hpp"

#include <httpd.h>

#include <string>

namespace esmtp
{

// Reads the PROXY header straight from the socket, before TLS and the
// greeting, never taking an octet past it, within ESMTPProxyTimeout; puts
// the client's real address into c->client_ip / c->client_addr (from
// c->pool) so that httpd's logs, the scoreboard and the session agree.
// Returns false when the connection is to end: a 421 was sent (untrusted
// peer, malformed header, timeout) or the peer went away. `note` says what
// the header carried, for the transaction log. Does nothing when off.
bool accept_proxy_header(conn_rec *c, const SessionConfig &sc, std::string &note);

} // namespace esmtp
