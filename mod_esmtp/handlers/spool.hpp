// A message spooled to an unlinked temporary file, for the handlers that
// hand the whole message on only at the end of DATA (pipe, http): memory
// stays bounded by one block whatever the message size, and nothing is left
// on disk whatever happens.
#pragma once

#include "handlers/fd.hpp"

#include <esmtp/handler.hpp>

#include <cstdint>
#include <string>
#include <string_view>

namespace esmtp
{

// Where spools live: $TMPDIR when absolute, else /tmp.
std::string spool_dir();
// An unlinked temporary file in spool_dir() (invalid Fd, errno set, on failure).
Fd open_spool();
// The start-up check (HandlerFactory::check) of a spooling handler: false
// with `why` ("NAME: cannot create ...") when no spool can be made.
bool check_spool(std::string_view name, std::string &why);

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

// The content events of a handler that spools the message (trace headers
// first, as maildir stores it) and hands it on at eom(): derive from it and
// call spooled() first thing in eom().
class SpoolingHandler : public Handler
{
  public:
    Reply data(SessionView &s) override;
    void header(SessionView &, const HeaderField &f) override { spool_.append(f.raw); }
    void eoh(SessionView &, std::string_view raw) override { spool_.append(raw); }
    void body(SessionView &, std::string_view chunk) override { spool_.append(chunk); }
    void abort(SessionView &) override { spool_.discard(); }

  protected:
    // `name` ("pipe", "http") starts the error messages; a literal.
    explicit SpoolingHandler(std::string_view name) : name_(name) {}
    // An empty Reply when the whole message is in the spool, rewound;
    // otherwise the 451 to return (the problem logged, the spool discarded).
    Reply spooled(SessionView &s);

    Spool spool_;

  private:
    std::string_view name_;
};

} // namespace esmtp
