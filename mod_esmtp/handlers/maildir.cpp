#include "handlers/maildir.hpp"
#include "handlers/fd.hpp"
#include "handlers/group_commit.hpp"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstring>
#include <ctime>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace esmtp
{

namespace
{

// Buffered content is written out in blocks of this size.
constexpr std::size_t kWriteBlock = 256 * 1024;
// Longest file name component (NAME_MAX on Linux).
constexpr std::size_t kNameMax = 255;
constexpr const char *kErrorPrefix = "ESMTPHandler maildir: ";

std::string local_hostname()
{
    char buf[256] = {};
    if (gethostname(buf, sizeof buf - 1) != 0)
        return "localhost";
    std::string h;
    // Maildir file names use '/' and ':' specially: encode them as Maildir
    // writers do (\057 and \072).
    for (char c : std::string_view(buf)) {
        if (c == '/')
            h += "\\057";
        else if (c == ':')
            h += "\\072";
        else
            h += c;
    }
    return h;
}

MaildirSyscallHook &syscall_hook()
{
    static MaildirSyscallHook hook;
    return hook;
}

// The hook, if set: its non-zero return is taken as the errno of the
// operation (which is then skipped, where the operation is one it may fail).
int hook(std::string_view op, const std::string &path)
{
    auto &h = syscall_hook();
    return h ? h(op, path) : 0;
}

// Flushes of this process, for the benchmark's flushes-per-message figure
// (logged at level 3 with every stored message).
std::atomic<std::uint64_t> g_file_syncs{0};
std::atomic<std::uint64_t> g_dir_syncs{0};
std::atomic<std::uint64_t> g_stored{0};

bool fsync_dir(const std::string &path)
{
    if (int e = hook("fsync", path)) {
        errno = e;
        return false;
    }
    int fd = open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return false;
    g_dir_syncs.fetch_add(1, std::memory_order_relaxed);
    bool ok = fsync(fd) == 0;
    int e = errno;
    close(fd);
    hook("fsynced", path);
    errno = e;
    return ok;
}

// The group commit's flush of new/: 0 or an errno.
int flush_dir(const std::string &path)
{
    return fsync_dir(path) ? 0 : (errno ? errno : EIO);
}

// A new file's data and size: fdatasync is enough, its name is made durable
// by the fsync of the directory it is renamed into.
bool sync_file(int fd, const std::string &path)
{
    if (int e = hook("fdatasync", path)) {
        errno = e;
        return false;
    }
    g_file_syncs.fetch_add(1, std::memory_order_relaxed);
    return fdatasync(fd) == 0;
}

std::string parent_of(const std::string &path)
{
    auto slash = path.rfind('/');
    return slash == 0 || slash == std::string::npos ? std::string("/") : path.substr(0, slash);
}

// Directories made for a Maildir; sync() makes them durable.
class DirMaker
{
  public:
    // mkdir `path` unless it exists. On failure errno is set and failed()
    // names the path.
    bool make(const std::string &path)
    {
        if (mkdir(path.c_str(), 0700) == 0) {
            created_.push_back(path);
            if (auto &hook = syscall_hook())
                hook("mkdir", path);
            return true;
        }
        if (errno == EEXIST)
            return true;
        failed_ = path;
        return false;
    }
    // A new directory's name lives in its parent and its own entries in
    // itself: fsync every created directory and its parent, deepest first,
    // once everything exists (RFC 5321 6.1: once we say 250 the message,
    // and so the directory chain holding it, must survive a crash).
    bool sync()
    {
        std::vector<std::string> dirs;
        for (const auto &d : created_) {
            dirs.push_back(d);
            dirs.push_back(parent_of(d));
        }
        std::sort(dirs.begin(), dirs.end(), [](const std::string &a, const std::string &b) {
            return a.size() != b.size() ? a.size() > b.size() : a < b;
        });
        dirs.erase(std::unique(dirs.begin(), dirs.end()), dirs.end());
        for (const auto &d : dirs)
            if (!fsync_dir(d)) {
                failed_ = d;
                return false;
            }
        created_.clear();
        return true;
    }
    const std::string &failed() const { return failed_; }

  private:
    std::vector<std::string> created_;
    std::string failed_;
};

// Make `dir` a Maildir (tmp/ new/ cur/) and everything created for it
// durable. With `create`, `dir` and its missing parents are created;
// without, `dir` must exist. On failure errno is set and `failed` names
// the path.
// `dir` and its missing ancestors.
bool make_path(DirMaker &m, const std::string &dir)
{
    for (std::size_t pos = 1; (pos = dir.find('/', pos)) != std::string::npos; ++pos)
        if (!m.make(dir.substr(0, pos)))
            return false;
    return m.make(dir);
}

// tmp/, new/ and cur/ of `dir` exist: nothing to make. Checked first on
// every delivery: a stat takes no lock, while mkdir of an existing
// directory takes its parent's lock exclusively (six EEXIST mkdirs per
// message for /var/mail/x/Maildir, contending with every other file
// created in those directories). No measurable gain on the 2-core VM of
// issue 13, where the flushes' system time dominates.
bool maildir_ready(const std::string &dir)
{
    struct stat st;
    for (const char *sub : {"/tmp", "/new", "/cur"})
        if (stat((dir + sub).c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
            return false;
    return true;
}

bool ensure_maildir(const std::string &dir, bool create, std::string &failed)
{
    if (maildir_ready(dir))
        return true;
    DirMaker m;
    bool ok = true;
    if (create) {
        ok = make_path(m, dir);
    } else {
        struct stat st;
        if (stat(dir.c_str(), &st) != 0) {
            failed = dir;
            return false;
        }
        if (!S_ISDIR(st.st_mode)) {
            failed = dir;
            errno = ENOTDIR;
            return false;
        }
    }
    ok = ok && m.make(dir + "/tmp") && m.make(dir + "/new") && m.make(dir + "/cur") && m.sync();
    if (!ok) {
        int e = errno;
        failed = m.failed();
        errno = e;
    }
    return ok;
}

bool copy_contents(int in, int out)
{
    std::string buf(kWriteBlock, '\0');
    for (;;) {
        ssize_t n = read(in, buf.data(), buf.size());
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return false;
        }
        if (n == 0)
            return true;
        if (!write_all(out, std::string_view(buf.data(), static_cast<std::size_t>(n))))
            return false;
    }
}

// Copy the file `from` into a new file `to` (O_EXCL) and fsync it. On
// failure a file this call created is removed again.
bool copy_file(const std::string &from, const std::string &to)
{
    Fd in(open(from.c_str(), O_RDONLY | O_CLOEXEC));
    if (!in.valid())
        return false;
    Fd out(open(to.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (!out.valid())
        return false;
    if (copy_contents(in.get(), out.get()) && sync_file(out.get(), to) && out.close())
        return true;
    int e = errno;
    out.reset();
    unlink(to.c_str());
    errno = e;
    return false;
}

bool is_lower_safe(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '+' || c == '-';
}

// What a path component built from an address may look like: checked on
// every expansion, independently of how component() encodes.
bool safe_component(std::string_view c)
{
    if (c.empty() || c.size() > kNameMax || c == "." || c == ".." || c.front() == '.')
        return false;
    for (char ch : c)
        if (ch == '/' || ch == '\0')
            return false;
    return true;
}

// Undo the quoting of a quoted local part ("a\"b" -> a"b); anything else
// is returned as is.
std::string unquote_local_part(std::string_view lp)
{
    if (lp.size() < 2 || lp.front() != '"' || lp.back() != '"')
        return std::string(lp);
    std::string out;
    std::string_view in = lp.substr(1, lp.size() - 2);
    for (std::size_t i = 0; i < in.size(); ++i) {
        if (in[i] == '\\' && i + 1 < in.size())
            ++i;
        out += in[i];
    }
    return out;
}

} // namespace

std::string MaildirPath::component(std::string_view raw, bool unquote)
{
    std::string text = unquote ? unquote_local_part(raw) : std::string(raw);
    if (text.empty())
        return "=";
    static const char hex[] = "0123456789ABCDEF";
    std::string out;
    out.reserve(text.size());
    for (std::size_t i = 0; i < text.size(); ++i) {
        auto c = static_cast<unsigned char>(text[i]);
        if (c >= 'A' && c <= 'Z')
            c = static_cast<unsigned char>(c - 'A' + 'a');
        if (is_lower_safe(c) && !(i == 0 && c == '.')) {
            out += static_cast<char>(c);
        } else {
            out += '=';
            out += hex[c >> 4];
            out += hex[c & 0xf];
        }
    }
    return out;
}

bool MaildirPath::parse(std::string_view tmpl, std::string &error)
{
    pieces_.clear();
    prefix_.clear();
    per_recipient_ = false;
    if (tmpl.empty() || tmpl.front() != '/') {
        error = std::string(kErrorPrefix) + "the Maildir path must be absolute: " + std::string(tmpl);
        return false;
    }
    std::string literal;
    for (std::size_t i = 0; i < tmpl.size(); ++i) {
        char c = tmpl[i];
        if (c == '\0') {
            error = std::string(kErrorPrefix) + "NUL byte in the Maildir path";
            return false;
        }
        if (c != '%') {
            literal += c;
            continue;
        }
        if (i + 1 >= tmpl.size()) {
            error = std::string(kErrorPrefix) + "'%' at the end of " + std::string(tmpl) +
                    " (use %u, %d, or %% for a percent sign)";
            return false;
        }
        char k = tmpl[++i];
        if (k == '%') {
            literal += '%';
        } else if (k == 'u' || k == 'd') {
            if (!per_recipient_)
                prefix_ = literal;
            per_recipient_ = true;
            pieces_.push_back({0, std::move(literal)});
            literal.clear();
            pieces_.push_back({k, {}});
        } else {
            error = std::string(kErrorPrefix) + "unknown placeholder %" + std::string(1, k) + " in " +
                    std::string(tmpl) + " (use %u, %d, or %% for a percent sign)";
            return false;
        }
    }
    pieces_.push_back({0, std::move(literal)});
    if (!per_recipient_) {
        prefix_ = pieces_.front().text;
        return true;
    }
    // After the fixed prefix, "." and ".." components would let the admin's
    // own template leave it: refuse them.
    std::string rest;
    bool in_rest = false;
    for (const auto &p : pieces_) {
        if (p.kind != 0) {
            in_rest = true;
            rest += 'x';
        } else if (in_rest) {
            rest += p.text;
        } else {
            // the literal before the first placeholder: its last component
            auto slash = p.text.rfind('/');
            rest += p.text.substr(slash + 1);
        }
    }
    std::size_t start = 0;
    while (start <= rest.size()) {
        auto slash = rest.find('/', start);
        std::string_view comp(rest.data() + start, (slash == std::string::npos ? rest.size() : slash) - start);
        if (comp == "." || comp == "..") {
            error = std::string(kErrorPrefix) + "'.' and '..' are not allowed after the first placeholder in " +
                    std::string(tmpl);
            return false;
        }
        if (slash == std::string::npos)
            break;
        start = slash + 1;
    }
    return true;
}

bool MaildirPath::expand(const Path &to, std::string_view hostname, std::string &out) const
{
    out.clear();
    if (!per_recipient_) {
        out = prefix_;
        return true;
    }
    std::string local = component(to.local_part.empty() ? to.mailbox : to.local_part, true);
    std::string domain = component(to.domain.empty() ? hostname : std::string_view(to.domain), false);
    // Every substituted text must be a safe component on its own.
    if (!safe_component(local) || !safe_component(domain))
        return false;
    for (const auto &p : pieces_) {
        if (p.kind == 'u')
            out += local;
        else if (p.kind == 'd')
            out += domain;
        else
            out += p.text;
    }
    // Verify: below the fixed prefix, no component too long, none "." or "..".
    if (out.compare(0, prefix_.size(), prefix_) != 0 || out.size() >= PATH_MAX)
        return false;
    std::size_t start = prefix_.rfind('/');
    start = start == std::string::npos ? 0 : start + 1;
    while (start < out.size()) {
        auto slash = out.find('/', start);
        std::string_view comp(out.data() + start, (slash == std::string::npos ? out.size() : slash) - start);
        if (comp.size() > kNameMax || comp == "." || comp == "..")
            return false;
        if (slash == std::string::npos)
            break;
        start = slash + 1;
    }
    return true;
}

namespace
{

// One copy of the message: in `dir`/tmp, then in `dir`/new.
struct Copy {
    std::string dir;
    std::string tmp_path; // set while the file exists in tmp/
    std::string new_path; // set once it was renamed into new/
};

class MaildirHandler final : public Handler
{
  public:
    MaildirHandler(std::shared_ptr<const MaildirPath> path, const std::string &host, const MaildirOptions &options)
        : path_(std::move(path)), host_(host), options_(options)
    {
    }
    ~MaildirHandler() override { discard(); }

    Reply rcpt(SessionView &s, const Path &to, const Params &) override
    {
        std::string dir;
        if (!path_->per_recipient())
            return {};
        if (!path_->expand(to, s.hostname(), dir)) {
            s.log(1, "maildir: no safe Maildir path for <" + to.mailbox + ">");
            return Reply(553, "Recipient address cannot be mapped to a mailbox", "5.1.3");
        }
        if (!options_.create) {
            // create=no: the recipient exists when its Maildir does.
            struct stat st;
            int rc = stat(dir.c_str(), &st);
            if (rc == 0 && S_ISDIR(st.st_mode))
                return {};
            if (rc == 0 || errno == ENOENT || errno == ENOTDIR) {
                s.log(1, "maildir: no mailbox " + dir + " for <" + to.mailbox + ">");
                return Reply(550, "No such user here", "5.1.1");
            }
            // EACCES and the like: ours to fix, not the client's
            s.error("maildir: cannot look up " + dir + ": " + std::strerror(errno));
            return Reply(451, "Local error in processing; try again later", "4.3.0");
        }
        return {};
    }

    Reply data(SessionView &s) override
    {
        discard();
        // The distinct directories, in the order of the recipients.
        for (const auto &r : s.envelope().recipients) {
            std::string dir;
            if (!path_->expand(r.path, s.hostname(), dir)) {
                discard();
                errno = EINVAL;
                return fail(s, "no safe Maildir path for <" + r.path.mailbox + ">");
            }
            bool seen = false;
            for (const auto &c : copies_)
                seen = seen || c.dir == dir;
            if (!seen)
                copies_.push_back({std::move(dir), {}, {}});
            if (!path_->per_recipient())
                break;
        }
        if (copies_.empty()) // no recipient (cannot happen after the module's checks)
            copies_.push_back({path_->prefix(), {}, {}});
        for (const auto &c : copies_) {
            std::string failed;
            if (!ensure_maildir(c.dir, options_.create, failed)) {
                int e = errno;
                std::string dir = c.dir;
                discard();
                errno = e;
                return fail(s, (options_.create ? "cannot create Maildir " : "cannot use Maildir ") +
                                   (failed.empty() || failed == dir ? dir : dir + " (at " + failed + ")"));
            }
        }
        name_ = std::to_string(std::time(nullptr)) + "." + std::string(s.queue_id()) + "." + host_;
        Copy &first = copies_.front();
        std::string tmp = first.dir + "/tmp/" + name_;
        fd_.reset(open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
        if (!fd_.valid()) {
            int e = errno;
            discard();
            errno = e;
            return fail(s, "cannot create " + tmp);
        }
        first.tmp_path = tmp;
        error_ = 0;
        buf_.assign(s.trace_headers());
        return {};
    }
    void header(SessionView &, const HeaderField &f) override { append(f.raw); }
    void eoh(SessionView &, std::string_view raw) override { append(raw); }
    void body(SessionView &, std::string_view chunk) override { append(chunk); }

    Reply eom(SessionView &s) override
    {
        if (!fd_.valid() || copies_.empty())
            return Reply(451, "Message not stored; try again later", "4.3.0");
        // Announced from here on, so that a flush of new/ about to start may
        // wait a little for this delivery's rename; cancelled on every way
        // out of eom() (see GroupCommit).
        GroupCommit group;
        for (const Copy &c : copies_)
            group.expect(c.dir + "/new");
        flush();
        if (error_ == 0 && !sync_file(fd_.get(), copies_.front().tmp_path))
            error_ = errno;
        if (!fd_.close() && error_ == 0)
            error_ = errno;
        const std::string master = copies_.front().tmp_path;
        if (error_ != 0)
            return rollback(s, error_, "cannot write " + master);
        // The other copies, each its own file made durable in its tmp/.
        for (std::size_t i = 1; i < copies_.size(); ++i) {
            Copy &c = copies_[i];
            std::string tmp = c.dir + "/tmp/" + name_;
            if (!copy_file(master, tmp))
                return rollback(s, errno, "cannot write " + tmp);
            c.tmp_path = tmp;
        }
        for (Copy &c : copies_) {
            std::string final_path = c.dir + "/new/" + name_;
            if (rename(c.tmp_path.c_str(), final_path.c_str()) != 0)
                return rollback(s, errno, "cannot move message into " + c.dir + "/new");
            c.tmp_path.clear();
            c.new_path = std::move(final_path);
            hook("rename", c.new_path);
        }
        // The directory entries must be durable too before we say 250: a
        // flush of new/ that started after our rename, shared with the
        // other deliveries of this process (see handlers/group_commit.hpp).
        for (std::size_t i = 0; i < copies_.size(); ++i)
            if (int e = group.commit(i, flush_dir))
                return rollback(s, e, "cannot fsync " + copies_[i].dir + "/new");
        g_stored.fetch_add(1, std::memory_order_relaxed);
        for (const Copy &c : copies_)
            s.log(3, "stored " + c.new_path + " (flushes of process " + std::to_string(getpid()) + ": messages " +
                         std::to_string(g_stored.load(std::memory_order_relaxed)) + " files " +
                         std::to_string(g_file_syncs.load(std::memory_order_relaxed)) + " directories " +
                         std::to_string(g_dir_syncs.load(std::memory_order_relaxed)) + ")");
        copies_.clear();
        return {};
    }

    void abort(SessionView &) override { discard(); }

  private:
    // A message we cannot store: the administrator has to fix something
    // (permissions, disk, a missing directory), so it goes to httpd's error
    // log too, with the path and the reason.
    Reply fail(SessionView &s, const std::string &what)
    {
        s.error("maildir: " + what + ": " + std::strerror(errno));
        return Reply(451, "Local error in processing; message not stored", "4.3.0");
    }

    // Remove every copy made so far (tmp/ or new/), then answer 451.
    Reply rollback(SessionView &s, int err, const std::string &what)
    {
        discard();
        errno = err;
        return fail(s, what);
    }

    void append(std::string_view bytes)
    {
        if (!fd_.valid() || error_ != 0)
            return;
        buf_.append(bytes);
        if (buf_.size() >= kWriteBlock)
            flush();
    }

    void flush()
    {
        if (error_ == 0 && !buf_.empty()) {
            if (int e = hook("write", copies_.front().tmp_path))
                error_ = e;
            else if (!write_all(fd_.get(), std::string_view(buf_.data(), buf_.size())))
                error_ = errno;
        }
        buf_.clear();
    }

    void discard()
    {
        fd_.reset();
        for (const Copy &c : copies_) {
            if (!c.tmp_path.empty())
                unlink(c.tmp_path.c_str());
            if (!c.new_path.empty())
                unlink(c.new_path.c_str());
        }
        copies_.clear();
        buf_.clear();
        if (buf_.capacity() > kWriteBlock * 2)
            buf_.shrink_to_fit();
    }

    const std::shared_ptr<const MaildirPath> path_;
    const std::string host_;
    const MaildirOptions options_;
    std::string name_;
    std::vector<Copy> copies_;
    std::string buf_;
    Fd fd_;
    int error_ = 0;
};

class MaildirFactory final : public HandlerFactory
{
  public:
    MaildirFactory(std::shared_ptr<const MaildirPath> path, const MaildirOptions &options)
        : path_(std::move(path)), host_(local_hostname()), options_(options)
    {
    }
    std::unique_ptr<Handler> create() override { return std::make_unique<MaildirHandler>(path_, host_, options_); }

    // As the server's user, at child start: can a delivery write where it
    // must? A fixed DIR is made a Maildir as the first delivery would (with
    // create=yes) and a file is created and removed in DIR/tmp. For a
    // per-recipient path the directory before the first placeholder is
    // checked: writable with create=yes (mailboxes are made there),
    // reachable with create=no.
    bool check(std::string &why) const override
    {
        const std::string &prefix = path_->prefix();
        std::string probe_dir;
        if (!path_->per_recipient()) {
            std::string failed;
            if (!ensure_maildir(prefix, options_.create, failed)) {
                why = "maildir: cannot " + std::string(options_.create ? "create" : "use") + " Maildir " + prefix +
                      (failed.empty() || failed == prefix ? "" : " (at " + failed + ")") + ": " + std::strerror(errno) +
                      running_as();
                return false;
            }
            probe_dir = prefix + "/tmp";
        } else {
            auto slash = prefix.rfind('/');
            std::string base = slash == 0 || slash == std::string::npos ? "/" : prefix.substr(0, slash);
            if (options_.create) {
                DirMaker m;
                if (!make_path(m, base) || !m.sync()) {
                    why = "maildir: cannot create " + base +
                          (m.failed().empty() || m.failed() == base ? "" : " (at " + m.failed() + ")") + ": " +
                          std::strerror(errno) + running_as();
                    return false;
                }
                probe_dir = base;
            } else {
                struct stat st;
                if (stat(base.c_str(), &st) != 0 || (!S_ISDIR(st.st_mode) && (errno = ENOTDIR)) ||
                    faccessat(AT_FDCWD, base.c_str(), X_OK, AT_EACCESS) != 0) {
                    why = "maildir: cannot reach " + base + ": " + std::strerror(errno) + running_as();
                    return false;
                }
                return true;
            }
        }
        std::string probe = probe_dir + "/.esmtp-check." + std::to_string(getpid());
        Fd fd(open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
        if (!fd && errno == EEXIST) { // left by a killed child with our pid
            unlink(probe.c_str());
            fd.reset(open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
        }
        if (!fd) {
            why = "maildir: cannot write in " + probe_dir + ": " + std::strerror(errno) + running_as();
            return false;
        }
        unlink(probe.c_str());
        return true;
    }

  private:
    const std::shared_ptr<const MaildirPath> path_;
    const std::string host_;
    const MaildirOptions options_;
};

} // namespace

void set_maildir_syscall_hook(MaildirSyscallHook hook)
{
    syscall_hook() = std::move(hook);
}

std::shared_ptr<HandlerFactory> make_maildir_factory(const std::string &dir, const MaildirOptions &options,
                                                     std::string *error)
{
    auto path = std::make_shared<MaildirPath>();
    std::string err;
    if (!path->parse(dir, err)) {
        if (error)
            *error = err;
        return nullptr;
    }
    return std::make_shared<MaildirFactory>(std::move(path), options);
}

std::shared_ptr<HandlerFactory> make_maildir_factory(const std::string &dir, std::string *error)
{
    return make_maildir_factory(dir, MaildirOptions{}, error);
}

std::shared_ptr<HandlerFactory>
MaildirProvider::configure(const HandlerContext &ctx, const std::vector<std::string> &args, std::string &error) const
{
    const std::string prefix = ctx.directive + " maildir: ";
    if (args.empty() || args[0].empty() || args[0].starts_with("create=")) {
        error = prefix + "expects DIR [create=yes|no]";
        return nullptr;
    }
    MaildirOptions options;
    for (std::size_t i = 1; i < args.size(); ++i) {
        const std::string &a = args[i];
        if (a == "create=yes") {
            options.create = true;
        } else if (a == "create=no") {
            options.create = false;
        } else if (a.starts_with("create=")) {
            error = prefix + "create=yes or create=no, not '" + a + "'";
            return nullptr;
        } else {
            error = prefix + "unknown option '" + a + "' after the directory (options: create=yes|no)";
            return nullptr;
        }
    }
    std::string dir = args[0];
    if (dir.front() != '/')
        dir = ctx.server_root + "/" + dir;
    while (dir.size() > 1 && dir.back() == '/')
        dir.pop_back();
    return make_maildir_factory(dir, options, &error);
}

} // namespace esmtp
