#include "engine/data_reader.hpp"

#include <cstring>

namespace esmtp
{

namespace
{

constexpr std::size_t kBodyBatch = 64 * 1024;

bool is_wsp(char c)
{
    return c == ' ' || c == '\t';
}

// RFC 5322 field-name: printable US-ASCII except ':', then ':'.
bool starts_with_field_name(std::string_view line)
{
    std::size_t i = 0;
    while (i < line.size()) {
        auto c = static_cast<unsigned char>(line[i]);
        if (c == ':')
            return i > 0;
        if (c < 33 || c > 126)
            return false;
        ++i;
    }
    return false;
}

void release(std::string &s)
{
    s.clear();
    if (s.capacity() > kBodyBatch)
        s.shrink_to_fit();
}

} // namespace

void DataReader::reset()
{
    state_ = State::line_start;
    section_ = Section::header;
    size_ = 0;
    line_len_ = 0;
    line_too_long_ = false;
    bare_newline_ = false;
    raw_last_ = 0;
    raw_cr_pending_ = false;
    release(field_);
    release(line_);
    release(body_);
}

std::size_t DataReader::feed(std::string_view in, DataSink &sink)
{
    std::size_t i = 0;
    const std::size_t n = in.size();
    while (i < n && state_ != State::done) {
        switch (state_) {
        case State::line_start:
            if (in[i] == '.') {
                // wire octet counted for the line limit, removed from content
                line_len_ = 1;
                state_ = State::dot;
                ++i;
            } else {
                state_ = State::in_line;
            }
            break;
        case State::dot:
            if (in[i] == '\r') {
                state_ = State::dot_cr;
                ++i;
            } else {
                state_ = State::in_line; // a stuffed dot: dropped (RFC 5321 4.5.2)
            }
            break;
        case State::dot_cr:
            if (in[i] == '\n') {
                state_ = State::done;
                ++i;
            } else {
                bare_newline_ = true;
                bare_cr(sink); // ".<CR>x" is content, not an end
                state_ = State::in_line;
            }
            break;
        case State::in_line: {
            if (section_ == Section::body && !normalize_) {
                i = scan_body(in, i, sink);
                break;
            }
            const char *cr = static_cast<const char *>(std::memchr(in.data() + i, '\r', n - i));
            std::size_t end = cr ? std::size_t(cr - in.data()) : n;
            if (end > i)
                emit_text(in.substr(i, end - i), sink);
            i = end;
            if (cr) {
                state_ = State::cr;
                ++i;
            }
            break;
        }
        case State::cr:
            if (in[i] == '\n') {
                end_line(sink);
                state_ = State::line_start;
                ++i;
            } else {
                bare_newline_ = true;
                bare_cr(sink); // bare CR is content, never a line end for end-of-data
                state_ = State::in_line;
            }
            break;
        case State::done:
            break;
        }
    }
    if (state_ == State::done && section_ == Section::header) {
        flush_field(sink);
        end_headers({}, sink);
    }
    flush_body(sink);
    return i;
}

std::size_t DataReader::scan_body(std::string_view in, std::size_t i, DataSink &sink)
{
    // The body's fast path: whole lines ending in CRLF and not followed by
    // a dot go out as one span; anything else (a CR near the end of the
    // input, a bare CR, CRLF followed by '.') is left to the state machine.
    const std::size_t n = in.size();
    const std::size_t start = i;
    std::size_t line = i;         // start of the current line within `in`
    std::size_t len0 = line_len_; // octets of the current line before `in`
    std::size_t stop = n;
    bool at_cr = false;
    for (;;) {
        const char *cr = static_cast<const char *>(std::memchr(in.data() + i, '\r', n - i));
        if (!cr)
            break;
        std::size_t c = std::size_t(cr - in.data());
        if (c + 2 >= n || in[c + 1] != '\n' || in[c + 2] == '.') {
            stop = c;
            at_cr = true;
            break;
        }
        if (std::memchr(in.data() + line, '\n', c - line))
            bare_newline_ = true;
        if (len0 + (c + 2 - line) > limits_.max_text_line)
            line_too_long_ = true;
        len0 = 0;
        line = i = c + 2;
    }
    if (stop > line && std::memchr(in.data() + line, '\n', stop - line))
        bare_newline_ = true;
    if (stop > start)
        emit(in.substr(start, stop - start), sink);
    line_len_ = len0 + (stop - line);
    if (!at_cr)
        return n;
    state_ = State::cr;
    return stop + 1;
}

void DataReader::emit_text(std::string_view bytes, DataSink &sink)
{
    // Text between CRs: any LF in it is bare.
    const char *lf = static_cast<const char *>(std::memchr(bytes.data(), '\n', bytes.size()));
    if (!lf) {
        emit(bytes, sink);
        return;
    }
    bare_newline_ = true;
    if (!normalize_) {
        emit(bytes, sink);
        return;
    }
    while (!bytes.empty()) {
        std::size_t pos = bytes.find('\n');
        if (pos == std::string_view::npos) {
            emit(bytes, sink);
            break;
        }
        if (pos)
            emit(bytes.substr(0, pos), sink);
        end_line(sink);
        bytes.remove_prefix(pos + 1);
    }
}

void DataReader::end_line(DataSink &sink)
{
    // The limit applies to the line as it is stored, CRLF included: with
    // normalize a bare LF or CR ends a text line as CRLF does.
    emit("\r\n", sink);
    if (line_len_ > limits_.max_text_line)
        line_too_long_ = true;
    line_len_ = 0;
}

void DataReader::bare_cr(DataSink &sink)
{
    if (normalize_)
        end_line(sink);
    else
        emit("\r", sink);
}

void DataReader::scan_raw(std::string_view bytes)
{
    // BDAT content: every LF must follow a CR, every CR precede an LF.
    for (std::size_t i = 0; i < bytes.size(); ++i) {
        char c = bytes[i];
        if (raw_cr_pending_ && c != '\n')
            bare_newline_ = true;
        if (c == '\n' && raw_last_ != '\r')
            bare_newline_ = true;
        raw_cr_pending_ = c == '\r';
        raw_last_ = c;
    }
}

void DataReader::feed_raw(std::string_view in, DataSink &sink)
{
    if (state_ == State::done || in.empty())
        return;
    if (!bare_newline_)
        scan_raw(in);
    emit(in, sink);
    flush_body(sink);
}

void DataReader::finish_raw(DataSink &sink)
{
    if (state_ == State::done)
        return;
    state_ = State::done;
    if (raw_cr_pending_)
        bare_newline_ = true;
    if (section_ == Section::header) {
        flush_field(sink);
        // a last line without CRLF (allowed with BDAT) is body
        end_headers({}, sink);
        body_.append(line_);
        release(line_);
    }
    flush_body(sink);
}

void DataReader::emit(std::string_view bytes, DataSink &sink)
{
    size_ += bytes.size();
    line_len_ += bytes.size();
    if (section_ == Section::body) {
        body_.append(bytes);
        if (body_.size() >= kBodyBatch)
            flush_body(sink);
        return;
    }
    header_bytes(bytes, sink);
}

void DataReader::header_bytes(std::string_view bytes, DataSink &sink)
{
    // Split at CRLF. A bare LF does not end a header line (it stays inside
    // the line, as it does for the end-of-data rule).
    while (!bytes.empty()) {
        std::size_t lf = bytes.find('\n');
        std::size_t take = lf == std::string_view::npos ? bytes.size() : lf + 1;
        line_.append(bytes.substr(0, take));
        bytes.remove_prefix(take);
        if (field_.size() + line_.size() > limits_.max_header_field) {
            // Too big to be a header field we keep in memory: the header
            // section ends here and the bytes go on as body, unchanged.
            end_headers({}, sink);
            body_.append(field_);
            body_.append(line_);
            body_.append(bytes);
            release(field_);
            release(line_);
            return;
        }
        if (lf != std::string_view::npos && line_.size() >= 2 && line_[line_.size() - 2] == '\r') {
            header_line_done(sink);
            if (section_ == Section::body) {
                body_.append(bytes);
                return;
            }
        }
    }
}

void DataReader::header_line_done(DataSink &sink)
{
    if (line_ == "\r\n") {
        flush_field(sink);
        line_.clear();
        end_headers("\r\n", sink);
        return;
    }
    if (is_wsp(line_[0])) {
        if (!field_.empty()) {
            field_.append(line_); // folded continuation
            line_.clear();
            return;
        }
    } else if (starts_with_field_name(line_)) {
        flush_field(sink);
        field_.swap(line_);
        line_.clear();
        return;
    }
    // Not a header line: the header section ends without separator and this
    // line is the first of the body.
    flush_field(sink);
    end_headers({}, sink);
    body_.append(line_);
    line_.clear();
}

void DataReader::flush_field(DataSink &sink)
{
    if (field_.empty())
        return;
    std::string_view raw = field_;
    std::size_t colon = raw.find(':');
    std::string_view name = raw.substr(0, colon);
    std::string_view rest = raw.substr(colon + 1);
    // unfold: drop each CRLF (the folding WSP stays), then leading WSP and
    // the final CRLF
    std::string value;
    value.reserve(rest.size());
    for (std::size_t i = 0; i < rest.size(); ++i) {
        if (rest[i] == '\r' && i + 1 < rest.size() && rest[i + 1] == '\n') {
            ++i;
            continue;
        }
        value.push_back(rest[i]);
    }
    std::size_t lead = 0;
    while (lead < value.size() && is_wsp(value[lead]))
        ++lead;
    HeaderField f{name, std::string_view(value).substr(lead), raw};
    sink.on_header(f);
    field_.clear();
}

void DataReader::end_headers(std::string_view sep, DataSink &sink)
{
    if (section_ != Section::header)
        return;
    section_ = Section::body;
    sink.on_eoh(sep);
}

void DataReader::flush_body(DataSink &sink)
{
    if (section_ != Section::body || body_.empty())
        return;
    sink.on_body(body_);
    body_.clear();
}

} // namespace esmtp
