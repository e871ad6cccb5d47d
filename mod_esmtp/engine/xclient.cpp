#include "engine/xclient.hpp"

#include "engine/dsn.hpp"
#include "engine/proxy_protocol.hpp"
#include "engine/text.hpp"

#include <arpa/inet.h>
#include <sys/socket.h>

#include <cctype>

namespace esmtp
{

namespace
{

// NAME and HELO: up to 255 octets (XCLIENT_README note); the others are
// short by nature.
constexpr std::size_t kMaxName = 255;
constexpr std::size_t kMaxLogin = 255;

bool unavailable(std::string_view v)
{
    return iequals(v, "[UNAVAILABLE]") || iequals(v, "[TEMPUNAVAIL]");
}

// A host name or HELO argument: printable ASCII without spaces.
bool printable_word(std::string_view s)
{
    if (s.empty())
        return false;
    for (char ch : s) {
        auto c = static_cast<unsigned char>(ch);
        if (c <= 32 || c >= 127)
            return false;
    }
    return true;
}

// NAME: a host name (labels of letters, digits, '-' and '_', as Postfix's
// valid_hostname takes them): it goes into Received: as the client's name.
bool host_name(std::string_view s)
{
    if (s.empty())
        return false;
    std::size_t label = 0;
    for (char ch : s) {
        auto c = static_cast<unsigned char>(ch);
        if (c == '.') {
            if (label == 0)
                return false;
            label = 0;
        } else if (std::isalnum(c) || c == '-' || c == '_') {
            if (++label > 63)
                return false;
        } else {
            return false;
        }
    }
    return label > 0;
}

bool parse_port(std::string_view s, unsigned &port)
{
    if (unavailable(s)) {
        port = 0;
        return true;
    }
    return parse_decimal(s, 5, 65535, port);
}

bool parse_address(std::string_view s, std::string &out)
{
    if (unavailable(s)) {
        out = "unknown";
        return true;
    }
    int af = AF_INET;
    if (s.size() > 5 && iequals(s.substr(0, 5), "IPV6:")) {
        af = AF_INET6;
        s.remove_prefix(5);
    }
    unsigned char buf[16];
    return parse_ip(s, af, buf, out);
}

} // namespace

bool parse_xclient(std::string_view arg, XClientAttrs &out, std::string &error)
{
    out = XClientAttrs{};
    bool any = false;
    while (true) {
        while (!arg.empty() && (arg.front() == ' ' || arg.front() == '\t'))
            arg.remove_prefix(1);
        if (arg.empty())
            break;
        std::size_t end = arg.find_first_of(" \t");
        std::string_view item = arg.substr(0, end);
        arg.remove_prefix(item.size());
        std::size_t eq = item.find('=');
        if (eq == std::string_view::npos || eq == 0) {
            error = "Syntax: XCLIENT attribute=value...";
            return false;
        }
        std::string_view key = item.substr(0, eq);
        std::string upper = proxy_printable(key, 64);
        for (char &c : upper)
            c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
        std::string value;
        if (!decode_xtext(item.substr(eq + 1), value)) {
            error = "Bad " + upper + " syntax: bad xtext";
            return false;
        }
        auto bad = [&](const char *what) {
            error = "Bad " + upper + " syntax: " + proxy_printable(value, 64) +
                    (what ? std::string(" (") + what + ")" : "");
            return false;
        };
        if (iequals(key, "NAME")) {
            if (value.size() > kMaxName)
                return bad("too long");
            if (unavailable(value))
                out.name = "unknown";
            else if (host_name(value))
                out.name = value;
            else
                return bad(nullptr);
        } else if (iequals(key, "ADDR") || iequals(key, "DESTADDR")) {
            std::string a;
            if (!parse_address(value, a))
                return bad(nullptr);
            (iequals(key, "ADDR") ? out.addr : out.destaddr) = a;
        } else if (iequals(key, "PORT") || iequals(key, "DESTPORT")) {
            unsigned p;
            if (!parse_port(value, p))
                return bad(nullptr);
            (iequals(key, "PORT") ? out.port : out.destport) = p;
        } else if (iequals(key, "PROTO")) {
            if (iequals(value, "ESMTP"))
                out.esmtp = true;
            else if (iequals(value, "SMTP"))
                out.esmtp = false;
            else
                return bad("SMTP or ESMTP");
        } else if (iequals(key, "HELO")) {
            if (value.size() > kMaxName)
                return bad("too long");
            if (unavailable(value))
                out.helo = "";
            else if (printable_word(value))
                out.helo = value;
            else
                return bad(nullptr);
        } else if (iequals(key, "LOGIN")) {
            if (value.size() > kMaxLogin)
                return bad("too long");
            if (unavailable(value))
                out.login = "";
            else if (printable_word(value))
                out.login = value;
            else
                return bad(nullptr);
        } else {
            error = "Bad XCLIENT attribute name: " + proxy_printable(key, 64);
            return false;
        }
        any = true;
    }
    if (!any) {
        error = "Syntax: XCLIENT attribute=value...";
        return false;
    }
    return true;
}

} // namespace esmtp
