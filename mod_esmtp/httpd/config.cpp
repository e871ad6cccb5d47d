#include "httpd/config.hpp"

#include "httpd/auth.hpp"
#include "httpd/bulkhead.hpp"
#include "httpd/client_table.hpp"
#include "httpd/dnsbl_lookup.hpp"
#include "httpd/guard.hpp"
#include "httpd/preflight.hpp"
#include "httpd/shared_limits.hpp"
#include "httpd/state_cache.hpp"
#include "httpd/tls.hpp"
#include "engine/api_version.hpp"
#include "engine/sender_login.hpp"
#include "engine/text.hpp"

#include <apr_strings.h>
#include <arpa/inet.h>
#include <http_core.h>
#include <ap_provider.h>
#include <http_main.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

namespace esmtp
{

namespace
{

apr_status_t destroy_session_config(void *data)
{
    return guarded(
        {"SessionConfig cleanup"},
        [data] {
            delete static_cast<SessionConfig *>(data);
            return APR_SUCCESS;
        },
        [](const char *) { return APR_SUCCESS; });
}

// The last reference runs the factory's destructor (a handler module's code).
apr_status_t destroy_factory(void *data)
{
    return guarded(
        {"HandlerFactory cleanup"},
        [data] {
            delete static_cast<std::shared_ptr<HandlerFactory> *>(data);
            return APR_SUCCESS;
        },
        [](const char *) { return APR_SUCCESS; });
}

apr_status_t destroy_commands(void *data)
{
    return guarded(
        {"CommandTable cleanup"},
        [data] {
            delete static_cast<std::shared_ptr<const CommandTable> *>(data);
            return APR_SUCCESS;
        },
        [](const char *) { return APR_SUCCESS; });
}

// The handler's own commands, compiled (and JIT-compiled) once here so
// that a bad pattern fails `apache2 -t` naming the directive; every
// session of the server then shares the table.
const char *compile_commands(cmd_parms *cmd, const char *name, const HandlerFactory &factory,
                             std::shared_ptr<const CommandTable> &out)
{
    std::string error;
    try {
        out = CommandTable::compile(factory.commands(), error);
    } catch (const std::exception &e) {
        error = e.what();
    } catch (...) {
        error = "commands() failed";
    }
    if (!out)
        return apr_psprintf(cmd->pool, "ESMTPHandler %s: bad handler command: %s", name, error.c_str());
    return nullptr;
}

const char *set_protocol(cmd_parms *cmd, void *, int on)
{
    server_config(cmd->server)->enabled = on ? 1 : 0;
    return nullptr;
}

// Every version our provider group has registrations under (this
// mod_esmtp's own, the bare "2" of API 2.0-2.2 headers, other builds').
std::vector<const char *> handler_versions(apr_pool_t *p)
{
    std::vector<const char *> out;
    if (apr_array_header_t *groups = ap_list_provider_groups(p))
        for (int i = 0; i < groups->nelts; ++i) {
            const auto &g = APR_ARRAY_IDX(groups, i, ap_list_provider_groups_t);
            if (strcmp(g.provider_group, ESMTP_HANDLER_PROVIDER_GROUP) == 0)
                out.push_back(g.provider_version);
        }
    return out;
}

bool runs_here(const char *version)
{
    auto v = parse_api_version(version);
    return v && api_mismatch("", *v, this_api_version()).empty();
}

// The handler names this mod_esmtp can run, sorted.
std::string registered_handlers(apr_pool_t *p)
{
    std::vector<std::string> names;
    for (const char *version : handler_versions(p))
        if (runs_here(version))
            if (apr_array_header_t *list = ap_list_provider_names(p, ESMTP_HANDLER_PROVIDER_GROUP, version))
                for (int i = 0; i < list->nelts; ++i)
                    names.emplace_back(APR_ARRAY_IDX(list, i, ap_list_provider_names_t).provider_name);
    std::sort(names.begin(), names.end());
    names.erase(std::unique(names.begin(), names.end()), names.end());
    std::string out;
    for (const std::string &n : names)
        out += (out.empty() ? "" : ", ") + n;
    return out.empty() ? "none" : out;
}

struct FoundProvider {
    const HandlerProvider *provider = nullptr;
    int minor = 0;                 // the API minor it was built against
    const char *why_not = nullptr; // set when it is registered but cannot run here
};

// The provider ESMTPHandler NAME means. Only its version string is read
// until it is known to match: the object behind a mismatched registration
// (another major, a newer minor, another standard library) is never used.
FoundProvider find_provider(apr_pool_t *p, const char *name)
{
    FoundProvider found;
    if (void *same = ap_lookup_provider(ESMTP_HANDLER_PROVIDER_GROUP, name, ESMTP_HANDLER_PROVIDER_VERSION)) {
        found.provider = static_cast<const HandlerProvider *>(same);
        found.minor = this_api_version().minor;
        return found;
    }
    for (const char *version : handler_versions(p)) {
        void *registered = ap_lookup_provider(ESMTP_HANDLER_PROVIDER_GROUP, name, version);
        if (!registered)
            continue;
        auto v = parse_api_version(version);
        if (!v) {
            found.why_not = apr_psprintf(p,
                                         "ESMTPHandler: handler '%s' is registered under '%s', which is no mod_esmtp "
                                         "API version; rebuild it against this mod_esmtp's headers",
                                         name, version);
            continue;
        }
        std::string why = api_mismatch(name, *v, this_api_version());
        if (!why.empty()) {
            found.why_not = apr_pstrdup(p, why.c_str());
        } else if (!found.provider || v->minor > found.minor) {
            found.provider = static_cast<const HandlerProvider *>(registered);
            found.minor = v->minor;
        }
    }
    return found;
}

const char *set_handler(cmd_parms *cmd, void *, int argc, char *const argv[])
{
    if (argc < 1)
        return "ESMTPHandler: needs a handler name (e.g. maildir DIR or discard)";
    const char *name = argv[0];
    FoundProvider found = find_provider(cmd->pool, name);
    if (!found.provider && found.why_not)
        return found.why_not;
    if (!found.provider)
        return apr_psprintf(cmd->pool,
                            "ESMTPHandler: unknown handler '%s' (registered: %s; is the module providing it loaded "
                            "before this line?)",
                            name, registered_handlers(cmd->pool).c_str());
    const HandlerProvider *provider = found.provider;
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
    std::shared_ptr<const CommandTable> commands;
    if (const char *bad = compile_commands(cmd, name, *factory, commands))
        return bad;
    ServerConfig *cfg = server_config(cmd->server);
    cfg->handler_name = apr_pstrdup(cmd->pool, name);
    cfg->handler_minor = found.minor;
    cfg->factory = new std::shared_ptr<HandlerFactory>(std::move(factory));
    apr_pool_cleanup_register(cmd->pool, cfg->factory, destroy_factory, apr_pool_cleanup_null);
    cfg->commands = new std::shared_ptr<const CommandTable>(std::move(commands));
    apr_pool_cleanup_register(cmd->pool, cfg->commands, destroy_commands, apr_pool_cleanup_null);
    return nullptr;
}

apr_status_t destroy_milters(void *data)
{
    return guarded(
        {"milter::Config cleanup"},
        [data] {
            delete static_cast<milter::Config *>(data);
            return APR_SUCCESS;
        },
        [](const char *) { return APR_SUCCESS; });
}

const char *add_milter(cmd_parms *cmd, void *, int argc, char *const argv[])
{
    milter::Spec spec;
    std::string error;
    if (!milter::parse_spec(std::vector<std::string>(argv, argv + argc), spec, error))
        return apr_pstrcat(cmd->pool, "ESMTPMilter: ", error.c_str(), nullptr);
    ServerConfig *cfg = server_config(cmd->server);
    if (!cfg->milters) {
        cfg->milters = new milter::Config;
        apr_pool_cleanup_register(cmd->pool, cfg->milters, destroy_milters, apr_pool_cleanup_null);
    }
    cfg->milters->milters.push_back(std::move(spec));
    return nullptr;
}

const char *set_milter_spool_dir(cmd_parms *cmd, void *, const char *arg)
{
    if (!*arg)
        return "ESMTPMilterSpoolDir: needs a directory";
    server_config(cmd->server)->milter_spool_dir = ap_server_root_relative(cmd->pool, arg);
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

const char *set_extensions(cmd_parms *cmd, void *, int argc, char *const argv[])
{
    ServerConfig *cfg = server_config(cmd->server);
    if (argc < 1)
        return "ESMTPExtensions: needs keywords, e.g. -CHUNKING or PIPELINING SIZE 8BITMIME";
    bool relative = argv[0][0] == '+' || argv[0][0] == '-';
    unsigned set = 0, on = 0, off = 0;
    for (int i = 0; i < argc; ++i) {
        const char *a = argv[i];
        bool sign = a[0] == '+' || a[0] == '-';
        if (sign != relative)
            return "ESMTPExtensions: either every keyword has a + or - or none has";
        unsigned bit = extension_by_name(sign ? a + 1 : a);
        if (!bit)
            return apr_psprintf(cmd->pool,
                                "ESMTPExtensions: unknown extension '%s' (known: PIPELINING SIZE 8BITMIME "
                                "ENHANCEDSTATUSCODES SMTPUTF8 CHUNKING DSN REQUIRETLS)",
                                sign ? a + 1 : a);
        if (!sign)
            set |= bit;
        else if (a[0] == '+')
            on |= bit, off &= ~bit;
        else
            off |= bit, on &= ~bit;
    }
    cfg->ext_set = relative ? -1 : static_cast<int>(set);
    cfg->ext_on = on;
    cfg->ext_off = off;
    return nullptr;
}

const char *set_accept_domains(cmd_parms *cmd, void *, int argc, char *const argv[])
{
    if (argc < 1)
        return "ESMTPAcceptDomains: needs at least one domain (wildcards * and ? allowed)";
    ServerConfig *cfg = server_config(cmd->server);
    cfg->accept_domains = apr_array_make(cmd->pool, argc, sizeof(const char *));
    for (int i = 0; i < argc; ++i) {
        char *d = apr_pstrdup(cmd->pool, argv[i]);
        ap_str_tolower(d);
        if (!*d || strchr(d, '@') || strchr(d, '/'))
            return apr_psprintf(cmd->pool, "ESMTPAcceptDomains: '%s' is not a domain (pattern)", argv[i]);
        APR_ARRAY_PUSH(cfg->accept_domains, const char *) = d;
    }
    return nullptr;
}

const char *set_max_errors(cmd_parms *cmd, void *, const char *arg)
{
    if (!parse_number(arg, 0, 1000000, server_config(cmd->server)->max_errors))
        return "ESMTPMaxErrors: needs a number of error replies (0 for no limit)";
    return nullptr;
}

const char *set_timeout(cmd_parms *cmd, void *, int argc, char *const argv[])
{
    ServerConfig *cfg = server_config(cmd->server);
    if (argc < 1)
        return "ESMTPTimeout: needs command=SECONDS, data=SECONDS and/or tls=SECONDS";
    for (int i = 0; i < argc; ++i) {
        std::string_view a(argv[i]);
        std::size_t eq = a.find('=');
        std::string phase(a.substr(0, eq));
        apr_int64_t *slot = phase == "command" ? &cfg->command_timeout
                            : phase == "data"  ? &cfg->data_timeout
                            : phase == "tls"   ? &cfg->tls_timeout
                                               : nullptr;
        unsigned seconds = 0;
        if (!slot || eq == std::string_view::npos || !parse_seconds(a.substr(eq + 1), 86400, seconds))
            return apr_psprintf(cmd->pool,
                                "ESMTPTimeout: '%s' is not PHASE=SECONDS (phases: command, data, tls; 1 to 86400 s)",
                                argv[i]);
        *slot = seconds;
    }
    return nullptr;
}

const char *set_bare_line_feed(cmd_parms *cmd, void *, const char *arg)
{
    if (!strcasecmp(arg, "reject"))
        server_config(cmd->server)->bare_lf_normalize = 0;
    else if (!strcasecmp(arg, "normalize"))
        server_config(cmd->server)->bare_lf_normalize = 1;
    else
        return "ESMTPBareLineFeed: needs reject or normalize";
    return nullptr;
}

const char *set_forbid_unauth_pipelining(cmd_parms *cmd, void *, int on)
{
    server_config(cmd->server)->forbid_unauth_pipelining = on ? 1 : 0;
    return nullptr;
}

const char *set_max_junk_commands(cmd_parms *cmd, void *, const char *arg)
{
    if (!parse_number(arg, 0, 1000000, server_config(cmd->server)->max_junk_commands))
        return "ESMTPMaxJunkCommands: needs a number of NOOP/RSET/VRFY/EXPN/HELP commands (0 for no limit)";
    return nullptr;
}

// Seconds with up to three decimals ("0.5"), 0 to max_seconds, as ms.
bool parse_seconds_ms(const char *arg, unsigned max_seconds, apr_int64_t &ms)
{
    std::string_view a(arg), f;
    if (std::size_t dot = a.find('.'); dot != std::string_view::npos) {
        f = a.substr(dot + 1);
        a = a.substr(0, dot);
        if (f.empty())
            return false;
    }
    unsigned whole = 0, frac = 0;
    if (f.size() > 3 || !parse_decimal(a, 10, max_seconds, whole) || (!f.empty() && !parse_decimal(f, 3, 999, frac)))
        return false;
    for (std::size_t i = f.size(); i < 3; ++i)
        frac *= 10;
    ms = static_cast<apr_int64_t>(whole) * 1000 + frac;
    return true;
}

const char *set_greeting_delay(cmd_parms *cmd, void *, const char *arg)
{
    if (!parse_seconds_ms(arg, 300, server_config(cmd->server)->greeting_delay_ms))
        return "ESMTPGreetingDelay: needs seconds between 0 and 300 (e.g. 0.5)";
    return nullptr;
}

// ESMTPPregreet Off | SECONDS [teaser=On|Off|TEXT] [remember=SECONDS]
const char *set_pregreet(cmd_parms *cmd, void *, int argc, char *const argv[])
{
    ServerConfig *cfg = server_config(cmd->server);
    constexpr const char *usage =
        "ESMTPPregreet: needs Off or SECONDS (0 to 60, e.g. 1.5) [teaser=On|Off|TEXT] [remember=SECONDS]";
    if (argc < 1 || argc > 3)
        return usage;
    if (!strcasecmp(argv[0], "off")) {
        if (argc != 1)
            return usage;
        cfg->pregreet_ms = -2;
        return nullptr;
    }
    if (!parse_seconds_ms(argv[0], 60, cfg->pregreet_ms))
        return usage;
    cfg->pregreet_teaser = nullptr;
    cfg->pregreet_remember = 0;
    for (int i = 1; i < argc; ++i) {
        std::string_view opt(argv[i]);
        if (opt.substr(0, 9) == "remember=") {
            if (!parse_number(argv[i] + 9, 1, 30 * 86400, cfg->pregreet_remember))
                return "ESMTPPregreet: remember= needs seconds from 1 to 2592000 (30 days)";
            continue;
        }
        if (opt.substr(0, 7) != "teaser=" || opt.size() == 7)
            return usage;
        std::string_view text = opt.substr(7);
        if (text.size() > 200 || std::any_of(text.begin(), text.end(), [](char ch) {
                return static_cast<unsigned char>(ch) < 0x20 || static_cast<unsigned char>(ch) > 0x7e;
            }))
            return "ESMTPPregreet: the teaser is printable ASCII, at most 200 characters";
        if (!strcasecmp(argv[i] + 7, "off"))
            cfg->pregreet_teaser = "";
        else if (strcasecmp(argv[i] + 7, "on"))
            cfg->pregreet_teaser = apr_pstrdup(cmd->pool, argv[i] + 7);
    }
    return nullptr;
}

apr_status_t destroy_dnsbl_sites(void *data)
{
    return guarded(
        {"DNSBL sites cleanup"},
        [data] {
            delete static_cast<std::shared_ptr<const std::vector<DnsblSite>> *>(data);
            return APR_SUCCESS;
        },
        [](const char *) { return APR_SUCCESS; });
}

// ESMTPDNSBL Off | SITE[=FILTER][*WEIGHT] ...
const char *set_dnsbl(cmd_parms *cmd, void *, int argc, char *const argv[])
{
    ServerConfig *cfg = server_config(cmd->server);
    if (argc < 1)
        return "ESMTPDNSBL: needs Off or one or more DOMAIN[=FILTER][*WEIGHT]";
    auto sites = std::make_shared<std::vector<DnsblSite>>();
    if (!(argc == 1 && !strcasecmp(argv[0], "off"))) {
        for (int i = 0; i < argc; ++i) {
            DnsblSite site;
            std::string why;
            if (!parse_dnsbl_site(argv[i], site, why))
                return apr_psprintf(cmd->pool, "ESMTPDNSBL: '%s': %s", argv[i], why.c_str());
            sites->push_back(std::move(site));
        }
    }
    cfg->dnsbl_sites = new std::shared_ptr<const std::vector<DnsblSite>>(std::move(sites));
    apr_pool_cleanup_register(cmd->pool, cfg->dnsbl_sites, destroy_dnsbl_sites, apr_pool_cleanup_null);
    return nullptr;
}

// ESMTPDNSBLThreshold N [reject=connect|rcpt] [timeout=SECONDS]
const char *set_dnsbl_threshold(cmd_parms *cmd, void *, int argc, char *const argv[])
{
    ServerConfig *cfg = server_config(cmd->server);
    constexpr const char *usage =
        "ESMTPDNSBLThreshold: needs a score (1 to 10000) [reject=connect|rcpt] [timeout=SECONDS (0.1 to 60)]";
    if (argc < 1 || !parse_number(argv[0], 1, 10000, cfg->dnsbl_threshold))
        return usage;
    for (int i = 1; i < argc; ++i) {
        std::string_view a(argv[i]);
        if (a == "reject=connect" || a == "reject=rcpt") {
            cfg->dnsbl_at_rcpt = a == "reject=rcpt";
        } else if (a.substr(0, 8) == "timeout=") {
            if (!parse_seconds_ms(argv[i] + 8, 60, cfg->dnsbl_timeout_ms) || cfg->dnsbl_timeout_ms < 100)
                return usage;
        } else {
            return usage;
        }
    }
    return nullptr;
}

// ESMTPDNSServer IPV4[:PORT] | [IPV6][:PORT] | system
const char *set_dns_server(cmd_parms *cmd, void *, const char *arg)
{
    ServerConfig *cfg = server_config(cmd->server);
    if (!strcasecmp(arg, "system")) {
        cfg->dns_server = "";
        return nullptr;
    }
    std::string_view a(arg), host, port;
    if (!a.empty() && a.front() == '[') {
        std::size_t close = a.find(']');
        if (close == std::string_view::npos)
            return "ESMTPDNSServer: needs system, ADDRESS or ADDRESS:PORT ([IPv6]:PORT)";
        host = a.substr(1, close - 1);
        if (close + 1 < a.size()) {
            if (a[close + 1] != ':')
                return "ESMTPDNSServer: needs system, ADDRESS or ADDRESS:PORT ([IPv6]:PORT)";
            port = a.substr(close + 2);
        }
    } else {
        std::size_t colon = a.find(':');
        host = a.substr(0, colon);
        if (colon != std::string_view::npos)
            port = a.substr(colon + 1);
    }
    unsigned char buf[16];
    std::string h(host);
    apr_int64_t p = 53;
    bool v6 = a.front() == '[';
    if (inet_pton(v6 ? AF_INET6 : AF_INET, h.c_str(), buf) != 1 ||
        (!port.empty() && !parse_number(std::string(port).c_str(), 1, 65535, p)) || (a.back() == ':'))
        return "ESMTPDNSServer: needs system, an IP address or ADDRESS:PORT ([IPv6]:PORT), not a name";
    // c-ares's own syntax for ares_set_servers_ports_csv
    cfg->dns_server = apr_psprintf(cmd->pool, v6 ? "[%s]:%d" : "%s:%d", h.c_str(), static_cast<int>(p));
    return nullptr;
}

const char *set_greylist(cmd_parms *cmd, void *, int argc, char *const argv[])
{
    return parse_greylist(cmd->pool, argc, argv, server_config(cmd->server)->greylist);
}

const char *set_state_cache_directive(cmd_parms *cmd, void *, int argc, char *const argv[])
{
    return set_state_cache(cmd, argc, argv);
}

const char *set_min_data_rate(cmd_parms *cmd, void *, const char *arg)
{
    if (!parse_number(arg, 0, APR_INT64_C(1) << 30, server_config(cmd->server)->min_data_rate))
        return "ESMTPMinDataRate: needs octets per second (0 for no minimum)";
    return nullptr;
}

const char *set_client_connection_limit(cmd_parms *cmd, void *, const char *arg)
{
    if (!parse_number(arg, 0, 1000000, server_config(cmd->server)->client_connection_limit))
        return "ESMTPClientConnectionLimit: needs a number of sessions per client address (0 for no limit)";
    return nullptr;
}

const char *set_client_rate(cmd_parms *cmd, const char *arg, int which)
{
    RateLimit r;
    if (!RateLimit::parse(arg, r))
        return apr_psprintf(cmd->pool,
                            "%s: '%s' is not N/SECONDS (N from 1, SECONDS from 1 to 86400; off or 0 for no limit)",
                            cmd->cmd->name, arg);
    ServerConfig *cfg = server_config(cmd->server);
    cfg->client_rates[which] = r;
    cfg->client_rates_set[which] = 1;
    return nullptr;
}

const char *set_client_connection_rate(cmd_parms *cmd, void *, const char *arg)
{
    return set_client_rate(cmd, arg, 0);
}

const char *set_client_message_rate(cmd_parms *cmd, void *, const char *arg)
{
    return set_client_rate(cmd, arg, 1);
}

const char *set_client_recipient_rate(cmd_parms *cmd, void *, const char *arg)
{
    return set_client_rate(cmd, arg, 2);
}

const char *set_client_auth_rate(cmd_parms *cmd, void *, const char *arg)
{
    return set_client_rate(cmd, arg, 3);
}

const char *set_client_ipv6_prefix(cmd_parms *cmd, void *, const char *arg)
{
    if (!parse_number(arg, 1, 128, server_config(cmd->server)->client_ipv6_prefix))
        return "ESMTPClientIPv6Prefix: needs a prefix length from 1 to 128 (IPv6 clients are counted per network)";
    return nullptr;
}

const char *set_client_exceptions(cmd_parms *cmd, void *, int argc, char *const argv[])
{
    if (argc < 1)
        return "ESMTPClientLimitExceptions: needs addresses or networks (CIDR), or none";
    ServerConfig *cfg = server_config(cmd->server);
    cfg->client_exceptions = apr_array_make(cmd->pool, argc, sizeof(Network));
    if (argc == 1 && !strcasecmp(argv[0], "none"))
        return nullptr;
    for (int i = 0; i < argc; ++i) {
        Network n;
        if (!Network::parse(argv[i], n))
            return apr_psprintf(cmd->pool,
                                "ESMTPClientLimitExceptions: '%s' is not an address or network (e.g. 192.0.2.0/24, "
                                "2001:db8::/32, or none alone)",
                                argv[i]);
        APR_ARRAY_PUSH(cfg->client_exceptions, Network) = n;
    }
    return nullptr;
}

const char *set_proxy_protocol(cmd_parms *cmd, void *, const char *arg)
{
    static const std::pair<const char *, ProxyAccept> names[] = {
        {"off", ProxyAccept::off}, {"v1", ProxyAccept::v1}, {"v2", ProxyAccept::v2}, {"any", ProxyAccept::any}};
    for (const auto &[name, value] : names)
        if (!strcasecmp(arg, name)) {
            server_config(cmd->server)->proxy_protocol = static_cast<int>(value);
            return nullptr;
        }
    return "ESMTPProxyProtocol: needs Off, v1, v2 or any";
}

// A list of addresses and CIDR blocks, each checked here so that a typo
// fails `apache2 -t` naming the directive.
const char *set_cidr_list(cmd_parms *cmd, int argc, char *const argv[], apr_array_header_t *&list)
{
    if (argc < 1)
        return apr_pstrcat(cmd->pool, cmd->cmd->name, ": needs one or more addresses or CIDR blocks", nullptr);
    list = apr_array_make(cmd->pool, argc, sizeof(const char *));
    for (int i = 0; i < argc; ++i) {
        CidrList check;
        if (!check.add(argv[i]))
            return apr_pstrcat(cmd->pool, cmd->cmd->name, ": \"", argv[i],
                               "\" is no IP address or CIDR block (e.g. 192.0.2.0/24, 2001:db8::/32)", nullptr);
        APR_ARRAY_PUSH(list, const char *) = apr_pstrdup(cmd->pool, argv[i]);
    }
    return nullptr;
}

const char *set_client_table_size(cmd_parms *cmd, void *, const char *arg)
{
    if (const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY))
        return err;
    if (!parse_number(arg, ClientTable::kSlotsPerBucket, APR_INT64_C(1) << 24,
                      server_config(cmd->server)->client_table_size))
        return "ESMTPClientLimitTableSize: needs a number of client entries from 8 to 16777216";
    return nullptr;
}

const char *set_max_workers(cmd_parms *cmd, void *, const char *arg)
{
    if (const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY))
        return err;
    if (!parse_worker_cap(arg, server_config(cmd->server)->worker_cap))
        return apr_pstrcat(cmd->pool, "ESMTPMaxWorkers: \"", arg,
                           "\" is neither a number of workers (1 to 1000000) nor a percentage of MaxRequestWorkers "
                           "(1% to 100%)",
                           nullptr);
    return nullptr;
}

const char *set_starttls(cmd_parms *cmd, void *, const char *arg)
{
    int v = !strcasecmp(arg, "off")        ? static_cast<int>(StartTls::off)
            : !strcasecmp(arg, "on")       ? static_cast<int>(StartTls::on)
            : !strcasecmp(arg, "required") ? static_cast<int>(StartTls::required)
                                           : -1;
    if (v < 0)
        return "ESMTPStartTLS: needs Off, On or Required";
    server_config(cmd->server)->starttls = v;
    return nullptr;
}

const char *set_proxy_trusted(cmd_parms *cmd, void *, int argc, char *const argv[])
{
    return set_cidr_list(cmd, argc, argv, server_config(cmd->server)->proxy_trusted);
}

const char *set_xclient_hosts(cmd_parms *cmd, void *, int argc, char *const argv[])
{
    return set_cidr_list(cmd, argc, argv, server_config(cmd->server)->xclient_hosts);
}

const char *set_proxy_timeout(cmd_parms *cmd, void *, const char *arg)
{
    unsigned seconds = 0;
    if (!parse_seconds(arg, 3600, seconds))
        return "ESMTPProxyTimeout: needs seconds between 1 and 3600";
    server_config(cmd->server)->proxy_timeout = seconds;
    return nullptr;
}

// `dflt`: the engine's default set (SessionConfig::extensions).
unsigned effective_extensions(const ServerConfig *c, unsigned dflt)
{
    unsigned m = c->ext_set >= 0 ? static_cast<unsigned>(c->ext_set) : dflt;
    return (m | c->ext_on) & ~c->ext_off;
}

// Every directive handler runs through guarded(): an exception becomes the
// directive's error message instead of reaching httpd.
// ---- AUTH (httpd/auth.cpp)

const char *set_auth(cmd_parms *cmd, void *, int argc, char *const argv[])
{
    unsigned m = 0;
    if (argc == 1 && !strcasecmp(argv[0], "Off")) {
        server_config(cmd->server)->auth_mechanisms = 0;
        return nullptr;
    }
    if (argc < 1)
        return "ESMTPAuth: needs mechanisms (PLAIN, LOGIN) or Off";
    for (int i = 0; i < argc; ++i) {
        unsigned bit = auth_mechanism_by_name(argv[i]);
        if (!bit)
            return apr_psprintf(cmd->pool,
                                "ESMTPAuth: unknown mechanism '%s' (PLAIN and LOGIN: httpd's authn providers check "
                                "plaintext passwords)",
                                argv[i]);
        m |= bit;
    }
    server_config(cmd->server)->auth_mechanisms = static_cast<int>(m);
    return nullptr;
}

const char *set_auth_provider(cmd_parms *cmd, void *, int argc, char *const argv[])
{
    if (argc < 1)
        return "ESMTPAuthProvider: needs authn provider or <AuthnProviderAlias> names, e.g. ESMTPAuthProvider "
               "smtp-users";
    auto *list = apr_array_make(cmd->pool, argc, sizeof(const char *));
    for (int i = 0; i < argc; ++i)
        APR_ARRAY_PUSH(list, const char *) = apr_pstrdup(cmd->pool, argv[i]);
    server_config(cmd->server)->auth_providers = list;
    return nullptr;
}

const char *set_auth_proxy_users(cmd_parms *cmd, void *, int argc, char *const argv[])
{
    if (argc < 1)
        return "ESMTPAuthProxyUsers: needs login names, e.g. ESMTPAuthProxyUsers helpdesk";
    auto *list = apr_array_make(cmd->pool, argc, sizeof(const char *));
    for (int i = 0; i < argc; ++i) {
        if (!valid_auth_user(argv[i]))
            return apr_psprintf(cmd->pool, "ESMTPAuthProxyUsers: '%s' is not a login name", argv[i]);
        APR_ARRAY_PUSH(list, const char *) = apr_pstrdup(cmd->pool, argv[i]);
    }
    server_config(cmd->server)->auth_proxy_users = list;
    return nullptr;
}

const char *set_auth_require_tls(cmd_parms *cmd, void *, int on)
{
    server_config(cmd->server)->auth_require_tls = on ? 1 : 0;
    return nullptr;
}

const char *set_submission(cmd_parms *cmd, void *, int on)
{
    server_config(cmd->server)->submission = on ? 1 : 0;
    return nullptr;
}

apr_status_t destroy_sender_login_map(void *data)
{
    return guarded(
        {"SenderLoginMap cleanup"},
        [data] {
            delete static_cast<std::shared_ptr<const SenderLoginMap> *>(data);
            return APR_SUCCESS;
        },
        [](const char *) { return APR_SUCCESS; });
}

// On, Off, or a file read now (a change needs a restart), so that a bad
// line fails `apache2 -t` naming the file and the line.
const char *set_sender_login_match(cmd_parms *cmd, void *, const char *arg)
{
    ServerConfig *cfg = server_config(cmd->server);
    cfg->sender_login_map = nullptr;
    if (!strcasecmp(arg, "On") || !strcasecmp(arg, "Off")) {
        cfg->sender_login_match = strcasecmp(arg, "On") ? 0 : 1;
        return nullptr;
    }
    const char *path = ap_server_root_relative(cmd->pool, arg);
    apr_file_t *f = nullptr;
    apr_finfo_t fi;
    if (!path || apr_file_open(&f, path, APR_FOPEN_READ, APR_OS_DEFAULT, cmd->temp_pool) != APR_SUCCESS ||
        apr_file_info_get(&fi, APR_FINFO_SIZE, f) != APR_SUCCESS)
        return apr_psprintf(cmd->pool, "ESMTPSenderLoginMatch: needs On, Off or a readable map file; cannot read '%s'",
                            path ? path : arg);
    std::string text(static_cast<std::size_t>(fi.size), '\0');
    apr_size_t n = text.size();
    if (n && apr_file_read_full(f, text.data(), n, &n) != APR_SUCCESS)
        return apr_psprintf(cmd->pool, "ESMTPSenderLoginMatch: cannot read '%s'", path);
    apr_file_close(f);
    auto map = std::make_shared<SenderLoginMap>();
    std::string error;
    if (!map->parse(text, error))
        return apr_psprintf(cmd->pool, "ESMTPSenderLoginMatch: %s: %s", path, error.c_str());
    cfg->sender_login_map = new std::shared_ptr<const SenderLoginMap>(std::move(map));
    apr_pool_cleanup_register(cmd->pool, cfg->sender_login_map, destroy_sender_login_map, apr_pool_cleanup_null);
    cfg->sender_login_match = 2;
    return nullptr;
}

const char *set_max_auth_failures(cmd_parms *cmd, void *, const char *arg)
{
    if (!parse_number(arg, 0, 1000, server_config(cmd->server)->max_auth_failures))
        return "ESMTPMaxAuthFailures: needs a number of failed AUTH attempts per session (0 for no limit)";
    return nullptr;
}

const char *set_auth_failure_delay(cmd_parms *cmd, void *, const char *arg)
{
    if (!parse_seconds_ms(arg, 60, server_config(cmd->server)->auth_failure_delay_ms))
        return "ESMTPAuthFailureDelay: needs seconds between 0 and 60 (e.g. 0.5)";
    return nullptr;
}

const char *directive_failed(cmd_parms *cmd, const char *what) noexcept
{
    return apr_pstrcat(cmd->pool, cmd->cmd->name, ": internal error: ", what, nullptr);
}

template <const char *(*Fn)(cmd_parms *, void *, const char *)>
const char *take1(cmd_parms *cmd, void *d, const char *arg) noexcept
{
    return guarded(
        {cmd->cmd->name, nullptr, cmd->server}, [&] { return Fn(cmd, d, arg); },
        [cmd](const char *what) { return directive_failed(cmd, what); });
}

template <const char *(*Fn)(cmd_parms *, void *, int)> const char *flag(cmd_parms *cmd, void *d, int on) noexcept
{
    return guarded(
        {cmd->cmd->name, nullptr, cmd->server}, [&] { return Fn(cmd, d, on); },
        [cmd](const char *what) { return directive_failed(cmd, what); });
}

template <const char *(*Fn)(cmd_parms *, void *, int, char *const[])>
const char *take_argv(cmd_parms *cmd, void *d, int argc, char *const argv[]) noexcept
{
    return guarded(
        {cmd->cmd->name, nullptr, cmd->server}, [&] { return Fn(cmd, d, argc, argv); },
        [cmd](const char *what) { return directive_failed(cmd, what); });
}

} // namespace

const command_rec directives[] = {
    AP_INIT_FLAG("ESMTPProtocol", reinterpret_cast<cmd_func>(flag<set_protocol>), nullptr, RSRC_CONF,
                 "Whether this server speaks ESMTP (On|Off)"),
    AP_INIT_TAKE_ARGV("ESMTPHandler", reinterpret_cast<cmd_func>(take_argv<set_handler>), nullptr, RSRC_CONF,
                      "The handler of this server's sessions: NAME [ARGS...] (maildir DIR, discard, ...)"),
    AP_INIT_TAKE1("ESMTPHostname", reinterpret_cast<cmd_func>(take1<set_hostname>), nullptr, RSRC_CONF,
                  "The name this server gives in its greeting and trace headers (default: ServerName)"),
    AP_INIT_TAKE1("ESMTPMaxMessageSize", reinterpret_cast<cmd_func>(take1<set_max_message_size>), nullptr, RSRC_CONF,
                  "Largest message accepted, in bytes"),
    AP_INIT_TAKE1("ESMTPMaxRecipients", reinterpret_cast<cmd_func>(take1<set_max_recipients>), nullptr, RSRC_CONF,
                  "Most recipients per message"),
    AP_INIT_TAKE1("ESMTPLogLevel", reinterpret_cast<cmd_func>(take1<set_log_level>), nullptr, RSRC_CONF,
                  "Transaction log detail: 0 off, 1 sessions and messages, 2 commands, 3 handler events"),
    AP_INIT_TAKE_ARGV("ESMTPExtensions", reinterpret_cast<cmd_func>(take_argv<set_extensions>), nullptr, RSRC_CONF,
                      "ESMTP extensions offered: [+|-]KEYWORD ... (default: all)"),
    AP_INIT_TAKE_ARGV("ESMTPAcceptDomains", reinterpret_cast<cmd_func>(take_argv<set_accept_domains>), nullptr,
                      RSRC_CONF, "Recipient domains accepted (default: ServerName and ServerAlias)"),
    AP_INIT_TAKE1("ESMTPMaxErrors", reinterpret_cast<cmd_func>(take1<set_max_errors>), nullptr, RSRC_CONF,
                  "Error replies before the session is closed with 421 (0: no limit)"),
    AP_INIT_TAKE_ARGV("ESMTPTimeout", reinterpret_cast<cmd_func>(take_argv<set_timeout>), nullptr, RSRC_CONF,
                      "Timeouts in seconds: command=N data=N tls=N"),
    AP_INIT_TAKE1("ESMTPBareLineFeed", reinterpret_cast<cmd_func>(take1<set_bare_line_feed>), nullptr, RSRC_CONF,
                  "Bare LF/CR in commands and messages: reject (default) or normalize"),
    AP_INIT_FLAG("ESMTPForbidUnauthPipelining", reinterpret_cast<cmd_func>(flag<set_forbid_unauth_pipelining>), nullptr,
                 RSRC_CONF, "End sessions that pipeline without PIPELINING (default On)"),
    AP_INIT_TAKE1("ESMTPMaxJunkCommands", reinterpret_cast<cmd_func>(take1<set_max_junk_commands>), nullptr, RSRC_CONF,
                  "HELO/EHLO/MAIL/RSET/NOOP/VRFY/EXPN/HELP commands since the last delivery before 421 (0: no limit)"),
    AP_INIT_TAKE_ARGV("ESMTPPregreet", reinterpret_cast<cmd_func>(take_argv<set_pregreet>), nullptr, RSRC_CONF,
                      "Pregreet test: Off (default) or SECONDS [teaser=On|Off|TEXT]: a 220- teaser, a pause, 554 "
                      "for a client that talks before the end of the greeting"),
    AP_INIT_TAKE_ARGV("ESMTPDNSBL", reinterpret_cast<cmd_func>(take_argv<set_dnsbl>), nullptr, RSRC_CONF,
                      "DNS block and allow lists: Off (default) or DOMAIN[=FILTER][*WEIGHT] ..."),
    AP_INIT_TAKE_ARGV("ESMTPDNSBLThreshold", reinterpret_cast<cmd_func>(take_argv<set_dnsbl_threshold>), nullptr,
                      RSRC_CONF, "DNSBL score that blocks (default 1) [reject=connect|rcpt] [timeout=SECONDS]"),
    AP_INIT_TAKE1("ESMTPDNSServer", reinterpret_cast<cmd_func>(take1<set_dns_server>), nullptr, RSRC_CONF,
                  "The DNS server for ESMTPDNSBL: system (default) or ADDRESS[:PORT]"),
    AP_INIT_TAKE_ARGV("ESMTPGreylist", reinterpret_cast<cmd_func>(take_argv<set_greylist>), nullptr, RSRC_CONF,
                      "Greylisting: Off (default) or On [delay=SECONDS] [retry=SECONDS] [allowlist=PASSES] "
                      "[keep=DAYS]"),
    AP_INIT_TAKE_ARGV("ESMTPStateCache", reinterpret_cast<cmd_func>(take_argv<set_state_cache_directive>), nullptr,
                      RSRC_CONF,
                      "Where the shared state lives: a mod_socache provider, shmcb (default), redis:HOST:PORT, ... "
                      "[node=ID] [interval=SECONDS] [limits=shared|node]"),
    AP_INIT_TAKE1("ESMTPGreetingDelay", reinterpret_cast<cmd_func>(take1<set_greeting_delay>), nullptr, RSRC_CONF,
                  "Seconds to wait before the greeting; early talkers are refused (default 0)"),
    AP_INIT_TAKE1("ESMTPMinDataRate", reinterpret_cast<cmd_func>(take1<set_min_data_rate>), nullptr, RSRC_CONF,
                  "Slowest accepted DATA/BDAT transfer in octets per second (0: off)"),
    AP_INIT_TAKE1("ESMTPClientConnectionLimit", reinterpret_cast<cmd_func>(take1<set_client_connection_limit>), nullptr,
                  RSRC_CONF, "Concurrent sessions per client address (default 50, 0: no limit)"),
    AP_INIT_TAKE1("ESMTPClientConnectionRate", reinterpret_cast<cmd_func>(take1<set_client_connection_rate>), nullptr,
                  RSRC_CONF, "New sessions per client address: N/SECONDS (default off)"),
    AP_INIT_TAKE1("ESMTPClientMessageRate", reinterpret_cast<cmd_func>(take1<set_client_message_rate>), nullptr,
                  RSRC_CONF, "MAIL commands per client address: N/SECONDS (default off)"),
    AP_INIT_TAKE1("ESMTPClientRecipientRate", reinterpret_cast<cmd_func>(take1<set_client_recipient_rate>), nullptr,
                  RSRC_CONF, "RCPT commands per client address: N/SECONDS (default off)"),
    AP_INIT_TAKE1("ESMTPClientIPv6Prefix", reinterpret_cast<cmd_func>(take1<set_client_ipv6_prefix>), nullptr,
                  RSRC_CONF, "IPv6 clients are counted per network of this prefix length (default 64)"),
    AP_INIT_TAKE_ARGV("ESMTPClientLimitExceptions", reinterpret_cast<cmd_func>(take_argv<set_client_exceptions>),
                      nullptr, RSRC_CONF, "Clients not limited: CIDR ... or none (default 127.0.0.0/8 ::1)"),
    AP_INIT_TAKE1("ESMTPClientLimitTableSize", reinterpret_cast<cmd_func>(take1<set_client_table_size>), nullptr,
                  RSRC_CONF, "Client entries in the shared per-client table (server config; default 8192)"),
    AP_INIT_TAKE1("ESMTPMaxWorkers", reinterpret_cast<cmd_func>(take1<set_max_workers>), nullptr, RSRC_CONF,
                  "MPM workers SMTP sessions may hold at once for anything but reading the client: N or N% of "
                  "MaxRequestWorkers (server config; default 50% with web sites, else 100%)"),
    AP_INIT_TAKE1("ESMTPStartTLS", reinterpret_cast<cmd_func>(take1<set_starttls>), nullptr, RSRC_CONF,
                  "STARTTLS (needs SSLEngine on): Off (with SSLEngine on: implicit TLS), On or Required"),
    AP_INIT_TAKE1("ESMTPLogFileName", reinterpret_cast<cmd_func>(take1<set_log_file_name>), nullptr, RSRC_CONF,
                  "Transaction log file (relative to ServerRoot/logs) or |piped command"),
    AP_INIT_TAKE_ARGV("ESMTPMilter", reinterpret_cast<cmd_func>(take_argv<add_milter>), nullptr, RSRC_CONF,
                      "A milter: inet:HOST:PORT|inet6:[ADDR]:PORT|unix:/PATH [connect_timeout=S] "
                      "[command_timeout=S] [content_timeout=S] [default_action=accept|reject|tempfail]; repeatable"),
    AP_INIT_TAKE1("ESMTPMilterSpoolDir", reinterpret_cast<cmd_func>(take1<set_milter_spool_dir>), nullptr, RSRC_CONF,
                  "Directory for the spool files of messages that go through milters (default $TMPDIR or /tmp)"),
    AP_INIT_TAKE1("ESMTPProxyProtocol", reinterpret_cast<cmd_func>(take1<set_proxy_protocol>), nullptr, RSRC_CONF,
                  "Read a PROXY protocol header before the greeting: Off (default), v1, v2 or any"),
    AP_INIT_TAKE_ARGV("ESMTPProxyTrusted", reinterpret_cast<cmd_func>(take_argv<set_proxy_trusted>), nullptr, RSRC_CONF,
                      "Load balancers that send the PROXY header: addresses or CIDR blocks"),
    AP_INIT_TAKE1("ESMTPProxyTimeout", reinterpret_cast<cmd_func>(take1<set_proxy_timeout>), nullptr, RSRC_CONF,
                  "Seconds to wait for the whole PROXY header (default 5)"),
    AP_INIT_TAKE_ARGV("ESMTPXClientHosts", reinterpret_cast<cmd_func>(take_argv<set_xclient_hosts>), nullptr, RSRC_CONF,
                      "Clients allowed to send XCLIENT: addresses or CIDR blocks (default: none)"),
    AP_INIT_TAKE_ARGV("ESMTPAuth", reinterpret_cast<cmd_func>(take_argv<set_auth>), nullptr, RSRC_CONF,
                      "SMTP AUTH mechanisms offered: PLAIN LOGIN, or Off (the default)"),
    AP_INIT_TAKE_ARGV("ESMTPAuthProvider", reinterpret_cast<cmd_func>(take_argv<set_auth_provider>), nullptr, RSRC_CONF,
                      "authn providers or <AuthnProviderAlias> names that check AUTH passwords, in order"),
    AP_INIT_TAKE_ARGV("ESMTPAuthProxyUsers", reinterpret_cast<cmd_func>(take_argv<set_auth_proxy_users>), nullptr,
                      RSRC_CONF, "logins that may act as another user (a PLAIN authorization identity)"),
    AP_INIT_FLAG("ESMTPAuthRequireTLS", reinterpret_cast<cmd_func>(flag<set_auth_require_tls>), nullptr, RSRC_CONF,
                 "AUTH only over TLS (default On)"),
    AP_INIT_FLAG("ESMTPSubmission", reinterpret_cast<cmd_func>(flag<set_submission>), nullptr, RSRC_CONF,
                 "RFC 6409 submission: MAIL needs AUTH (default Off)"),
    AP_INIT_TAKE1("ESMTPMaxAuthFailures", reinterpret_cast<cmd_func>(take1<set_max_auth_failures>), nullptr, RSRC_CONF,
                  "Failed AUTH attempts per session before 421 (default 3, 0: no limit)"),
    AP_INIT_TAKE1("ESMTPSenderLoginMatch", reinterpret_cast<cmd_func>(take1<set_sender_login_match>), nullptr,
                  RSRC_CONF,
                  "On: MAIL FROM of an authenticated client must be its login or in its domain; FILE: a map of "
                  "senders to logins; Off (default)"),
    AP_INIT_TAKE1("ESMTPClientAuthRate", reinterpret_cast<cmd_func>(take1<set_client_auth_rate>), nullptr, RSRC_CONF,
                  "AUTH commands per client address per time unit: N/SECONDS or off (default off)"),
    AP_INIT_TAKE1("ESMTPAuthFailureDelay", reinterpret_cast<cmd_func>(take1<set_auth_failure_delay>), nullptr,
                  RSRC_CONF, "Seconds to wait before answering a refused password (default 1)"),
    {nullptr, {nullptr}, nullptr, 0, RAW_ARGS, nullptr},
};

// Only touches the pool (C calls): nothing here can throw.
void *create_server_config(apr_pool_t *p, server_rec *) noexcept
{
    auto *cfg = static_cast<ServerConfig *>(apr_pcalloc(p, sizeof(ServerConfig)));
    cfg->enabled = -1;
    cfg->max_message_size = -1;
    cfg->max_recipients = -1;
    cfg->log_level = -1;
    cfg->ext_set = -1;
    cfg->max_errors = -1;
    cfg->command_timeout = -1;
    cfg->data_timeout = -1;
    cfg->bare_lf_normalize = -1;
    cfg->forbid_unauth_pipelining = -1;
    cfg->max_junk_commands = -1;
    cfg->greeting_delay_ms = -1;
    cfg->pregreet_ms = -1;
    cfg->dnsbl_threshold = -1;
    cfg->dnsbl_at_rcpt = -1;
    cfg->dnsbl_timeout_ms = -1;
    cfg->greylist = GreylistSpec{};
    cfg->min_data_rate = -1;
    cfg->client_connection_limit = -1;
    cfg->client_ipv6_prefix = -1;
    cfg->client_table_size = -1;
    cfg->starttls = -1;
    cfg->tls_timeout = -1;
    cfg->proxy_protocol = -1;
    cfg->proxy_timeout = -1;
    cfg->auth_mechanisms = -1;
    cfg->auth_require_tls = -1;
    cfg->submission = -1;
    cfg->max_auth_failures = -1;
    cfg->sender_login_match = -1;
    cfg->auth_failure_delay_ms = -1;
    return cfg;
}

static void *merge_servers(apr_pool_t *p, void *base_, void *add_)
{
    auto *base = static_cast<ServerConfig *>(base_);
    auto *add = static_cast<ServerConfig *>(add_);
    auto *cfg = static_cast<ServerConfig *>(apr_pcalloc(p, sizeof(ServerConfig)));
    cfg->enabled = add->enabled != -1 ? add->enabled : base->enabled;
    if (add->factory) {
        cfg->handler_name = add->handler_name;
        cfg->handler_minor = add->handler_minor;
        cfg->factory = add->factory;
        cfg->commands = add->commands;
    } else {
        cfg->handler_name = base->handler_name;
        cfg->handler_minor = base->handler_minor;
        cfg->factory = base->factory;
        cfg->commands = base->commands;
    }
    cfg->hostname = add->hostname ? add->hostname : base->hostname;
    cfg->max_message_size = add->max_message_size != -1 ? add->max_message_size : base->max_message_size;
    cfg->max_recipients = add->max_recipients != -1 ? add->max_recipients : base->max_recipients;
    cfg->log_level = add->log_level != -1 ? add->log_level : base->log_level;
    cfg->log_file_name = add->log_file_name ? add->log_file_name : base->log_file_name;
    // +/- in the virtual host change what it inherits
    unsigned inherited = effective_extensions(base, SessionConfig().extensions);
    unsigned m = add->ext_set >= 0 ? static_cast<unsigned>(add->ext_set) : inherited;
    cfg->ext_set = static_cast<int>((m | add->ext_on) & ~add->ext_off);
    cfg->accept_domains = add->accept_domains ? add->accept_domains : base->accept_domains;
    cfg->max_errors = add->max_errors != -1 ? add->max_errors : base->max_errors;
    cfg->command_timeout = add->command_timeout != -1 ? add->command_timeout : base->command_timeout;
    cfg->data_timeout = add->data_timeout != -1 ? add->data_timeout : base->data_timeout;
    cfg->bare_lf_normalize = add->bare_lf_normalize != -1 ? add->bare_lf_normalize : base->bare_lf_normalize;
    cfg->forbid_unauth_pipelining =
        add->forbid_unauth_pipelining != -1 ? add->forbid_unauth_pipelining : base->forbid_unauth_pipelining;
    cfg->max_junk_commands = add->max_junk_commands != -1 ? add->max_junk_commands : base->max_junk_commands;
    cfg->greeting_delay_ms = add->greeting_delay_ms != -1 ? add->greeting_delay_ms : base->greeting_delay_ms;
    const ServerConfig *pg = add->pregreet_ms != -1 ? add : base;
    cfg->pregreet_ms = pg->pregreet_ms;
    cfg->pregreet_teaser = pg->pregreet_teaser;
    cfg->pregreet_remember = pg->pregreet_remember;
    cfg->dnsbl_sites = add->dnsbl_sites ? add->dnsbl_sites : base->dnsbl_sites;
    cfg->dnsbl_threshold = add->dnsbl_threshold != -1 ? add->dnsbl_threshold : base->dnsbl_threshold;
    cfg->dnsbl_at_rcpt = add->dnsbl_at_rcpt != -1 ? add->dnsbl_at_rcpt : base->dnsbl_at_rcpt;
    cfg->dnsbl_timeout_ms = add->dnsbl_timeout_ms != -1 ? add->dnsbl_timeout_ms : base->dnsbl_timeout_ms;
    cfg->dns_server = add->dns_server ? add->dns_server : base->dns_server;
    cfg->greylist = add->greylist.on != -1 ? add->greylist : base->greylist;
    cfg->min_data_rate = add->min_data_rate != -1 ? add->min_data_rate : base->min_data_rate;
    cfg->client_connection_limit =
        add->client_connection_limit != -1 ? add->client_connection_limit : base->client_connection_limit;
    for (int i = 0; i < 4; ++i) {
        const ServerConfig *from = add->client_rates_set[i] ? add : base;
        cfg->client_rates[i] = from->client_rates[i];
        cfg->client_rates_set[i] = from->client_rates_set[i];
    }
    cfg->client_ipv6_prefix = add->client_ipv6_prefix != -1 ? add->client_ipv6_prefix : base->client_ipv6_prefix;
    cfg->client_exceptions = add->client_exceptions ? add->client_exceptions : base->client_exceptions;
    cfg->client_table_size = base->client_table_size;
    cfg->worker_cap = base->worker_cap;
    cfg->milters = add->milters ? add->milters : base->milters;
    cfg->milter_spool_dir = add->milter_spool_dir ? add->milter_spool_dir : base->milter_spool_dir;
    cfg->starttls = add->starttls != -1 ? add->starttls : base->starttls;
    cfg->tls_timeout = add->tls_timeout != -1 ? add->tls_timeout : base->tls_timeout;
    cfg->proxy_protocol = add->proxy_protocol != -1 ? add->proxy_protocol : base->proxy_protocol;
    cfg->proxy_trusted = add->proxy_trusted ? add->proxy_trusted : base->proxy_trusted;
    cfg->proxy_timeout = add->proxy_timeout != -1 ? add->proxy_timeout : base->proxy_timeout;
    cfg->xclient_hosts = add->xclient_hosts ? add->xclient_hosts : base->xclient_hosts;
    cfg->auth_mechanisms = add->auth_mechanisms != -1 ? add->auth_mechanisms : base->auth_mechanisms;
    cfg->auth_providers = add->auth_providers ? add->auth_providers : base->auth_providers;
    cfg->auth_proxy_users = add->auth_proxy_users ? add->auth_proxy_users : base->auth_proxy_users;
    cfg->auth_require_tls = add->auth_require_tls != -1 ? add->auth_require_tls : base->auth_require_tls;
    cfg->submission = add->submission != -1 ? add->submission : base->submission;
    cfg->max_auth_failures = add->max_auth_failures != -1 ? add->max_auth_failures : base->max_auth_failures;
    const ServerConfig *slm = add->sender_login_match != -1 ? add : base;
    cfg->sender_login_match = slm->sender_login_match;
    cfg->sender_login_map = slm->sender_login_map;
    cfg->auth_failure_delay_ms =
        add->auth_failure_delay_ms != -1 ? add->auth_failure_delay_ms : base->auth_failure_delay_ms;
    return cfg;
}

void *merge_server_config(apr_pool_t *p, void *base, void *add) noexcept
{
    // on failure the virtual host keeps its own settings, unmerged
    return guarded(
        {"merge_server_config"}, [=] { return merge_servers(p, base, add); }, [add](const char *) { return add; });
}

// API 2.4: the extensions the server's handler carries on to the next hop
// (HandlerFactory::carries()). A handler built against an older minor has
// no such method: none.
static unsigned handler_carries(const server_rec *s, const ServerConfig *cfg)
{
    if (cfg->enabled != 1 || !cfg->factory || !*cfg->factory || cfg->handler_minor < 4)
        return 0;
    const HandlerFactory &f = **cfg->factory;
    return guarded(
        {"HandlerFactory::carries", nullptr, s}, [&f] { return f.carries(); }, [](const char *) { return 0u; });
}

SessionConfig session_config(const server_rec *s, const ServerConfig *cfg)
{
    // Every default comes from the engine's table (SessionConfig, Limits):
    // only what the configuration sets is changed here.
    SessionConfig sc;
    if (cfg->hostname)
        sc.hostname = cfg->hostname;
    else if (s->server_hostname)
        sc.hostname = s->server_hostname;
    if (cfg->max_message_size > 0)
        sc.limits.max_message_size = static_cast<std::uint64_t>(cfg->max_message_size);
    if (cfg->max_recipients > 0)
        sc.limits.max_recipients = static_cast<std::size_t>(cfg->max_recipients);
    if (cfg->log_level >= 0)
        sc.log_level = cfg->log_level;
    sc.extensions = effective_extensions(cfg, sc.extensions);
    sc.handler_carries = handler_carries(s, cfg);
    if (cfg->commands)
        sc.commands = *cfg->commands;
    if (cfg->max_errors >= 0)
        sc.limits.max_errors = static_cast<unsigned>(cfg->max_errors);
    if (cfg->command_timeout > 0)
        sc.command_timeout = static_cast<unsigned>(cfg->command_timeout);
    if (cfg->data_timeout > 0)
        sc.data_timeout = static_cast<unsigned>(cfg->data_timeout);
    if (cfg->bare_lf_normalize >= 0)
        sc.normalize_bare_newlines = cfg->bare_lf_normalize == 1;
    if (cfg->forbid_unauth_pipelining >= 0)
        sc.forbid_unauth_pipelining = cfg->forbid_unauth_pipelining == 1;
    if (cfg->max_junk_commands >= 0)
        sc.limits.max_junk_commands = static_cast<unsigned>(cfg->max_junk_commands);
    if (cfg->greeting_delay_ms >= 0)
        sc.greeting_delay_ms = static_cast<unsigned>(cfg->greeting_delay_ms);
    if (cfg->pregreet_ms >= 0) {
        sc.pregreet = true;
        sc.pregreet_ms = static_cast<unsigned>(cfg->pregreet_ms);
        sc.pregreet_teaser = !cfg->pregreet_teaser || *cfg->pregreet_teaser;
        if (cfg->pregreet_teaser)
            sc.pregreet_text = cfg->pregreet_teaser;
    }
    if (cfg->min_data_rate >= 0)
        sc.min_data_rate = static_cast<unsigned>(cfg->min_data_rate);
    ClientLimitsConfig &cl = sc.client_limits;
    if (cfg->client_connection_limit >= 0)
        cl.connection_limit = static_cast<unsigned>(cfg->client_connection_limit);
    RateLimit *rates[4] = {&cl.connection_rate, &cl.message_rate, &cl.recipient_rate, &cl.auth_rate};
    for (int i = 0; i < 4; ++i)
        if (cfg->client_rates_set[i])
            *rates[i] = cfg->client_rates[i];
    if (cfg->client_ipv6_prefix > 0)
        cl.ipv6_prefix = static_cast<unsigned>(cfg->client_ipv6_prefix);
    if (cfg->client_exceptions) {
        cl.exceptions.clear();
        for (int i = 0; i < cfg->client_exceptions->nelts; ++i)
            cl.exceptions.push_back(APR_ARRAY_IDX(cfg->client_exceptions, i, Network));
    }
    if (cfg->milters && !cfg->milters->milters.empty()) {
        auto m = std::make_shared<milter::Config>(*cfg->milters);
        if (cfg->milter_spool_dir)
            m->spool_dir = cfg->milter_spool_dir;
        sc.milters = std::move(m);
    }
    if (cfg->starttls >= 0)
        sc.starttls = static_cast<StartTls>(cfg->starttls);
    if (cfg->tls_timeout > 0)
        sc.tls_timeout = static_cast<unsigned>(cfg->tls_timeout);
    if (cfg->proxy_protocol >= 0)
        sc.proxy_protocol = static_cast<ProxyAccept>(cfg->proxy_protocol);
    if (cfg->proxy_timeout > 0)
        sc.proxy_timeout = static_cast<unsigned>(cfg->proxy_timeout);
    for (auto [from, to] :
         {std::pair{cfg->proxy_trusted, &sc.proxy_trusted}, std::pair{cfg->xclient_hosts, &sc.xclient_hosts}})
        if (from)
            for (int i = 0; i < from->nelts; ++i)
                to->add(APR_ARRAY_IDX(from, i, const char *)); // checked by the directive
    if (cfg->auth_mechanisms >= 0)
        sc.auth_mechanisms = static_cast<unsigned>(cfg->auth_mechanisms);
    if (cfg->auth_require_tls >= 0)
        sc.auth_require_tls = cfg->auth_require_tls == 1;
    if (cfg->submission >= 0)
        sc.submission = cfg->submission == 1;
    if (cfg->max_auth_failures >= 0)
        sc.max_auth_failures = static_cast<unsigned>(cfg->max_auth_failures);
    if (cfg->auth_proxy_users)
        for (int i = 0; i < cfg->auth_proxy_users->nelts; ++i)
            sc.auth_proxy_users.emplace_back(APR_ARRAY_IDX(cfg->auth_proxy_users, i, const char *));
    if (cfg->sender_login_match >= 0)
        sc.sender_login_match = cfg->sender_login_match == 1;
    if (cfg->sender_login_match == 2 && cfg->sender_login_map)
        sc.sender_login_map = *cfg->sender_login_map;
    if (cfg->auth_failure_delay_ms >= 0)
        sc.auth_failure_delay_ms = static_cast<unsigned>(cfg->auth_failure_delay_ms);
    // No open relay by default: the names of this (virtual) server.
    auto add_domain = [&sc](const char *d) {
        if (d && *d) {
            std::string lower(d);
            for (char &c : lower)
                c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
            sc.accept_domains.push_back(std::move(lower));
        }
    };
    if (cfg->accept_domains) {
        for (int i = 0; i < cfg->accept_domains->nelts; ++i)
            add_domain(APR_ARRAY_IDX(cfg->accept_domains, i, const char *));
    } else {
        add_domain(s->server_hostname);
        for (const apr_array_header_t *names : {s->names, s->wild_names})
            if (names)
                for (int i = 0; i < names->nelts; ++i)
                    add_domain(APR_ARRAY_IDX(names, i, const char *));
    }
    return sc;
}

int post_config(apr_pool_t *pconf, apr_pool_t *, apr_pool_t *, server_rec *main)
{
    return guarded(
        {"post_config", nullptr, main},
        [pconf, main] {
            bool limits = false, smtp = false;
            for (server_rec *s = main; s; s = s->next) {
                ServerConfig *cfg = server_config(s);
                auto sc = std::make_unique<SessionConfig>(session_config(s, cfg));
                limits = limits || (cfg->enabled == 1 && sc->client_limits.any());
                smtp = smtp || cfg->enabled == 1;
                apr_pool_cleanup_register(pconf, sc.get(), destroy_session_config, apr_pool_cleanup_null);
                cfg->session = sc.release(); // owned by the cleanup
            }
            if (smtp && bulkhead_post_config(pconf, main) != OK)
                return HTTP_INTERNAL_SERVER_ERROR;
            // The greylist needs the state cache; the DNSBL answers use it
            // when its provider is there (else each child keeps its own).
            bool greylist = false, dnsbl = false;
            for (server_rec *s = main; s; s = s->next) {
                const ServerConfig *c = server_config(s);
                greylist = greylist || (c->enabled == 1 && (c->greylist.on == 1 || c->pregreet_remember > 0));
                dnsbl = dnsbl || (c->enabled == 1 && c->dnsbl_sites && !(*c->dnsbl_sites)->empty());
            }
            // Shared per-client counts need it too (shared_limits.hpp).
            bool shared = limits && shared_limits_wanted();
            if ((greylist || shared || (dnsbl && state_cache_provider_loaded())) &&
                state_cache_post_config(pconf, main) != OK)
                return HTTP_INTERNAL_SERVER_ERROR;
            if (std::string why; smtp && !dnsbl_library_init(why)) {
                ap_log_error(APLOG_MARK, APLOG_EMERG, 0, main, "esmtp: the DNS resolver (c-ares) failed: %s",
                             why.c_str());
                return HTTP_INTERNAL_SERVER_ERROR;
            }
            // Only a server that limits clients needs the shared table.
            if (!limits) {
                client_table_off();
                return OK;
            }
            apr_int64_t entries = server_config(main)->client_table_size;
            if (client_table_post_config(
                    pconf, main, entries > 0 ? static_cast<std::size_t>(entries) : ClientTable::kDefaultEntries) != OK)
                return HTTP_INTERNAL_SERVER_ERROR;
            server_rec *counted = nullptr;
            for (server_rec *s = main; s && !counted; s = s->next)
                if (server_config(s)->enabled == 1 && server_config(s)->session->client_limits.any())
                    counted = s;
            return shared_limits_post_config(pconf, main, counted);
        },
        [](const char *) { return HTTP_INTERNAL_SERVER_ERROR; });
}

bool check_handler(const HandlerFactory &factory, std::string &why) noexcept
{
    try {
        return factory.check(why);
    } catch (const std::exception &e) {
        why = e.what();
    } catch (...) {
        why = "check failed";
    }
    return false;
}

// API 2.3: each server that speaks SMTP gets the factory its handler
// builds for it (HandlerFactory::for_server), now that every directive of
// every module is read and merged. Handlers built against an older minor
// have no such method: their factory serves every server as it is.
static int bind_factories(apr_pool_t *pconf, server_rec *main)
{
    int rv = OK;
    for (server_rec *s = main; s; s = s->next) {
        ServerConfig *cfg = server_config(s);
        if (cfg->enabled != 1 || !cfg->factory || !*cfg->factory || cfg->handler_minor < 3)
            continue;
        ServerContext ctx;
        ctx.server = s;
        ctx.pool = pconf;
        ctx.server_name = s->server_hostname ? s->server_hostname : "";
        ctx.location = std::string(s->defn_name ? s->defn_name : "?") + ":" + std::to_string(s->defn_line_number);
        std::string error;
        std::shared_ptr<HandlerFactory> bound;
        try {
            bound = (*cfg->factory)->for_server(ctx, error);
        } catch (const std::exception &e) {
            error = e.what();
        } catch (...) {
            error = "for_server() failed";
        }
        if (!error.empty() && !bound) {
            ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_EMERG, 0, nullptr, "ESMTPHandler %s for server %s (%s): %s",
                         cfg->handler_name, ctx.server_name.empty() ? "?" : ctx.server_name.c_str(),
                         ctx.location.c_str(), error.c_str());
            rv = !OK;
            continue;
        }
        if (bound) {
            cfg->factory = new std::shared_ptr<HandlerFactory>(std::move(bound));
            apr_pool_cleanup_register(pconf, cfg->factory, destroy_factory, apr_pool_cleanup_null);
        }
    }
    return rv;
}

static int check_servers(apr_pool_t *pconf, apr_pool_t *ptemp, server_rec *main)
{
    int rv = bind_factories(pconf, main);
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
        if (cfg->enabled == 1 && cfg->starttls > 0 && !ssl_engine_on(s)) {
            ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_EMERG, 0, nullptr,
                         "ESMTPStartTLS %s for server %s (%s:%d) needs SSLEngine on (and a certificate) in the same "
                         "VirtualHost",
                         cfg->starttls == static_cast<int>(StartTls::required) ? "Required" : "On",
                         s->server_hostname ? s->server_hostname : "?", s->defn_name ? s->defn_name : "?",
                         s->defn_line_number);
            rv = !OK;
        }
        if (cfg->enabled == 1 && cfg->proxy_protocol > static_cast<int>(ProxyAccept::off) && !cfg->proxy_trusted) {
            ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_EMERG, 0, nullptr,
                         "ESMTPProxyProtocol for server %s (%s:%d) needs ESMTPProxyTrusted: the addresses of the "
                         "load balancers allowed to send the PROXY header",
                         s->server_hostname ? s->server_hostname : "?", s->defn_name ? s->defn_name : "?",
                         s->defn_line_number);
            rv = !OK;
        }
    }
    if (auth_check_config(main) != OK)
        rv = !OK;
    for (server_rec *s = main; s; s = s->next) {
        const ServerConfig *c = server_config(s);
        if (c->enabled == 1 && (c->greylist.on == 1 || c->pregreet_remember > 0)) {
            if (std::string why; !state_cache_check(main, why)) {
                ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_EMERG, 0, nullptr,
                             "%s; ESMTPGreylist and ESMTPPregreet remember= need it", why.c_str());
                rv = !OK;
            }
            break;
        }
    }
    // Shared per-client counts need the cache's provider too.
    for (server_rec *s = main; s; s = s->next) {
        const ServerConfig *c = server_config(s);
        if (c->enabled == 1 && shared_limits_wanted() && session_config(s, c).client_limits.any()) {
            if (std::string why; !state_cache_check(main, why)) {
                ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_EMERG, 0, nullptr,
                             "%s; the per-client limits shared through it need it", why.c_str());
                rv = !OK;
            }
            break;
        }
    }
    if (rv == OK && preflight(ptemp, main) != OK)
        rv = !OK;
    return rv;
}

int check_config(apr_pool_t *pconf, apr_pool_t *, apr_pool_t *ptemp, server_rec *main)
{
    return guarded(
        {"check_config", nullptr, main}, [pconf, ptemp, main] { return check_servers(pconf, ptemp, main); },
        [](const char *) { return HTTP_INTERNAL_SERVER_ERROR; });
}
} // namespace esmtp
