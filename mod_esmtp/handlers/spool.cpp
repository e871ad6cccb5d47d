#include "handlers/spool.hpp"

#include <cerrno>
#include <cstring>
#include <cstdlib>
#include <fcntl.h>
#include <unistd.h>

namespace esmtp
{

namespace
{

// The spool is written in blocks of this size.
constexpr std::size_t kSpoolBlock = 64 * 1024;

} // namespace

std::string spool_dir()
{
    const char *env = std::getenv("TMPDIR");
    return env && *env == '/' ? env : "/tmp";
}

Fd open_spool()
{
    std::string dir = spool_dir();
    int fd = -1;
#ifdef O_TMPFILE
    fd = ::open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd >= 0)
        return Fd(fd);
#endif
    // O_TMPFILE unsupported by the file system: create and unlink at once.
    std::string path = dir + "/esmtp-spool-XXXXXX";
    fd = ::mkostemp(path.data(), O_CLOEXEC);
    if (fd >= 0)
        ::unlink(path.c_str());
    return Fd(fd);
}

bool check_spool(std::string_view name, std::string &why)
{
    if (open_spool())
        return true;
    why = std::string(name) + ": cannot create a temporary file in " + spool_dir() + ": " + std::strerror(errno) +
          running_as();
    return false;
}

bool Spool::open()
{
    discard();
    fd_ = open_spool();
    error_ = 0;
    size_ = 0;
    return fd_.valid();
}

void Spool::append(std::string_view bytes)
{
    if (!fd_ || error_ != 0)
        return;
    size_ += bytes.size();
    buf_.append(bytes);
    if (buf_.size() >= kSpoolBlock)
        flush();
}

void Spool::flush()
{
    if (error_ == 0 && !write_all(fd_.get(), buf_))
        error_ = errno;
    buf_.clear();
}

bool Spool::finish(int &error)
{
    flush();
    if (error_ == 0 && ::lseek(fd_.get(), 0, SEEK_SET) != 0)
        error_ = errno;
    error = error_;
    return error_ == 0;
}

void Spool::discard()
{
    fd_.reset();
    buf_.clear();
    if (buf_.capacity() > 2 * kSpoolBlock)
        buf_.shrink_to_fit();
}

Reply SpoolingHandler::data(SessionView &s)
{
    if (!spool_.open()) {
        s.error(std::string(name_) + ": cannot create a temporary file in " + spool_dir() + ": " +
                std::strerror(errno));
        return Reply(451, "Local error in processing", "4.3.0");
    }
    spool_.append(s.trace_headers());
    return {};
}

Reply SpoolingHandler::spooled(SessionView &s)
{
    if (!spool_.is_open())
        return Reply(451, "Message not stored; try again later", "4.3.0");
    int error = 0;
    if (!spool_.finish(error)) {
        s.error(std::string(name_) + ": cannot write the temporary file in " + spool_dir() + ": " +
                std::strerror(error));
        spool_.discard();
        return Reply(451, "Local error in processing", "4.3.0");
    }
    return {};
}

} // namespace esmtp
