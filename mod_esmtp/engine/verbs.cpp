#include "engine/verbs.hpp"

#include "engine/defaults.hpp"

#include <array>

namespace esmtp
{

namespace
{

constexpr bool Y = true;
constexpr bool N = false;

// clang-format off
constexpr std::array<VerbRule, 17> kVerbs{{
    // verb          name        extension      junk refused hello needs_tx   in_tx in_bdat resets help tls  priv restarts auth
    {Verb::helo,     "HELO",     0,             Y,   N,      N,    Tx::none,  N,    N,      Y,     Y,   N,   N,   N,   N},
    {Verb::ehlo,     "EHLO",     0,             Y,   N,      N,    Tx::none,  N,    N,      Y,     Y,   N,   N,   N,   N},
    {Verb::mail,     "MAIL",     0,             Y,   N,      Y,    Tx::none,  Y,    N,      N,     Y,   Y,   N,   N,   Y},
    {Verb::rcpt,     "RCPT",     0,             N,   N,      N,    Tx::mail,  N,    Y,      N,     Y,   Y,   N,   N,   N},
    {Verb::data,     "DATA",     0,             N,   N,      N,    Tx::rcpt,  N,    Y,      N,     Y,   Y,   N,   N,   N},
    {Verb::bdat,     "BDAT",     ext_chunking,  N,   N,      N,    Tx::rcpt,  N,    N,      N,     Y,   Y,   N,   N,   N},
    {Verb::rset,     "RSET",     0,             Y,   N,      N,    Tx::none,  N,    N,      Y,     Y,   N,   N,   N,   N},
    {Verb::noop,     "NOOP",     0,             Y,   N,      N,    Tx::none,  N,    N,      N,     Y,   N,   N,   N,   N},
    {Verb::quit,     "QUIT",     0,             N,   Y,      N,    Tx::none,  N,    N,      N,     Y,   N,   N,   N,   N},
    {Verb::help,     "HELP",     0,             Y,   N,      N,    Tx::none,  N,    N,      N,     Y,   N,   N,   N,   N},
    {Verb::vrfy,     "VRFY",     0,             Y,   N,      N,    Tx::none,  N,    N,      N,     Y,   N,   N,   N,   N},
    // EXPN's default is 502: not named by HELP
    {Verb::expn,     "EXPN",     0,             Y,   N,      N,    Tx::none,  N,    N,      N,     N,   N,   N,   N,   N},
    // RFC 3207: not inside a transaction; offered only by ESMTPStartTLS on a
    // plaintext session (Session::do_starttls answers 502/503 otherwise)
    {Verb::starttls, "STARTTLS", 0,             N,   N,      N,    Tx::none,  Y,    N,      N,     Y,   N,   N,   N,   N},
    // Postfix's XCLIENT: trusted front ends only (even when CONNECT refused
    // the front end's own address), not inside a transaction
    {Verb::xclient,  "XCLIENT",  0,             N,   Y,      N,    Tx::none,  Y,    Y,      N,     N,   N,   Y,   Y,   N},
    // RFC 4954: after EHLO, not inside a transaction, once per session
    // (Session::do_auth: 502 when ESMTPAuth is off, 538 before TLS)
    {Verb::auth,     "AUTH",     0,             N,   N,      Y,    Tx::none,  Y,    Y,      N,     Y,   Y,   N,   N,   N},
    // the handler's commands and unknown lines: the handler decides
    {Verb::custom,   "COMMAND",  0,             N,   N,      N,    Tx::none,  N,    N,      N,     N,   N,   N,   N,   N},
    {Verb::unknown,  "UNKNOWN",  0,             N,   N,      N,    Tx::none,  N,    N,      N,     N,   N,   N,   N,   N},
}};
// clang-format on

} // namespace

const VerbRule &verb_rule(Verb v)
{
    for (const auto &r : kVerbs)
        if (r.verb == v)
            return r;
    return kVerbs.back();
}

std::string help_text(const SessionConfig &cfg, Hello hello, bool tls)
{
    std::string s = "Commands:";
    for (const auto &r : kVerbs) {
        if (!r.in_help || (r.extension && (!(cfg.extensions & r.extension) || hello == Hello::helo)))
            continue;
        if (r.verb == Verb::starttls && (cfg.starttls == StartTls::off || tls))
            continue;
        if (r.verb == Verb::auth && (!cfg.auth_mechanisms || (cfg.auth_require_tls && !tls)))
            continue;
        s.append(" ").append(r.name);
    }
    if (cfg.commands)
        for (std::string_view n : cfg.commands->names())
            s.append(" ").append(n);
    return s;
}

const char *phase_name(Phase p)
{
    switch (p) {
    case Phase::greeting:
        return "greeting";
    case Phase::command:
        return "command";
    case Phase::data:
        return "data";
    case Phase::bdat:
        return "bdat";
    case Phase::tls:
        return "tls";
    case Phase::sasl:
        return "sasl";
    case Phase::sasl_password:
        return "sasl_password";
    case Phase::auth:
        return "auth";
    case Phase::closed:
        return "closed";
    }
    return "?";
}

const char *hello_name(Hello h)
{
    switch (h) {
    case Hello::none:
        return "none";
    case Hello::refused:
        return "refused";
    case Hello::helo:
        return "helo";
    case Hello::ehlo:
        return "ehlo";
    }
    return "?";
}

const char *tx_name(Tx t)
{
    switch (t) {
    case Tx::none:
        return "none";
    case Tx::mail:
        return "mail";
    case Tx::rcpt:
        return "rcpt";
    case Tx::data:
        return "data";
    case Tx::bdat:
        return "bdat";
    case Tx::aborted:
        return "aborted";
    }
    return "?";
}

} // namespace esmtp
