// Splits the command stream into lines with a hard length limit, so that a
// line without end costs bounded memory.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace esmtp
{

class LineReader
{
  public:
    enum class Status {
        need_more, // all input consumed, no complete line yet
        line,      // `line()` holds a complete line (without CRLF)
        too_long,  // a line over the limit ended; it was discarded
    };

    explicit LineReader(std::size_t max_line = 512) : max_(max_line) {}

    // Consume from `in` up to and including the next LF. `consumed` says
    // how much was used. A line ends at LF; a CR right before it is removed.
    Status feed(std::string_view in, std::size_t &consumed);
    std::string_view line() const { return line_; }
    // The last line ended with a bare LF, or holds a bare CR.
    bool bare_newline() const { return bare_; }
    void reset();
    // Bytes of an unfinished line are buffered (for the early-talker and
    // STARTTLS checks to come).
    bool has_partial() const { return (!complete_ && !line_.empty()) || overflow_; }

  private:
    std::size_t max_;
    std::string line_;
    bool overflow_ = false;
    bool complete_ = false;
    bool bare_ = false;
};

} // namespace esmtp
