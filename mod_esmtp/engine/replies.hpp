// The handler events, their default replies and the replies a handler may
// give for each: one table, so that a handler's mistake (a 354 from RCPT, a
// "550 2.1.5") is caught in one place, logged, and replaced before the
// session acts on it.
#pragma once

#include <esmtp/reply.hpp>

#include <string>
#include <string_view>

namespace esmtp
{

enum class Event { connect, helo, ehlo, mail, rcpt, data, eom, rset, noop, vrfy, expn, help, quit, command, unknown };

// A module reply with fixed text; formatted without allocating.
struct Canned {
    int code;
    std::string_view enhanced;
    std::string_view text;
};

const char *event_name(Event e);

// The module's default reply for the event. Its text is empty where the
// session fills it in (greeting, HELO/EHLO, EOM's queue id, HELP).
Canned default_reply(Event e);

// What is wrong with a handler's (non-empty) reply to `e`, or "" when it
// may be sent: the code must be a reply code (2yz..5yz, y at most 5); a
// positive code must be one the event allows (e.g. RCPT 250/251, DATA 354,
// CONNECT 220, QUIT 221); QUIT allows nothing else; an enhanced code must
// be RFC 3463 syntax with the class of the reply code.
std::string reply_problem(Event e, const Reply &r);

// What replaces an invalid reply: an empty Reply (the module's default)
// where the handler meant to accept and the event commits nothing (CONNECT,
// HELO, EHLO, RSET, NOOP, VRFY, EXPN, HELP, the handler's commands,
// unknown lines) and always for QUIT; otherwise 451 4.3.0 (the handler
// meant to refuse, or the event decides about mail: MAIL, RCPT, DATA, EOM).
Reply replacement_reply(Event e, const Reply &invalid);

// The reply for a handler that threw.
Reply internal_error_reply();

} // namespace esmtp
