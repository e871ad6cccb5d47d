// mod_esmtp public API: how a module offers a handler to `ESMTPHandler`.
//
// A provider is registered under a name in the Apache provider group
// "esmtp_handler" (see esmtp/apache.hpp). The life of a handler, in order:
//
//  1. HandlerProvider::configure(), when httpd reads an `ESMTPHandler NAME
//     ARGS...` line (in the parent, as the user that starts httpd, also for
//     `apache2 -t`, again at every restart): check ARGS, return a factory.
//     Directives after that line are not read yet, and a VirtualHost's
//     config of your own module may not exist yet: do not read it here.
//  2. HandlerFactory::commands() of that factory, right after configure().
//  3. HandlerFactory::for_server() (API 2.3), at check_config, once per
//     server (main server or VirtualHost) with `ESMTPProtocol On` that uses
//     the factory, its own ESMTPHandler line or an inherited one: every
//     directive is read and every module's per-server config is merged,
//     so this is where a handler reads its own module's directives. Then
//     (API 2.4) HandlerFactory::carries() of the factory the server uses.
//  4. HandlerFactory::check(), in each child process at start (child_init),
//     as the user the children run as.
//  5. HandlerFactory::create(), once per connection, then the Handler's
//     events (esmtp/handler.hpp), then the Handler is destroyed.
//
// Steps 1 to 3 run in the parent (twice when httpd starts, once per
// restart): read settings and files there, but open what a session uses (a
// connection, a file descriptor) in the child: in check() or lazily in
// create() or the handler. Factories are destroyed with the configuration
// (at restart and stop).
#pragma once

#include <esmtp/handler.hpp>
#include <esmtp/version.hpp>

#include <memory>
#include <string>
#include <vector>

struct server_rec; // httpd.h
struct apr_pool_t; // apr_pools.h

namespace esmtp
{

// A command a handler adds to the protocol: `pattern` is a PCRE2 regex
// matched case-insensitively against the whole command line (without
// CRLF); built-in verbs are tried first, then added commands in order.
// A matching line calls Handler::command() with `name` and the captures.
struct CommandSpec {
    std::string name;
    std::string pattern;
};

// API 2.3: one server a factory serves (HandlerFactory::for_server).
struct ServerContext {
    // The (virtual) server. Every directive is read and merged: your
    // module's per-server config is ap_get_module_config(server->
    // module_config, &your_module), its per-directory config for the
    // server ap_get_module_config(server->lookup_defaults, &your_module).
    server_rec *server = nullptr;
    apr_pool_t *pool = nullptr; // the configuration pool: lives until the next restart
    std::string server_name;    // ServerName of the server
    std::string location;       // "FILE:LINE" of its <VirtualHost>, for messages
};

// Creates handler objects for one configured server.
class HandlerFactory
{
  public:
    virtual ~HandlerFactory() = default;
    // Once per connection, possibly on several threads at once: share only
    // immutable state between the handlers it creates.
    virtual std::unique_ptr<Handler> create() = 0;
    // The commands this handler adds, asked once, right after configure()
    // returned this factory (when httpd reads the ESMTPHandler line): the
    // patterns are compiled (and JIT-compiled) once and shared by every
    // session of every server using the line, also of factories that
    // for_server() returns (their commands() is not asked). A pattern that
    // does not compile fails `apache2 -t`.
    virtual std::vector<CommandSpec> commands() const { return {}; }
    // Runs in every child process at start (child_init), as the user the
    // server's children run as: check that what the handler needs (a
    // directory it writes, a program it runs) is reachable. On false, `why`
    // is logged at error level; sessions still run (and refuse mail).
    virtual bool check(std::string & /*why*/) const { return true; }
    // API 2.3: the factory for one server that uses this one (see the
    // lifecycle above and ServerContext): read your module's config of
    // ctx.server and return a factory built from it (the server's sessions
    // then use that one), or nullptr to serve the server with this factory
    // as it is (the default). nullptr with `error` set refuses the
    // configuration: `apache2 -t` fails with the error, the server's name
    // and its location. Called only for handlers built against API 2.3 or
    // later.
    virtual std::shared_ptr<HandlerFactory> for_server(const ServerContext & /*ctx*/, std::string & /*error*/)
    {
        return nullptr;
    }
    // API 2.4: the Carries bits of the handlers this factory creates
    // (default: none), asked once per server when the configuration is
    // loaded, after for_server(). Called only for handlers built against
    // API 2.4 or later.
    virtual unsigned carries() const { return 0; }
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
    // Runs when httpd reads the ESMTPHandler line, as the user that starts
    // httpd (step 1 above): read your module's per-server directives in
    // HandlerFactory::for_server(), not here.
    virtual std::shared_ptr<HandlerFactory> configure(const HandlerContext &ctx, const std::vector<std::string> &args,
                                                      std::string &error) const = 0;
};

} // namespace esmtp
