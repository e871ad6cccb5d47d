// A parked connection's own deadline (ESMTPTimeout, ESMTPMinDataRate).
//
// The event MPM ends a parked connection's wait only when the client sends
// something or at the main server's Timeout. A session whose deadline comes
// earlier (tls=, data=, the minimum data rate) arms a timer: at the deadline
// one thread per child shuts down the connection's read side, so the MPM
// sees it readable and hands it back; process_connection then finds the
// timer fired and ends the session (421, or a silent close mid-handshake).
//
// Why not ap_mpm_register_timed_callback: httpd 2.4's event listener bounds
// its poll by a timer only once the earliest timer has expired (event.c,
// listener_thread: the poll timeout is taken from the skiplist only inside
// `if (expiry && expiry < now)`), so a timer set for a moment in the future
// runs at the listener's next wake-up for another reason: measured, 2 s
// timers ran 6 to 30 s late on an otherwise quiet server.
//
// Lifetime: the thread finds a connection by a number, under a mutex, in a
// registry the connection leaves (cancel()) before its socket is closed and
// its pool goes. One wake-up at most is pending per deadline; one that comes
// early (the deadline moved on) is scheduled again.
#pragma once

#include "httpd/mod_esmtp.hpp"

#include <apr_time.h>

#include <cstdint>

namespace esmtp
{

// child_init (MPMs that park): the timer thread, stopped and joined when
// `pchild` goes.
void wake_timer_child_init(apr_pool_t *pchild);

class WakeTimer
{
  public:
    WakeTimer() = default;
    WakeTimer(const WakeTimer &) = delete;
    WakeTimer &operator=(const WakeTimer &) = delete;
    ~WakeTimer() { cancel(); }

    // Before parking: end the wait at `deadline` unless the MPM's own wait
    // (the main server's Timeout) ends first. False when there is no timer
    // thread (not started, or stopped): then the caller waits in its thread.
    bool arm(conn_rec *c, apr_time_t deadline);
    // Back from the MPM: true when the timer ended the wait (the read side
    // is shut down; the deadline has passed).
    bool disarm();
    // The connection goes: a pending callback finds nothing.
    void cancel();

  private:
    std::uint64_t id_ = 0;
};

} // namespace esmtp
