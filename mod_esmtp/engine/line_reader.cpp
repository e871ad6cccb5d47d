#include "engine/line_reader.hpp"

#include <cstring>

namespace esmtp
{

void LineReader::reset()
{
    line_.clear();
    overflow_ = false;
    complete_ = false;
}

LineReader::Status LineReader::feed(std::string_view in, std::size_t &consumed)
{
    if (complete_) {
        // the previous line was handed out: start a new one
        line_.clear();
        complete_ = false;
    }
    const char *lf = static_cast<const char *>(std::memchr(in.data(), '\n', in.size()));
    std::size_t take = lf ? std::size_t(lf - in.data()) : in.size();
    consumed = lf ? take + 1 : take;
    if (!overflow_) {
        // max_ counts CRLF, so at most max_ - 2 octets of content (a CR
        // before the LF is content until the LF arrives: allow one more).
        if (line_.size() + take > max_ - 1) {
            overflow_ = true;
            line_.clear();
            line_.shrink_to_fit();
        } else {
            line_.append(in.data(), take);
        }
    }
    if (!lf)
        return Status::need_more;
    if (overflow_) {
        overflow_ = false;
        complete_ = true;
        line_.clear();
        return Status::too_long;
    }
    bare_ = line_.empty() || line_.back() != '\r';
    if (!bare_)
        line_.pop_back();
    if (!bare_ && line_.find('\r') != std::string::npos)
        bare_ = true;
    if (bare_ && line_.size() > max_ - 2) {
        // bare LF: the limit still counts two octets for the line end
        complete_ = true;
        line_.clear();
        return Status::too_long;
    }
    complete_ = true;
    return Status::line;
}

} // namespace esmtp
