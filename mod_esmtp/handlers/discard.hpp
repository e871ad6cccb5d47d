// The `discard` handler: accepts every message and drops it (for tests and
// benchmarks; never use it where mail matters).
#pragma once

#include <esmtp/provider.hpp>

namespace esmtp
{

class DiscardProvider final : public HandlerProvider
{
  public:
    std::shared_ptr<HandlerFactory> configure(const HandlerContext &ctx, const std::vector<std::string> &args,
                                              std::string &error) const override;
};

} // namespace esmtp
