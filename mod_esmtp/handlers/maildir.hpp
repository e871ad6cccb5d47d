// The `maildir DIR` handler: every accepted message becomes one file in the
// Maildir DIR (tmp/ then new/), fsynced with its directory before 250.
#pragma once

#include <esmtp/provider.hpp>

#include <memory>
#include <string>

namespace esmtp
{

class MaildirProvider final : public HandlerProvider
{
  public:
    std::shared_ptr<HandlerFactory> configure(const HandlerContext &ctx, const std::vector<std::string> &args,
                                              std::string &error) const override;
};

// For the unit tests: a factory delivering into `dir` (absolute path).
std::shared_ptr<HandlerFactory> make_maildir_factory(const std::string &dir);

} // namespace esmtp
