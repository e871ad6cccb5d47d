#include "engine/trace.hpp"

#include <cstdio>
#include <cstdlib>

namespace esmtp
{

std::string rfc5322_date(std::time_t t)
{
    struct tm tm;
    localtime_r(&t, &tm);
    char buf[64];
    std::size_t n = std::strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S ", &tm);
    long off = tm.tm_gmtoff / 60;
    char sign = off < 0 ? '-' : '+';
    off = std::labs(off);
    std::snprintf(buf + n, sizeof buf - n, "%c%02ld%02ld", sign, off / 60, off % 60);
    return buf;
}

std::string trace_headers(const SessionView &s, std::time_t now)
{
    const Envelope &env = s.envelope();
    std::string h;
    h.reserve(256);
    h += "Return-Path: <";
    h += env.sender.mailbox;
    h += ">\r\nReceived: from ";
    h += s.helo_name().empty() ? std::string_view("unknown") : s.helo_name();
    h += " (";
    if (s.remote_host() != s.client_address()) {
        h += s.remote_host();
        h += ' ';
    }
    h += '[';
    h += s.client_address();
    h += "])\r\n\tby ";
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
