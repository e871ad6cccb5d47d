#include "engine/queue_id.hpp"

#include <atomic>
#include <cstdio>
#include <sys/time.h>
#include <unistd.h>

namespace esmtp
{

std::string make_queue_id()
{
    // time + pid makes ids unique across processes and restarts (a pid is
    // reused only long after), the counter across threads and calls within
    // the same microsecond.
    static std::atomic<unsigned> counter{0};
    struct timeval tv;
    gettimeofday(&tv, nullptr);
    unsigned n = counter.fetch_add(1, std::memory_order_relaxed);
    char buf[64];
    int len =
        std::snprintf(buf, sizeof buf, "%08llX%05X%06X%04X", static_cast<unsigned long long>(tv.tv_sec),
                      static_cast<unsigned>(tv.tv_usec), static_cast<unsigned>(getpid()) & 0xFFFFFFu, n & 0xFFFFu);
    return std::string(buf, static_cast<std::size_t>(len));
}

} // namespace esmtp
