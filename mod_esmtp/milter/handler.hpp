// The milters of a server as a Handler that wraps the configured one.
//
// Every milter stage is a handler event the session's state machine
// already fires through its verb table (CONNECT, HELO/EHLO, MAIL, RCPT,
// DATA, the content, end of message, unknown commands, RSET/abort, QUIT,
// disconnect), so the session needs no milter code: the session's reply
// validation (replies.hpp) checks what comes back, and the abort() rule
// holds for the wrapped handler.
//
// Order, as Postfix runs its restrictions before its milters: at CONNECT,
// HELO/EHLO, MAIL and RCPT the wrapped handler is asked first and the
// milters only when it accepted; the first milter that refuses decides. At
// DATA only the milters are asked and the content is spooled (headers in
// memory, body in an unlinked temporary file in ESMTPMilterSpoolDir); at
// the end of the message the content goes to each milter, their
// modifications are applied in milter order, and then the wrapped handler
// gets data(), the modified message and eom(), seeing the modified
// envelope (and Return-Path) throughout.
#pragma once

#include "milter/client.hpp"

#include <esmtp/handler.hpp>

#include <memory>

namespace esmtp::milter
{

std::unique_ptr<Handler> wrap(std::unique_ptr<Handler> inner, std::shared_ptr<const Config> config);

} // namespace esmtp::milter
