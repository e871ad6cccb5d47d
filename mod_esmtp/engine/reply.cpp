#include "engine/reply_format.hpp"

#include <cstdio>

namespace esmtp
{

std::string_view default_enhanced(int code)
{
    switch (code / 100) {
    case 2:
        return "2.0.0";
    case 4:
        return "4.0.0";
    case 5:
        return "5.0.0";
    default:
        return {};
    }
}

namespace
{

void append_text(std::string &out, std::string_view text)
{
    // A handler must not be able to end the reply line early.
    for (char c : text)
        out.push_back(c == '\r' || c == '\n' ? ' ' : c);
}

} // namespace

bool enhanced_code_syntax(std::string_view e)
{
    if (e.size() < 5 || (e[0] != '2' && e[0] != '4' && e[0] != '5') || e[1] != '.')
        return false;
    std::size_t parts = 0, digits = 0;
    for (char c : e.substr(2)) {
        if (c == '.') {
            if (digits == 0)
                return false;
            ++parts;
            digits = 0;
        } else if (c >= '0' && c <= '9') {
            if (++digits > 3)
                return false;
        } else {
            return false;
        }
    }
    return parts == 1 && digits > 0;
}

void format_reply(const Reply &r, bool enhanced, std::string &out)
{
    char code[8];
    int code_value = r.code >= 100 && r.code <= 599 ? r.code : 451;
    std::snprintf(code, sizeof code, "%03d", code_value);
    std::string_view enh =
        enhanced_code_syntax(r.enhanced) ? std::string_view(r.enhanced) : default_enhanced(code_value);
    if (!enhanced)
        enh = {};
    std::size_t n = r.lines.empty() ? 1 : r.lines.size();
    for (std::size_t i = 0; i < n; ++i) {
        out.append(code, 3);
        bool has_text = !enh.empty() || (!r.lines.empty() && !r.lines[i].empty());
        if (i + 1 != n)
            out.push_back('-');
        else if (has_text)
            out.push_back(' ');
        if (!enh.empty()) {
            out.append(enh);
            if (!r.lines.empty() && !r.lines[i].empty())
                out.push_back(' ');
        }
        if (!r.lines.empty())
            append_text(out, r.lines[i]);
        out.append("\r\n");
    }
}

void format_reply_line(int code, std::string_view enhanced_code, std::string_view text, bool enhanced, std::string &out)
{
    char digits[4] = {char('0' + code / 100 % 10), char('0' + code / 10 % 10), char('0' + code % 10), 0};
    out.append(digits, 3);
    std::string_view enh =
        enhanced ? (enhanced_code.empty() ? default_enhanced(code) : enhanced_code) : std::string_view{};
    if (!enh.empty() || !text.empty())
        out.push_back(' ');
    if (!enh.empty()) {
        out.append(enh);
        if (!text.empty())
            out.push_back(' ');
    }
    append_text(out, text);
    out.append("\r\n");
}

} // namespace esmtp
