// mod_esmtp public API: how a module offers a handler to `ESMTPHandler`.
//
// A provider is registered under a name in the Apache provider group
// "esmtp_handler" (see esmtp/apache.hpp). When `ESMTPHandler NAME ARGS...` is
// parsed, the provider's configure() validates ARGS and returns a factory;
// the module calls the factory once per connection.
#pragma once

#include <esmtp/handler.hpp>

#include <memory>
#include <string>
#include <vector>

#define ESMTP_HANDLER_PROVIDER_GROUP "esmtp_handler"
#define ESMTP_HANDLER_PROVIDER_VERSION "1"

namespace esmtp
{

// Creates handler objects for one configured server. create() runs once per
// connection, possibly on several threads at once.
class HandlerFactory
{
  public:
    virtual ~HandlerFactory() = default;
    virtual std::unique_ptr<Handler> create() = 0;
};

// What configure() knows of the place it is configured in.
struct HandlerContext {
    std::string server_root; // to resolve relative paths
    std::string server_name; // ServerName of the (virtual) server
    std::string directive;   // "ESMTPHandler", for error messages
};

class HandlerProvider
{
  public:
    virtual ~HandlerProvider() = default;
    // Check the directive's arguments (those after NAME). On error return
    // nullptr and set `error`: httpd refuses the configuration with it.
    // Runs while the configuration is read, as the user that starts httpd.
    virtual std::shared_ptr<HandlerFactory> configure(const HandlerContext &ctx, const std::vector<std::string> &args,
                                                      std::string &error) const = 0;
};

} // namespace esmtp
