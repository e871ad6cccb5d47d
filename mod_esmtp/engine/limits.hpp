// Every protocol limit, named, with its default (Postfix-style).
#pragma once

#include <cstddef>
#include <cstdint>

namespace esmtp
{

struct Limits {
    // RFC 5321 4.5.3.1.4: command line including CRLF.
    std::size_t max_command_line = 512;
    // RFC 5321 4.5.3.1.6: text line of DATA including CRLF.
    std::size_t max_text_line = 1000;
    // ESMTPMaxMessageSize: message octets (after dot-unstuffing, without trace headers).
    std::uint64_t max_message_size = 10240000;
    // ESMTPMaxRecipients.
    std::size_t max_recipients = 100;
    // ESMTPMaxErrors: error replies before 421 and close (0: no limit).
    unsigned max_errors = 20;
    // ESMTPMaxJunkCommands: NOOP, RSET, VRFY, EXPN, HELP per session before
    // 421 (0: no limit).
    unsigned max_junk_commands = 100;
    // A single header field (folded lines together) bigger than this ends
    // header parsing: the rest goes to the handler as body, byte-exact.
    std::size_t max_header_field = 64 * 1024;
};

} // namespace esmtp
