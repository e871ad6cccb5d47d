// libFuzzer target: the milter reply decoder (engine/milter_codec), which
// reads the bytes of a filter the module does not control.
//
// Input: [limit byte] [split byte] then the byte stream from the filter.
// Invariants:
//  - PacketReader: the stream fed whole and fed in pieces of `split` octets
//    gives the same packets and the same final status; no packet is bigger
//    than the limit; once garbage, always garbage;
//  - decode: never more than the packet holds; a REPLYCODE it takes is 4xx
//    or 5xx with at least one line, an enhanced code of the same class, no
//    control characters; header modifications have a valid field name and
//    a value whose line breaks are folding; encode(decoded fields) round
//    trips for header modifications.
#include "engine/milter_codec.hpp"
#include "fuzz_util.hpp"

#include <string>
#include <string_view>
#include <vector>

using namespace esmtp::milter;

namespace
{

struct Run {
    std::vector<Packet> packets;
    PacketReader::Status last = PacketReader::Status::need_more;
};

Run read_all(std::string_view in, std::size_t limit, std::size_t split)
{
    PacketReader r(limit);
    Run run;
    auto drain = [&] {
        for (;;) {
            Packet p;
            run.last = r.next(p);
            if (run.last != PacketReader::Status::packet)
                return;
            FUZZ_CHECK(p.data.size() + 1 <= limit);
            run.packets.push_back(std::move(p));
        }
    };
    while (!in.empty()) {
        std::size_t n = split ? std::min(split, in.size()) : in.size();
        r.feed(in.substr(0, n));
        in.remove_prefix(n);
        drain();
        if (run.last == PacketReader::Status::garbage) {
            Packet p;
            FUZZ_CHECK(r.next(p) == PacketReader::Status::garbage);
            break;
        }
    }
    return run;
}

void check_response(const Packet &p, const Response &r)
{
    using K = Response::Kind;
    FUZZ_CHECK(r.name.size() <= p.data.size() && r.value.size() <= p.data.size());
    if (r.kind == K::replycode) {
        FUZZ_CHECK(r.reply.code >= 400 && r.reply.code <= 559);
        FUZZ_CHECK(!r.reply.lines.empty());
        FUZZ_CHECK(r.reply.enhanced.empty() || r.reply.enhanced[0] == '0' + r.reply.code / 100);
        for (const auto &l : r.reply.lines)
            for (char ch : l)
                FUZZ_CHECK(static_cast<unsigned char>(ch) >= 32 && ch != 127);
    }
    if (r.kind == K::add_header || r.kind == K::insert_header || r.kind == K::change_header) {
        FUZZ_CHECK(!r.name.empty());
        for (char ch : r.name)
            FUZZ_CHECK(ch > 32 && ch < 127 && ch != ':');
        for (std::size_t i = 0; i < r.value.size(); ++i)
            if (r.value[i] == '\n')
                FUZZ_CHECK(i + 1 < r.value.size() && (r.value[i + 1] == ' ' || r.value[i + 1] == '\t'));
        // the fields, encoded again, decode to the same
        std::string again;
        again.assign(r.name).push_back('\0');
        again.append(r.value).push_back('\0');
        if (r.kind != K::add_header) {
            std::string idx;
            for (int s = 24; s >= 0; s -= 8)
                idx.push_back(static_cast<char>(r.index >> s));
            again = idx + again;
        }
        Response r2;
        std::string e;
        FUZZ_CHECK(decode(Packet{p.command, again}, r2, e));
        FUZZ_CHECK(r2.name == r.name && r2.value == r.value && r2.index == r.index);
    }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size)
{
    if (size < 2)
        return 0;
    std::size_t limit = 16 + static_cast<std::size_t>(data[0]) * 64; // small limits reach the garbage path
    std::size_t split = data[1] % 17;
    std::string_view in(reinterpret_cast<const char *>(data) + 2, size - 2);
    Run whole = read_all(in, limit, 0);
    Run pieces = read_all(in, limit, split);
    FUZZ_CHECK(whole.packets.size() == pieces.packets.size());
    FUZZ_CHECK(whole.last == pieces.last || split == 0);
    for (std::size_t i = 0; i < whole.packets.size(); ++i) {
        FUZZ_CHECK(whole.packets[i].command == pieces.packets[i].command);
        FUZZ_CHECK(whole.packets[i].data == pieces.packets[i].data);
        Response r;
        std::string error;
        if (decode(whole.packets[i], r, error))
            check_response(whole.packets[i], r);
        else
            FUZZ_CHECK(!error.empty());
    }
    // the same bytes as a REPLYCODE text
    esmtp::Reply reply;
    std::string error;
    if (parse_replycode(in, reply, error))
        FUZZ_CHECK(reply.code >= 400 && reply.code < 600 && !reply.lines.empty());
    return 0;
}
