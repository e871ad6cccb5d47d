// mod_esmtp_test_handler: a handler written as a separate httpd module,
// through the public API only (include/esmtp/*.hpp). The integration tests
// load it next to mod_esmtp and configure
//
//     ESMTPHandler test EVENTFILE
//
// Every protocol event is appended to EVENTFILE as one line ("CONNECT",
// "EHLO client.example", "MAIL <a@b>", "RCPT <x@y>", "DATA",
// "HEADER Subject: value", "EOH", "BODY 123", "EOM", "ABORT", "RSET",
// "QUIT", "DISCONNECT", ...). The file is opened with O_APPEND for every
// line, so several httpd children may write to it at once.
//
// Behaviour:
//   - RCPT to any local part "reject" gets 550 5.1.1 No such user here;
//     local part "tempfail" gets 451 4.2.0; local part "throw" makes the
//     handler throw (the module must answer 451 4.3.0 and go on); local
//     part "nocode" gets a 550 without enhanced code (5.0.0 is added).
//   - EOM is answered 250 without storing anything; 451 4.3.0 when the
//     sender's local part is "eom451". DATA is answered 451 4.3.0 when it
//     is "data451" (a handler that cannot store the message).
//   - The command "XPING [text]" is added to the server's command table
//     (HandlerFactory::commands(), compiled once at configuration time) and
//     answered "250 2.0.0 PONG [text]" by Handler::command().
//   - ESMTPHandler test EVENTFILE badcommand: commands() returns a pattern
//     that does not compile (the configuration must fail).
//   - ESMTPHandler test EVENTFILE carries=dsn,requiretls (either or both):
//     HandlerFactory::carries() (API 2.4) says so, and mod_esmtp offers DSN
//     (and REQUIRETLS over TLS); the parameters show in the MAIL and RCPT
//     events. A stand-in for a next hop that keeps those promises.
//   - The module's own directive `TestHandlerTag WORD` (server config,
//     per VirtualHost, before or after ESMTPHandler, inherited from the
//     main server): read by HandlerFactory::for_server() (API 2.3), the
//     CONNECT event line then reads "CONNECT tag=WORD". The word "refuse"
//     makes for_server() fail (the configuration must fail).
//   - Besides "test", the provider is registered as "test22" under the bare
//     version "2", as API 2.0-2.2 headers did (mod_esmtp must run it and
//     must not call for_server(), which such a handler would not have), and
//     as "future" under API 2.99 (mod_esmtp must refuse it at apache2 -t).
//
// Nothing here may let a C++ exception reach httpd: register_hooks catches
// everything; handler methods only throw on purpose ("throw" recipient), and
// mod_esmtp catches those at its boundary.

#include <esmtp/apache.hpp>
#include <esmtp/handler.hpp>
#include <esmtp/provider.hpp>

#include <httpd.h>
#include <http_config.h>
#include <http_log.h>
#include <ap_provider.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

extern "C" {
extern module AP_MODULE_DECLARE_DATA esmtp_test_handler_module;
}
APLOG_USE_MODULE(esmtp_test_handler);

namespace
{

using esmtp::HeaderField;
using esmtp::Params;
using esmtp::Path;
using esmtp::Reply;
using esmtp::SessionView;

// Control characters (a stray CR or LF in a header value, a NUL) become '?'
// so that one event is always exactly one line.
std::string printable(std::string_view s)
{
    std::string out;
    out.reserve(s.size());
    for (unsigned char ch : s)
        out.push_back((ch < 0x20 || ch == 0x7f) ? '?' : static_cast<char>(ch));
    return out;
}

std::string params_text(const Params &params)
{
    std::string out;
    for (const auto &p : params) {
        out += ' ';
        out += p.keyword;
        if (!p.value.empty()) {
            out += '=';
            out += p.value;
        }
    }
    return printable(out);
}

bool local_part_is(const Path &p, std::string_view want)
{
    std::string_view lp = p.local_part;
    if (lp.size() != want.size())
        return false;
    for (std::size_t i = 0; i < lp.size(); ++i) {
        char a = lp[i];
        if (a >= 'A' && a <= 'Z')
            a = static_cast<char>(a - 'A' + 'a');
        if (a != want[i])
            return false;
    }
    return true;
}

class EventFile
{
  public:
    explicit EventFile(std::string path) : path_(std::move(path)) {}

    // One write(2) per line with O_APPEND: lines of concurrent writers
    // never interleave. Never throws.
    void record(std::string_view event) const noexcept
    {
        try {
            std::string line;
            line.reserve(event.size() + 1);
            line.append(event);
            line.push_back('\n');
            int fd = ::open(path_.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0666);
            if (fd < 0)
                return;
            const char *p = line.data();
            std::size_t left = line.size();
            while (left > 0) {
                ssize_t n = ::write(fd, p, left);
                if (n < 0) {
                    if (errno == EINTR)
                        continue;
                    break;
                }
                p += n;
                left -= static_cast<std::size_t>(n);
            }
            ::close(fd);
        } catch (...) {
            // out of memory: drop the event, never let it reach httpd
        }
    }

  private:
    std::string path_;
};

class TestHandler final : public esmtp::Handler
{
  public:
    TestHandler(std::shared_ptr<const EventFile> events, std::string_view tag) : events_(std::move(events)), tag_(tag)
    {
    }
    std::string from_seen_, rcpts_seen_;
    // After "HELO slow-destroy.test": the destructor takes 300 ms (as an
    // lmtp handler's QUIT can) and records DESTROY, so that a test can see
    // where the handler is destroyed (before the connection closes, in a
    // hook; not in c->pool's cleanup).
    ~TestHandler() override
    {
        if (!slow_destroy_)
            return;
        ::usleep(300 * 1000);
        ev("DESTROY");
    }

    Reply connect(SessionView &) override
    {
        ev(tag_.empty() ? std::string("CONNECT") : "CONNECT tag=" + std::string(tag_));
        return {};
    }
    // A handler-defined command: "XPING [text]" -> 250 PONG [text].
    Reply command(SessionView &, std::string_view name, const std::vector<std::string> &caps) override
    {
        if (name != "XPING")
            return {};
        std::string arg = caps.size() > 1 ? caps[1] : std::string();
        ev("XPING" + (arg.empty() ? std::string() : " " + printable(arg)));
        return Reply(250, arg.empty() ? std::string("PONG") : "PONG " + arg, "2.0.0");
    }
    Reply helo(SessionView &, std::string_view domain) override
    {
        ev("HELO " + printable(domain));
        slow_destroy_ = domain == "slow-destroy.test";
        return {};
    }
    Reply ehlo(SessionView &s, std::string_view domain, std::vector<std::string> &extensions) override
    {
        ev("EHLO " + printable(domain));
        // API 2.1: what the handler sees of TLS
        if (const esmtp::TlsInfo &t = s.tls(); t.active)
            ev("TLS " + printable(t.protocol) + " " + printable(t.cipher) + " " + std::to_string(t.bits) + " sni=" +
               printable(t.sni) + " verify=" + printable(t.client_verify) + " subject=" + printable(t.client_subject) +
               " issuer=" + printable(t.client_issuer) + " fp=" + printable(t.client_fingerprint));
        extensions.emplace_back("XPING");
        return {};
    }
    Reply mail(SessionView &, const Path &from, const Params &params) override
    {
        ev("MAIL <" + printable(from.mailbox) + ">" + params_text(params));
        eom451_ = local_part_is(from, "eom451");
        data451_ = local_part_is(from, "data451");
        from_seen_ = from.mailbox;
        rcpts_seen_.clear();
        return {};
    }
    Reply rcpt(SessionView &, const Path &to, const Params &params) override
    {
        ev("RCPT <" + printable(to.mailbox) + ">" + params_text(params));
        if (local_part_is(to, "reject"))
            return Reply(550, "No such user here", "5.1.1");
        if (local_part_is(to, "tempfail"))
            return Reply(451, "Try again later", "4.2.0");
        if (local_part_is(to, "nocode")) // no enhanced code: the module adds the class default
            return Reply(550, "Refused without an enhanced code");
        if (local_part_is(to, "throw"))
            throw std::runtime_error("test handler: exception on purpose");
        rcpts_seen_ += "<" + printable(to.mailbox) + ">" + params_text(params);
        return {};
    }
    Reply data(SessionView &) override
    {
        ev("DATA");
        if (data451_)
            return Reply(451, "Local error in processing (test handler)", "4.3.0");
        return {};
    }
    void header(SessionView &, const HeaderField &field) override
    {
        ev("HEADER " + printable(field.name) + ": " + printable(field.value));
    }
    void eoh(SessionView &, std::string_view) override { ev("EOH"); }
    void body(SessionView &, std::string_view chunk) override { ev("BODY " + std::to_string(chunk.size())); }
    Reply eom(SessionView &s) override
    {
        ev("EOM");
        // What a milter changed (ESMTPMilter): the envelope when it is not
        // what MAIL and RCPT said, and a quarantine (API 2.1).
        std::string rcpts;
        for (const auto &r : s.envelope().recipients)
            rcpts += "<" + printable(r.path.mailbox) + ">" + params_text(r.params);
        if (s.envelope().sender.mailbox != from_seen_ || rcpts != rcpts_seen_)
            ev("ENVELOPE <" + printable(s.envelope().sender.mailbox) + ">" + params_text(s.envelope().mail_params) +
               " " + rcpts);
        if (!s.quarantine_reason().empty())
            ev("QUARANTINE " + printable(s.quarantine_reason()));
        if (eom451_)
            return Reply(451, "Try again later (test handler)", "4.3.0");
        return Reply(250, "Ok: accepted as " + std::string(s.queue_id()) + " (test handler, not stored)", "2.0.0");
    }
    void abort(SessionView &) override { ev("ABORT"); }
    Reply rset(SessionView &) override
    {
        ev("RSET");
        return {};
    }
    Reply noop(SessionView &) override
    {
        ev("NOOP");
        return {};
    }
    Reply vrfy(SessionView &, std::string_view arg) override
    {
        ev("VRFY " + printable(arg));
        return {};
    }
    Reply expn(SessionView &, std::string_view arg) override
    {
        ev("EXPN " + printable(arg));
        return {};
    }
    Reply help(SessionView &, std::string_view arg) override
    {
        ev(arg.empty() ? std::string("HELP") : "HELP " + printable(arg));
        return {};
    }
    Reply quit(SessionView &) override
    {
        ev("QUIT");
        return {};
    }
    Reply unknown(SessionView &, std::string_view line) override
    {
        ev("UNKNOWN " + printable(line.substr(0, 64)));
        return {};
    }
    void disconnect(SessionView &) override { ev("DISCONNECT"); }

  private:
    void ev(std::string_view e) const noexcept { events_->record(e); }
    bool slow_destroy_ = false;
    bool data451_ = false; // MAIL FROM local part "data451": DATA answers 451
    bool eom451_ = false;  // MAIL FROM local part "eom451": EOM answers 451

    std::shared_ptr<const EventFile> events_;
    std::string tag_; // TestHandlerTag of the handler's server
};

// The module's per-server configuration (TestHandlerTag).
struct TagConfig {
    const char *tag; // nullptr: not set in this server
};

void *create_tag_config(apr_pool_t *p, server_rec *) noexcept
{
    return apr_pcalloc(p, sizeof(TagConfig));
}

void *merge_tag_config(apr_pool_t *p, void *base_v, void *add_v) noexcept
{
    auto *merged = static_cast<TagConfig *>(apr_pcalloc(p, sizeof(TagConfig)));
    const auto *base = static_cast<const TagConfig *>(base_v);
    const auto *add = static_cast<const TagConfig *>(add_v);
    merged->tag = add->tag ? add->tag : base->tag;
    return merged;
}

const char *set_tag(cmd_parms *cmd, void *, const char *arg) noexcept
{
    static_cast<TagConfig *>(ap_get_module_config(cmd->server->module_config, &esmtp_test_handler_module))->tag = arg;
    return nullptr;
}

class TestFactory final : public esmtp::HandlerFactory
{
  public:
    TestFactory(std::string path, bool bad_command, unsigned carries, std::string tag = {})
        : path_(path), events_(std::make_shared<const EventFile>(std::move(path))), bad_command_(bad_command),
          carries_(carries), tag_(std::move(tag))
    {
    }
    std::unique_ptr<esmtp::Handler> create() override { return std::make_unique<TestHandler>(events_, tag_); }
    // API 2.3: every directive is read and merged; this server's tag.
    std::shared_ptr<esmtp::HandlerFactory> for_server(const esmtp::ServerContext &ctx, std::string &error) override
    {
        const auto *cfg =
            static_cast<const TagConfig *>(ap_get_module_config(ctx.server->module_config, &esmtp_test_handler_module));
        if (!cfg || !cfg->tag)
            return nullptr; // no tag: this factory as it is
        if (std::string_view(cfg->tag) == "refuse") {
            error = "TestHandlerTag refuse: refused on purpose";
            return nullptr;
        }
        return std::make_shared<TestFactory>(path_, bad_command_, carries_, cfg->tag);
    }
    // API 2.4
    unsigned carries() const override { return carries_; }
    std::vector<esmtp::CommandSpec> commands() const override
    {
        if (bad_command_)
            return {{"XBROKEN", "^XBROKEN (unclosed$"}};
        return {{"XPING", "^XPING(?:[ \\t]+(.*))?$"}};
    }
    // As the server's user (child_init): the event file must be writable.
    bool check(std::string &why) const override
    {
        if (::access(path_.c_str(), W_OK) == 0 || (errno == ENOENT && writable_dir()))
            return true;
        why = "event file " + path_ + " is not writable by the server's user: " + std::strerror(errno);
        return false;
    }

  private:
    bool writable_dir() const
    {
        std::string dir = path_.substr(0, path_.find_last_of('/') + 1);
        return ::access(dir.empty() ? "." : dir.c_str(), W_OK | X_OK) == 0;
    }
    std::string path_;
    std::shared_ptr<const EventFile> events_;
    bool bad_command_;
    unsigned carries_;
    std::string tag_;
};

class TestProvider final : public esmtp::HandlerProvider
{
  public:
    std::shared_ptr<esmtp::HandlerFactory>
    configure(const esmtp::HandlerContext &ctx, const std::vector<std::string> &args, std::string &error) const override
    {
        try {
            bool bad_command = false;
            unsigned carries = 0;
            bool ok = !args.empty() && !args[0].empty();
            for (std::size_t i = 1; ok && i < args.size(); ++i) {
                std::string_view a = args[i];
                if (a == "badcommand")
                    bad_command = true;
                else if (a == "carries=dsn")
                    carries |= esmtp::carries_dsn;
                else if (a == "carries=requiretls")
                    carries |= esmtp::carries_requiretls;
                else if (a == "carries=dsn,requiretls")
                    carries |= esmtp::carries_dsn | esmtp::carries_requiretls;
                else
                    ok = false;
            }
            if (!ok) {
                error = ctx.directive + " test: expects the event file (ESMTPHandler test EVENTFILE [badcommand] "
                                        "[carries=dsn|requiretls|dsn,requiretls])";
                return nullptr;
            }
            std::string path = args[0];
            if (path[0] != '/') {
                std::string root = ctx.server_root;
                if (!root.empty() && root.back() != '/')
                    root.push_back('/');
                path = root + path;
            }
            // The file itself is created by the first event (as the httpd
            // child's user); only its directory must exist now.
            std::string dir = path.substr(0, path.find_last_of('/'));
            if (dir.empty())
                dir = "/";
            struct stat st;
            if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
                error = ctx.directive + " test: directory of the event file " + path + " does not exist";
                return nullptr;
            }
            return std::make_shared<TestFactory>(path, bad_command, carries);
        } catch (const std::exception &e) {
            error = std::string("ESMTPHandler test: ") + e.what();
        } catch (...) {
            error = "ESMTPHandler test: unexpected error";
        }
        return nullptr;
    }
};

const TestProvider test_provider;

const command_rec directives[] = {
    // C++ sees cmd_func as a function without parameters: cast, as httpd's C
    // modules do implicitly.
    AP_INIT_TAKE1("TestHandlerTag", reinterpret_cast<cmd_func>(set_tag), nullptr, RSRC_CONF,
                  "a word the test handler's CONNECT event shows (per server)"),
    {}, // end of the table
};

void register_hooks(apr_pool_t *pool)
{
    try {
        apr_status_t rv = esmtp::register_handler_provider(pool, "test", &test_provider);
        if (rv != APR_SUCCESS)
            ap_log_perror(APLOG_MARK, APLOG_ERR, rv, pool, "esmtp_test_handler: cannot register provider \"test\"");
        // What API 2.0-2.2 headers registered, and what a newer minor would.
        ap_register_provider(pool, ESMTP_HANDLER_PROVIDER_GROUP, "test22", "2", &test_provider);
        ap_register_provider(pool, ESMTP_HANDLER_PROVIDER_GROUP, "future",
                             ESMTP_STRINGIFY(ESMTP_API_MAJOR) ".99 " ESMTP_ABI_LIBRARY " " ESMTP_ABI_STANDARD,
                             &test_provider);
    } catch (...) {
        // nothing may cross into httpd
    }
}

} // namespace

extern "C" {
// -fvisibility=hidden is in effect: httpd finds the module record by name.
__attribute__((visibility("default"))) module AP_MODULE_DECLARE_DATA esmtp_test_handler_module = {
    STANDARD20_MODULE_STUFF,
    nullptr,           // per-directory config creator
    nullptr,           // dir config merger
    create_tag_config, // server config creator
    merge_tag_config,  // server config merger
    directives,        // command table
    register_hooks,    // hook registration
    AP_MODULE_FLAG_NONE,
};
}
