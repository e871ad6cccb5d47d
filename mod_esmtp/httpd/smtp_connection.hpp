// One SMTP connection: the session, its I/O and its deadlines, kept in
// c->conn_config so that the event MPM can call process_connection again
// (on any thread) when the client sends more.
#pragma once

#include "engine/session.hpp"
#include "httpd/auth.hpp"
#include "httpd/config.hpp"
#include "httpd/io.hpp"
#include "httpd/parking.hpp"
#include "httpd/status.hpp"
#include "httpd/tls.hpp"
#include "httpd/txlog.hpp"

#include <memory>

namespace esmtp
{

class SmtpConnection
{
  public:
    // `client`: the session's entry in the per-client table (may hold
    // nothing); given back when the session ends.
    SmtpConnection(conn_rec *c, const ServerConfig *cfg, std::unique_ptr<Handler> handler, ConnectionInfo ci,
                   ClientSlot client);
    // Runs no handler code: finish() has ended the session and destroyed
    // the handler, or abandon() has let go of it.
    ~SmtpConnection();
    SmtpConnection(const SmtpConnection &) = delete;
    SmtpConnection &operator=(const SmtpConnection &) = delete;

    Session &session() { return *session_; }
    Io &io() { return io_; }
    // mod_ssl's filters, unlinked until STARTTLS (ESMTPStartTLS On|Required).
    void set_tls_filters(TlsFilters f) { tls_ = f; }
    // The session has ended (DISCONNECT fired, handler destroyed).
    bool finished() const { return !session_; }

    // ESMTPGreetingDelay, then the greeting. False when the client was
    // refused or has gone.
    bool greet();

    // Process input until the client has nothing more for us. True when the
    // session is over; false when it waits for the client and `may_park`:
    // the caller parks the connection with the MPM.
    bool run(bool may_park);

    // Handed to the MPM to wait for the client (event MPM).
    void parked()
    {
        parked_ = true;
        stats_.parked(true);
    }
    // Back from the MPM (or torn down by it): false when it was not parked.
    bool unparked();

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
    TlsStep handshake(bool may_park);

    conn_rec *c_;
    const ServerConfig *cfg_;
    Io io_;
    TxLog txlog_;
    // Before session_: the session's ClientLimiter outlives it.
    ClientSlot client_;
    ConnStats stats_;            // outlives session_, which reports to it
    ProviderAuthenticator auth_; // outlives session_, which asks it
    std::unique_ptr<Session> session_;
    WaitRegistration wait_;
    bool parked_ = false;
    bool woken_by_stop_ = false;
    apr_time_t deadline_ = 0;
    apr_time_t data_start_ = 0;
    unsigned commands_ = 0;
    TlsFilters tls_;
    bool handshaking_ = false; // filters linked back, handshake under way
    apr_time_t tls_deadline_ = 0;
    apr_bucket_brigade *tls_bb_ = nullptr;
};

} // namespace esmtp
