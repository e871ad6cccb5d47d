#include "httpd/preflight.hpp"

#include "httpd/config.hpp"
#include "httpd/txlog.hpp"

#include <ap_listen.h>
#include <apr_hash.h>
#include <apr_strings.h>
#include <http_core.h>
#include <unixd.h>

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <grp.h>
#include <set>
#include <string>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

namespace esmtp
{

namespace
{

const char *name_of(const server_rec *s)
{
    return s->server_hostname ? s->server_hostname : "?";
}

// Why the parent could not open PATH with O_APPEND|O_CREAT (empty: it can).
std::string log_file_problem(const std::string &path)
{
    struct stat st;
    if (::stat(path.c_str(), &st) == 0) {
        if (S_ISDIR(st.st_mode))
            return "it is a directory";
        if (::faccessat(AT_FDCWD, path.c_str(), W_OK, AT_EACCESS) != 0)
            return std::strerror(errno);
        return {};
    }
    if (errno != ENOENT)
        return std::strerror(errno);
    auto slash = path.rfind('/');
    std::string dir = slash == 0 || slash == std::string::npos ? "/" : path.substr(0, slash);
    if (::stat(dir.c_str(), &st) != 0)
        return "its directory " + dir + " does not exist (" + std::strerror(errno) + ")";
    if (!S_ISDIR(st.st_mode))
        return dir + " is not a directory";
    if (::faccessat(AT_FDCWD, dir.c_str(), W_OK | X_OK, AT_EACCESS) != 0)
        return "cannot create a file in " + dir + ": " + std::strerror(errno);
    return {};
}

int check_log_files(apr_pool_t *p, server_rec *main)
{
    int rv = OK;
    std::set<std::string> checked; // servers share files
    for (server_rec *s = main; s; s = s->next) {
        const ServerConfig *cfg = server_config(s);
        const char *name = cfg->log_file_name;
        if (!name || cfg->enabled != 1 || cfg->log_level == 0 || name[0] == '|')
            continue;
        std::string path = txlog_path(p, name);
        if (!checked.insert(path).second)
            continue;
        std::string why = log_file_problem(path);
        if (why.empty())
            continue;
        ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_EMERG, 0, nullptr,
                     "ESMTPLogFileName %s of server %s (%s:%d): cannot open %s for appending: %s", name, name_of(s),
                     s->defn_name ? s->defn_name : "?", s->defn_line_number, path.c_str(), why.c_str());
        rv = !OK;
    }
    return rv;
}

// factory.check() as the children's user: in a forked process that takes
// their identity as mod_unixd will (only root can; otherwise the children
// run as we do). Returns true when the check passed; `why` otherwise.
bool check_as_children(const HandlerFactory &factory, std::string &why)
{
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) {
        why = std::string("cannot check (pipe: ") + std::strerror(errno) + ")";
        return true; // no verdict: the children's own check still runs
    }
    pid_t pid = ::fork();
    if (pid < 0) {
        ::close(fds[0]);
        ::close(fds[1]);
        why = std::string("cannot check (fork: ") + std::strerror(errno) + ")";
        return true;
    }
    if (pid == 0) {
        ::close(fds[0]);
        std::string verdict = "0";
        if (::geteuid() == 0 && (::setgid(ap_unixd_config.group_id) != 0 ||
                                 ::initgroups(ap_unixd_config.user_name, ap_unixd_config.group_id) != 0 ||
                                 ::setuid(ap_unixd_config.user_id) != 0)) {
            verdict += std::string("cannot take the identity of User ") + ap_unixd_config.user_name + ": " +
                       std::strerror(errno);
        } else {
            std::string reason;
            verdict = check_handler(factory, reason) ? "1" : "0" + reason;
        }
        ssize_t ignored = ::write(fds[1], verdict.data(), verdict.size());
        (void)ignored;
        ::_exit(0); // nothing of the parent's (pools, atexit) runs here
    }
    ::close(fds[1]);
    std::string verdict;
    char buf[512];
    for (;;) {
        ssize_t n = ::read(fds[0], buf, sizeof buf);
        if (n > 0)
            verdict.append(buf, static_cast<std::size_t>(n));
        else if (n == 0 || errno != EINTR)
            break;
    }
    ::close(fds[0]);
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (verdict.empty()) {
        why = "cannot check (the checking process died)";
        return true;
    }
    if (verdict[0] == '1')
        return true;
    why = verdict.substr(1);
    return false;
}

int check_handlers(server_rec *main)
{
    int rv = OK;
    for_each_handler_factory(main, [&rv](server_rec *s, const ServerConfig *cfg) {
        std::string why;
        if (check_as_children(**cfg->factory, why)) {
            if (!why.empty())
                ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_WARNING, 0, nullptr, "esmtp: ESMTPHandler %s: %s",
                             cfg->handler_name, why.c_str());
            return;
        }
        // A Maildir the children cannot write is a configuration error (each
        // delivery would get 451); an LMTP socket or a pipe's spool may come
        // later (Dovecot starting after httpd): a warning.
        bool fatal = cfg->handler_name && std::strcmp(cfg->handler_name, "maildir") == 0;
        ap_log_error(APLOG_MARK, APLOG_STARTUP | (fatal ? APLOG_EMERG : APLOG_WARNING), 0, nullptr,
                     "ESMTPHandler %s of server %s (%s:%d) cannot work for User %s: %s", cfg->handler_name, name_of(s),
                     s->defn_name ? s->defn_name : "?", s->defn_line_number,
                     ap_unixd_config.user_name ? ap_unixd_config.user_name : "?",
                     why.empty() ? "(no reason given)" : why.c_str());
        if (fatal)
            rv = !OK;
    });
    return rv;
}

bool addr_matches(const server_addr_rec *a, const ap_listen_rec *lr)
{
    if (a->host_port != 0 && a->host_port != lr->bind_addr->port)
        return false;
    return apr_sockaddr_is_wildcard(a->host_addr) || apr_sockaddr_is_wildcard(lr->bind_addr) ||
           apr_sockaddr_equal(a->host_addr, lr->bind_addr);
}

bool serves(const server_rec *s, const server_rec *main, const ap_listen_rec *lr)
{
    if (s->is_virtual) {
        for (const server_addr_rec *a = s->addrs; a; a = a->next)
            if (addr_matches(a, lr))
                return true;
        return false;
    }
    // The main server answers on listeners no virtual host claims.
    for (const server_rec *v = main->next; v; v = v->next)
        if (serves(v, main, lr))
            return false;
    return true;
}

// Warns only: the server still works for clients that speak first.
void check_listeners(server_rec *main)
{
    auto *core = static_cast<core_server_config *>(ap_get_core_module_config(main->module_config));
    if (!core || !core->accf_map)
        return;
    for (server_rec *s = main; s; s = s->next) {
        const ServerConfig *cfg = server_config(s);
        if (cfg->enabled != 1)
            continue;
        for (const ap_listen_rec *lr = ap_listeners; lr; lr = lr->next) {
            if (!lr->bind_addr || !serves(s, main, lr))
                continue;
            const char *proto = lr->protocol ? lr->protocol : "http";
            const char *accf = apr_table_get(core->accf_map, proto);
            if (!accf || std::strcmp(accf, "none") == 0)
                continue;
            ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_WARNING, 0, nullptr,
                         "ESMTPProtocol On for server %s (%s:%d) on %pI: its Listen has protocol \"%s\", which has "
                         "httpd's accept filter \"%s\" (no greeting until the client sends something); write "
                         "\"Listen %pI smtp\" or \"AcceptFilter %s none\"",
                         name_of(s), s->defn_name ? s->defn_name : "?", s->defn_line_number, lr->bind_addr, proto, accf,
                         lr->bind_addr, proto);
        }
    }
}

} // namespace

int preflight(apr_pool_t *ptemp, server_rec *main)
{
    int rv = check_log_files(ptemp, main);
    if (check_handlers(main) != OK)
        rv = !OK;
    check_listeners(main);
    return rv;
}

} // namespace esmtp
