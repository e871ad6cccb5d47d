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

// The API's version. MAJOR changes when a handler module built against an
// older header would misbehave (a class layout or a virtual method changed):
// the provider is registered under the major version, so mod_esmtp finds
// only handlers built against its own major and names the mismatch when
// `apache2 -t` meets another. MINOR counts additions that keep old handlers
// working.
#define ESMTP_API_MAJOR 2
#define ESMTP_API_MINOR 2

#define ESMTP_STRINGIFY_(x) #x
#define ESMTP_STRINGIFY(x) ESMTP_STRINGIFY_(x)
#define ESMTP_HANDLER_PROVIDER_GROUP "esmtp_handler"
#define ESMTP_HANDLER_PROVIDER_VERSION ESMTP_STRINGIFY(ESMTP_API_MAJOR)

namespace esmtp
{

// Creates handler objects for one configured server. create() runs once per
// connection, possibly on several threads at once.
// A command a handler adds to the protocol: `pattern` is a PCRE2 regex
// matched case-insensitively against the whole command line (without
// CRLF); built-in verbs are tried first, then added commands in order.
// A matching line calls Handler::command() with `name` and the captures.
struct CommandSpec {
    std::string name;
    std::string pattern;
};

class HandlerFactory
{
  public:
    virtual ~HandlerFactory() = default;
    virtual std::unique_ptr<Handler> create() = 0;
    // The commands this handler adds, asked once after the configuration
    // is read: the patterns are compiled (and JIT-compiled) once and shared
    // by every session. A pattern that does not compile fails the start.
    virtual std::vector<CommandSpec> commands() const { return {}; }
    // Runs in every child process at start (child_init), as the user the
    // server's children run as: check that what the handler needs (a
    // directory it writes, a program it runs) is reachable. On false, `why`
    // is logged at error level; sessions still run (and refuse mail).
    virtual bool check(std::string & /*why*/) const { return true; }
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
