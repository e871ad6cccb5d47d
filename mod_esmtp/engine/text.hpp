// Small parsers the protocol front ends share (address.cpp, XCLIENT, the
// PROXY protocol): case-insensitive words, decimal numbers, IP addresses;
// and the text of a peer (a command's stderr, an application's answer) made
// fit for an SMTP reply line.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace esmtp
{

// ASCII case-insensitive equality.
bool iequals(std::string_view a, std::string_view b);

// A decimal number of one to `max_digits` digits (no sign, no spaces) not
// above `max`; `out` is left alone when false.
bool parse_decimal(std::string_view s, std::size_t max_digits, unsigned max, unsigned &out);

// A number of seconds from 1 to `max` (the timeouts of directives and
// handler options): decimal digits only; `out` is left alone when false.
bool parse_seconds(std::string_view s, unsigned max, unsigned &out);

// An IPv4 (`af` AF_INET) or IPv6 (AF_INET6) address: its 4 or 16 octets in
// `bytes` and its canonical text (inet_ntop) in `text`.
bool parse_ip(std::string_view s, int af, unsigned char *bytes, std::string &text);

// The first line of `text`, blanks trimmed, at most `max` octets, every
// octet outside printable ASCII replaced by '?' (it goes into a reply line).
std::string reply_line(std::string_view text, std::size_t max);

} // namespace esmtp
