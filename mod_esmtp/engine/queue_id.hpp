// Queue ids unique across processes, threads and restarts.
#pragma once

#include <string>

namespace esmtp
{

// Uppercase alphanumeric id built from the time (seconds and microseconds),
// the process id and a per-process counter, e.g. "6920F1A20B3C51A2F0001".
std::string make_queue_id();

} // namespace esmtp
