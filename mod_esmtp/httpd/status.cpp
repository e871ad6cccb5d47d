#include "httpd/status.hpp"

#include "httpd/bulkhead.hpp"
#include "httpd/client_table.hpp"
#include "httpd/config.hpp"
#include "httpd/guard.hpp"

#include <ap_mpm.h>
#include <iterator>
#include <apr_optional_hooks.h>
#include <apr_shm.h>
#include <apr_strings.h>
#include <http_connection.h>
#include <http_core.h>
#include <http_log.h>
#include <http_protocol.h>
#include <scoreboard.h>
extern "C" {
#include <mod_status.h>
}

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <string>
#include <unistd.h>

namespace esmtp
{

namespace
{

constexpr std::uint32_t kMagic = 0x45534d33; // "ESM3": the layout of this file (2: the delivery cause; 3: screening)
constexpr unsigned kMaxServers = 64;         // the last one also counts any beyond
constexpr unsigned kErrors = 16;             // the ring of recent errors
constexpr unsigned kShown = 10;              // of which the page shows
constexpr const char *kKey = "esmtp_status_segment";

enum Gauge { g_open, g_greeting, g_command, g_data, g_parked, g_tls, kGauges };
enum Counter {
    c_connections,
    c_accepted,
    c_refused4,
    c_refused5,
    c_recipients,
    c_octets,
    c_dnsbl_failures,  // a DNSBL lookup failed or came late: a pass
    c_dnswl_listed,    // an allow list (negative weight) listed the client
    c_greylist_passed, // a greylisted triplet retried after the delay
    c_cache_errors,    // ESMTPStateCache failed (fail open)
    c_rejects,         // one per RejectCause from here
    kCounters = c_rejects + static_cast<int>(RejectCause::count_)
};

struct ErrorSlot {
    std::atomic<std::uint64_t> seq; // odd while written
    apr_time_t when;
    unsigned server;
    unsigned cause;
    char client[48];
    char text[112];
};

struct GaugeRow {
    std::atomic<std::int64_t> pid; // the child owning the row; 0: free
    std::atomic<std::int64_t> g[kMaxServers][kGauges];
};

struct Segment {
    std::uint32_t magic;
    std::uint32_t rows;
    std::uint64_t size;                 // with magic: the layout of the module that made it
    std::atomic<std::uint32_t> servers; // rows of server[] in use
    std::atomic<std::uint64_t> next_error;
    ErrorSlot errors[kErrors];
};

} // namespace

struct ServerCounters {
    char name[128];
    std::atomic<std::uint64_t> n[kCounters];
};

namespace
{

// Set in the parent's post_config (inherited by the children); the DSO may
// be reloaded on a restart, the segment (on the process pool) is not.
Segment *g_seg = nullptr;
// This child's gauges (child_init).
GaugeRow *g_row = nullptr;

ServerCounters *servers_of(Segment *seg)
{
    return reinterpret_cast<ServerCounters *>(seg + 1);
}

GaugeRow *row_of(Segment *seg, unsigned i)
{
    return reinterpret_cast<GaugeRow *>(servers_of(seg) + kMaxServers) + i;
}

std::size_t segment_size(unsigned rows)
{
    return sizeof(Segment) + kMaxServers * sizeof(ServerCounters) + rows * sizeof(GaugeRow);
}

bool alive(std::int64_t pid)
{
    return pid > 0 && (kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM);
}

void add(ServerCounters *srv, int which, std::uint64_t n = 1)
{
    srv->n[which].fetch_add(n, std::memory_order_relaxed);
}

void copy_text(char *dst, std::size_t size, std::string_view src)
{
    std::size_t n = std::min(size - 1, src.size());
    std::memcpy(dst, src.data(), n);
    dst[n] = '\0';
}

// A seqlock per slot: a reader skips a slot being written.
void record_error(unsigned server, RejectCause cause, const conn_rec *c, std::string_view what)
{
    std::uint64_t n = g_seg->next_error.fetch_add(1, std::memory_order_relaxed);
    ErrorSlot &e = g_seg->errors[n % kErrors];
    e.seq.store(2 * n + 1, std::memory_order_release);
    std::atomic_thread_fence(std::memory_order_release);
    e.when = apr_time_now();
    e.server = server;
    e.cause = static_cast<unsigned>(cause);
    copy_text(e.client, sizeof e.client, c && c->client_ip ? c->client_ip : "");
    copy_text(e.text, sizeof e.text, what);
    e.seq.store(2 * n + 2, std::memory_order_release);
}

ServerCounters *server_counters(const ServerConfig *cfg, unsigned &index)
{
    if (!g_seg || !cfg || !cfg->stats_server)
        return nullptr;
    index = cfg->stats_server - 1;
    return &servers_of(g_seg)[index];
}

unsigned server_slot(Segment *seg, const char *name)
{
    ServerCounters *srv = servers_of(seg);
    std::uint32_t used = seg->servers.load();
    for (std::uint32_t i = 0; i < used; ++i)
        if (!std::strncmp(srv[i].name, name, sizeof srv[i].name - 1))
            return i + 1;
    if (used == kMaxServers)
        return kMaxServers; // the last row counts the rest
    copy_text(srv[used].name, sizeof srv[used].name, used == kMaxServers - 1 ? "(other servers)" : name);
    seg->servers.store(used + 1);
    return used + 1;
}

// ---- the page

struct Totals {
    std::uint64_t n[kCounters] = {};
    std::int64_t g[kGauges] = {};
};

void sum_gauges(std::int64_t (*per_server)[kGauges], unsigned servers)
{
    for (unsigned r = 0; r < g_seg->rows; ++r) {
        GaugeRow *row = row_of(g_seg, r);
        if (!alive(row->pid.load(std::memory_order_relaxed)))
            continue; // a dead child's sessions are gone with it
        for (unsigned s = 0; s < servers; ++s)
            for (int k = 0; k < kGauges; ++k)
                per_server[s][k] += row->g[s][k].load(std::memory_order_relaxed);
    }
}

// The ?auto keys: stable names (README, Monitoring).
const char *const kCounterKeys[] = {"ESMTPConnections",        "ESMTPMessagesAccepted",    "ESMTPMessagesRefused4xx",
                                    "ESMTPMessagesRefused5xx", "ESMTPRecipients",          "ESMTPOctetsReceived",
                                    "ESMTPDNSBLFailures",      "ESMTPDNSWLListed",         "ESMTPGreylistPassed",
                                    "ESMTPStateCacheErrors",   "ESMTPRejectsRelay",        "ESMTPRejectsLimits",
                                    "ESMTPRejectsBareNewline", "ESMTPRejectsEarlyTalker",  "ESMTPRejectsPipelining",
                                    "ESMTPRejectsTimeout",     "ESMTPRejectsHandlerError", "ESMTPRejectsDelivery",
                                    "ESMTPRejectsPregreet",    "ESMTPRejectsDnsbl",        "ESMTPRejectsGreylist"};
const char *const kCounterTitles[] = {"connections",     "accepted",           "refused 4xx",    "refused 5xx",
                                      "recipients",      "octets received",    "DNSBL failures", "DNSWL listed",
                                      "greylist passed", "state cache errors", "relay",          "limits",
                                      "bare LF/CR",      "early talker",       "pipelining",     "timeout",
                                      "handler error",   "delivery failed",    "pregreet",       "DNSBL",
                                      "greylist"};
// a counter without its key would print a null pointer
static_assert(std::size(kCounterKeys) == kCounters && std::size(kCounterTitles) == kCounters);

// Derived gauges: on a thread = open - parked, plaintext = open - TLS,
// closing = open - greeting - command - data.
std::int64_t nonneg(std::int64_t v)
{
    return v < 0 ? 0 : v;
}

void print_auto(request_rec *r, const Totals &t)
{
    ap_rprintf(r, "ESMTPSessions: %" APR_INT64_T_FMT "\n", nonneg(t.g[g_open]));
    ap_rprintf(r, "ESMTPSessionsGreeting: %" APR_INT64_T_FMT "\n", nonneg(t.g[g_greeting]));
    ap_rprintf(r, "ESMTPSessionsCommand: %" APR_INT64_T_FMT "\n", nonneg(t.g[g_command]));
    ap_rprintf(r, "ESMTPSessionsData: %" APR_INT64_T_FMT "\n", nonneg(t.g[g_data]));
    ap_rprintf(r, "ESMTPSessionsParked: %" APR_INT64_T_FMT "\n", nonneg(t.g[g_parked]));
    ap_rprintf(r, "ESMTPSessionsOnThread: %" APR_INT64_T_FMT "\n", nonneg(t.g[g_open] - t.g[g_parked]));
    ap_rprintf(r, "ESMTPSessionsTLS: %" APR_INT64_T_FMT "\n", nonneg(t.g[g_tls]));
    ap_rprintf(r, "ESMTPSessionsPlaintext: %" APR_INT64_T_FMT "\n", nonneg(t.g[g_open] - t.g[g_tls]));
    for (int k = 0; k < kCounters; ++k)
        ap_rprintf(r, "%s: %" APR_UINT64_T_FMT "\n", kCounterKeys[k], t.n[k]);
    // Per-client counts shared with other nodes (shared_limits.hpp).
    if (ClientTable::SharedStats sh = client_table().shared_stats(); sh.on) {
        ap_rprintf(r, "ESMTPSharedLimitsUp: %d\n", sh.up ? 1 : 0);
        ap_rprintf(r, "ESMTPSharedLimitsNodes: %u\n", sh.nodes);
        ap_rprintf(r, "ESMTPSharedLimitsPublished: %u\n", sh.published);
        ap_rprintf(r, "ESMTPSharedLimitsRemoteClients: %u\n", sh.remote);
        ap_rprintf(r, "ESMTPSharedLimitsExchanges: %" APR_UINT64_T_FMT "\n", static_cast<apr_uint64_t>(sh.exchanges));
    }
    if (WorkerCap::Stats w; bulkhead_stats(w)) {
        ap_rprintf(r, "ESMTPWorkersCap: %u\n", w.cap);
        ap_rprintf(r, "ESMTPWorkersHeld: %" APR_INT64_T_FMT "\n", w.held);
        ap_rprintf(r, "ESMTPWorkersRefused: %" APR_UINT64_T_FMT "\n", w.refused);
    }
}

void print_row(request_rec *r, const char *name, const std::uint64_t *n, const std::int64_t *g)
{
    ap_rprintf(r, "<tr><td>%s</td>", ap_escape_html(r->pool, name));
    std::int64_t cells[] = {g[g_open],   g[g_greeting],           g[g_command], g[g_data],
                            g[g_parked], g[g_open] - g[g_parked], g[g_tls],     g[g_open] - g[g_tls]};
    for (std::int64_t v : cells)
        ap_rprintf(r, "<td>%" APR_INT64_T_FMT "</td>", nonneg(v));
    for (int k = 0; k < kCounters; ++k)
        ap_rprintf(r, "<td>%" APR_UINT64_T_FMT "</td>", n[k]);
    ap_rputs("</tr>\n", r);
}

void print_html(request_rec *r, const Totals &t, const std::int64_t (*g)[kGauges], unsigned servers)
{
    ServerCounters *srv = servers_of(g_seg);
    ap_rprintf(r,
               "<hr />\n<h2>mod_esmtp: SMTP sessions</h2>\n<table border=\"1\">\n"
               "<tr><th rowspan=\"2\">Server</th><th colspan=\"8\">sessions open now</th>"
               "<th colspan=\"%d\">since start</th><th colspan=\"%d\">rejects by cause</th></tr>\n<tr>"
               "<th>all</th><th>greeting</th><th>command</th><th>data</th><th>parked</th><th>on a thread</th>"
               "<th>TLS</th><th>plaintext</th>",
               static_cast<int>(c_rejects), kCounters - static_cast<int>(c_rejects));
    for (int k = 0; k < kCounters; ++k)
        ap_rprintf(r, "<th>%s</th>", kCounterTitles[k]);
    ap_rputs("</tr>\n", r);
    for (unsigned s = 0; s < servers; ++s) {
        std::uint64_t n[kCounters];
        for (int k = 0; k < kCounters; ++k)
            n[k] = srv[s].n[k].load(std::memory_order_relaxed);
        print_row(r, srv[s].name, n, g[s]);
    }
    print_row(r, "total", t.n, t.g);
    ap_rputs("</table>\n", r);
    if (WorkerCap::Stats w; bulkhead_stats(w))
        ap_rprintf(r,
                   "<p>MPM workers held by SMTP for anything but reading the client: %" APR_INT64_T_FMT
                   " of at most %u (ESMTPMaxWorkers); steps refused at the cap since start: %" APR_UINT64_T_FMT
                   "</p>\n",
                   w.held, w.cap, w.refused);
    if (ClientTable::SharedStats sh = client_table().shared_stats(); sh.on)
        ap_rprintf(r,
                   "<p>Per-client counts shared through ESMTPStateCache: %s; %u other nodes, %u clients published by "
                   "this node, %u clients with other nodes' counts</p>\n",
                   sh.up ? "up" : "down (limits count this node's sessions only)", sh.nodes, sh.published, sh.remote);
    ap_rputs("<h3>Recent errors</h3>\n", r);
    std::uint64_t next = g_seg->next_error.load();
    if (next == 0) {
        ap_rputs("<p>none</p>\n", r);
        return;
    }
    ap_rputs("<table border=\"1\"><tr><th>time</th><th>server</th><th>client</th><th>cause</th><th>what</th></tr>\n",
             r);
    unsigned shown = 0;
    for (std::uint64_t i = next; i > 0 && shown < kShown && next - i < kErrors; --i) {
        const ErrorSlot &e = g_seg->errors[(i - 1) % kErrors];
        std::uint64_t s1 = e.seq.load(std::memory_order_acquire);
        if (s1 & 1)
            continue;
        ErrorSlot copy;
        copy.when = e.when;
        copy.server = e.server;
        copy.cause = e.cause;
        std::memcpy(copy.client, e.client, sizeof copy.client);
        std::memcpy(copy.text, e.text, sizeof copy.text);
        std::atomic_thread_fence(std::memory_order_acquire);
        if (e.seq.load(std::memory_order_relaxed) != s1)
            continue;
        copy.client[sizeof copy.client - 1] = copy.text[sizeof copy.text - 1] = '\0';
        char when[APR_RFC822_DATE_LEN];
        apr_rfc822_date(when, copy.when);
        const char *server = copy.server < servers ? srv[copy.server].name : "?";
        ap_rprintf(r, "<tr><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td></tr>\n", when,
                   ap_escape_html(r->pool, server), ap_escape_html(r->pool, copy.client),
                   copy.cause < static_cast<unsigned>(RejectCause::count_)
                       ? reject_cause_name(static_cast<RejectCause>(copy.cause))
                       : "?",
                   ap_escape_html(r->pool, copy.text));
        ++shown;
    }
    ap_rputs("</table>\n", r);
}

int status_hook(request_rec *r, int flags)
{
    return guarded(
        {"status_hook", r->connection},
        [r, flags] {
            if (!g_seg)
                return OK;
            unsigned servers = std::min<unsigned>(g_seg->servers.load(), kMaxServers);
            auto *g = static_cast<std::int64_t(*)[kGauges]>(
                apr_pcalloc(r->pool, sizeof(std::int64_t[kGauges]) * std::max(1u, servers)));
            sum_gauges(g, servers);
            Totals t;
            ServerCounters *srv = servers_of(g_seg);
            for (unsigned s = 0; s < servers; ++s) {
                for (int k = 0; k < kCounters; ++k)
                    t.n[k] += srv[s].n[k].load(std::memory_order_relaxed);
                for (int k = 0; k < kGauges; ++k)
                    t.g[k] += g[s][k];
            }
            if (flags & AP_STATUS_SHORT)
                print_auto(r, t);
            else
                print_html(r, t, g, servers);
            return OK;
        },
        [](const char *) { return OK; });
}

const char *protocol_get(const conn_rec *c)
{
    const ServerConfig *cfg = server_config(c->base_server);
    // The connection's base server is chosen by address and port: on an
    // SMTP server every connection speaks SMTP.
    return cfg && cfg->enabled == 1 ? "smtp" : nullptr;
}

} // namespace

int status_post_config(apr_pool_t *, apr_pool_t *, apr_pool_t *ptemp, server_rec *main)
{
    return guarded(
        {"post_config", nullptr, main},
        [main, ptemp] {
            apr_pool_t *proc = main->process->pool;
            void *data = nullptr;
            apr_pool_userdata_get(&data, kKey, proc);
            if (!data) {
                int limit = 0;
                ap_mpm_query(AP_MPMQ_HARD_LIMIT_DAEMONS, &limit);
                // Old children keep their rows during a graceful restart.
                unsigned rows = static_cast<unsigned>(std::clamp(limit, 1, 2048)) * 2 + 16;
                apr_shm_t *shm = nullptr;
                apr_status_t rv = apr_shm_create(&shm, segment_size(rows), nullptr, proc);
                if (rv != APR_SUCCESS) {
                    ap_log_error(APLOG_MARK, APLOG_WARNING, rv, main,
                                 "esmtp: no shared memory for the mod_status counters; counting is off");
                    return OK;
                }
                auto *seg = static_cast<Segment *>(apr_shm_baseaddr_get(shm));
                std::memset(static_cast<void *>(seg), 0, segment_size(rows)); // zero atomics are valid
                seg->magic = kMagic;
                seg->rows = rows;
                seg->size = segment_size(rows);
                apr_pool_userdata_set(seg, kKey, apr_pool_cleanup_null, proc);
                data = seg;
            }
            g_seg = static_cast<Segment *>(data);
            if (g_seg->magic != kMagic || g_seg->size != segment_size(g_seg->rows)) {
                // a module of another layout was loaded by a restart (an
                // upgrade): no counting until httpd is started again
                ap_log_error(APLOG_MARK, APLOG_WARNING, 0, main,
                             "esmtp: the mod_status counters of the running httpd have another layout; counting is "
                             "off until httpd is stopped and started");
                g_seg = nullptr;
                return OK;
            }
            for (server_rec *s = main; s; s = s->next) {
                ServerConfig *cfg = server_config(s);
                if (cfg->enabled != 1)
                    continue;
                const char *name = apr_psprintf(ptemp, "%s:%u", s->server_hostname ? s->server_hostname : "?",
                                                s->addrs ? static_cast<unsigned>(s->addrs->host_port) : s->port);
                cfg->stats_server = server_slot(g_seg, name);
            }
            return OK;
        },
        [](const char *) { return OK; });
}

void status_child_init(apr_pool_t *, server_rec *s)
{
    if (!g_seg)
        return;
    std::int64_t me = getpid();
    for (unsigned i = 0; i < g_seg->rows; ++i) {
        GaugeRow *row = row_of(g_seg, i);
        std::int64_t owner = row->pid.load();
        if (owner == me || (owner != 0 && alive(owner)))
            continue;
        if (!row->pid.compare_exchange_strong(owner, me))
            continue;
        for (auto &per_server : row->g)
            for (auto &v : per_server)
                v.store(0, std::memory_order_relaxed);
        g_row = row;
        return;
    }
    ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s, "esmtp: no free row for this child's session counters");
}

void status_register_hooks()
{
    APR_OPTIONAL_HOOK(ap, status_hook, status_hook, nullptr, nullptr, APR_HOOK_MIDDLE);
    ap_hook_protocol_get(protocol_get, nullptr, nullptr, APR_HOOK_MIDDLE);
}

void status_connection_refused(const ServerConfig *cfg, const conn_rec *c, RejectCause cause, std::string_view what)
{
    unsigned index = 0;
    if (ServerCounters *srv = server_counters(cfg, index)) {
        add(srv, c_connections);
        add(srv, c_rejects + static_cast<int>(cause));
        record_error(index, cause, c, what);
    }
}

ConnStats::ConnStats(conn_rec *c, const ServerConfig *cfg, bool tls) : c_(c), tls_(tls)
{
    srv_ = server_counters(cfg, server_);
    if (!srv_)
        return;
    add(srv_, c_connections);
    gauge(g_open, 1);
    gauge(g_greeting, 1);
    if (tls_)
        gauge(g_tls, 1);
}

ConnStats::~ConnStats()
{
    if (!srv_)
        return;
    flush_octets();
    phase_changed(phase_, Phase::closed);
    parked(false);
    if (tls_)
        gauge(g_tls, -1);
    gauge(g_open, -1);
}

void ConnStats::gauge(int which, int delta)
{
    if (g_row)
        g_row->g[server_][which].fetch_add(delta, std::memory_order_relaxed);
}

namespace
{
int phase_gauge(Phase p)
{
    switch (p) {
    case Phase::greeting:
        return g_greeting;
    case Phase::command:
    case Phase::tls: // the STARTTLS handshake: between two commands
    case Phase::sasl:
    case Phase::sasl_password:
    case Phase::auth:
        return g_command;
    case Phase::data:
    case Phase::bdat:
        return g_data;
    case Phase::closed:
        break;
    }
    return -1;
}
} // namespace

void ConnStats::phase_changed(Phase, Phase to)
{
    if (!srv_ || to == phase_)
        return;
    int from = phase_gauge(phase_), next = phase_gauge(to);
    phase_ = to;
    if (from == next)
        return;
    if (from >= 0)
        gauge(from, -1);
    if (next >= 0)
        gauge(next, 1);
}

void ConnStats::parked(bool p)
{
    if (!srv_ || p == parked_)
        return;
    parked_ = p;
    gauge(g_parked, p ? 1 : -1);
}

void ConnStats::command(std::string_view verb)
{
    // The scoreboard's request column: the verb only, never its arguments
    // (addresses are personal data; AUTH's are secrets).
    if (!ap_extended_status)
        return; // the column is not kept (ExtendedStatus Off)
    copy_text(verb_, sizeof verb_, verb);
    ap_update_child_status_descr(static_cast<ap_sb_handle_t *>(c_->sbh), SERVER_BUSY_READ, verb_);
}

void ConnStats::waiting()
{
    auto *sbh = static_cast<ap_sb_handle_t *>(c_->sbh);
    ap_update_child_status_from_conn(sbh, SERVER_BUSY_READ, c_); // clears the request column
    if (verb_[0])
        ap_update_child_status_descr(sbh, SERVER_BUSY_READ, verb_);
}

void ConnStats::received(std::uint64_t octets)
{
    octets_ += octets;
}

void ConnStats::flush_octets()
{
    if (srv_ && octets_) {
        add(srv_, c_octets, octets_);
        octets_ = 0;
    }
}

void ConnStats::message(int code, unsigned recipients, std::uint64_t)
{
    if (!srv_)
        return;
    flush_octets();
    if (code >= 200 && code < 300) {
        add(srv_, c_accepted);
        add(srv_, c_recipients, recipients);
    } else {
        add(srv_, code < 500 ? c_refused4 : c_refused5);
    }
}

void status_state_cache_error(const conn_rec *c)
{
    unsigned index = 0;
    if (ServerCounters *srv = server_counters(server_config(c->base_server), index))
        add(srv, c_cache_errors);
}

void status_state_cache_error(server_rec *s)
{
    unsigned index = 0;
    if (ServerCounters *srv = server_counters(server_config(s), index))
        add(srv, c_cache_errors);
}

void ConnStats::screening(ScreenEvent e)
{
    if (srv_)
        add(srv_, e == ScreenEvent::dnsbl_failure  ? c_dnsbl_failures
                  : e == ScreenEvent::dnswl_listed ? c_dnswl_listed
                                                   : c_greylist_passed);
}

void ConnStats::rejected(RejectCause cause, std::string_view what)
{
    if (!srv_ || cause == RejectCause::count_)
        return;
    add(srv_, c_rejects + static_cast<int>(cause));
    record_error(server_, cause, c_, what);
}

} // namespace esmtp
