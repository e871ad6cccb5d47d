// The one place in the glue where a handler may block: a Handler that
// wraps the configured one (and its milters: gated(milter(handler))) and
// takes a WorkerHold (bulkhead.hpp) around every event it forwards. An
// MPM that can resume a connection on a backend socket would take over
// here.
//
// Beyond the cap (ESMTPMaxWorkers) the event is not forwarded:
// - CONNECT: 421 4.3.2 and close;
// - commands (HELO, EHLO, MAIL, RCPT, DATA, VRFY, EXPN, HELP, NOOP, added
//   commands, unknown lines) and end of message: 451 4.3.2;
// - content (header fields, end of header, body chunks): the transaction
//   is marked failed, its end of message answers 451 4.3.2 (the session
//   then runs abort());
// - abort, RSET, QUIT and DISCONNECT end something and are never refused:
//   they take a hold whatever the cap.
#pragma once

#include <esmtp/handler.hpp>

#include <memory>

namespace esmtp
{

std::unique_ptr<Handler> gate_handler(std::unique_ptr<Handler> inner);

} // namespace esmtp
