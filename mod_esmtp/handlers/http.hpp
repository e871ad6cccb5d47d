// The `http URL [options]` handler: POSTs each accepted message to a web
// application and answers the final dot with 250 only after the
// application's 2xx.
//
//   ESMTPHandler http https://app.example/inbound secret=/etc/esmtp/secret
//   ESMTPHandler http http://localhost/mail unix=/run/app.sock timeout=30
//
// The body is the message as the maildir handler stores it (Return-Path:
// and Received: first), Content-Type message/rfc822, spooled to an unlinked
// temporary file during DATA and streamed from there with a Content-Length:
// memory stays bounded whatever the message size. The envelope and the
// session go in X-ESMTP-* request headers; with secret=FILE an HMAC-SHA256
// over "TIMESTAMP.BODY" in X-ESMTP-Signature. Replies: 2xx -> 250, a status
// of reject= (default 406) -> 550 5.7.1, 413 -> 552 5.3.4, anything else
// (a redirect is never followed, a TLS or connection failure, the timeout)
// -> 451 4.3.0. With rcpt=URL each RCPT is checked first: 2xx accept,
// 404 -> 550 5.1.1, anything else -> 450 4.3.0.
//
// The pieces below are exposed for the unit tests.
#pragma once

#include <esmtp/provider.hpp>

#include <string>
#include <string_view>
#include <vector>

namespace esmtp
{

class HttpProvider final : public HandlerProvider
{
  public:
    std::shared_ptr<HandlerFactory> configure(const HandlerContext &ctx, const std::vector<std::string> &args,
                                              std::string &error) const override;
};

namespace http
{

// What the application answered to the message POST.
struct Answer {
    long status = 0;          // HTTP status
    std::string content_type; // of the response, as sent
    std::string body;         // the start of the response body
};

// The SMTP reply to the final dot for an application's answer; an empty
// Reply() for 2xx (the module's 250 with the queue id). `reject` lists
// the statuses that refuse the message for good.
Reply eom_reply(const Answer &a, const std::vector<long> &reject);
// The reply to RCPT for the recipient check's answer.
Reply rcpt_reply(const Answer &a);
// The application's text for a 550: the first line of a short text/plain
// body, printable ASCII only; empty when there is none to use.
std::string application_text(const Answer &a);
// A request header value: CR, LF and NUL (which would end or split the
// header) become spaces; folding (CRLF + blank) is unfolded first.
std::string header_value(std::string_view v);

} // namespace http
} // namespace esmtp
