// RFC 5321 4.1.2 path and ESMTP parameter parsing for MAIL and RCPT.
#pragma once

#include <esmtp/handler.hpp>

#include <string>
#include <string_view>

namespace esmtp
{

enum class PathError {
    ok,
    syntax,        // 501 5.1.3 / 5.5.4
    bad_parameter, // 501 5.5.4: a parameter that is not esmtp-keyword[=value]
};

struct MailArgs {
    Path path;
    Params params;
};

// Parse what follows "MAIL FROM:" / "RCPT TO:" (leading spaces allowed):
// "<path> [SP param]*". `allow_null` accepts "<>" (reverse-path).
// `allow_postmaster` accepts "<postmaster>" without domain (forward-path).
// Source routes ("<@a,@b:user@c>") are accepted and dropped (RFC 5321 4.1.2).
PathError parse_path_and_params(std::string_view in, bool allow_null, bool allow_postmaster, MailArgs &out);

// Well-formed UTF-8 (no overlong forms, surrogates or code points past U+10FFFF).
bool valid_utf8(std::string_view s);
bool has_non_ascii(std::string_view s);

// A mailbox "local@domain" (no angle brackets). Quoted local parts allowed.
// UTF-8 is accepted (RFC 6531 syntax); whether the client may use it
// (SMTPUTF8) is the session's decision.
bool parse_mailbox(std::string_view in, Path &out);

// The mailbox in the form that names it once (RFC 5321 4.1.2: a quoted
// local part that needs no quoting is the same mailbox): a quoted local part
// loses its quoting when its content is a Dot-string, and otherwise keeps
// quotes with a backslash only before '"' and '\\'; the whole is lower-cased
// (local parts compare case-insensitively here, as Postfix's maps do).
// `mailbox` must have passed parse_mailbox.
std::string canonical_mailbox(std::string_view mailbox);

// An address literal ("[192.0.2.1]", "[IPv6:...]") rather than a domain name.
inline bool is_address_literal(std::string_view domain)
{
    return !domain.empty() && domain.front() == '[';
}

// RFC 5321 Domain or address literal ("[192.0.2.1]", "[IPv6:...]").
bool valid_domain_or_literal(std::string_view d);

} // namespace esmtp
