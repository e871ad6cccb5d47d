// The DATA reader: finds the end of data, removes dot-stuffing, splits the
// header section into fields and streams the body.
//
// Only <CR><LF>.<CR><LF> ends data (the DATA command's CRLF counts as the
// first CRLF). Bare LF or CR never start or end a line for this purpose,
// so <LF>.<LF>, <LF>.<CR><LF>, <CR><LF>.<LF> and <CR>.<CR> are content
// (SMTP smuggling, CVE-2023-51764).
#pragma once

#include "engine/limits.hpp"
#include <esmtp/handler.hpp>

#include <cstdint>
#include <string>
#include <string_view>

namespace esmtp
{

class DataSink
{
  public:
    virtual void on_header(const HeaderField &field) = 0;
    virtual void on_eoh(std::string_view raw) = 0;
    virtual void on_body(std::string_view chunk) = 0;

  protected:
    ~DataSink() = default;
};

class DataReader
{
  public:
    explicit DataReader(const Limits &limits) : limits_(limits) {}

    // Start a new message.
    void reset();
    // Consume input; returns how many bytes were used. Stops right after the
    // terminating CRLF.CRLF (done() is then true) so that the caller can go
    // on with pipelined commands.
    std::size_t feed(std::string_view in, DataSink &sink);
    // BDAT (RFC 3030): content without dot-stuffing or end marker.
    void feed_raw(std::string_view in, DataSink &sink);
    // BDAT LAST: the content is complete (it may end without CRLF).
    void finish_raw(DataSink &sink);
    bool done() const { return state_ == State::done; }
    // Message octets after unstuffing.
    std::uint64_t size() const { return size_; }
    bool size_exceeded() const { return size_ > limits_.max_message_size; }
    // A text line longer than max_text_line was seen.
    bool line_too_long() const { return line_too_long_; }
    // A bare LF or bare CR was seen in the content (SMTP smuggling).
    bool bare_newline() const { return bare_newline_; }
    // ESMTPBareLineFeed normalize: DATA content gets CRLF for each bare LF
    // or CR (end-of-data detection is not affected), and the text-line
    // limit applies to each line so ended (its CRLF counted, as stored).
    void set_normalize(bool on) { normalize_ = on; }

  private:
    enum class State { line_start, dot, dot_cr, in_line, cr, done };
    enum class Section { header, body };

    void emit(std::string_view bytes, DataSink &sink);
    void emit_text(std::string_view bytes, DataSink &sink);
    void end_line(DataSink &sink);
    void bare_cr(DataSink &sink);
    std::size_t scan_body(std::string_view in, std::size_t i, DataSink &sink);
    void scan_raw(std::string_view bytes);
    void header_bytes(std::string_view bytes, DataSink &sink);
    void header_line_done(DataSink &sink);
    void flush_field(DataSink &sink);
    void end_headers(std::string_view sep, DataSink &sink);
    void flush_body(DataSink &sink);

    const Limits &limits_;
    State state_ = State::line_start;
    Section section_ = Section::header;
    std::uint64_t size_ = 0;
    std::size_t line_len_ = 0;
    bool line_too_long_ = false;
    bool bare_newline_ = false;
    bool normalize_ = false;
    char raw_last_ = 0;           // BDAT: the previous octet, across chunks
    bool raw_cr_pending_ = false; // BDAT: a chunk ended with CR
    // header section: the current field (possibly folded) and the current line
    std::string field_;
    std::string line_;
    // body: batch of content handed to on_body at the end of feed()
    std::string body_;
};

} // namespace esmtp
