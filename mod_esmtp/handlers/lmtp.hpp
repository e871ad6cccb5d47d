// The `lmtp HOST:PORT|unix:/path [options]` handler: hands each message to an
// LMTP server (RFC 2033) with per-recipient replies mapped back; and the
// `smtp` handler, the same client relaying each transaction synchronously to
// a smarthost (RFC 5321): its replies to MAIL, RCPT and the final dot are
// the client's, so nothing is acknowledged that the smarthost has not taken.
//
//   ESMTPHandler smtp smtp.example.net:587 auth=/etc/apache2/smarthost.secret
//
//   ESMTPHandler lmtp 127.0.0.1:24 [timeout=SECONDS]
//   ESMTPHandler lmtp [::1]:24
//   ESMTPHandler lmtp unix:/run/dovecot/lmtp
//
// One LMTP connection per SMTP session, opened at the first RCPT. Every RCPT
// is forwarded and the LMTP server's reply is the client's reply; at the end
// of DATA the per-recipient replies are folded into one SMTP reply.
//
// The pieces below are exposed for the unit tests.
#pragma once

#include <esmtp/provider.hpp>

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace esmtp
{

// `lmtp` (the default) or, with Dialect::smtp, `smtp`: the same client
// speaking SMTP to a smarthost (EHLO, one reply after the final dot, TLS and
// AUTH to it; see README "Sending mail out").
class LmtpProvider final : public HandlerProvider
{
  public:
    enum class Dialect { lmtp, smtp };
    explicit LmtpProvider(Dialect d = Dialect::lmtp) : dialect_(d) {}
    std::shared_ptr<HandlerFactory> configure(const HandlerContext &ctx, const std::vector<std::string> &args,
                                              std::string &error) const override;

  private:
    Dialect dialect_;
};

namespace lmtp
{

// Re-applies SMTP dot-stuffing (RFC 5321 4.5.2) to message content that
// arrives unstuffed and in arbitrary chunks, and terminates it.
class DotStuffer
{
  public:
    // Append `in`, stuffed, to `out`. A '.' at the start of a line is
    // doubled; a line starts after any LF (a bare LF too: a lenient server
    // taking LF for a line end must not see "." there as the end of data).
    void feed(std::string_view in, std::string &out);
    // Append the end of data: CRLF when the content did not end with one,
    // then ".\r\n". Resets the stuffer for the next message.
    void finish(std::string &out);
    void reset() { *this = DotStuffer(); }

  private:
    bool bol_ = true;  // the next octet starts a line
    bool any_ = false; // content seen
    char last_ = 0;    // last two content octets
    char before_last_ = 0;
};

// A reply of the LMTP server, enhanced status code split off the text.
struct ServerReply {
    int code = 0;
    std::string enhanced;           // "2.1.5", or empty when the server sent none
    std::vector<std::string> lines; // text without code and enhanced code
};

// Splits the byte stream from the server into replies (multi-line aware).
class ReplyParser
{
  public:
    void feed(std::string_view bytes) { buf_.append(bytes); }
    // The next complete reply, if one is buffered. Sets bad() on a
    // malformed reply (the connection is then useless).
    std::optional<ServerReply> next();
    bool bad() const { return bad_; }
    bool buffered() const { return !buf_.empty(); }
    void clear()
    {
        buf_.clear();
        bad_ = false;
    }

  private:
    std::string buf_;
    bool bad_ = false;
};

} // namespace lmtp
} // namespace esmtp
