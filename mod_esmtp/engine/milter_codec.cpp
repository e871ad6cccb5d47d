#include "engine/milter_codec.hpp"
#include "engine/replies.hpp"
#include "engine/reply_format.hpp"

#include <algorithm>

namespace esmtp::milter
{

namespace
{

void put_u32(std::string &out, std::uint32_t v)
{
    out.push_back(static_cast<char>(v >> 24));
    out.push_back(static_cast<char>(v >> 16));
    out.push_back(static_cast<char>(v >> 8));
    out.push_back(static_cast<char>(v));
}

std::uint32_t get_u32(std::string_view s)
{
    auto b = [&](std::size_t i) { return static_cast<std::uint32_t>(static_cast<unsigned char>(s[i])); };
    return b(0) << 24 | b(1) << 16 | b(2) << 8 | b(3);
}

// A NUL-terminated string: what comes before the first NUL (a NUL in the
// MTA's data would end the field early on the filter's side anyway).
void put_cstr(std::string &data, std::string_view s)
{
    data.append(s.substr(0, s.find('\0')));
    data.push_back('\0');
}

// Reads a NUL-terminated string from `in`; false when no NUL is left.
bool take_cstr(std::string_view &in, std::string &out)
{
    std::size_t nul = in.find('\0');
    if (nul == std::string_view::npos)
        return false;
    out.assign(in.substr(0, nul));
    in.remove_prefix(nul + 1);
    return true;
}

// A header field name a filter may add: printable ASCII without ':' (RFC 5322 2.2).
bool field_name_ok(std::string_view n)
{
    if (n.empty() || n.size() > 997)
        return false;
    for (char ch : n) {
        auto c = static_cast<unsigned char>(ch);
        if (c < 33 || c > 126 || c == ':')
            return false;
    }
    return true;
}

// A header value a filter may set: no NUL, no CR or LF except as folding
// (an LF, optionally after CR, followed by a space or tab).
bool field_value_ok(std::string_view v)
{
    for (std::size_t i = 0; i < v.size(); ++i) {
        char c = v[i];
        if (c == '\r') {
            if (i + 1 >= v.size() || v[i + 1] != '\n')
                return false;
        } else if (c == '\n') {
            if (i + 1 >= v.size() || (v[i + 1] != ' ' && v[i + 1] != '\t'))
                return false;
        }
    }
    return true;
}

// An envelope address from a filter: "<addr>" or "addr", no controls.
bool address_ok(std::string_view a)
{
    if (a.empty() || a.size() > 998)
        return false;
    for (char ch : a) {
        auto c = static_cast<unsigned char>(ch);
        if (c < 32 || c == 127)
            return false;
    }
    return true;
}

} // namespace

// ---- encoder

void put_packet(std::string &out, char command, std::string_view data)
{
    put_u32(out, static_cast<std::uint32_t>(data.size() + 1));
    out.push_back(command);
    out.append(data);
}

void encode_optneg(std::string &out, std::uint32_t version, std::uint32_t actions, std::uint32_t steps)
{
    std::string d;
    put_u32(d, version);
    put_u32(d, actions);
    put_u32(d, steps);
    put_packet(out, cmd::optneg, d);
}

void encode_macros(std::string &out, char stage, const Macros &macros)
{
    std::string d(1, stage);
    for (const auto &[name, value] : macros) {
        put_cstr(d, name);
        put_cstr(d, value);
    }
    put_packet(out, cmd::macro, d);
}

void encode_connect(std::string &out, std::string_view hostname, char family, std::uint16_t port,
                    std::string_view address)
{
    std::string d;
    put_cstr(d, hostname);
    d.push_back(family);
    if (family != 'U') {
        d.push_back(static_cast<char>(port >> 8));
        d.push_back(static_cast<char>(port));
        put_cstr(d, address);
    }
    put_packet(out, cmd::connect, d);
}

void encode_helo(std::string &out, std::string_view name)
{
    std::string d;
    put_cstr(d, name);
    put_packet(out, cmd::helo, d);
}

namespace
{
void encode_path(std::string &out, char command, std::string_view path, const std::vector<std::string> &args)
{
    std::string d;
    std::string p;
    p.reserve(path.size() + 2);
    p.append("<").append(path).append(">");
    put_cstr(d, p);
    for (const auto &a : args)
        put_cstr(d, a);
    put_packet(out, command, d);
}
} // namespace

void encode_mail(std::string &out, std::string_view sender, const std::vector<std::string> &args)
{
    encode_path(out, cmd::mail, sender, args);
}

void encode_rcpt(std::string &out, std::string_view recipient, const std::vector<std::string> &args)
{
    encode_path(out, cmd::rcpt, recipient, args);
}

void encode_header(std::string &out, std::string_view name, std::string_view value)
{
    std::string d;
    d.reserve(name.size() + value.size() + 2);
    put_cstr(d, name);
    // a NUL in a header value would cut it: send what libmilter can hold
    put_cstr(d, value);
    put_packet(out, cmd::header, d);
}

void encode_body(std::string &out, std::string_view chunk)
{
    while (!chunk.empty()) {
        std::size_t n = std::min(chunk.size(), kMaxBodyChunk);
        put_packet(out, cmd::body, chunk.substr(0, n));
        chunk.remove_prefix(n);
    }
}

void encode_simple(std::string &out, char command)
{
    put_packet(out, command, {});
}

void encode_unknown(std::string &out, std::string_view line)
{
    std::string d;
    put_cstr(d, line);
    put_packet(out, cmd::unknown, d);
}

// ---- decoder

PacketReader::Status PacketReader::next(Packet &p)
{
    if (bad_)
        return Status::garbage;
    if (buf_.size() < 4)
        return Status::need_more;
    std::uint32_t len = get_u32(buf_);
    if (len == 0 || len > max_) {
        bad_ = true;
        return Status::garbage;
    }
    if (buf_.size() - 4 < len)
        return Status::need_more;
    p.command = buf_[4];
    p.data.assign(buf_, 5, len - 1);
    buf_.erase(0, 4 + static_cast<std::size_t>(len));
    return Status::packet;
}

bool parse_replycode(std::string_view text, Reply &out, std::string &error)
{
    out = Reply{};
    if (text.size() > 64 * 1024) {
        error = "reply text too long";
        return false;
    }
    // lines are separated by CRLF (a lone LF is taken too); a final line
    // break is dropped
    std::vector<std::string_view> lines;
    while (!text.empty()) {
        std::size_t nl = text.find('\n');
        std::string_view l = text.substr(0, nl);
        if (!l.empty() && l.back() == '\r')
            l.remove_suffix(1);
        lines.push_back(l);
        if (nl == std::string_view::npos)
            break;
        text.remove_prefix(nl + 1);
    }
    if (lines.empty() || lines.size() > 100) {
        error = lines.empty() ? "empty reply" : "too many reply lines";
        return false;
    }
    std::string code;
    for (std::size_t i = 0; i < lines.size(); ++i) {
        std::string_view l = lines[i];
        bool last = i + 1 == lines.size();
        if (l.size() < 3 || !std::all_of(l.begin(), l.begin() + 3, [](char c) { return c >= '0' && c <= '9'; })) {
            error = "reply line without a reply code";
            return false;
        }
        if (i == 0) {
            code.assign(l.substr(0, 3));
            if ((code[0] != '4' && code[0] != '5') || code[1] > '5') {
                error = "reply code " + code + " is not 4xx or 5xx";
                return false;
            }
        } else if (l.substr(0, 3) != code) {
            error = "reply lines with different codes";
            return false;
        }
        std::string_view rest = l.substr(3);
        if (!rest.empty()) {
            char sep = rest.front();
            if (sep != (last ? ' ' : '-') && !(sep == ' ' && last)) {
                error = "bad continuation in reply";
                return false;
            }
            rest.remove_prefix(1);
        } else if (!last) {
            error = "bad continuation in reply";
            return false;
        }
        // an enhanced code opens every line or none: take the first one's
        std::size_t sp = rest.find(' ');
        std::string_view word = rest.substr(0, sp);
        if (enhanced_code_syntax(word) && word[0] == code[0]) {
            if (i == 0)
                out.enhanced.assign(word);
            if (word == out.enhanced)
                rest = sp == std::string_view::npos ? std::string_view() : rest.substr(sp + 1);
        } else if (enhanced_code_syntax(word)) {
            error = "enhanced status code " + std::string(word) + " disagrees with reply code " + code;
            return false;
        }
        for (char ch : rest) {
            auto c = static_cast<unsigned char>(ch);
            if (c < 32 || c == 127) {
                error = "control character in reply text";
                return false;
            }
        }
        out.lines.emplace_back(rest);
    }
    out.code = std::stoi(code);
    return true;
}

bool decode(const Packet &p, Response &r, std::string &error)
{
    using K = Response::Kind;
    r = Response{};
    std::string_view d = p.data;
    auto no_data = [&](K k) {
        r.kind = k;
        return true; // data after a verdict is ignored, as libmilter never sends any
    };
    switch (p.command) {
    case 'O':
        if (d.size() < 12) {
            error = "short OPTNEG reply";
            return false;
        }
        r.kind = K::optneg;
        r.version = get_u32(d);
        r.actions = get_u32(d.substr(4));
        r.steps = get_u32(d.substr(8));
        return true;
    case 'a':
        return no_data(K::accept);
    case 'c':
        return no_data(K::continue_);
    case 'r':
        return no_data(K::reject);
    case 't':
        return no_data(K::tempfail);
    case 'd':
        return no_data(K::discard);
    case 'f':
        return no_data(K::connfail);
    case '4':
        return no_data(K::shutdown);
    case 'p':
        return no_data(K::progress);
    case 's':
        return no_data(K::skip);
    case 'l':
        return no_data(K::setsymlist);
    case 'y': {
        r.kind = K::replycode;
        std::string text;
        if (!take_cstr(d, text))
            text.assign(d); // a filter that forgot the NUL: take the whole packet
        return parse_replycode(text, r.reply, error) || (error = "bad REPLYCODE: " + error, false);
    }
    case 'h':
    case 'i':
    case 'm': {
        r.kind = p.command == 'h' ? K::add_header : p.command == 'i' ? K::insert_header : K::change_header;
        if (p.command != 'h') {
            if (d.size() < 4) {
                error = "short header modification";
                return false;
            }
            r.index = get_u32(d);
            d.remove_prefix(4);
        }
        if (!take_cstr(d, r.name) || !take_cstr(d, r.value)) {
            error = "header modification without its fields";
            return false;
        }
        if (!field_name_ok(r.name) || !field_value_ok(r.value)) {
            error = "bad header field name or value from filter";
            return false;
        }
        return true;
    }
    case 'b':
        r.kind = K::replace_body;
        r.value.assign(d);
        return true;
    case '+':
    case '-':
    case '2':
    case 'e': {
        r.kind = p.command == '+'   ? K::add_rcpt
                 : p.command == '-' ? K::del_rcpt
                 : p.command == '2' ? K::add_rcpt_par
                                    : K::change_from;
        if (!take_cstr(d, r.name) || !address_ok(r.name)) {
            error = "bad address in envelope modification";
            return false;
        }
        if ((p.command == '2' || p.command == 'e') && !d.empty()) {
            if (!take_cstr(d, r.value))
                r.value.assign(d);
            for (char ch : r.value)
                if (static_cast<unsigned char>(ch) < 32) {
                    error = "control character in ESMTP arguments";
                    return false;
                }
        }
        return true;
    }
    case 'q': {
        r.kind = K::quarantine;
        if (!take_cstr(d, r.value))
            r.value.assign(d);
        for (char &ch : r.value)
            if (static_cast<unsigned char>(ch) < 32 || ch == 127)
                ch = '?';
        if (r.value.size() > 1000)
            r.value.resize(1000);
        return true;
    }
    default:
        error = "unknown reply '";
        error += (static_cast<unsigned char>(p.command) >= 32 && p.command != 127) ? p.command : '?';
        error += "'";
        return false;
    }
}

const char *kind_name(Response::Kind k)
{
    using K = Response::Kind;
    switch (k) {
    case K::optneg:
        return "OPTNEG";
    case K::accept:
        return "ACCEPT";
    case K::continue_:
        return "CONTINUE";
    case K::reject:
        return "REJECT";
    case K::tempfail:
        return "TEMPFAIL";
    case K::discard:
        return "DISCARD";
    case K::replycode:
        return "REPLYCODE";
    case K::connfail:
        return "CONNFAIL";
    case K::shutdown:
        return "SHUTDOWN";
    case K::progress:
        return "PROGRESS";
    case K::skip:
        return "SKIP";
    case K::setsymlist:
        return "SETSYMLIST";
    case K::add_header:
        return "ADDHEADER";
    case K::insert_header:
        return "INSHEADER";
    case K::change_header:
        return "CHGHEADER";
    case K::replace_body:
        return "REPLBODY";
    case K::add_rcpt:
        return "ADDRCPT";
    case K::add_rcpt_par:
        return "ADDRCPT_PAR";
    case K::del_rcpt:
        return "DELRCPT";
    case K::change_from:
        return "CHGFROM";
    case K::quarantine:
        return "QUARANTINE";
    }
    return "?";
}

} // namespace esmtp::milter
