// mod_esmtp public API: an SMTP reply as a handler returns it.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace esmtp
{

// A reply to one command. A default-constructed Reply (code 0) means "no
// opinion": the module then sends its own default for the event.
struct Reply {
    int code = 0;
    // RFC 3463 enhanced status code ("5.1.1"); its class (first digit) must
    // be the reply code's (a "550 2.1.5" is not sent: see handler.hpp).
    // Empty: the module fills in the class default for the event (2.0.0,
    // 4.0.0, 5.0.0 or a better one).
    std::string enhanced;
    // One entry per reply line; several lines give a multi-line reply.
    std::vector<std::string> lines;
    // Close the connection once the reply is sent (221/421 semantics).
    bool close = false;

    Reply() = default;
    Reply(int c, std::string text, std::string enh = {}, bool close_after = false)
        : code(c), enhanced(std::move(enh)), close(close_after)
    {
        lines.push_back(std::move(text));
    }
    Reply(int c, std::vector<std::string> text, std::string enh = {}, bool close_after = false)
        : code(c), enhanced(std::move(enh)), lines(std::move(text)), close(close_after)
    {
    }

    bool empty() const { return code == 0; }
    bool positive() const { return code >= 200 && code < 400; }
    bool transient() const { return code >= 400 && code < 500; }
    bool permanent() const { return code >= 500; }
};

} // namespace esmtp
