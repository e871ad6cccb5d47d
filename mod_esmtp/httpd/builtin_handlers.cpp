// Registers the built-in handlers as providers, exactly as a third-party
// module would.
#include "handlers/discard.hpp"
#include "handlers/http.hpp"
#include "handlers/lmtp.hpp"
#include "handlers/maildir.hpp"
#include "handlers/pipe.hpp"
#include "httpd/mod_esmtp.hpp"
#include <esmtp/apache.hpp>

namespace esmtp
{

void register_builtin_handlers(apr_pool_t *p)
{
    static const MaildirProvider maildir;
    static const DiscardProvider discard;
    static const PipeProvider pipe;
    static const LmtpProvider lmtp;
    static const HttpProvider http;
    static const LmtpProvider smtp(LmtpProvider::Dialect::smtp);
    register_handler_provider(p, "maildir", &maildir);
    register_handler_provider(p, "discard", &discard);
    register_handler_provider(p, "pipe", &pipe);
    register_handler_provider(p, "lmtp", &lmtp);
    register_handler_provider(p, "http", &http);
    register_handler_provider(p, "smtp", &smtp);
}

} // namespace esmtp
