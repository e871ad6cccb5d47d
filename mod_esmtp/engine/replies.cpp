#include "engine/replies.hpp"

#include "engine/reply_format.hpp"

#include <array>

namespace esmtp
{

namespace
{

struct EventRule {
    Event event;
    const char *name;
    Canned dflt;
    std::array<int, 3> positive; // the 2xx/3xx codes a handler may return (0: unused slot)
    bool commits;                // accepting decides about mail: an invalid reply becomes 451
};

// clang-format off
constexpr std::array<EventRule, 15> kEvents{{
    {Event::connect, "CONNECT", {220, "", ""},                                     {220},           false},
    {Event::helo,    "HELO",    {250, "", ""},                                     {250},           false},
    {Event::ehlo,    "EHLO",    {250, "", ""},                                     {250},           false},
    {Event::mail,    "MAIL",    {250, "2.1.0", "Ok"},                              {250},           true},
    {Event::rcpt,    "RCPT",    {250, "2.1.5", "Ok"},                              {250, 251},      true},
    {Event::data,    "DATA",    {354, "", "End data with <CR><LF>.<CR><LF>"},      {354},           true},
    {Event::eom,     "EOM",     {250, "2.0.0", ""},                                {250},           true},
    {Event::rset,    "RSET",    {250, "2.0.0", "Ok"},                              {250},           false},
    {Event::noop,    "NOOP",    {250, "2.0.0", "Ok"},                              {250},           false},
    {Event::vrfy,    "VRFY",    {252, "2.0.0", "Cannot VRFY user; try RCPT to attempt delivery"}, {250, 251, 252}, false},
    {Event::expn,    "EXPN",    {502, "5.5.1", "EXPN not available"},              {250, 252},      false},
    {Event::help,    "HELP",    {214, "2.0.0", ""},                                {211, 214},      false},
    {Event::quit,    "QUIT",    {221, "2.0.0", "Bye"},                             {221},           false},
    {Event::command, "COMMAND", {502, "5.5.1", "Command not implemented"},         {250, 251, 252}, false},
    {Event::unknown, "UNKNOWN", {500, "5.5.2", "Command unrecognized"},            {250, 251, 252}, false},
}};
// clang-format on

const EventRule &rule(Event e)
{
    for (const auto &r : kEvents)
        if (r.event == e)
            return r;
    return kEvents.back();
}

} // namespace

const char *event_name(Event e)
{
    return rule(e).name;
}

Canned default_reply(Event e)
{
    return rule(e).dflt;
}

std::string reply_problem(Event e, const Reply &r)
{
    const EventRule &er = rule(e);
    std::string code = std::to_string(r.code);
    if (r.code < 200 || r.code > 599 || r.code / 10 % 10 > 5)
        return "reply code " + code + " is no SMTP reply code";
    if (e == Event::quit && r.code != 221)
        return "QUIT is always answered 221, not " + code;
    if (r.code < 400) {
        bool allowed = false;
        for (int c : er.positive)
            allowed = allowed || c == r.code;
        if (!allowed)
            return "reply code " + code + " is not valid for " + er.name;
    }
    if (!r.enhanced.empty()) {
        if (!enhanced_code_syntax(r.enhanced))
            return "enhanced status code '" + r.enhanced + "' is not RFC 3463 syntax";
        if (r.code < 300 && r.enhanced[0] != '2')
            return "enhanced status code " + r.enhanced + " disagrees with reply code " + code;
        if (r.code >= 400 && r.enhanced[0] != code[0])
            return "enhanced status code " + r.enhanced + " disagrees with reply code " + code;
    }
    return {};
}

Reply replacement_reply(Event e, const Reply &invalid)
{
    if (e == Event::quit || (!rule(e).commits && invalid.code >= 200 && invalid.code < 400))
        return Reply{};
    return internal_error_reply();
}

Reply internal_error_reply()
{
    return Reply(451, "Internal error; try again later", "4.3.0");
}

} // namespace esmtp
