#include "engine/txlog_format.hpp"

namespace esmtp
{

namespace
{

void append_clean(std::string &out, std::string_view s)
{
    for (char ch : s) {
        auto c = static_cast<unsigned char>(ch);
        out.push_back(c < 32 || c == 127 ? '?' : ch);
    }
}

} // namespace

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
