// One SMTP connection: the session, its I/O and its deadlines, kept in
// c->conn_config so that the event MPM can call process_connection again
// (on any thread) when the client sends more.
#pragma once

#include "engine/session.hpp"
#include "httpd/auth.hpp"
#include "httpd/config.hpp"
#include "httpd/io.hpp"
#include "httpd/parking.hpp"
#include "httpd/screening.hpp"
#include "httpd/status.hpp"
#include "httpd/tls.hpp"
#include "httpd/txlog.hpp"
#include "httpd/wake_timer.hpp"

#include <memory>

namespace esmtp
{

class SmtpConnection
{
  public:
    // `client`: the connection's entry in the per-client table (may hold
    // nothing); given back when the connection ends. `implicit_tls`: the
    // TLS handshake comes first (ci.tls_info is filled in after it). The
    // session and its handler are made by run(), after the handshake.
    SmtpConnection(conn_rec *c, const ServerConfig *cfg, ConnectionInfo ci, ClientSlot client, bool implicit_tls);
    // Runs no handler code: finish() has ended the session and destroyed
    // the handler, or abandon() has let go of it.
    ~SmtpConnection();
    SmtpConnection(const SmtpConnection &) = delete;
    SmtpConnection &operator=(const SmtpConnection &) = delete;

    // Only once run() has made it (has_session()).
    Session &session() { return *session_; }
    bool has_session() const { return session_ != nullptr; }
    Io &io() { return io_; }
    // mod_ssl's filters, unlinked until STARTTLS (ESMTPStartTLS On|Required).
    void set_tls_filters(TlsFilters f) { tls_ = f; }
    // The connection has ended (DISCONNECT fired, handler destroyed).
    bool finished() const { return finished_; }
    // A TLS handshake is under way (implicit TLS, or after STARTTLS):
    // nothing can be sent.
    bool handshaking() const { return session_ ? session_->tls_requested() : implicit_tls_; }
    // Nothing more will be read (or nothing was ever started).
    bool closing() const { return !session_ || session_->closing(); }

    // Implicit TLS's handshake, the session (handler, greeting), then input
    // until the client has nothing more for us. True when the connection is
    // over; false when it waits for the client and `may_park`: the caller
    // parks the connection with the MPM (with a timer for a deadline before
    // the MPM's Timeout).
    bool run(bool may_park);

    // Handed to the MPM to wait for the client (event MPM).
    void parked()
    {
        parked_ = true;
        stats_.parked(true);
    }
    // Back from the MPM (or torn down by it): false when it was not parked.
    bool unparked();

    // The MPM is closing the connection (pre_close_connection): it gave up
    // waiting for a parked session (its Timeout), or process_connection
    // failed. Ends the session (421 where something can be sent).
    void closed_by_mpm();

    // The phase's timeout (ESMTPTimeout).
    apr_interval_time_t phase_timeout() const;
    void timed_out();
    // process_connection failed: 421 and close.
    void failed();
    // Send what is left, fire DISCONNECT and destroy the handler. Called
    // from process_connection or pre_close_connection, never from a cleanup.
    void finish();
    // From c->pool's cleanup when the session was never finished (see
    // hooks.cpp for when that can happen): let go of the session without
    // running handler code.
    void abandon();

  private:
    // The handler, then the session; false (421 sent) when none can be had.
    bool open_session();
    // ESMTPGreetingDelay, ESMTPPregreet, then the greeting. False when the
    // client was refused or has gone.
    bool greet();
    bool client_talks(apr_interval_time_t wait, apr_status_t &rv);
    bool client_talks_in_pause(apr_interval_time_t wait, apr_status_t &rv);
    // Park with the MPM until input or `deadline`: false when it cannot be
    // kept while parked (no timer thread): wait in the thread instead.
    bool park_until(apr_time_t deadline, bool wake_on_stop);
    bool idle() const;
    bool in_data() const;
    void stopping();
    void input_ended(ReadResult r, apr_status_t rv, bool woken_by_stop);
    void progress();
    bool too_slow(apr_time_t now) const;
    apr_time_t wake_time() const;
    std::uint64_t transfer_octets() const;
    // STARTTLS: what run() does while the session waits for TLS.
    enum class TlsStep { done, wait, closed };
    TlsStep start_tls();
    // Implicit TLS's handshake or STARTTLS's, then what follows from it.
    TlsStep handshake(bool may_park);
    // The TLS handshake under mod_ssl itself, for both: one deadline
    // (tls_deadline_, ESMTPTimeout tls=), parked on the event MPM. `why`
    // says what failed when it returns closed.
    TlsStep tls_handshake(bool may_park, const char *&why);
    void tls_done();
    void tls_failed(const char *why);

    conn_rec *c_;
    const ServerConfig *cfg_;
    Io io_;
    TxLog txlog_;
    // Before session_: the session's ClientLimiter outlives it.
    ClientSlot client_;
    ConnStats stats_;            // outlives session_, which reports to it
    ProviderAuthenticator auth_; // outlives session_, which asks it
    ConnectionScreen screen_;    // outlives session_, which asks it
    ConnectionInfo ci_;          // until session_ takes it
    std::unique_ptr<Session> session_;
    WaitRegistration wait_;
    WakeTimer timer_;
    bool finished_ = false;
    bool implicit_tls_ = false; // the handshake before the session is still to come
    bool parked_ = false;
    bool woken_by_stop_ = false;
    bool timer_fired_ = false;
    apr_time_t deadline_ = 0;
    apr_time_t data_start_ = 0;
    unsigned commands_ = 0;
    TlsFilters tls_;
    bool handshaking_ = false; // filters linked back, handshake under way
    apr_time_t tls_deadline_ = 0;
    apr_bucket_brigade *tls_bb_ = nullptr;
};

} // namespace esmtp
