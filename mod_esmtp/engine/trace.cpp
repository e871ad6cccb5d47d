#include "engine/trace.hpp"

#include "engine/address.hpp"

#include <cstdio>
#include <cstdlib>

namespace esmtp
{

std::string rfc5322_date(std::time_t t)
{
    // Built by hand, not with strftime: %a and %b follow LC_TIME, which any
    // module loaded into httpd may change with setlocale(). RFC 5322 3.3
    // wants these English names and a numeric zone.
    static constexpr const char *kDays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static constexpr const char *kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                              "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    struct tm tm;
    localtime_r(&t, &tm);
    long off = tm.tm_gmtoff / 60;
    char sign = off < 0 ? '-' : '+';
    off = std::labs(off);
    char buf[64];
    std::snprintf(buf, sizeof buf, "%s, %02d %s %04d %02d:%02d:%02d %c%02ld%02ld", kDays[(tm.tm_wday % 7 + 7) % 7],
                  tm.tm_mday, kMonths[(tm.tm_mon % 12 + 12) % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec,
                  sign, off / 60, off % 60);
    return buf;
}

namespace
{

// A name from the client (HELO, a front end's XCLIENT) as Received: may
// carry it: a domain or address literal as is; anything else with the
// characters that could fake the header's structure (comments, the
// address in brackets) replaced by '?', as Postfix neuters them.
std::string trace_name(std::string_view name)
{
    std::string out(name);
    if (valid_domain_or_literal(name))
        return out;
    for (char &c : out)
        if (static_cast<unsigned char>(c) <= 32 || static_cast<unsigned char>(c) >= 127 ||
            std::string_view("<>()[]\\\";@").find(c) != std::string_view::npos)
            c = '?';
    return out;
}

} // namespace

std::string trace_headers(const SessionView &s, std::time_t now)
{
    const Envelope &env = s.envelope();
    std::string h;
    h.reserve(256);
    h += "Return-Path: <";
    h += env.sender.mailbox;
    h += ">\r\nReceived: from ";
    h += s.helo_name().empty() ? std::string("unknown") : trace_name(s.helo_name());
    h += " (";
    if (s.remote_host() != s.client_address()) {
        h += trace_name(s.remote_host());
        h += ' ';
    }
    h += '[';
    h += s.client_address();
    h += "])\r\n\t";
    // As Postfix writes it, so that operators read it the same way.
    if (const TlsInfo &t = s.tls(); t.active && !t.protocol.empty()) {
        h += "(using ";
        h += t.protocol;
        h += " with cipher ";
        h += t.cipher;
        h += " (" + std::to_string(t.bits) + "/" + std::to_string(t.alg_bits) + " bits))\r\n\t";
    }
    h += "by ";
    h += s.hostname();
    h += " (mod_esmtp) with ";
    h += s.protocol();
    h += " id ";
    h += s.queue_id();
    if (env.recipients.size() == 1) {
        h += "\r\n\tfor <";
        h += env.recipients.front().path.mailbox;
        h += '>';
    }
    h += "; ";
    h += rfc5322_date(now);
    h += "\r\n";
    return h;
}

} // namespace esmtp
