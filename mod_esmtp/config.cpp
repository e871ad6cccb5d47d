#include "config.hpp"

#include <apr_strings.h>
#include <http_core.h>
#include <ap_provider.h>
#include <http_main.h>

#include <cstdlib>
#include <exception>
#include <string>
#include <vector>

namespace esmtp
{

namespace
{

constexpr apr_int64_t kDefaultMaxMessageSize = 10240000;
constexpr apr_int64_t kDefaultMaxRecipients = 100;
constexpr int kDefaultLogLevel = 1;

apr_status_t destroy_factory(void *data)
{
    delete static_cast<std::shared_ptr<HandlerFactory> *>(data);
    return APR_SUCCESS;
}

const char *set_protocol(cmd_parms *cmd, void *, int on)
{
    server_config(cmd->server)->enabled = on ? 1 : 0;
    return nullptr;
}

const char *set_handler(cmd_parms *cmd, void *, int argc, char *const argv[])
{
    if (argc < 1)
        return "ESMTPHandler: needs a handler name (e.g. maildir DIR or discard)";
    const char *name = argv[0];
    auto *provider = static_cast<const HandlerProvider *>(
        ap_lookup_provider(ESMTP_HANDLER_PROVIDER_GROUP, name, ESMTP_HANDLER_PROVIDER_VERSION));
    if (!provider)
        return apr_psprintf(cmd->pool,
                            "ESMTPHandler: unknown handler '%s' (built in: maildir, discard; is the module "
                            "providing it loaded before this line?)",
                            name);
    HandlerContext ctx;
    ctx.server_root = ap_server_root;
    ctx.server_name = cmd->server->server_hostname ? cmd->server->server_hostname : "";
    ctx.directive = "ESMTPHandler";
    std::vector<std::string> args(argv + 1, argv + argc);
    std::string error;
    std::shared_ptr<HandlerFactory> factory;
    try {
        factory = provider->configure(ctx, args, error);
    } catch (const std::exception &e) {
        error = std::string("ESMTPHandler ") + name + ": " + e.what();
    } catch (...) {
        error = std::string("ESMTPHandler ") + name + ": configuration failed";
    }
    if (!factory) {
        if (error.empty())
            error = std::string("ESMTPHandler ") + name + ": bad arguments";
        else if (error.find("ESMTPHandler") == std::string::npos)
            error = std::string("ESMTPHandler ") + name + ": " + error;
        return apr_pstrdup(cmd->pool, error.c_str());
    }
    ServerConfig *cfg = server_config(cmd->server);
    cfg->handler_name = apr_pstrdup(cmd->pool, name);
    cfg->factory = new std::shared_ptr<HandlerFactory>(std::move(factory));
    apr_pool_cleanup_register(cmd->pool, cfg->factory, destroy_factory, apr_pool_cleanup_null);
    return nullptr;
}

const char *set_hostname(cmd_parms *cmd, void *, const char *arg)
{
    if (!*arg || std::string_view(arg).find_first_of(" \t\r\n") != std::string_view::npos)
        return "ESMTPHostname: needs a host name without spaces";
    server_config(cmd->server)->hostname = arg;
    return nullptr;
}

bool parse_number(const char *arg, apr_int64_t min, apr_int64_t max, apr_int64_t &out)
{
    char *end = nullptr;
    errno = 0;
    apr_int64_t v = apr_strtoi64(arg, &end, 10);
    if (errno || end == arg || *end || v < min || v > max)
        return false;
    out = v;
    return true;
}

const char *set_max_message_size(cmd_parms *cmd, void *, const char *arg)
{
    if (!parse_number(arg, 1, APR_INT64_C(1) << 40, server_config(cmd->server)->max_message_size))
        return "ESMTPMaxMessageSize: needs a size in bytes (a positive integer)";
    return nullptr;
}

const char *set_max_recipients(cmd_parms *cmd, void *, const char *arg)
{
    if (!parse_number(arg, 1, 1000000, server_config(cmd->server)->max_recipients))
        return "ESMTPMaxRecipients: needs a number of recipients between 1 and 1000000";
    return nullptr;
}

const char *set_log_level(cmd_parms *cmd, void *, const char *arg)
{
    apr_int64_t v;
    if (!parse_number(arg, 0, 3, v))
        return "ESMTPLogLevel: needs a level from 0 (off) to 3 (handler events)";
    server_config(cmd->server)->log_level = static_cast<int>(v);
    return nullptr;
}

const char *set_log_file_name(cmd_parms *cmd, void *, const char *arg)
{
    if (!*arg || (arg[0] == '|' && !arg[1]))
        return "ESMTPLogFileName: needs a file name or |command";
    server_config(cmd->server)->log_file_name = arg;
    return nullptr;
}

} // namespace

const command_rec directives[] = {
    AP_INIT_FLAG("ESMTPProtocol", reinterpret_cast<cmd_func>(set_protocol), nullptr, RSRC_CONF,
                 "Whether this server speaks ESMTP (On|Off)"),
    AP_INIT_TAKE_ARGV("ESMTPHandler", reinterpret_cast<cmd_func>(set_handler), nullptr, RSRC_CONF,
                      "The handler of this server's sessions: NAME [ARGS...] (maildir DIR, discard, ...)"),
    AP_INIT_TAKE1("ESMTPHostname", reinterpret_cast<cmd_func>(set_hostname), nullptr, RSRC_CONF,
                  "The name this server gives in its greeting and trace headers (default: ServerName)"),
    AP_INIT_TAKE1("ESMTPMaxMessageSize", reinterpret_cast<cmd_func>(set_max_message_size), nullptr, RSRC_CONF,
                  "Largest message accepted, in bytes (default 10240000)"),
    AP_INIT_TAKE1("ESMTPMaxRecipients", reinterpret_cast<cmd_func>(set_max_recipients), nullptr, RSRC_CONF,
                  "Most recipients per message (default 100)"),
    AP_INIT_TAKE1("ESMTPLogLevel", reinterpret_cast<cmd_func>(set_log_level), nullptr, RSRC_CONF,
                  "Transaction log detail: 0 off, 1 sessions and messages, 2 commands, 3 handler events"),
    AP_INIT_TAKE1("ESMTPLogFileName", reinterpret_cast<cmd_func>(set_log_file_name), nullptr, RSRC_CONF,
                  "Transaction log file (relative to ServerRoot/logs) or |piped command"),
    {nullptr, {nullptr}, nullptr, 0, RAW_ARGS, nullptr},
};

void *create_server_config(apr_pool_t *p, server_rec *)
{
    auto *cfg = static_cast<ServerConfig *>(apr_pcalloc(p, sizeof(ServerConfig)));
    cfg->enabled = -1;
    cfg->max_message_size = -1;
    cfg->max_recipients = -1;
    cfg->log_level = -1;
    return cfg;
}

void *merge_server_config(apr_pool_t *p, void *base_, void *add_)
{
    auto *base = static_cast<ServerConfig *>(base_);
    auto *add = static_cast<ServerConfig *>(add_);
    auto *cfg = static_cast<ServerConfig *>(apr_pcalloc(p, sizeof(ServerConfig)));
    cfg->enabled = add->enabled != -1 ? add->enabled : base->enabled;
    if (add->factory) {
        cfg->handler_name = add->handler_name;
        cfg->factory = add->factory;
    } else {
        cfg->handler_name = base->handler_name;
        cfg->factory = base->factory;
    }
    cfg->hostname = add->hostname ? add->hostname : base->hostname;
    cfg->max_message_size = add->max_message_size != -1 ? add->max_message_size : base->max_message_size;
    cfg->max_recipients = add->max_recipients != -1 ? add->max_recipients : base->max_recipients;
    cfg->log_level = add->log_level != -1 ? add->log_level : base->log_level;
    cfg->log_file_name = add->log_file_name ? add->log_file_name : base->log_file_name;
    return cfg;
}

SessionConfig session_config(const server_rec *s, const ServerConfig *cfg)
{
    SessionConfig sc;
    if (cfg->hostname)
        sc.hostname = cfg->hostname;
    else if (s->server_hostname)
        sc.hostname = s->server_hostname;
    sc.limits.max_message_size =
        static_cast<std::uint64_t>(cfg->max_message_size > 0 ? cfg->max_message_size : kDefaultMaxMessageSize);
    sc.limits.max_recipients =
        static_cast<std::size_t>(cfg->max_recipients > 0 ? cfg->max_recipients : kDefaultMaxRecipients);
    sc.log_level = cfg->log_level >= 0 ? cfg->log_level : kDefaultLogLevel;
    return sc;
}

int check_config(apr_pool_t *, apr_pool_t *, apr_pool_t *, server_rec *main)
{
    int rv = OK;
    for (server_rec *s = main; s; s = s->next) {
        const ServerConfig *cfg = server_config(s);
        if (cfg->enabled == 1 && !cfg->factory) {
            ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_EMERG, 0, nullptr,
                         "ESMTPProtocol On for server %s (%s:%d) needs an ESMTPHandler (e.g. ESMTPHandler maildir "
                         "DIR)",
                         s->server_hostname ? s->server_hostname : "?", s->defn_name ? s->defn_name : "?",
                         s->defn_line_number);
            rv = !OK;
        }
    }
    return rv;
}

} // namespace esmtp
