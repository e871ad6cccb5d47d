#include "httpd/txlog.hpp"

#include "httpd/guard.hpp"

#include <apr_hash.h>
#include <apr_strings.h>
#include <http_log.h>

namespace esmtp
{

void TxLog::error(std::string_view text)
{
    ap_log_cerror(APLOG_MARK, APLOG_ERR, 0, c_, "esmtp: %.*s", static_cast<int>(text.size()), text.data());
}

void TxLog::write(int level, std::string_view record)
{
    if (file_) {
        // One write per record: O_APPEND keeps records of concurrent
        // processes whole (and a pipe does for records under PIPE_BUF).
        apr_size_t n = record.size();
        apr_file_write_full(file_, record.data(), n, nullptr);
        return;
    }
    int aplevel = level <= txlog_session ? APLOG_INFO : level == txlog_commands ? APLOG_DEBUG : APLOG_TRACE1;
    std::string_view line = record;
    if (!line.empty() && line.back() == '\n')
        line.remove_suffix(1);
    ap_log_cerror(APLOG_MARK, aplevel, 0, c_, "%.*s", static_cast<int>(line.size()), line.data());
}

const char *txlog_path(apr_pool_t *p, const char *name)
{
    return name[0] == '/' ? name : ap_server_root_relative(p, apr_pstrcat(p, "logs/", name, nullptr));
}

namespace
{

int open_log_files(apr_pool_t *pconf, server_rec *main)
{
    apr_hash_t *opened = apr_hash_make(pconf);
    for (server_rec *s = main; s; s = s->next) {
        ServerConfig *cfg = server_config(s);
        cfg->log_file = nullptr;
        if (!cfg->log_file_name || cfg->enabled != 1 || cfg->log_level == 0)
            continue;
        const char *name = cfg->log_file_name;
        if (auto *f = static_cast<apr_file_t *>(apr_hash_get(opened, name, APR_HASH_KEY_STRING))) {
            cfg->log_file = f;
            continue;
        }
        if (name[0] == '|') {
            piped_log *pl = ap_open_piped_log(pconf, name + 1);
            if (!pl) {
                ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_EMERG, 0, nullptr,
                             "ESMTPLogFileName: cannot start piped log '%s'", name + 1);
                return !OK;
            }
            cfg->log_file = ap_piped_log_write_fd(pl);
        } else {
            const char *path = txlog_path(pconf, name);
            // 0640, as Debian's other logs (the group, adm there, comes from
            // the package or logrotate's "create 640 root adm").
            apr_status_t rv = apr_file_open(&cfg->log_file, path, APR_WRITE | APR_APPEND | APR_CREATE,
                                            APR_FPROT_UREAD | APR_FPROT_UWRITE | APR_FPROT_GREAD, pconf);
            if (rv != APR_SUCCESS) {
                ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_EMERG, rv, nullptr,
                             "ESMTPLogFileName: cannot open transaction log %s", path);
                return !OK;
            }
        }
        apr_hash_set(opened, name, APR_HASH_KEY_STRING, cfg->log_file);
    }
    return OK;
}

} // namespace

int open_logs(apr_pool_t *pconf, apr_pool_t *, apr_pool_t *, server_rec *main)
{
    return guarded(
        {"open_logs", nullptr, main}, [pconf, main] { return open_log_files(pconf, main); },
        [](const char *) { return HTTP_INTERNAL_SERVER_ERROR; });
}

} // namespace esmtp
