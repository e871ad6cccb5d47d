// Transaction log records: "YYYY-mm-dd HH:MM:SS <queue-id> <text> [<client>]".
#pragma once

#include <esmtp/handler.hpp>

#include <ctime>
#include <string>
#include <string_view>

namespace esmtp
{

// Levels of ESMTPLogLevel: the public esmtp::LogLevel names, plus off.
enum TxLogLevel {
    txlog_off = 0,
    txlog_session = log_session,
    txlog_commands = log_commands,
    txlog_events = log_events
};

// Newline-terminated record of printable ASCII. The queue id is left out
// when empty. So that a client cannot forge records, in every field a
// backslash is written "\\" and every octet outside 0x20-0x7e "\xhh"
// (lower-case hex): controls, C1, U+2028/U+2029 and UTF-8 alike.
// The same escaping for text bound elsewhere (httpd's error log).
std::string escape_log_text(std::string_view text);
std::string format_txlog(std::time_t t, std::string_view queue_id, std::string_view text, std::string_view client);

class TxLogSink
{
  public:
    virtual void write(int level, std::string_view record) = 0;
    // A problem the administrator must fix (SessionView::error): the glue
    // sends it to httpd's error log at level error.
    virtual void error(std::string_view text) = 0;

  protected:
    ~TxLogSink() = default;
};

} // namespace esmtp
