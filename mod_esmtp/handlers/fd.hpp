// A file descriptor (file, pipe, socket) that is closed with its owner, on
// every path; write_all() for files and pipes; and running_as() for the
// handlers' start-up checks. (The socket clients' poll and send with
// deadlines: stream_socket.hpp.)
#pragma once

#include <cerrno>
#include <pwd.h>
#include <string>
#include <string_view>
#include <unistd.h>
#include <utility>
#include <vector>

namespace esmtp
{

class Fd
{
  public:
    Fd() = default;
    explicit Fd(int fd) : fd_(fd) {}
    Fd(Fd &&o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
    Fd &operator=(Fd &&o) noexcept
    {
        if (this != &o)
            reset(std::exchange(o.fd_, -1));
        return *this;
    }
    Fd(const Fd &) = delete;
    Fd &operator=(const Fd &) = delete;
    ~Fd() { reset(); }

    int get() const { return fd_; }
    explicit operator bool() const { return fd_ >= 0; }
    bool valid() const { return fd_ >= 0; }
    // Close now and report close(2)'s result (some file systems report a
    // failed write only there).
    bool close()
    {
        int fd = std::exchange(fd_, -1);
        return fd < 0 || ::close(fd) == 0;
    }
    void reset(int fd = -1)
    {
        if (fd_ >= 0)
            ::close(fd_);
        fd_ = fd;
    }

  private:
    int fd_ = -1;
};

// Writes all of `data` to a blocking descriptor (a file, a pipe), again
// after EINTR or a short write; false with errno on an error.
inline bool write_all(int fd, std::string_view data)
{
    while (!data.empty()) {
        ssize_t n = ::write(fd, data.data(), data.size());
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return false;
        if (n == 0) {
            errno = EIO;
            return false;
        }
        data.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
}

// " (as user NAME)" for the effective user: a check that fails in
// child_init fails for the user httpd's children run as (User), which is
// not the one who ran `apache2 -t`.
// Leaves errno alone, so that it can sit in one expression with strerror(errno).
inline std::string running_as()
{
    const int saved = errno;
    struct Restore {
        int e;
        ~Restore() { errno = e; }
    } restore{saved};
    uid_t uid = ::geteuid();
    passwd pw{};
    passwd *found = nullptr;
    std::vector<char> buf(4096);
    if (::getpwuid_r(uid, &pw, buf.data(), buf.size(), &found) == 0 && found)
        return std::string(" (as user ") + found->pw_name + ")";
    return " (as uid " + std::to_string(uid) + ")";
}

} // namespace esmtp
