#include "engine/txlog_format.hpp"

namespace esmtp
{

namespace
{

// Printable ASCII passes; a backslash becomes "\\" and every other octet
// (C0, DEL, and everything >= 0x80: C1 controls, U+0085, U+2028, U+2029,
// bidi overrides, UTF-8 addresses, invalid bytes) "\xhh", as httpd's
// access log writes them. A record is then one line for any reader, and the
// escaping reads one way only.
void append_clean(std::string &out, std::string_view s)
{
    static constexpr char hex[] = "0123456789abcdef";
    for (char ch : s) {
        auto c = static_cast<unsigned char>(ch);
        if (c >= 0x20 && c < 0x7f && c != '\\') {
            out.push_back(ch);
        } else if (c == '\\') {
            out.append("\\\\");
        } else {
            out.append("\\x");
            out.push_back(hex[c >> 4]);
            out.push_back(hex[c & 0xf]);
        }
    }
}

} // namespace

std::string escape_log_text(std::string_view text)
{
    std::string out;
    out.reserve(text.size());
    append_clean(out, text);
    return out;
}

std::string format_txlog(std::time_t t, std::string_view queue_id, std::string_view text, std::string_view client)
{
    struct tm tm;
    localtime_r(&t, &tm);
    char date[32];
    std::size_t n = std::strftime(date, sizeof date, "%Y-%m-%d %H:%M:%S", &tm);
    std::string r;
    r.reserve(n + queue_id.size() + text.size() + client.size() + 8);
    r.append(date, n);
    r.push_back(' ');
    if (!queue_id.empty()) {
        append_clean(r, queue_id);
        r.push_back(' ');
    }
    append_clean(r, text);
    if (!client.empty()) {
        r.append(" [");
        append_clean(r, client);
        r.push_back(']');
    }
    r.push_back('\n');
    return r;
}

} // namespace esmtp
