#include "httpd/screening.hpp"

#include "httpd/config.hpp"
#include "httpd/status.hpp"
#include "httpd/worker_hold.hpp"

#include <http_log.h>

namespace esmtp
{

namespace
{
constexpr apr_interval_time_t kDefaultDnsblTimeout = apr_time_from_sec(3);
} // namespace

DnsblSettings dnsbl_settings(const ServerConfig *cfg)
{
    DnsblSettings d;
    if (cfg->dnsbl_sites)
        d.sites = *cfg->dnsbl_sites;
    if (cfg->dnsbl_threshold != -1)
        d.threshold = static_cast<int>(cfg->dnsbl_threshold);
    d.at_rcpt = cfg->dnsbl_at_rcpt == 1;
    d.timeout = cfg->dnsbl_timeout_ms > 0 ? apr_time_from_msec(cfg->dnsbl_timeout_ms) : kDefaultDnsblTimeout;
    if (cfg->dns_server)
        d.server = cfg->dns_server;
    return d;
}

ConnectionScreen::ConnectionScreen(conn_rec *c, const ServerConfig *cfg, ConnStats &stats)
    : c_(c), stats_(stats), hostname_(cfg->session->hostname), dnsbl_(dnsbl_settings(cfg))
{
}

Screen::Verdict ConnectionScreen::connect()
{
    if (!active())
        return {};
    // The lookups hold this worker (up to the deadline): they count against
    // ESMTPMaxWorkers, beyond which the session is refused as the handler's
    // CONNECT would be.
    WorkerHold hold = WorkerHold::try_take();
    if (!hold)
        return {Reply(421, hostname_ + " Server busy, try again later", "4.3.2", true), RejectCause::count_,
                "DNSBL lookups refused: ESMTPMaxWorkers reached (server busy)"};
    outcome_ = dnsbl_lookup(dnsbl_, c_->client_ip);
    if (outcome_.failed) {
        // fail open: the client passes on what the other sites said
        stats_.screening(ScreenEvent::dnsbl_failure);
        ap_log_cerror(APLOG_MARK, APLOG_WARNING, 0, c_,
                      "esmtp: DNSBL lookup for %s failed, counted as not listed (%u site(s)): %s", c_->client_ip,
                      outcome_.failed, outcome_.failure.c_str());
    }
    if (outcome_.score.allowlisted)
        stats_.screening(ScreenEvent::dnswl_listed);
    if (outcome_.score.score < dnsbl_.threshold || dnsbl_.at_rcpt)
        return {};
    return blocked(true);
}

Screen::Verdict ConnectionScreen::rcpt(const Path &, const Path &)
{
    if (active() && dnsbl_.at_rcpt && outcome_.score.score >= dnsbl_.threshold)
        return blocked(false);
    return {};
}

// `greeting`: in the greeting's place, which carries no enhanced status
// code of its own (no EHLO yet): the text does, as Postfix's.
Screen::Verdict ConnectionScreen::blocked(bool greeting) const
{
    std::string site = outcome_.score.blocked_by.empty() ? std::string("DNSBL") : outcome_.score.blocked_by;
    ap_log_cerror(APLOG_MARK, APLOG_INFO, 0, c_, "esmtp: client %s blocked using %s (score %d, threshold %d)",
                  c_->client_ip, site.c_str(), outcome_.score.score, dnsbl_.threshold);
    std::string text = std::string("Service unavailable; client [") + c_->client_ip + "] blocked using " + site;
    return {greeting ? Reply(554, "5.7.1 " + text) : Reply(554, text, "5.7.1"), RejectCause::dnsbl,
            "blocked using " + site + " (score " + std::to_string(outcome_.score.score) + ")"};
}

} // namespace esmtp
