// Screening verdicts the glue works out for a client (ESMTPDNSBL scores,
// greylisting): the session asks before the handler, so a blocked client
// never reaches it.
#pragma once

#include "engine/observer.hpp"
#include <esmtp/handler.hpp>

#include <string>
#include <string_view>

namespace esmtp
{

class Screen
{
  public:
    struct Verdict {
        Reply reply;                             // empty: go on
        RejectCause cause = RejectCause::count_; // counted in mod_status
        std::string log;                         // for the transaction log and the recent errors
    };
    // Before the handler's CONNECT: a refusal takes the greeting's place
    // (the session then takes only QUIT, RFC 5321 3.1).
    virtual Verdict connect() = 0;
    // RCPT to an accepted domain, before the handler; not asked for an
    // authenticated client (submission).
    virtual Verdict rcpt(const Path &sender, const Path &recipient) = 0;
    // XCLIENT named another client (`address`, an IP): it is judged as at
    // CONNECT, and rcpt() judges it from now on. A refusal takes the place
    // of the greeting XCLIENT sends.
    virtual Verdict client_changed(std::string_view address) = 0;

  protected:
    ~Screen() = default;
};

} // namespace esmtp
