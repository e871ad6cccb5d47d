// HELO and EHLO, and the EHLO extension keywords.
#include "engine/session.hpp"
#include "engine/session_internal.hpp"

#include "engine/text.hpp"
#include "engine/xclient.hpp"

#include <algorithm>

namespace esmtp
{

namespace
{

// HELO/EHLO argument: the first word, printable ASCII. Real clients send
// names with '_' and other oddities, so the domain syntax is not enforced
// beyond that (as Postfix does by default).
bool valid_helo(std::string_view d)
{
    if (d.empty() || d.size() > 255)
        return false;
    for (char ch : d) {
        auto c = static_cast<unsigned char>(ch);
        if (c <= 32 || c >= 127)
            return false;
    }
    return true;
}

constexpr struct {
    Extension bit;
    const char *name;
} kExtensions[] = {
    {ext_pipelining, "PIPELINING"},
    {ext_size, "SIZE"},
    {ext_8bitmime, "8BITMIME"},
    {ext_enhancedstatuscodes, "ENHANCEDSTATUSCODES"},
    {ext_smtputf8, "SMTPUTF8"},
    {ext_chunking, "CHUNKING"},
    {ext_dsn, "DSN"},
    {ext_requiretls, "REQUIRETLS"},
};

} // namespace

const char *extension_name(Extension e)
{
    for (const auto &x : kExtensions)
        if (x.bit == e)
            return x.name;
    return "";
}

unsigned extension_by_name(std::string_view name)
{
    for (const auto &x : kExtensions) {
        std::string_view n(x.name);
        if (n.size() == name.size() && istarts_with(name, n))
            return x.bit;
    }
    return 0;
}

void Session::do_helo(std::string_view arg, const VerbRule &rule, bool extended)
{
    std::string_view domain = arg.substr(0, arg.find_first_of(" \t"));
    if (!valid_helo(domain)) {
        reply(501, "5.5.4", extended ? "Syntax: EHLO hostname" : "Syntax: HELO hostname");
        return;
    }
    if (rule.resets_tx)
        reset_transaction(extended ? "EHLO" : "HELO");
    // The handler sees the new name while it is asked; a refusal restores
    // the previous one.
    std::string previous = std::move(helo_);
    Hello previous_hello = state_.hello;
    helo_.assign(domain);
    transit({state_.phase, extended ? Hello::ehlo : Hello::helo, state_.tx}, extended ? "EHLO" : "HELO");
    std::vector<std::string> ext;
    Reply r;
    if (!extended) {
        r = ask(Event::helo, [&] { return handler_->helo(*this, domain); });
    } else {
        for (const auto &x : kExtensions) {
            // DSN and REQUIRETLS: below, when the handler carries them
            if (!(cfg_.extensions & x.bit) || x.bit == ext_dsn || x.bit == ext_requiretls)
                continue;
            if (x.bit == ext_size)
                ext.push_back("SIZE " + std::to_string(cfg_.limits.max_message_size));
            else
                ext.emplace_back(x.name);
        }
        if (cfg_.starttls != StartTls::off && !conn_.tls && !conn_.tls_unavailable)
            ext.emplace_back("STARTTLS");
        if (xclient_allowed())
            ext.push_back("XCLIENT " + std::string(kXClientAttributes));
        // RFC 4954 4: not before TLS unless ESMTPAuthRequireTLS Off
        if (cfg_.auth_mechanisms && (conn_.tls || !cfg_.auth_require_tls))
            ext.push_back("AUTH " + auth_mechanism_list(cfg_.auth_mechanisms));
        // Only what the handler carries on to the next hop (esmtp::Carries);
        // REQUIRETLS only over TLS (RFC 8689 3).
        if (carried() & carries_dsn)
            ext.emplace_back("DSN");
        if ((carried() & carries_requiretls) && conn_.tls)
            ext.emplace_back("REQUIRETLS");
        r = ask(Event::ehlo, [&] { return handler_->ehlo(*this, domain, ext); });
    }
    if (!r.empty() && !r.positive()) {
        helo_ = std::move(previous);
        transit({state_.phase, previous_hello, state_.tx}, "HELO/EHLO refused");
        reply(r);
        return;
    }
    // What the reply offers (a handler may have taken them out again).
    auto offered = [&ext](std::string_view keyword) {
        return std::any_of(ext.begin(), ext.end(), [&](const std::string &e) { return iequals(e, keyword); });
    };
    dsn_offered_ = extended && (carried() & carries_dsn) && offered("DSN");
    requiretls_offered_ = extended && (carried() & carries_requiretls) && conn_.tls && offered("REQUIRETLS");
    if (!extended) {
        reply(r, Reply(250, cfg_.hostname), false);
        return;
    }
    // A handler's text replaces the greeting line only.
    Reply out(250, r.lines.empty() ? cfg_.hostname : r.lines.front());
    for (auto &e : ext)
        out.lines.push_back(std::move(e));
    reply(out, Reply{}, false);
}

} // namespace esmtp
