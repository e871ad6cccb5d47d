// Waiting for the client without a thread (event MPM parking) and noticing
// that the child is stopping.
//
// Parking: on httpd >= 2.4.63 the event MPM lets process_connection return
// CONN_STATE_ASYNC_WAITIO and calls it again when the socket is readable, so
// an idle session holds no thread. Older httpd (2.4.49 to 2.4.62) and the
// worker and prefork MPMs keep the blocking loop.
//
// Stopping: sessions waiting for their client (parked, or in a blocking
// read) are registered here; httpd's child_stopping hook shuts down their
// read side, the wait ends with EOF, and an idle session ends with 421.
#pragma once

#include "httpd/mod_esmtp.hpp"

#include <ap_mmn.h>
#include <apr_network_io.h>

// CONN_STATE_ASYNC_WAITIO came with MMN 20120211.135 and AP_MPMQ_CAN_WAITIO
// with .137 (both 2.4.63). -DESMTP_NO_PARKING builds the older path on a
// newer httpd (CI compiles and tests it).
#if AP_MODULE_MAGIC_AT_LEAST(20120211, 137) && !defined(ESMTP_NO_PARKING)
#define ESMTP_HAVE_PARKING 1
#else
#define ESMTP_HAVE_PARKING 0
#endif

namespace esmtp
{

// child_init: learns whether this child's MPM can park connections.
void parking_child_init(server_rec *s);
// The MPM parks idle connections for us (event MPM, httpd >= 2.4.63).
bool can_park();
// This child is going away (child_stopping ran, or the MPM says so).
bool child_is_stopping();
// A hard stop of a single-threaded child (prefork) began: the process is
// about to exit, and what runs now may run in its SIGTERM handler
// (child_stopping, then the pool cleanups). Lock-free, async-signal-safe.
bool child_is_exiting();
// child_stopping hook.
void child_stopping(apr_pool_t *pchild, int graceful);

// One connection's place in the registry of waiting sessions.
class WaitRegistration
{
  public:
    WaitRegistration() = default;
    WaitRegistration(const WaitRegistration &) = delete;
    WaitRegistration &operator=(const WaitRegistration &) = delete;
    ~WaitRegistration() { end(); }

    // Before waiting for the client: false when the child is already
    // stopping (do not wait; end the idle session instead).
    bool begin(conn_rec *c);
    // After the wait (or when the connection goes): true when the wait was
    // ended by the stop, not by the client.
    bool end();
    // For a connection torn down without pre_close_connection: end(), but
    // without the registry's mutex once child_is_exiting() (then it may run
    // in prefork's SIGTERM handler: no lock, no allocation).
    void abandon();

  private:
    apr_socket_t *sock_ = nullptr;
};

// Hand the connection back to the MPM until the socket is readable.
void park_with_mpm(conn_rec *c);

} // namespace esmtp
