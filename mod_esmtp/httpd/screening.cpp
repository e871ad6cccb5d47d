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
    : c_(c), stats_(stats), hostname_(cfg->session->hostname), client_(c->client_ip),
      front_end_(cfg->session->xclient_hosts.contains(client_)), dnsbl_(dnsbl_settings(cfg)), greylist_(cfg->greylist)
{
}

void ConnectionScreen::start_lookups()
{
    if (dnsbl_active() && !lookup_ && !front_end_)
        lookup_ = std::make_unique<DnsblLookup>(c_, dnsbl_, client_);
}

Screen::Verdict ConnectionScreen::connect()
{
    if (!dnsbl_active() || front_end_)
        return {};
    return judge();
}

Screen::Verdict ConnectionScreen::client_changed(std::string_view address)
{
    client_ = address;
    front_end_ = false; // the client the front end named is judged
    lookup_.reset();
    outcome_ = {};
    if (!dnsbl_active())
        return {};
    return judge();
}

Screen::Verdict ConnectionScreen::judge()
{
    // The lookups hold this worker (up to the deadline): they count against
    // ESMTPMaxWorkers, beyond which the session is refused as the handler's
    // CONNECT would be.
    WorkerHold hold = WorkerHold::try_take();
    if (!hold)
        return {Reply(421, hostname_ + " Server busy, try again later", "4.3.2", true), RejectCause::count_,
                "DNSBL lookups refused: ESMTPMaxWorkers reached (server busy)"};
    start_lookups();
    outcome_ = lookup_->finish();
    if (outcome_.failed) {
        // fail open: the client passes on what the other sites said
        stats_.screening(ScreenEvent::dnsbl_failure);
        ap_log_cerror(APLOG_MARK, APLOG_WARNING, 0, c_,
                      "esmtp: DNSBL lookup for %s failed, counted as not listed (%u site(s)): %s", client_.c_str(),
                      outcome_.failed, outcome_.failure.c_str());
    }
    if (outcome_.score.allowlisted)
        stats_.screening(ScreenEvent::dnswl_listed);
    if (outcome_.score.score < dnsbl_.threshold || dnsbl_.at_rcpt)
        return {};
    return blocked(true);
}

Screen::Verdict ConnectionScreen::rcpt(const Path &sender, const Path &recipient)
{
    if (dnsbl_active() && dnsbl_.at_rcpt && outcome_.score.score >= dnsbl_.threshold)
        return blocked(false);
    if (greylist_.on == 1 && !outcome_.score.allowlisted)
        return greylisted(sender, recipient);
    return {};
}

Screen::Verdict ConnectionScreen::greylisted(const Path &sender, const Path &recipient)
{
    // The cache may be across the network (redis): a worker held.
    WorkerHold hold = WorkerHold::try_take();
    if (!hold)
        return {Reply(451, "Server busy, try again later", "4.3.2"), RejectCause::count_,
                "greylist refused: ESMTPMaxWorkers reached (server busy)"};
    GreylistAnswer a = greylist_check(c_, greylist_, hostname_, client_, sender.mailbox, recipient.mailbox);
    if (a.verdict == Greylisted::passed_now) {
        stats_.screening(ScreenEvent::greylist_passed);
        ap_log_cerror(APLOG_MARK, APLOG_DEBUG, 0, c_, "esmtp: greylist passed for %s", client_.c_str());
    }
    if (a.verdict != Greylisted::wait)
        return {};
    long secs = static_cast<long>(apr_time_sec(a.wait + APR_USEC_PER_SEC - 1));
    return {Reply(450, "Greylisted, try again in " + std::to_string(secs) + " seconds", "4.2.0"), RejectCause::greylist,
            "greylisted <" + recipient.mailbox + ">"};
}

// `greeting`: in the greeting's place, which carries no enhanced status
// code of its own (no EHLO yet): the text does, as Postfix's.
Screen::Verdict ConnectionScreen::blocked(bool greeting) const
{
    std::string site = outcome_.score.blocked_by.empty() ? std::string("DNSBL") : outcome_.score.blocked_by;
    ap_log_cerror(APLOG_MARK, APLOG_INFO, 0, c_, "esmtp: client %s blocked using %s (score %d, threshold %d)",
                  client_.c_str(), site.c_str(), outcome_.score.score, dnsbl_.threshold);
    std::string text = "Service unavailable; client [" + client_ + "] blocked using " + site;
    return {greeting ? Reply(554, "5.7.1 " + text) : Reply(554, text, "5.7.1"), RejectCause::dnsbl,
            "blocked using " + site + " (score " + std::to_string(outcome_.score.score) + ")"};
}

} // namespace esmtp
