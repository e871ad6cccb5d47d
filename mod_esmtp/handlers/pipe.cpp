#include "engine/text.hpp"
#include "handlers/fd.hpp"
#include "handlers/pipe.hpp"
#include "handlers/spool.hpp"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <utility>

namespace esmtp
{

namespace
{

// Only the start of stderr matters (its first line is the reply text); the
// rest is read and thrown away so that a chatty command never blocks on a
// full pipe.
constexpr std::size_t kStderrKeep = 4096;
constexpr int kDefaultTimeout = 60;
constexpr int kExTempfail = 75; // sysexits.h EX_TEMPFAIL

// A spawned command. Until it has been reaped, destroying this object kills
// the command's process group and reaps it: no zombie and no runaway command
// outlives the handler method that started it, even on an exception.
class Child
{
  public:
    explicit Child(pid_t pid) : pid_(pid) {}
    Child(const Child &) = delete;
    Child &operator=(const Child &) = delete;
    ~Child()
    {
        if (pid_ > 0) {
            kill_group();
            wait();
        }
    }

    pid_t pid() const { return pid_; }
    bool reaped() const { return pid_ <= 0; }
    int status() const { return status_; }

    // The command runs in its own process group (POSIX_SPAWN_SETPGROUP), so
    // this also reaches what it started (e.g. a `sleep` in a script).
    void kill_group()
    {
        if (pid_ > 0) {
            ::kill(-pid_, SIGKILL);
            ::kill(pid_, SIGKILL);
        }
    }
    // Non-blocking reap; true once the child has been reaped.
    bool poll_exit() { return reap(WNOHANG); }
    // Blocking reap.
    void wait() { reap(0); }

  private:
    bool reap(int flags)
    {
        if (pid_ <= 0)
            return true;
        for (;;) {
            pid_t r = ::waitpid(pid_, &status_, flags);
            if (r == pid_)
                break;
            if (r == 0)
                return false;
            if (errno == EINTR)
                continue;
            // ECHILD: someone else reaped it (or SIGCHLD is ignored); its
            // status is lost.
            status_ = -1;
            break;
        }
        pid_ = -1;
        return true;
    }

    pid_t pid_;
    int status_ = -1;
};

// posix_spawn's attribute objects, destroyed with their scope.
class SpawnFileActions
{
  public:
    SpawnFileActions() { ok_ = posix_spawn_file_actions_init(&fa_) == 0; }
    ~SpawnFileActions()
    {
        if (ok_)
            posix_spawn_file_actions_destroy(&fa_);
    }
    SpawnFileActions(const SpawnFileActions &) = delete;
    SpawnFileActions &operator=(const SpawnFileActions &) = delete;
    bool ok() const { return ok_; }
    posix_spawn_file_actions_t *get() { return &fa_; }

  private:
    posix_spawn_file_actions_t fa_;
    bool ok_;
};

class SpawnAttr
{
  public:
    SpawnAttr() { ok_ = posix_spawnattr_init(&attr_) == 0; }
    ~SpawnAttr()
    {
        if (ok_)
            posix_spawnattr_destroy(&attr_);
    }
    SpawnAttr(const SpawnAttr &) = delete;
    SpawnAttr &operator=(const SpawnAttr &) = delete;
    bool ok() const { return ok_; }
    posix_spawnattr_t *get() { return &attr_; }

  private:
    posix_spawnattr_t attr_;
    bool ok_;
};

// ${name} expansions.
enum class Var { literal, sender, recipient, client_address, client_hostname, helo_name, queue_id, size };

struct Segment {
    Var var;
    std::string text; // for Var::literal
};

struct ArgTemplate {
    std::vector<Segment> segments;
    bool per_recipient = false; // contains ${recipient}
};

bool var_by_name(std::string_view name, Var &v)
{
    static const std::pair<std::string_view, Var> names[] = {
        {"sender", Var::sender},
        {"recipient", Var::recipient},
        {"client_address", Var::client_address},
        {"client_hostname", Var::client_hostname},
        {"helo_name", Var::helo_name},
        {"queue_id", Var::queue_id},
        {"size", Var::size},
    };
    for (const auto &[n, var] : names)
        if (n == name) {
            v = var;
            return true;
        }
    return false;
}

// Split one configured argument into literal text and variable references.
// ${name} and $(name) are the same (as in Postfix): httpd itself expands
// ${NAME} in its configuration files from Define and the environment (and
// warns with AH00111 when NAME is undefined), so $(name) is the spelling
// that reaches us untouched. "$$" is a literal dollar sign; a '$' followed
// by anything else is kept.
bool parse_template(const std::string &arg, ArgTemplate &out, std::string &error)
{
    std::string lit;
    for (std::size_t i = 0; i < arg.size(); ++i) {
        char next = i + 1 < arg.size() ? arg[i + 1] : '\0';
        if (arg[i] != '$' || (next != '{' && next != '(' && next != '$')) {
            lit += arg[i];
            continue;
        }
        if (next == '$') {
            lit += '$';
            ++i;
            continue;
        }
        const char closer = next == '{' ? '}' : ')';
        std::size_t close = arg.find(closer, i + 2);
        if (close == std::string::npos) {
            error = std::string("unterminated $") + next + " in argument '" + arg + "'";
            return false;
        }
        std::string_view name(arg.data() + i + 2, close - i - 2);
        Var v;
        if (!var_by_name(name, v)) {
            error = "unknown variable " + arg.substr(i, close + 1 - i) +
                    " (known: sender recipient client_address client_hostname helo_name queue_id size)";
            return false;
        }
        if (!lit.empty())
            out.segments.push_back({Var::literal, std::move(lit)});
        lit.clear();
        out.segments.push_back({v, {}});
        if (v == Var::recipient)
            out.per_recipient = true;
        i = close;
    }
    if (!lit.empty() || out.segments.empty())
        out.segments.push_back({Var::literal, std::move(lit)});
    return true;
}

struct Settings {
    std::string command;
    std::vector<ArgTemplate> args;
    int timeout = kDefaultTimeout;
    std::string null_sender = "MAILER-DAEMON"; // ${sender} for MAIL FROM:<>, as Postfix
};

// The values one message expands to.
struct Values {
    std::string sender, client_address, client_hostname, helo_name, queue_id, size;
};

std::string expand(const ArgTemplate &t, const Values &v, const std::string *recipient)
{
    std::string out;
    for (const auto &seg : t.segments) {
        switch (seg.var) {
        case Var::literal:
            out += seg.text;
            break;
        case Var::sender:
            out += v.sender;
            break;
        case Var::recipient:
            out += recipient ? *recipient : std::string();
            break;
        case Var::client_address:
            out += v.client_address;
            break;
        case Var::client_hostname:
            out += v.client_hostname;
            break;
        case Var::helo_name:
            out += v.helo_name;
            break;
        case Var::queue_id:
            out += v.queue_id;
            break;
        case Var::size:
            out += v.size;
            break;
        }
    }
    return out;
}

// A reply text from the command's stderr: its first line, printable ASCII
// only (it goes into an SMTP reply line), bounded.
std::string reply_text(std::string_view err, std::string_view fallback)
{
    std::string out = reply_line(err, 400);
    return out.empty() ? std::string(fallback) : out;
}

int pidfd_open(pid_t pid)
{
#ifdef SYS_pidfd_open
    return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
#else
    errno = ENOSYS;
    return -1;
#endif
}

// The one rule for every value a client chooses that can reach the
// command's argv or environment: its HELO/EHLO name, the sender, each
// recipient, and its reverse-DNS name (chosen by whoever owns the PTR
// record). A value starting with '-' would be taken for an option
// (`HELO -oQ/tmp/x`, `MAIL FROM:<-f@x>`), wherever it lands in argv, so it
// is refused, at the command that brings it and again before any run.
bool client_value_ok(std::string_view v)
{
    return !v.starts_with('-');
}

// How a run ended.
struct Outcome {
    enum { exited, signaled, timed_out, lost } how = lost;
    int code = 0; // exit status or signal number
    std::string err;
};

class PipeHandler final : public SpoolingHandler
{
  public:
    explicit PipeHandler(std::shared_ptr<const Settings> s) : SpoolingHandler("pipe"), settings_(std::move(s)) {}

    Reply helo(SessionView &, std::string_view domain) override { return check_helo(domain); }
    Reply ehlo(SessionView &, std::string_view domain, std::vector<std::string> &) override
    {
        return check_helo(domain);
    }
    Reply mail(SessionView &s, const Path &from, const Params &) override
    {
        if (!client_value_ok(from.mailbox))
            return Reply(553, "Address must not begin with '-'", "5.1.7");
        if (!client_value_ok(s.remote_host())) {
            s.log(1, "pipe: client host name " + std::string(s.remote_host()) + " begins with '-'");
            return Reply(550, "Client host name must not begin with '-'", "5.7.1");
        }
        return {};
    }
    Reply rcpt(SessionView &, const Path &to, const Params &) override
    {
        if (!client_value_ok(to.mailbox))
            return Reply(553, "Address must not begin with '-'", "5.1.3");
        return {};
    }

    Reply eom(SessionView &s) override
    {
        Reply r = spooled(s);
        if (r.code != 0)
            return r;
        r = run(s);
        spool_.discard();
        return r;
    }

  private:
    static Reply check_helo(std::string_view domain)
    {
        if (!client_value_ok(domain))
            return Reply(501, "HELO name must not begin with '-'", "5.5.4");
        return {};
    }

    Reply run(SessionView &s)
    {
        const Settings &cfg = *settings_;
        const Envelope &env = s.envelope();
        // The last gate: every client-chosen value once more, whatever let
        // it through before (the checks above run only where this handler
        // was asked).
        bool ok =
            client_value_ok(env.sender.mailbox) && client_value_ok(s.helo_name()) && client_value_ok(s.remote_host());
        for (const auto &r : env.recipients)
            ok = ok && client_value_ok(r.path.mailbox);
        if (!ok) {
            s.log(1, "pipe: " + cfg.command + " not run: a client-chosen value begins with '-'");
            return Reply(554, "Envelope value must not begin with '-'", "5.3.0");
        }
        Values v;
        v.sender = env.sender.is_null() ? cfg.null_sender : env.sender.mailbox;
        v.client_address = s.client_address();
        v.client_hostname = s.remote_host();
        v.helo_name = s.helo_name();
        v.queue_id = s.queue_id();
        v.size = std::to_string(spool_.size());

        // Each expansion is exactly one argv element: nothing is split or
        // parsed, so no envelope text can become an extra argument.
        std::vector<std::string> argv{cfg.command};
        for (const auto &t : cfg.args) {
            if (t.per_recipient) {
                for (const auto &r : env.recipients)
                    argv.push_back(expand(t, v, &r.path.mailbox));
            } else {
                argv.push_back(expand(t, v, nullptr));
            }
        }
        std::string rcpts;
        for (const auto &r : env.recipients)
            rcpts += (rcpts.empty() ? "" : " ") + r.path.mailbox;
        // A clean environment: httpd's own (and its secrets) stay out.
        std::vector<std::string> envp{
            "SENDER=" + v.sender,
            "RECIPIENT=" + rcpts,
            "CLIENT_ADDRESS=" + v.client_address,
            "CLIENT_HOSTNAME=" + v.client_hostname,
            "HELO_NAME=" + v.helo_name,
            "QUEUE_ID=" + v.queue_id,
            "SIZE=" + v.size,
            "PATH=/usr/bin:/bin",
            "LANG=C",
        };
        // A NUL would silently cut a C string short; the address parser does
        // not let one through, but make sure.
        for (const auto &list : {&argv, &envp})
            for (const auto &a : *list)
                if (a.find('\0') != std::string::npos)
                    return Reply(554, "Invalid character in envelope", "5.3.0");

        Outcome o = spawn_and_wait(argv, envp);
        std::string what = "pipe: " + cfg.command;
        switch (o.how) {
        case Outcome::exited:
            if (o.code == 0) {
                s.log(3, what + " delivered");
                return {};
            }
            s.log(1, what + " exited with status " + std::to_string(o.code) + ": " + reply_text(o.err, "-"));
            if (o.code == kExTempfail)
                return Reply(451, reply_text(o.err, "temporary failure"), "4.3.0");
            return Reply(554, reply_text(o.err, "delivery failed (exit " + std::to_string(o.code) + ")"), "5.3.0");
        case Outcome::signaled:
            s.log(1, what + " killed by signal " + std::to_string(o.code) + ": " + reply_text(o.err, "-"));
            return Reply(554, reply_text(o.err, "delivery failed (signal " + std::to_string(o.code) + ")"), "5.3.0");
        case Outcome::timed_out:
            s.log(1, what + " timed out after " + std::to_string(cfg.timeout) + " s; killed");
            return Reply(554, "command timed out", "5.3.0");
        case Outcome::lost:
            break;
        }
        // Could not start it, or its exit status was lost: the message may or
        // may not have been delivered; a retry (maybe a duplicate) is better
        // than a loss. Either is for the administrator to look at.
        s.error(what + ": " + o.err);
        return Reply(451, "Local error in processing", "4.3.0");
    }

    Outcome spawn_and_wait(const std::vector<std::string> &argv, const std::vector<std::string> &envp)
    {
        Outcome o;
        int p[2];
        if (::pipe2(p, O_CLOEXEC) != 0) {
            o.err = std::string("pipe: ") + std::strerror(errno);
            return o;
        }
        Fd err_r(p[0]), err_w(p[1]);
        ::fcntl(err_r.get(), F_SETFL, O_NONBLOCK);

        SpawnFileActions fa;
        SpawnAttr attr;
        if (!fa.ok() || !attr.ok()) {
            o.err = "posix_spawn: cannot initialise";
            return o;
        }
        // stdin: the spool; stdout: /dev/null; stderr: our pipe; nothing else
        // (httpd's listening sockets and other sessions' fds stay with httpd).
        posix_spawn_file_actions_adddup2(fa.get(), spool_.fd(), 0);
        posix_spawn_file_actions_addopen(fa.get(), 1, "/dev/null", O_WRONLY, 0);
        posix_spawn_file_actions_adddup2(fa.get(), err_w.get(), 2);
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
        posix_spawn_file_actions_addclosefrom_np(fa.get(), 3);
#endif
        // httpd ignores SIGPIPE and blocks signals in its threads; ignored
        // dispositions and the mask survive exec, so reset them. Own process
        // group: a timeout kills the whole pipeline the command started.
        sigset_t all, none;
        sigfillset(&all);
        sigemptyset(&none);
        posix_spawnattr_setsigdefault(attr.get(), &all);
        posix_spawnattr_setsigmask(attr.get(), &none);
        posix_spawnattr_setpgroup(attr.get(), 0);
        posix_spawnattr_setflags(attr.get(), POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETPGROUP);

        std::vector<char *> cargv, cenvp;
        for (const auto &a : argv)
            cargv.push_back(const_cast<char *>(a.c_str()));
        cargv.push_back(nullptr);
        for (const auto &e : envp)
            cenvp.push_back(const_cast<char *>(e.c_str()));
        cenvp.push_back(nullptr);

        pid_t pid = -1;
        int rc = ::posix_spawn(&pid, settings_->command.c_str(), fa.get(), attr.get(), cargv.data(), cenvp.data());
        if (rc != 0) {
            o.err = "cannot run " + settings_->command + ": " + std::strerror(rc);
            return o;
        }
        Child child(pid);
        err_w.reset(); // EOF on err_r once the command (and its children) close stderr
        Fd pidfd(pidfd_open(pid));

        using clock = std::chrono::steady_clock;
        const auto deadline = clock::now() + std::chrono::seconds(settings_->timeout);
        char buf[4096];
        for (;;) {
            if (child.poll_exit())
                break;
            auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now()).count();
            if (left <= 0) {
                child.kill_group();
                child.wait();
                o.how = Outcome::timed_out;
                return o;
            }
            pollfd fds[2];
            nfds_t n = 0;
            if (err_r)
                fds[n++] = {err_r.get(), POLLIN, 0};
            if (pidfd)
                fds[n++] = {pidfd.get(), POLLIN, 0};
            // Without a pidfd (old kernel) the exit is noticed by polling.
            int wait_ms = static_cast<int>(pidfd ? std::min<long long>(left, 1000) : std::min<long long>(left, 20));
            int pr = ::poll(fds, n, wait_ms);
            if (pr < 0 && errno != EINTR) {
                o.err = std::string("poll: ") + std::strerror(errno);
                return o; // ~Child kills and reaps
            }
            if (err_r && !read_stderr(err_r, o.err, buf, sizeof buf))
                err_r.reset();
        }
        // Whatever the command wrote last is still in the pipe.
        if (err_r)
            read_stderr(err_r, o.err, buf, sizeof buf);
        int st = child.status();
        if (st == -1) {
            o.err = "exit status of process " + std::to_string(pid) + " lost";
            return o;
        }
        if (WIFEXITED(st)) {
            o.how = Outcome::exited;
            o.code = WEXITSTATUS(st);
        } else {
            o.how = Outcome::signaled;
            o.code = WIFSIGNALED(st) ? WTERMSIG(st) : 0;
        }
        return o;
    }

    // Read what is available; false at EOF or error.
    static bool read_stderr(const Fd &fd, std::string &keep, char *buf, std::size_t size)
    {
        for (;;) {
            ssize_t n = ::read(fd.get(), buf, size);
            if (n > 0) {
                if (keep.size() < kStderrKeep)
                    keep.append(buf, std::min<std::size_t>(static_cast<std::size_t>(n), kStderrKeep - keep.size()));
                continue;
            }
            if (n < 0 && errno == EINTR)
                continue;
            return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
        }
    }

    std::shared_ptr<const Settings> settings_;
};

class PipeFactory final : public HandlerFactory
{
  public:
    explicit PipeFactory(Settings s) : settings_(std::make_shared<const Settings>(std::move(s))) {}
    std::unique_ptr<Handler> create() override { return std::make_unique<PipeHandler>(settings_); }

    // As the server's user, at child start: the command must be executable
    // by that user (configure() ran as the user who started httpd), and the
    // spool must be creatable.
    bool check(std::string &why) const override
    {
        if (::faccessat(AT_FDCWD, settings_->command.c_str(), X_OK, AT_EACCESS) != 0) {
            why = "pipe: cannot execute " + settings_->command + ": " + std::strerror(errno) + running_as();
            return false;
        }
        return check_spool("pipe", why);
    }

  private:
    std::shared_ptr<const Settings> settings_;
};

} // namespace

std::shared_ptr<HandlerFactory> PipeProvider::configure(const HandlerContext &ctx, const std::vector<std::string> &args,
                                                        std::string &error) const
{
    const std::string prefix = ctx.directive + " pipe: ";
    Settings s;
    std::size_t i = 0;
    // Options come first; the command is the first absolute path.
    for (; i < args.size() && !args[i].starts_with('/'); ++i) {
        const std::string &a = args[i];
        if (a.starts_with("timeout=")) {
            const std::string v = a.substr(8);
            unsigned t = 0;
            if (!parse_seconds(v, 86400, t)) {
                error = prefix + "timeout must be a number of seconds between 1 and 86400, not '" + v + "'";
                return nullptr;
            }
            s.timeout = static_cast<int>(t);
        } else if (a.starts_with("null_sender=")) {
            s.null_sender = a.substr(12);
        } else {
            error = prefix + "COMMAND must be an absolute path (no shell is used), not '" + a +
                    "'; options are timeout=SECONDS and null_sender=ADDRESS";
            return nullptr;
        }
    }
    if (i >= args.size()) {
        error = prefix + "expects [timeout=SECONDS] [null_sender=ADDRESS] COMMAND [ARGS...]";
        return nullptr;
    }
    s.command = args[i++];
    struct stat st;
    if (::stat(s.command.c_str(), &st) != 0 || !S_ISREG(st.st_mode) || (st.st_mode & 0111) == 0) {
        error = prefix + s.command + " is not an executable file";
        return nullptr;
    }
    for (; i < args.size(); ++i) {
        ArgTemplate t;
        std::string why;
        if (!parse_template(args[i], t, why)) {
            error = prefix + why;
            return nullptr;
        }
        s.args.push_back(std::move(t));
    }
    return std::make_shared<PipeFactory>(std::move(s));
}

} // namespace esmtp
