// One connection's screening (README, Screening clients): the DNSBL/DNSWL
// score asked at CONNECT, and again for an address XCLIENT names, its
// verdict then or at RCPT; greylisting at RCPT (DNSWL-listed clients skip
// it), keyed by the current client's network. The session asks it before
// the handler (engine/screen.hpp).
#pragma once

#include "engine/screen.hpp"
#include "httpd/dnsbl_lookup.hpp"
#include "httpd/greylist.hpp"
#include "httpd/mod_esmtp.hpp"

#include <memory>
#include <string>
#include <string_view>

namespace esmtp
{

struct ServerConfig;
class ConnStats;

// The server's DNSBL settings (ESMTPDNSBL, ESMTPDNSBLThreshold,
// ESMTPDNSServer), defaults applied.
DnsblSettings dnsbl_settings(const ServerConfig *cfg);

class ConnectionScreen final : public Screen
{
  public:
    ConnectionScreen(conn_rec *c, const ServerConfig *cfg, ConnStats &stats);
    // Whether anything is configured (else the session need not ask).
    bool active() const { return dnsbl_active() || greylist_.on == 1; }
    // The DNSBL queries sent before the greeting's pauses (ESMTPPregreet,
    // ESMTPGreetingDelay), answered while they run; connect() takes the
    // outcome. None for a front end in ESMTPXClientHosts: trusted, it names
    // the client to judge with XCLIENT.
    void start_lookups();
    bool lookups_running() const { return lookup_ && lookup_->running(); }
    // Takes answers in until `until`, the deadline or the last answer; true
    // as soon as `client` (its socket) is readable.
    bool wait_with_lookups(apr_time_t until, int client) { return lookup_ && lookup_->wait(until, client); }
    Verdict connect() override;
    Verdict rcpt(const Path &sender, const Path &recipient) override;
    Verdict client_changed(std::string_view address) override;

  private:
    bool dnsbl_active() const { return dnsbl_.sites && !dnsbl_.sites->empty(); }
    // The lookups for client_ done: the verdict instead of the greeting.
    Verdict judge();
    Verdict blocked(bool greeting) const;
    Verdict greylisted(const Path &sender, const Path &recipient);

    conn_rec *c_;
    ConnStats &stats_;
    std::string hostname_;
    std::string client_; // the address judged: the connection's, then XCLIENT's
    bool front_end_;     // the connection comes from ESMTPXClientHosts
    DnsblSettings dnsbl_;
    std::unique_ptr<DnsblLookup> lookup_;
    DnsblOutcome outcome_;
    GreylistSpec greylist_;
};

} // namespace esmtp
