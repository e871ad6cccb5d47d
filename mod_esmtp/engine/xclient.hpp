// XCLIENT (Postfix's XCLIENT_README): an authorized front end (nginx's
// mail proxy, a filter that reinjects mail) tells the server who the real
// client is. This parses the command's argument; Session::do_xclient
// applies it.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace esmtp
{

// The attributes offered in EHLO, in this order.
inline constexpr std::string_view kXClientAttributes = "NAME ADDR PORT PROTO HELO LOGIN DESTADDR DESTPORT";

// Values after xtext decoding; an attribute not sent is empty (nullopt).
// "unknown" stands for [UNAVAILABLE] and [TEMPUNAVAIL] in NAME and ADDR;
// an unavailable HELO or LOGIN is an empty string.
struct XClientAttrs {
    std::optional<std::string> name;     // client host name
    std::optional<std::string> addr;     // canonical IPv4 or IPv6 text (no IPV6: prefix)
    std::optional<unsigned> port;        // 0 when unavailable
    std::optional<bool> esmtp;           // PROTO: true ESMTP, false SMTP
    std::optional<std::string> helo;     // HELO/EHLO argument
    std::optional<std::string> login;    // SASL login name
    std::optional<std::string> destaddr; // server address the client connected to
    std::optional<unsigned> destport;
};

// Parses "ATTR=VALUE ..." (case-insensitive names, at least one). False
// with `error` set to the text of a 501 reply ("Bad XCLIENT attribute
// name: FOO", "Bad ADDR syntax: ...", "NAME too long").
bool parse_xclient(std::string_view arg, XClientAttrs &out, std::string &error);

} // namespace esmtp
