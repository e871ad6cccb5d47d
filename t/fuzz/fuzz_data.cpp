// libFuzzer target: esmtp::DataReader in DATA mode (end marker and
// dot-stuffing) and in raw BDAT mode.
//
// Input: [flags byte] [limits byte] then the chunked payload of
// fuzz_util.hpp. The same reader is used for four runs (DATA whole, DATA in
// pieces, BDAT whole, BDAT in pieces) with reset() in between.
// Invariants:
//  - DATA: the reader agrees with a line-based reference model: data ends
//    at the first CRLF "." CRLF (the DATA command's CRLF counts as the
//    first CRLF), the octets consumed are exactly those up to it, done()
//    turns true in the piece holding it and not before, the content is the
//    lines before it with one leading dot removed (and, with normalize,
//    every CR or LF that is not part of a CRLF turned into CRLF), the
//    bare-newline and line-length flags are those of the reference (with
//    normalize, a bare CR or LF ends a text line for the length limit); input
//    that does not end is completed with "\r\n.\r\n";
//  - BDAT: the content is the input byte for byte, bare_newline() is "a CR
//    not followed by LF or an LF not preceded by CR";
//  - both: size() equals the octets handed to the sink; the sink's pieces
//    (header fields' raw, the end-of-header separator, body chunks) put end
//    to end are the content; header fields come before the one eoh, body
//    chunks after it; a field's raw is a field-name, ':', lines ending in
//    CRLF and continued with WSP, at most max_header_field octets, and its
//    value has no CRLF; the sink sees the same fields and content whatever
//    the chunking.
#include "engine/data_reader.hpp"
#include "fuzz_util.hpp"

#include <string>
#include <string_view>
#include <vector>

namespace
{

struct Field {
    std::string name, value, raw;
    bool operator==(const Field &o) const { return name == o.name && value == o.value && raw == o.raw; }
};

class CheckingSink final : public esmtp::DataSink
{
  public:
    explicit CheckingSink(const esmtp::Limits &limits) : limits_(limits) {}

    void on_header(const esmtp::HeaderField &f) override
    {
        FUZZ_CHECK(!eoh_seen);
        std::string_view raw = f.raw;
        FUZZ_CHECK(!f.name.empty() && raw.size() >= f.name.size() + 3);
        FUZZ_CHECK(raw.substr(0, f.name.size()) == f.name && raw[f.name.size()] == ':');
        for (char ch : f.name) {
            auto c = static_cast<unsigned char>(ch);
            FUZZ_CHECK(c >= 33 && c <= 126 && c != ':');
        }
        FUZZ_CHECK(raw.substr(raw.size() - 2) == "\r\n");
        // every line break but the last is folding: CRLF followed by WSP
        for (std::size_t p = raw.find("\r\n"); p + 2 < raw.size(); p = raw.find("\r\n", p + 2))
            FUZZ_CHECK(raw[p + 2] == ' ' || raw[p + 2] == '\t');
        FUZZ_CHECK(raw.size() <= limits_.max_header_field);
        FUZZ_CHECK(f.value.find("\r\n") == std::string_view::npos);
        FUZZ_CHECK(f.value.empty() || (f.value.front() != ' ' && f.value.front() != '\t'));
        fields.push_back({std::string(f.name), std::string(f.value), std::string(raw)});
        all.append(raw);
    }
    void on_eoh(std::string_view raw) override
    {
        FUZZ_CHECK(!eoh_seen);
        FUZZ_CHECK(raw.empty() || raw == "\r\n");
        eoh_seen = true;
        eoh = raw;
        all.append(raw);
    }
    void on_body(std::string_view chunk) override
    {
        FUZZ_CHECK(eoh_seen);
        FUZZ_CHECK(!chunk.empty());
        body.append(chunk);
        all.append(chunk);
    }

    bool same_as(const CheckingSink &o) const
    {
        return fields == o.fields && eoh_seen == o.eoh_seen && eoh == o.eoh && body == o.body && all == o.all;
    }

    std::vector<Field> fields;
    bool eoh_seen = false;
    std::string eoh;
    std::string body;
    std::string all; // everything handed over, in order

  private:
    const esmtp::Limits &limits_;
};

struct Expected {
    std::size_t end = std::string::npos; // octets up to and including CRLF.CRLF
    std::string content;
    bool bare = false;
    bool too_long = false;
};

// The DATA reference model: CRLF-separated lines; "." alone ends the data.
Expected reference_data(std::string_view in, bool normalize, std::size_t max_text_line)
{
    Expected e;
    std::size_t start = 0;
    for (;;) {
        std::size_t crlf = in.find("\r\n", start);
        if (crlf == std::string_view::npos)
            return e; // no end in sight
        std::string_view line = in.substr(start, crlf - start);
        if (line == ".") {
            e.end = crlf + 2;
            return e;
        }
        // The limit counts CRLF and a stuffed dot (wire octets); with
        // normalize each bare CR or LF ends a line of its own, stored with
        // CRLF, so every such piece is measured separately.
        if (!normalize) {
            if (line.size() + 2 > max_text_line)
                e.too_long = true;
        } else {
            std::size_t piece = 0;
            for (char c : line) {
                if (c == '\r' || c == '\n') {
                    if (piece + 2 > max_text_line)
                        e.too_long = true;
                    piece = 0;
                } else {
                    ++piece;
                }
            }
            if (piece + 2 > max_text_line)
                e.too_long = true;
        }
        if (!line.empty() && line.front() == '.')
            line.remove_prefix(1);
        for (char c : line) {
            if (c == '\r' || c == '\n') {
                e.bare = true;
                if (normalize) {
                    e.content += "\r\n";
                    continue;
                }
            }
            e.content.push_back(c);
        }
        e.content += "\r\n";
        start = crlf + 2;
    }
}

bool has_bare_newline(std::string_view s)
{
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '\r' && (i + 1 == s.size() || s[i + 1] != '\n'))
            return true;
        if (s[i] == '\n' && (i == 0 || s[i - 1] != '\r'))
            return true;
    }
    return false;
}

void check_common(const esmtp::DataReader &r, const CheckingSink &sink, const esmtp::Limits &limits)
{
    FUZZ_CHECK(r.size() == sink.all.size());
    FUZZ_CHECK(r.size_exceeded() == (r.size() > limits.max_message_size));
    FUZZ_CHECK(sink.eoh_seen); // at the end of data the header section is over
}

void run_data(esmtp::DataReader &r, CheckingSink &sink, const std::vector<std::string_view> &pieces, const Expected &e,
              const esmtp::Limits &limits, bool normalize)
{
    r.reset();
    std::size_t consumed = 0;
    for (std::string_view piece : pieces) {
        bool was_done = r.done();
        std::size_t used = r.feed(piece, sink);
        FUZZ_CHECK(used <= piece.size());
        if (was_done)
            FUZZ_CHECK(used == 0);
        consumed += used;
        // done() exactly once the octets up to CRLF.CRLF are in
        FUZZ_CHECK(r.done() == (consumed == e.end));
        if (!r.done())
            FUZZ_CHECK(used == piece.size());
    }
    FUZZ_CHECK(r.done());
    if (sink.all != e.content) {
        std::fprintf(stderr, "content:   %s\nreference: %s\n", fuzz::show(sink.all).c_str(),
                     fuzz::show(e.content).c_str());
        FUZZ_CHECK(!"DATA content differs from the reference");
    }
    FUZZ_CHECK(r.bare_newline() == e.bare);
    FUZZ_CHECK(r.line_too_long() == e.too_long);
    check_common(r, sink, limits);
}

void run_bdat(esmtp::DataReader &r, CheckingSink &sink, const std::vector<std::string_view> &pieces,
              std::string_view whole, const esmtp::Limits &limits)
{
    r.reset();
    for (std::string_view piece : pieces) {
        r.feed_raw(piece, sink);
        FUZZ_CHECK(!r.done());
    }
    r.finish_raw(sink);
    FUZZ_CHECK(r.done());
    std::uint64_t size = r.size();
    r.feed_raw("more", sink); // ignored once done
    FUZZ_CHECK(r.size() == size);
    FUZZ_CHECK(sink.all == whole);
    FUZZ_CHECK(r.bare_newline() == has_bare_newline(whole));
    check_common(r, sink, limits);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size)
{
    std::string_view in(reinterpret_cast<const char *>(data), size);
    unsigned flags = fuzz::take_byte(in);
    unsigned lim = fuzz::take_byte(in);
    bool normalize = flags & 1;
    esmtp::Limits limits;
    if (flags & 2) {
        limits.max_text_line = 3 + lim % 40;
        limits.max_header_field = 4 + lim % 97;
        limits.max_message_size = 8 * (lim % 64);
    }
    fuzz::Chunked c = fuzz::split_input(in);

    // DATA: complete input that has no end.
    std::string payload(c.payload);
    Expected e = reference_data(payload, normalize, limits.max_text_line);
    std::vector<std::string_view> pieces = c.pieces;
    static const std::string_view terminator = "\r\n.\r\n";
    if (e.end == std::string::npos) {
        payload += terminator;
        e = reference_data(payload, normalize, limits.max_text_line);
        FUZZ_CHECK(e.end != std::string::npos);
        pieces.push_back(terminator);
    }

    esmtp::DataReader reader(limits);
    reader.set_normalize(normalize);
    CheckingSink data_whole(limits), data_pieces(limits);
    run_data(reader, data_whole, {payload}, e, limits, normalize);
    run_data(reader, data_pieces, pieces, e, limits, normalize);
    FUZZ_CHECK(data_whole.same_as(data_pieces));

    CheckingSink bdat_whole(limits), bdat_pieces(limits);
    run_bdat(reader, bdat_whole, {c.payload}, c.payload, limits);
    run_bdat(reader, bdat_pieces, c.pieces, c.payload, limits);
    FUZZ_CHECK(bdat_whole.same_as(bdat_pieces));
    return 0;
}
