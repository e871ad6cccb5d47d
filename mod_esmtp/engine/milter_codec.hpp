// The milter protocol (version 6, as Postfix's milter8 speaks it), MTA side:
// a sans-I/O encoder of the commands the MTA sends and a decoder of the
// filter's replies. Every packet is a 4-octet big-endian length (the command
// octet included), the command octet, then its data. The decoder never
// trusts a length: a packet bigger than the limit, or a field that does not
// fit its packet, is garbage (the connection is then useless).
#pragma once

#include <esmtp/reply.hpp>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace esmtp::milter
{

constexpr std::uint32_t kVersion = 6;
// Body data per B packet (libmilter's MILTER_CHUNK_SIZE).
constexpr std::size_t kMaxBodyChunk = 65535;
// The biggest reply packet taken: libmilter sends at most 64 KiB of data a
// packet by default and 1 MiB when built with a bigger MILTER_MAX_DATA_SIZE.
constexpr std::size_t kMaxReplyPacket = 1024 * 1024 + 1;

// Commands (MTA to filter).
namespace cmd
{
constexpr char abort = 'A', body = 'B', connect = 'C', macro = 'D', eob = 'E', helo = 'H', quit_nc = 'K', header = 'L',
               mail = 'M', eoh = 'N', optneg = 'O', quit = 'Q', rcpt = 'R', data = 'T', unknown = 'U';
}

// Actions the filter may take (SMFIF_*).
enum Action : std::uint32_t {
    act_addhdrs = 0x01,
    act_chgbody = 0x02,
    act_addrcpt = 0x04,
    act_delrcpt = 0x08,
    act_chghdrs = 0x10,
    act_quarantine = 0x20,
    act_chgfrom = 0x40,
    act_addrcpt_par = 0x80,
    act_setsymlist = 0x100,
};
// What this MTA carries out (SETSYMLIST is read and ignored: we send our
// own macro set).
constexpr std::uint32_t kActionsSupported = 0x1ff;

// Protocol steps (SMFIP_*).
enum Step : std::uint32_t {
    p_noconnect = 0x1,
    p_nohelo = 0x2,
    p_nomail = 0x4,
    p_norcpt = 0x8,
    p_nobody = 0x10,
    p_nohdrs = 0x20,
    p_noeoh = 0x40,
    p_nr_hdr = 0x80,
    p_nounknown = 0x100,
    p_nodata = 0x200,
    p_skip = 0x400,
    p_rcpt_rej = 0x800,
    p_nr_conn = 0x1000,
    p_nr_helo = 0x2000,
    p_nr_mail = 0x4000,
    p_nr_rcpt = 0x8000,
    p_nr_data = 0x10000,
    p_nr_unkn = 0x20000,
    p_nr_eoh = 0x40000,
    p_nr_body = 0x80000,
    p_hdr_leadspc = 0x100000,
};
// The steps this MTA lets a filter skip or not answer (all but RCPT_REJ:
// the filter is not told of recipients the module refused).
constexpr std::uint32_t kStepsSupported = 0x1fffff & ~std::uint32_t(p_rcpt_rej);

// ---- encoder: each appends one or more whole packets to `out`

void put_packet(std::string &out, char command, std::string_view data);
void encode_optneg(std::string &out, std::uint32_t version, std::uint32_t actions, std::uint32_t steps);
using Macros = std::vector<std::pair<std::string, std::string>>;
// D: the macros of the command `stage` that follows. Names are sent as
// given ("j", "{client_addr}"); a NUL inside a name or value cuts it there.
void encode_macros(std::string &out, char stage, const Macros &macros);
// C: family '4' / '6' with port and address, 'L' (unix) with the path,
// 'U' (unknown) with neither.
void encode_connect(std::string &out, std::string_view hostname, char family, std::uint16_t port,
                    std::string_view address);
void encode_helo(std::string &out, std::string_view name);
// M / R: the path in angle brackets, then each ESMTP argument.
void encode_mail(std::string &out, std::string_view sender, const std::vector<std::string> &args);
void encode_rcpt(std::string &out, std::string_view recipient, const std::vector<std::string> &args);
void encode_header(std::string &out, std::string_view name, std::string_view value);
// B: split into packets of at most kMaxBodyChunk octets.
void encode_body(std::string &out, std::string_view chunk);
void encode_simple(std::string &out, char command); // T, N, E, A, Q, K
void encode_unknown(std::string &out, std::string_view line);

// ---- decoder

struct Packet {
    char command = 0;
    std::string data;
};

// Splits the filter's byte stream into packets.
class PacketReader
{
  public:
    enum class Status { need_more, packet, garbage };
    explicit PacketReader(std::size_t max_packet = kMaxReplyPacket) : max_(max_packet) {}
    void feed(std::string_view bytes) { buf_.append(bytes); }
    // The next complete packet into `p`; garbage when a length is 0 or
    // beyond the limit (then nothing more can be read).
    Status next(Packet &p);
    bool buffered() const { return !buf_.empty(); }
    void clear() { buf_.clear(); }

  private:
    std::string buf_;
    std::size_t max_;
    bool bad_ = false;
};

// A filter's reply, decoded.
struct Response {
    enum class Kind {
        optneg,        // O: version, actions, steps
        accept,        // a
        continue_,     // c
        reject,        // r
        tempfail,      // t
        discard,       // d
        replycode,     // y: reply holds the code, enhanced code and lines
        connfail,      // f
        shutdown,      // 4
        progress,      // p
        skip,          // s
        setsymlist,    // l (read and ignored)
        add_header,    // h: name, value
        insert_header, // i: index, name, value
        change_header, // m: index, name, value (empty value deletes)
        replace_body,  // b: value holds the body data
        add_rcpt,      // + : name holds the recipient
        add_rcpt_par,  // 2 : name, value holds the ESMTP args
        del_rcpt,      // - : name
        change_from,   // e : name, value holds the ESMTP args
        quarantine,    // q : value holds the reason
    };
    Kind kind = Kind::continue_;
    std::uint32_t version = 0, actions = 0, steps = 0; // optneg
    std::uint32_t index = 0;
    std::string name, value;
    Reply reply; // replycode
    // A modification (only valid at end of body).
    bool is_modification() const { return kind >= Kind::add_header; }
    // A final verdict for the command (not progress, not a modification).
    bool is_verdict() const { return kind >= Kind::accept && kind <= Kind::skip && kind != Kind::progress; }
};

// Decode one reply packet. False with `error` set when the packet is not a
// reply this MTA knows, or its fields do not fit.
bool decode(const Packet &p, Response &r, std::string &error);

// The text of a REPLYCODE ("550 5.7.1 text", several lines joined by CRLF
// with "550-" continuation): code 4xx or 5xx, the same code on every line,
// an optional RFC 3463 code of the same class, printable text. False when
// it is none of that.
bool parse_replycode(std::string_view text, Reply &out, std::string &error);

const char *kind_name(Response::Kind k);

} // namespace esmtp::milter
