// Serialising replies on the wire (RFC 5321 4.2).
#pragma once

#include <esmtp/reply.hpp>

#include <string>
#include <string_view>

namespace esmtp
{

// Class default enhanced code for a reply code: 2.0.0 / 4.0.0 / 5.0.0, ""
// for 1xx/3xx.
std::string_view default_enhanced(int code);

// RFC 3463 class.subject.detail: class 2, 4 or 5, subject and detail of one
// to three digits ("5.1.1"). The one check of every enhanced code: a
// handler's reply, a filter's, the wire (anything else, a typo or an attempt
// to inject a line, is replaced by the class default).
bool enhanced_code_syntax(std::string_view e);

// Append `r` to `out`: "250-a\r\n250 b\r\n". With `enhanced` each line
// carries the enhanced code (r.enhanced when valid, or the class default). An empty
// text line list sends the code alone. CR and LF inside a text line are
// replaced by spaces so that a handler cannot inject reply lines.
void format_reply(const Reply &r, bool enhanced, std::string &out);
// One-line reply from parts (fixed module replies; no allocation).
void format_reply_line(int code, std::string_view enhanced_code, std::string_view text, bool enhanced,
                       std::string &out);

} // namespace esmtp
