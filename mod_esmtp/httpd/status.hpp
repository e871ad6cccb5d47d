// Live counters for mod_status and the scoreboard (README, Monitoring).
//
// The counters live in one anonymous shared memory segment created in the
// parent's post_config on the process pool, so it is inherited by every
// child and kept across graceful restarts. Monotone counters (connections,
// messages, rejects) are per SMTP server; gauges (sessions open now) are per
// child process and server, so that a child that died with sessions open
// (its connections never cleaned up) does not leave them counted: the page
// sums the rows of living children only. Every update is one relaxed atomic
// add: no lock on the message path.
#pragma once

#include "engine/observer.hpp"
#include "httpd/mod_esmtp.hpp"

#include <cstdint>
#include <string_view>

namespace esmtp
{

struct ServerConfig;
struct ServerCounters;

// post_config: attach (or create) the segment and give every SMTP server
// its row (found again by name after a graceful restart).
int status_post_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp, server_rec *s);
// child_init: claim this child's row of gauges.
void status_child_init(apr_pool_t *pchild, server_rec *s);
// The optional status_hook of mod_status and the protocol_get hook.
void status_register_hooks();

// A connection refused before it had a session (no handler could be made).
void status_connection_refused(const ServerConfig *cfg, const conn_rec *c, RejectCause cause, std::string_view what);

// Screening outcomes that are no refusal (README, Screening clients).
enum class ScreenEvent { dnsbl_failure, dnswl_listed, greylist_passed };
// ESMTPStateCache failed (httpd/state_cache.cpp): counted for the
// connection's server.
void status_state_cache_error(const conn_rec *c);
// ... by a background task of server `s`.
void status_state_cache_error(server_rec *s);

// One connection's share of the counters: the session's observer. Its
// gauges are released by the destructor, whatever ended the connection.
class ConnStats final : public SessionObserver
{
  public:
    ConnStats(conn_rec *c, const ServerConfig *cfg, bool tls);
    ~ConnStats() override;
    ConnStats(const ConnStats &) = delete;
    ConnStats &operator=(const ConnStats &) = delete;

    // Handed to the MPM to wait (event), or back on a thread.
    void parked(bool p);
    // The worker waits for the client: the scoreboard shows the session
    // (protocol smtp, the last verb).
    void waiting();

    void phase_changed(Phase from, Phase to) override;
    void command(std::string_view verb) override;
    void received(std::uint64_t octets) override;
    void message(int code, unsigned recipients, std::uint64_t size) override;
    void rejected(RejectCause cause, std::string_view what) override;
    void screening(ScreenEvent e);

  private:
    void gauge(int which, int delta);

    conn_rec *c_;
    ServerCounters *srv_ = nullptr; // null: no segment (counting off)
    unsigned server_ = 0;
    Phase phase_ = Phase::greeting;
    bool parked_ = false;
    bool tls_ = false;
    char verb_[24] = "";
    // Octets not yet added to the shared counter: added once per message
    // and at the end, not per read (fewer atomics on a shared cache line).
    std::uint64_t octets_ = 0;
    void flush_octets();
};

} // namespace esmtp
