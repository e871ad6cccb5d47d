// PROXY protocol glue (ESMTPProxyProtocol): the header is parsed by the
// engine (engine/proxy_protocol.hpp); this reads it off the socket.
#pragma once

#include "engine/defaults.hpp"

#include <httpd.h>

#include <string>

namespace esmtp
{

// Whether this peer may send a PROXY header: empty when it may (or no
// header is expected), else the 421 it is to get (logged here): it is not
// in ESMTPProxyTrusted, or mod_remoteip would take the header.
std::string proxy_peer_refusal(conn_rec *c, const SessionConfig &sc);

// Writes a refusal line to the socket itself (before TLS: mod_ssl's
// filters are taken off, so that nothing starts a handshake) and leaves the
// lingering close to the MPM.
void send_raw_refusal(conn_rec *c, const std::string &text);

// For a peer proxy_peer_refusal() let through: reads the PROXY header straight from the socket, before TLS and the
// greeting, never taking an octet past it, within ESMTPProxyTimeout; puts
// the client's real address into c->client_ip / c->client_addr (from
// c->pool) so that httpd's logs, the scoreboard and the session agree.
// Returns false when the connection is to end: a 421 was sent (untrusted
// peer, malformed header, timeout) or the peer went away. `note` says what
// the header carried, for the transaction log. Does nothing when off.
bool accept_proxy_header(conn_rec *c, const SessionConfig &sc, std::string &note);

} // namespace esmtp
