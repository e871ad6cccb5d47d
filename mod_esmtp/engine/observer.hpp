// What a session reports for the live counters (mod_status): an httpd-free
// interface the engine calls at a few counting points and the glue
// implements (httpd/status.cpp, shared memory). Every call is cheap and
// never fails; a session without an observer reports nothing.
#pragma once

#include "engine/verbs.hpp"

#include <cstdint>
#include <string_view>

namespace esmtp
{

// Why the server refused or ended something (the "rejects by cause" rows).
enum class RejectCause : unsigned {
    relay,         // RCPT to a domain that is not ours
    limits,        // size, recipients, line length, errors, junk commands
    bare_newline,  // bare <LF>/<CR> in a command or message (smuggling)
    early_talker,  // the client talked before the greeting
    pipelining,    // unauthorised pipelining (RFC 2920)
    timeout,       // ESMTPTimeout, ESMTPDataTimeout, ESMTPMinDataRate
    handler_error, // the handler threw or could not be created
    delivery,      // the handler could not take a message: 4xx at DATA or end of data
    pregreet,      // ESMTPPregreet: talked before the end of the greeting
    dnsbl,         // ESMTPDNSBL: the client's score reached the threshold
    greylist,      // ESMTPGreylist: 450 to a new (network, sender, recipient)
    count_
};

// The stable names (the ?auto keys are ESMTPRejects + the name in CamelCase).
constexpr const char *reject_cause_name(RejectCause c)
{
    switch (c) {
    case RejectCause::relay:
        return "relay";
    case RejectCause::limits:
        return "limits";
    case RejectCause::bare_newline:
        return "bare_newline";
    case RejectCause::early_talker:
        return "early_talker";
    case RejectCause::pipelining:
        return "pipelining";
    case RejectCause::timeout:
        return "timeout";
    case RejectCause::handler_error:
        return "handler_error";
    case RejectCause::delivery:
        return "delivery";
    case RejectCause::pregreet:
        return "pregreet";
    case RejectCause::dnsbl:
        return "dnsbl";
    case RejectCause::greylist:
        return "greylist";
    case RejectCause::count_:
        break;
    }
    return "?";
}

class SessionObserver
{
  public:
    virtual ~SessionObserver() = default;
    // The session's phase changed (Session::transit).
    virtual void phase_changed(Phase from, Phase to) {}
    // A command line was read: `verb` is the verb's name from the verb
    // table ("MAIL"), never the client's bytes ("?" for an unknown verb).
    virtual void command(std::string_view verb) {}
    // Octets read from the client (commands and message data).
    virtual void received(std::uint64_t octets) {}
    // A message got its final reply: 2xx (accepted), 4xx or 5xx.
    virtual void message(int code, unsigned recipients, std::uint64_t size) {}
    // Something was refused for `cause`; `what` is a short text for the
    // list of recent errors (no client data beyond what the log shows).
    virtual void rejected(RejectCause cause, std::string_view what) {}
};

} // namespace esmtp
