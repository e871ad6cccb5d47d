// The transaction log: ESMTPLogFileName (file or piped log) or, without
// one, the error log under `LogLevel esmtp:...`.
#pragma once

#include "httpd/config.hpp"
#include "engine/txlog_format.hpp"

namespace esmtp
{

class TxLog final : public TxLogSink
{
  public:
    TxLog(conn_rec *c, apr_file_t *file) : c_(c), file_(file) {}
    void write(int level, std::string_view record) override;
    void error(std::string_view text) override;

  private:
    conn_rec *c_;
    apr_file_t *file_;
};

// Where ESMTPLogFileName NAME (not a pipe) is written: a relative name is
// under ServerRoot's logs/.
const char *txlog_path(apr_pool_t *p, const char *name);

// open_logs hook: opens every server's ESMTPLogFileName once (servers that
// name the same file share it).
int open_logs(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp, server_rec *s);

} // namespace esmtp
