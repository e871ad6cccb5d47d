#include "handlers/http.hpp"
#include "engine/sha256.hpp"
#include "engine/text.hpp"
#include "handlers/spool.hpp"

#include <curl/curl.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <memory>
#include <mutex>
#include <sstream>
#include <sys/stat.h>
#include <unistd.h>

namespace esmtp
{

namespace http
{

namespace
{
// The start of the response body kept for the reply text; the rest is read
// and thrown away.
constexpr std::size_t kAnswerKeep = 1024;
// A 550's text from the application: short, one line.
constexpr std::size_t kTextMax = 200;
} // namespace

std::string header_value(std::string_view v)
{
    std::string out;
    out.reserve(v.size());
    for (std::size_t i = 0; i < v.size(); ++i) {
        char c = v[i];
        if (c == '\r' && i + 2 < v.size() && v[i + 1] == '\n' && (v[i + 2] == ' ' || v[i + 2] == '\t')) {
            ++i; // folding: the blank that follows stays
            continue;
        }
        out += (c == '\r' || c == '\n' || c == '\0') ? ' ' : c;
    }
    return out;
}

std::string application_text(const Answer &a)
{
    std::string_view type = a.content_type;
    type = type.substr(0, type.find(';'));
    while (!type.empty() && type.back() == ' ')
        type.remove_suffix(1);
    if (!iequals(type, "text/plain"))
        return {};
    return reply_line(a.body, kTextMax);
}

Reply eom_reply(const Answer &a, const std::vector<long> &reject)
{
    if (a.status >= 200 && a.status <= 299)
        return {};
    if (std::find(reject.begin(), reject.end(), a.status) != reject.end()) {
        std::string text = application_text(a);
        return Reply(550, text.empty() ? "Message refused by the recipient's application" : text, "5.7.1");
    }
    if (a.status == 413)
        return Reply(552, "Message too big for the recipient's application", "5.3.4");
    return Reply(451, "Application unavailable (HTTP " + std::to_string(a.status) + "); try again later", "4.3.0");
}

Reply rcpt_reply(const Answer &a)
{
    if (a.status >= 200 && a.status <= 299)
        return {};
    if (a.status == 404)
        return Reply(550, "No such recipient", "5.1.1");
    return Reply(450, "Recipient not verified (HTTP " + std::to_string(a.status) + "); try again later", "4.3.0");
}

} // namespace http

namespace
{

constexpr int kDefaultTimeout = 60;
// RFC 5321 4.5.3.2.6: the client waits 10 minutes for the reply to the
// final dot; the application's answer must come well before that.
constexpr int kMaxTimeout = 300;
constexpr int kConnectTimeout = 10;

struct Settings {
    std::string url;
    std::string rcpt_url; // empty: no recipient check
    std::string secret;   // empty: no signature
    std::string ca;       // CA bundle for https (empty: the system's)
    std::string unix_socket;
    int timeout = kDefaultTimeout;
    std::vector<long> reject{406};
};

// curl_global_init is not thread-safe: once, in the parent (configure()
// runs there, single-threaded), before the children fork.
void global_init()
{
    static std::once_flag once;
    std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

struct CurlDeleter {
    void operator()(CURL *c) const { curl_easy_cleanup(c); }
};
struct SlistDeleter {
    void operator()(curl_slist *l) const { curl_slist_free_all(l); }
};
using Slist = std::unique_ptr<curl_slist, SlistDeleter>;

void append_raw(Slist &list, const std::string &h)
{
    curl_slist *l = curl_slist_append(list.get(), h.c_str());
    if (!l)
        throw std::bad_alloc();
    list.release();
    list.reset(l);
}

void add_header(Slist &list, std::string_view name, std::string_view value)
{
    // "Name;" is curl's spelling of a header with an empty value.
    append_raw(list, std::string(name) + (value.empty() ? ";" : ": " + http::header_value(value)));
}

size_t read_spool(char *buf, size_t size, size_t n, void *fd)
{
    for (;;) {
        ssize_t r = ::read(*static_cast<int *>(fd), buf, size * n);
        if (r >= 0)
            return static_cast<size_t>(r);
        if (errno != EINTR)
            return CURL_READFUNC_ABORT;
    }
}

// curl rewinds the body when it sends it again on a fresh connection (a
// kept-alive one that turned out dead); without this it would give up.
int seek_spool(void *fd, curl_off_t offset, int origin)
{
    return ::lseek(*static_cast<int *>(fd), static_cast<off_t>(offset), origin) < 0 ? CURL_SEEKFUNC_FAIL
                                                                                    : CURL_SEEKFUNC_OK;
}

size_t keep_answer(char *buf, size_t size, size_t n, void *out)
{
    auto *body = static_cast<std::string *>(out);
    size_t len = size * n;
    if (body->size() < http::kAnswerKeep)
        body->append(buf, std::min(len, http::kAnswerKeep - body->size()));
    return len;
}

// The Received: field of the trace headers, unfolded.
std::string received_of(std::string_view trace)
{
    // after Return-Path's line: a quoted sender may hold "Received: " itself
    auto at = trace.find("\r\nReceived: ");
    if (at == std::string_view::npos)
        return {};
    std::string_view v = trace.substr(at + 12);
    while (v.ends_with("\r\n"))
        v.remove_suffix(2);
    return http::header_value(v);
}

std::string seconds(std::chrono::steady_clock::duration d)
{
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.3f", std::chrono::duration<double>(d).count());
    return buf;
}

class HttpHandler final : public SpoolingHandler
{
  public:
    explicit HttpHandler(std::shared_ptr<const Settings> s) : SpoolingHandler("http"), settings_(std::move(s)) {}

    Reply rcpt(SessionView &s, const Path &to, const Params &) override
    {
        const Settings &cfg = *settings_;
        if (cfg.rcpt_url.empty())
            return {};
        Slist headers;
        add_header(headers, "X-ESMTP-Recipient", to.mailbox);
        add_header(headers, "X-ESMTP-Sender", s.envelope().sender.mailbox);
        add_header(headers, "X-ESMTP-Client-Address", s.client_address());
        add_header(headers, "X-ESMTP-Helo", s.helo_name());
        if (!cfg.secret.empty()) {
            const std::string ts = std::to_string(std::time(nullptr));
            HmacSha256 mac(cfg.secret);
            mac.update(ts);
            mac.update(".");
            mac.update(to.mailbox);
            add_header(headers, "X-ESMTP-Timestamp", ts);
            add_header(headers, "X-ESMTP-Signature", "sha256=" + hex_lower(mac.finish()));
        }
        http::Answer a;
        std::string why;
        const auto start = std::chrono::steady_clock::now();
        bool ok = perform(cfg.rcpt_url, headers, nullptr, a, why);
        const std::string took = seconds(std::chrono::steady_clock::now() - start);
        if (!ok) {
            s.error("http: recipient check " + cfg.rcpt_url + " failed after " + took + " s: " + why);
            return Reply(450, "Recipient not verified; try again later", "4.3.0");
        }
        s.log(log_events, "http: recipient check " + cfg.rcpt_url + " <" + to.mailbox +
                              ">: " + std::to_string(a.status) + " in " + took + " s");
        return http::rcpt_reply(a);
    }

    Reply eom(SessionView &s) override
    {
        Reply r = spooled(s);
        if (r.code != 0)
            return r;
        std::string sig;
        if (!settings_->secret.empty()) {
            if (int error = sign(sig); error != 0) {
                s.error(std::string("http: cannot read the temporary file in ") + spool_dir() + ": " +
                        std::strerror(error));
                spool_.discard();
                return Reply(451, "Local error in processing", "4.3.0");
            }
        }
        r = post(s, sig);
        spool_.discard();
        return r;
    }

  private:
    // "TIMESTAMP.SIGNATURE": the HMAC over the timestamp, a dot and the
    // body (as Stripe signs its webhooks), read back from the spool, which
    // is left rewound. Returns an errno, 0 on success.
    int sign(std::string &out)
    {
        const std::string ts = std::to_string(std::time(nullptr));
        HmacSha256 mac(settings_->secret);
        mac.update(ts);
        mac.update(".");
        char buf[64 * 1024];
        for (;;) {
            ssize_t n = ::read(spool_.fd(), buf, sizeof buf);
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0)
                return errno;
            if (n == 0)
                break;
            mac.update({buf, static_cast<std::size_t>(n)});
        }
        if (::lseek(spool_.fd(), 0, SEEK_SET) != 0)
            return errno;
        out = ts + "." + hex_lower(mac.finish());
        return 0;
    }

    Reply post(SessionView &s, const std::string &sig)
    {
        const Settings &cfg = *settings_;
        const Envelope &env = s.envelope();
        Slist headers;
        add_header(headers, "Content-Type", "message/rfc822");
        // No "Expect: 100-continue": curl would wait a second for a 100 that
        // many servers never send. ("Expect:" removes curl's header; an
        // empty one, "Expect;", gets 417 from Node.)
        append_raw(headers, "Expect:");
        add_header(headers, "X-ESMTP-Queue-Id", s.queue_id());
        add_header(headers, "X-ESMTP-Sender", env.sender.mailbox);
        for (const auto &r : env.recipients)
            add_header(headers, "X-ESMTP-Recipient", r.path.mailbox);
        add_header(headers, "X-ESMTP-Client-Address", s.client_address());
        add_header(headers, "X-ESMTP-Client-Name", s.remote_host());
        add_header(headers, "X-ESMTP-Helo", s.helo_name());
        add_header(headers, "X-ESMTP-Protocol", s.protocol());
        if (s.tls().active) {
            add_header(headers, "X-ESMTP-TLS-Protocol", s.tls().protocol);
            add_header(headers, "X-ESMTP-TLS-Cipher", s.tls().cipher);
        }
        if (!s.auth_user().empty())
            add_header(headers, "X-ESMTP-Auth-User", s.auth_user());
        add_header(headers, "X-ESMTP-Received", received_of(s.trace_headers()));
        if (!sig.empty()) {
            const auto dot = sig.find('.');
            add_header(headers, "X-ESMTP-Timestamp", sig.substr(0, dot));
            add_header(headers, "X-ESMTP-Signature", "sha256=" + sig.substr(dot + 1));
        }
        http::Answer a;
        std::string why;
        const auto start = std::chrono::steady_clock::now();
        bool ok = perform(cfg.url, headers, &spool_, a, why);
        const std::string took = seconds(std::chrono::steady_clock::now() - start);
        if (!ok) {
            // The application is down, slow or not who it claims to be:
            // for the administrator; the sender's queue retries.
            s.error("http: POST " + cfg.url + " failed after " + took + " s: " + why);
            return Reply(451, "Application unavailable; try again later", "4.3.0");
        }
        Reply r = http::eom_reply(a, cfg.reject);
        s.log(log_session, "http: POST " + cfg.url + ": " + std::to_string(a.status) + " in " + took + " s" +
                               (r.code == 0 ? std::string() : " -> " + std::to_string(r.code)));
        return r;
    }

    // One request: a POST of the spool, or a GET without one. False with
    // `why` when no HTTP answer came (connection, TLS, timeout).
    bool perform(const std::string &url, const Slist &headers, Spool *body, http::Answer &a, std::string &why)
    {
        if (!curl_)
            curl_.reset(curl_easy_init());
        else
            curl_easy_reset(curl_.get()); // keeps the connection for the next message
        CURL *c = curl_.get();
        if (!c) {
            why = "curl_easy_init failed";
            return false;
        }
        const Settings &cfg = *settings_;
        char errbuf[CURL_ERROR_SIZE] = "";
        int fd = body ? body->fd() : -1;
        curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
        curl_easy_setopt(c, CURLOPT_URL, url.c_str());
        curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
        curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L); // threaded MPMs: no SIGALRM for DNS timeouts
        curl_easy_setopt(c, CURLOPT_TIMEOUT, static_cast<long>(cfg.timeout));
        curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, static_cast<long>(std::min(cfg.timeout, kConnectTimeout)));
        curl_easy_setopt(c, CURLOPT_USERAGENT, "mod_esmtp");
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers.get());
        if (!cfg.ca.empty())
            curl_easy_setopt(c, CURLOPT_CAINFO, cfg.ca.c_str());
        if (!cfg.unix_socket.empty())
            curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, cfg.unix_socket.c_str());
        if (body) {
            curl_easy_setopt(c, CURLOPT_POST, 1L);
            curl_easy_setopt(c, CURLOPT_READFUNCTION, read_spool);
            curl_easy_setopt(c, CURLOPT_READDATA, &fd);
            curl_easy_setopt(c, CURLOPT_SEEKFUNCTION, seek_spool);
            curl_easy_setopt(c, CURLOPT_SEEKDATA, &fd);
            curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body->size()));
        }
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, keep_answer);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, &a.body);
        CURLcode rc = curl_easy_perform(c);
        if (rc != CURLE_OK) {
            why = errbuf[0] ? errbuf : curl_easy_strerror(rc);
            return false;
        }
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &a.status);
        char *type = nullptr;
        if (curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &type) == CURLE_OK && type)
            a.content_type = type;
        return true;
    }

    std::shared_ptr<const Settings> settings_;
    std::unique_ptr<CURL, CurlDeleter> curl_;
};

class HttpFactory final : public HandlerFactory
{
  public:
    explicit HttpFactory(Settings s) : settings_(std::make_shared<const Settings>(std::move(s))) {}
    std::unique_ptr<Handler> create() override { return std::make_unique<HttpHandler>(settings_); }

    // As the children's user: curl reads the CA file at each handshake and
    // connects to the socket as that user.
    bool check(std::string &why) const override
    {
        if (!settings_->ca.empty() && ::access(settings_->ca.c_str(), R_OK) != 0) {
            why = "http: cannot read ca=" + settings_->ca + ": " + std::strerror(errno) + running_as();
            return false;
        }
        return check_spool("http", why);
    }

  private:
    std::shared_ptr<const Settings> settings_;
};

bool is_http_url(std::string_view u)
{
    return u.starts_with("http://") || u.starts_with("https://");
}

std::string absolute(const HandlerContext &ctx, const std::string &path)
{
    return path.starts_with('/') ? path : ctx.server_root + "/" + path;
}

} // namespace

std::shared_ptr<HandlerFactory> HttpProvider::configure(const HandlerContext &ctx, const std::vector<std::string> &args,
                                                        std::string &error) const
{
    const std::string prefix = ctx.directive + " http: ";
    if (args.empty() || !is_http_url(args[0])) {
        error = prefix + "expects URL [timeout=SECONDS] [secret=FILE] [ca=FILE] [unix=PATH] [reject=STATUS,...] "
                         "[rcpt=URL]; the URL starts with http:// or https://";
        return nullptr;
    }
    Settings s;
    s.url = args[0];
    for (std::size_t i = 1; i < args.size(); ++i) {
        const std::string &a = args[i];
        const auto eq = a.find('=');
        const std::string key = a.substr(0, eq);
        const std::string v = eq == std::string::npos ? std::string() : a.substr(eq + 1);
        if (eq == std::string::npos || v.empty()) {
            error = prefix + "'" + a +
                    "': options are timeout=SECONDS secret=FILE ca=FILE unix=PATH reject=STATUS,... "
                    "rcpt=URL";
            return nullptr;
        }
        if (key == "timeout") {
            char *end = nullptr;
            errno = 0;
            long t = std::strtol(v.c_str(), &end, 10);
            if (*end != '\0' || errno != 0 || t < 1 || t > kMaxTimeout) {
                error = prefix + "timeout must be a number of seconds between 1 and " + std::to_string(kMaxTimeout) +
                        " (the client waits 10 minutes for the final reply), not '" + v + "'";
                return nullptr;
            }
            s.timeout = static_cast<int>(t);
        } else if (key == "secret") {
            // Read here, as the user who starts httpd: the file may be
            // readable by root only, and the secret never sits in httpd.conf.
            const std::string path = absolute(ctx, v);
            std::ifstream in(path, std::ios::binary);
            std::stringstream ss;
            ss << in.rdbuf();
            if (!in) {
                error = prefix + "cannot read secret=" + path + ": " + std::strerror(errno);
                return nullptr;
            }
            std::string secret = ss.str();
            while (!secret.empty() && (secret.back() == '\n' || secret.back() == '\r' || secret.back() == ' '))
                secret.pop_back();
            if (secret.size() < 16) {
                error = prefix + "secret=" + path + " holds fewer than 16 characters";
                return nullptr;
            }
            s.secret = std::move(secret);
        } else if (key == "ca") {
            s.ca = absolute(ctx, v);
            if (::access(s.ca.c_str(), R_OK) != 0) {
                error = prefix + "cannot read ca=" + s.ca + ": " + std::strerror(errno);
                return nullptr;
            }
        } else if (key == "unix") {
            if (!v.starts_with('/')) {
                error = prefix + "unix= needs an absolute socket path, not '" + v + "'";
                return nullptr;
            }
            s.unix_socket = v;
        } else if (key == "reject") {
            s.reject.clear();
            std::string_view list = v;
            if (v.back() == ',' || v.front() == ',')
                list = ","; // an empty item: refused below
            while (!list.empty()) {
                std::string item(list.substr(0, list.find(',')));
                list.remove_prefix(std::min(list.size(), item.size() + 1));
                char *end = nullptr;
                long code = std::strtol(item.c_str(), &end, 10);
                if (item.empty() || *end != '\0' || code < 300 || code > 599 || code == 413) {
                    error = prefix + "reject= lists HTTP statuses from 300 to 599 (not 413), not '" + item + "'";
                    return nullptr;
                }
                s.reject.push_back(code);
            }
        } else if (key == "rcpt") {
            if (!is_http_url(v)) {
                error = prefix + "rcpt= needs a URL that starts with http:// or https://, not '" + v + "'";
                return nullptr;
            }
            s.rcpt_url = v;
        } else {
            error = prefix + "unknown option '" + a +
                    "'; options are timeout=SECONDS secret=FILE ca=FILE unix=PATH reject=STATUS,... rcpt=URL";
            return nullptr;
        }
    }
    global_init();
    return std::make_shared<HttpFactory>(std::move(s));
}

} // namespace esmtp
