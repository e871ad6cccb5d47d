// A message spooled to an unlinked temporary file, for the handlers that
// hand the whole message on only at the end of DATA (pipe, http): memory
// stays bounded by one block whatever the message size, and nothing is left
// on disk whatever happens.
#pragma once

#include "handlers/fd.hpp"

#include <cstdint>
#include <string>
#include <string_view>

namespace esmtp
{

// Where spools live: $TMPDIR when absolute, else /tmp.
std::string spool_dir();
// An unlinked temporary file in spool_dir() (invalid Fd, errno set, on failure).
Fd open_spool();

class Spool
{
  public:
    // A new, empty spool (the previous one is discarded); false with errno set.
    bool open();
    // Buffered; a write error is kept for finish().
    void append(std::string_view bytes);
    // Everything written and the file rewound for reading; false with the
    // errno of the first failure.
    bool finish(int &error);
    void discard();

    bool is_open() const { return fd_.valid(); }
    int fd() const { return fd_.get(); }
    std::uint64_t size() const { return size_; }

  private:
    void flush();

    Fd fd_;
    std::string buf_;
    std::uint64_t size_ = 0;
    int error_ = 0;
};

} // namespace esmtp
