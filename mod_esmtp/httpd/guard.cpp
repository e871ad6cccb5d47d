#include "httpd/guard.hpp"

#include <http_log.h>

namespace esmtp
{

void log_entry_failure(const EntryPoint &where, const char *what) noexcept
{
    if (where.c)
        ap_log_cerror(APLOG_MARK, APLOG_ERR, 0, where.c, "esmtp: %s failed: %s", where.name, what);
    else
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, where.s, "esmtp: %s failed: %s", where.name, what);
}

} // namespace esmtp
