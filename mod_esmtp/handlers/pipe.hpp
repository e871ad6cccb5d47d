// The `pipe [options] COMMAND ARGS...` handler: runs a command per message,
// like Postfix's pipe(8). No shell; envelope values are expanded into argv
// elements and the environment, never parsed.
//
//   ESMTPHandler pipe [timeout=SECONDS] [null_sender=ADDRESS] COMMAND ARGS...
//
// COMMAND is an absolute path. The message (trace headers + message bytes)
// is the command's stdin, stdout goes to /dev/null, the first line of stderr
// becomes the reply text. Exit 0: 250; 75 (EX_TEMPFAIL): 451 4.3.0; any
// other exit, a signal or the timeout: 554 5.3.0.
//
// ARGS may contain ${sender} ${recipient} ${client_address}
// ${client_hostname} ${helo_name} ${queue_id} ${size} (and $$ for a dollar
// sign); an ARG with ${recipient} is repeated once per recipient. $(name)
// is the same as ${name}, and is the spelling to use in httpd.conf: httpd
// expands ${NAME} there itself (Define, environment) and warns (AH00111)
// about every one it does not know. ${size} counts the octets on stdin
// (trace headers included); ${sender} is null_sender (default
// MAILER-DAEMON, as Postfix) for MAIL FROM:<>. Each expansion is exactly one
// argv element. Every value the client chooses (HELO/EHLO name, sender,
// recipients, reverse-DNS name) must not start with '-': HELO/EHLO gets
// 501 5.5.4, MAIL 553 5.1.7 (550 5.7.1 for the host name), RCPT 553 5.1.3,
// and no command runs with one.
//
// Environment (nothing of httpd's): SENDER, RECIPIENT (space-separated; a
// quoted local part may hold a space, the argv is exact), CLIENT_ADDRESS,
// CLIENT_HOSTNAME, HELO_NAME, QUEUE_ID, SIZE, PATH=/usr/bin:/bin, LANG=C.
#pragma once

#include <esmtp/provider.hpp>

namespace esmtp
{

class PipeProvider final : public HandlerProvider
{
  public:
    std::shared_ptr<HandlerFactory> configure(const HandlerContext &ctx, const std::vector<std::string> &args,
                                              std::string &error) const override;
};

} // namespace esmtp
