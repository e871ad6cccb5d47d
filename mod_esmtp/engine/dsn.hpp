// RFC 3461's xtext, and the syntax of the DSN parameters (RFC 3461 4):
// RET= and ENVID= of MAIL, NOTIFY= and ORCPT= of RCPT. The session accepts them only for a handler
// that carries DSN on (esmtp::carries_dsn); what a client sends is checked
// here, so a smarthost gets nothing it would refuse and a notice nothing
// that breaks its report.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace esmtp
{

// RFC 3461 4.4: an ENVID is at most 100 characters.
constexpr std::size_t kMaxEnvid = 100;
// RFC 3461 4: RET and ENVID lengthen a MAIL line by up to 110 characters,
// NOTIFY and ORCPT a RCPT line by up to 500 (and RFC 8689's " REQUIRETLS"
// is 11): a server offering them takes command lines this much longer.
constexpr std::size_t kDsnCommandLineExtra = 500;

// Decodes RFC 3461 xtext ("+" HEXCHAR HEXCHAR for octets outside "!".."~",
// "+" and "="; XCLIENT's values too). False on bad xtext.
bool decode_xtext(std::string_view in, std::string &out);
// xtext (RFC 3461 4): printable US-ASCII but "+" and "=", and "+XX" (two
// upper-case hex digits) for any octet. Also the decoded text must be
// printable US-ASCII (RFC 3461 4.2 and 4.4: it goes into a notice): no
// control character hidden in a "+0D+0A". Empty is not valid here.
bool valid_xtext(std::string_view v);
// RET=FULL|HDRS (any case): "FULL" or "HDRS", empty when not valid.
std::string_view dsn_ret(std::string_view v);
// ENVID=xtext, at most kMaxEnvid characters.
bool valid_envid(std::string_view v);
// NOTIFY=NEVER, or SUCCESS, FAILURE and DELAY separated by commas (any
// case, each at most once; NEVER alone).
bool valid_notify(std::string_view v);
// ORCPT=addr-type;xtext: an atom ("rfc822", "utf-8"), ";", a non-empty
// xtext.
bool valid_orcpt(std::string_view v);

} // namespace esmtp
