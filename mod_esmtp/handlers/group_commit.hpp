// Group commit of directory fsyncs (issue 13): the renames into one
// directory by all threads of this process share its fsyncs. The maildir
// handler uses it for new/; the argument why no 250'd message can be lost
// is at DirGroup in group_commit.cpp.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

namespace esmtp
{

class DirGroup;

// Flushes directory `path` (an fsync): 0 on success, else an errno.
using DirFlush = int (*)(const std::string &path);

// The directories one delivery is about to rename into. Announced at the
// start of its end of data (not at DATA: a leader about to flush waits a
// little for announced deliveries, and a slow client's DATA must not make
// it wait), committed after each rename. Keep it on the stack of the end of
// data: whatever was not committed is cancelled when it goes, on every path
// out, so no announcement outlives the delivery (a session that httpd
// abandons never holds one between two events).
class GroupCommit
{
  public:
    GroupCommit() = default;
    GroupCommit(const GroupCommit &) = delete;
    GroupCommit &operator=(const GroupCommit &) = delete;
    ~GroupCommit();

    // A rename into `dir` will follow.
    void expect(const std::string &dir);
    // After the rename into the i-th expected directory returned: 0 once a
    // flush of it that started after the rename succeeded, else that
    // flush's errno. Once per directory.
    int commit(std::size_t i, DirFlush flush);

  private:
    std::vector<std::shared_ptr<DirGroup>> groups_;
};

// For the unit tests: deliveries announced for `dir` and not yet committed
// or cancelled; -1 when no delivery holds the directory's group.
long group_commit_arriving(const std::string &dir);

} // namespace esmtp
