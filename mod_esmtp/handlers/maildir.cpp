#include "maildir.hpp"

#include <cerrno>
#include <cstring>
#include <ctime>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

namespace esmtp
{

namespace
{

// Buffered content is written out in blocks of this size.
constexpr std::size_t kWriteBlock = 256 * 1024;

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

bool make_dir(const std::string &path)
{
    return mkdir(path.c_str(), 0700) == 0 || errno == EEXIST;
}

bool ensure_maildir(const std::string &dir)
{
    // Create missing parents too: a per-server DIR may not exist yet.
    for (std::size_t pos = 1; (pos = dir.find('/', pos)) != std::string::npos; ++pos)
        if (!make_dir(dir.substr(0, pos)))
            return false;
    return make_dir(dir) && make_dir(dir + "/tmp") && make_dir(dir + "/new") && make_dir(dir + "/cur");
}

bool fsync_dir(const std::string &path)
{
    int fd = open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return false;
    bool ok = fsync(fd) == 0;
    close(fd);
    return ok;
}

class MaildirHandler final : public Handler
{
  public:
    MaildirHandler(const std::string &dir, const std::string &host) : dir_(dir), host_(host) {}
    ~MaildirHandler() override { discard(); }

    Reply data(SessionView &s) override
    {
        discard();
        if (!ensure_maildir(dir_))
            return fail(s, "cannot create Maildir " + dir_);
        name_ = std::to_string(std::time(nullptr)) + "." + std::string(s.queue_id()) + "." + host_;
        tmp_path_ = dir_ + "/tmp/" + name_;
        fd_ = open(tmp_path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd_ < 0) {
            tmp_path_.clear();
            return fail(s, "cannot create " + dir_ + "/tmp/" + name_);
        }
        error_ = 0;
        buf_.assign(s.trace_headers());
        return {};
    }
    void header(SessionView &, const HeaderField &f) override { append(f.raw); }
    void eoh(SessionView &, std::string_view raw) override { append(raw); }
    void body(SessionView &, std::string_view chunk) override { append(chunk); }

    Reply eom(SessionView &s) override
    {
        if (fd_ < 0)
            return Reply(451, "Message not stored; try again later", "4.3.0");
        flush();
        if (error_ == 0 && fsync(fd_) != 0)
            error_ = errno;
        if (close(fd_) != 0 && error_ == 0)
            error_ = errno;
        fd_ = -1;
        if (error_ != 0) {
            int e = error_;
            discard();
            errno = e;
            return fail(s, "cannot write " + tmp_path_);
        }
        std::string final_path = dir_ + "/new/" + name_;
        if (rename(tmp_path_.c_str(), final_path.c_str()) != 0) {
            int e = errno;
            discard();
            errno = e;
            return fail(s, "cannot move message into " + dir_ + "/new");
        }
        tmp_path_.clear();
        // The directory entry must be durable too before we say 250.
        if (!fsync_dir(dir_ + "/new")) {
            int e = errno;
            unlink(final_path.c_str());
            errno = e;
            return fail(s, "cannot fsync " + dir_ + "/new");
        }
        s.log(3, "stored " + final_path);
        return {};
    }

    void abort(SessionView &) override { discard(); }

  private:
    Reply fail(SessionView &s, const std::string &what)
    {
        s.log(1, "maildir: " + what + ": " + std::strerror(errno));
        return Reply(451, "Local error in processing; message not stored", "4.3.0");
    }

    void append(std::string_view bytes)
    {
        if (fd_ < 0 || error_ != 0)
            return;
        buf_.append(bytes);
        if (buf_.size() >= kWriteBlock)
            flush();
    }

    void flush()
    {
        std::size_t off = 0;
        while (off < buf_.size() && error_ == 0) {
            ssize_t n = write(fd_, buf_.data() + off, buf_.size() - off);
            if (n < 0) {
                if (errno == EINTR)
                    continue;
                error_ = errno;
            } else {
                off += static_cast<std::size_t>(n);
            }
        }
        buf_.clear();
    }

    void discard()
    {
        if (fd_ >= 0) {
            close(fd_);
            fd_ = -1;
        }
        if (!tmp_path_.empty()) {
            unlink(tmp_path_.c_str());
            tmp_path_.clear();
        }
        buf_.clear();
        if (buf_.capacity() > kWriteBlock * 2)
            buf_.shrink_to_fit();
    }

    const std::string dir_;
    const std::string host_;
    std::string name_;
    std::string tmp_path_;
    std::string buf_;
    int fd_ = -1;
    int error_ = 0;
};

class MaildirFactory final : public HandlerFactory
{
  public:
    explicit MaildirFactory(std::string dir) : dir_(std::move(dir)), host_(local_hostname()) {}
    std::unique_ptr<Handler> create() override { return std::make_unique<MaildirHandler>(dir_, host_); }

  private:
    const std::string dir_;
    const std::string host_;
};

} // namespace

std::shared_ptr<HandlerFactory> make_maildir_factory(const std::string &dir)
{
    return std::make_shared<MaildirFactory>(dir);
}

std::shared_ptr<HandlerFactory>
MaildirProvider::configure(const HandlerContext &ctx, const std::vector<std::string> &args, std::string &error) const
{
    if (args.size() != 1 || args[0].empty()) {
        error = ctx.directive + " maildir: takes exactly one argument, the Maildir directory";
        return nullptr;
    }
    std::string dir = args[0];
    if (dir.front() != '/')
        dir = ctx.server_root + "/" + dir;
    while (dir.size() > 1 && dir.back() == '/')
        dir.pop_back();
    return make_maildir_factory(dir);
}

} // namespace esmtp
