#include "handlers/discard.hpp"

namespace esmtp
{

namespace
{

// All defaults: the module answers 250 to everything valid and nothing is kept.
class DiscardHandler final : public Handler
{
};

class DiscardFactory final : public HandlerFactory
{
  public:
    std::unique_ptr<Handler> create() override { return std::make_unique<DiscardHandler>(); }
};

} // namespace

std::shared_ptr<HandlerFactory>
DiscardProvider::configure(const HandlerContext &ctx, const std::vector<std::string> &args, std::string &error) const
{
    if (!args.empty()) {
        error = ctx.directive + " discard: takes no arguments";
        return nullptr;
    }
    return std::make_shared<DiscardFactory>();
}

} // namespace esmtp
