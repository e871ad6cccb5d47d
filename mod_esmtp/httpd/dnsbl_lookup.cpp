#include "httpd/dnsbl_lookup.hpp"

#include "httpd/state_cache.hpp"

#include <ares.h>
#include <arpa/nameser.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <poll.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <unordered_map>

namespace esmtp
{

namespace
{

// Postfix's postscreen_dnsbl_min_ttl / max_ttl: an answer is kept at least a
// minute (a list with a TTL of 0 would be asked on every connection) and
// at most an hour. A name that does not exist (not listed) is kept a minute.
constexpr apr_interval_time_t kMinTtl = apr_time_from_sec(60);
constexpr apr_interval_time_t kMaxTtl = apr_time_from_sec(3600);
// Bounded memory: beyond this many names the cache starts over.
constexpr std::size_t kCacheEntries = 20000;

struct Cached {
    std::vector<Ipv4Answer> answers;
    apr_time_t expires;
};

// Per child: a site's answer for an address, by query name.
struct Cache {
    std::mutex mutex;
    std::unordered_map<std::string, Cached> entries;

    bool find(const std::string &name, std::vector<Ipv4Answer> &out, apr_time_t now)
    {
        std::lock_guard<std::mutex> lock(mutex);
        auto it = entries.find(name);
        if (it == entries.end())
            return false;
        if (it->second.expires <= now) {
            entries.erase(it);
            return false;
        }
        out = it->second.answers;
        return true;
    }
    void put(const std::string &name, std::vector<Ipv4Answer> answers, apr_interval_time_t ttl, apr_time_t now)
    {
        std::lock_guard<std::mutex> lock(mutex);
        if (entries.size() >= kCacheEntries) {
            std::erase_if(entries, [now](const auto &e) { return e.second.expires <= now; });
            if (entries.size() >= kCacheEntries)
                entries.clear();
        }
        entries[name] = Cached{std::move(answers), now + std::clamp(ttl, kMinTtl, kMaxTtl)};
    }
};

Cache &cache()
{
    static Cache c;
    return c;
}

struct Query {
    const DnsblSite *site = nullptr;
    std::string name;
    bool done = false;
    int status = ARES_SUCCESS;
    std::vector<Ipv4Answer> answers;
    apr_interval_time_t ttl = kMinTtl;
};

void answered(void *arg, int status, int, unsigned char *abuf, int alen)
{
    auto *q = static_cast<Query *>(arg);
    q->done = true;
    q->status = status;
    if (status != ARES_SUCCESS)
        return;
    ares_addrttl ttls[16];
    int n = 16;
    int rc = ares_parse_a_reply(abuf, alen, nullptr, ttls, &n);
    if (rc != ARES_SUCCESS) {
        q->status = rc;
        return;
    }
    int ttl = -1;
    for (int i = 0; i < n; ++i) {
        Ipv4Answer a;
        std::memcpy(a.data(), &ttls[i].ipaddr.s_addr, 4);
        q->answers.push_back(a);
        ttl = ttl < 0 ? ttls[i].ttl : std::min(ttl, ttls[i].ttl);
    }
    if (ttl > 0)
        q->ttl = apr_time_from_sec(ttl);
}

struct ChannelDeleter {
    void operator()(ares_channel ch) const { ares_destroy(ch); }
};
using Channel = std::unique_ptr<std::remove_pointer_t<ares_channel>, ChannelDeleter>;

bool all_done(const std::vector<Query> &queries)
{
    return std::all_of(queries.begin(), queries.end(), [](const Query &q) { return q.done; });
}

// Drives the channel until every query has its answer, the deadline, or
// `client` (a socket, -1: none) is readable. True: the client's turn.
bool wait_for_answers(ares_channel ch, const std::vector<Query> &queries, apr_time_t deadline, int client)
{
    for (;;) {
        if (all_done(queries))
            return false;
        apr_time_t now = apr_time_now();
        if (now >= deadline)
            return false;
        ares_socket_t socks[ARES_GETSOCK_MAXNUM];
        int bits = ares_getsock(ch, socks, ARES_GETSOCK_MAXNUM);
        pollfd fds[ARES_GETSOCK_MAXNUM + 1];
        int n = 0;
        for (int i = 0; i < ARES_GETSOCK_MAXNUM; ++i) {
            short ev = (ARES_GETSOCK_READABLE(bits, i) ? POLLIN : 0) | (ARES_GETSOCK_WRITABLE(bits, i) ? POLLOUT : 0);
            if (ev)
                fds[n++] = pollfd{socks[i], ev, 0};
        }
        if (n == 0)
            return false; // nothing in flight (every query failed at once)
        const int dns = n;
        if (client >= 0)
            fds[n++] = pollfd{client, POLLIN, 0};
        apr_interval_time_t left = deadline - now;
        timeval max{static_cast<time_t>(left / APR_USEC_PER_SEC), static_cast<suseconds_t>(left % APR_USEC_PER_SEC)};
        timeval tv{};
        timeval *t = ares_timeout(ch, &max, &tv);
        int ms = static_cast<int>(t->tv_sec * 1000 + (t->tv_usec + 999) / 1000);
        int rc = poll(fds, static_cast<nfds_t>(n), std::max(ms, 1));
        if (rc < 0 && errno != EINTR)
            return false;
        if (rc <= 0) {
            ares_process_fd(ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD); // c-ares's own timeouts
            continue;
        }
        if (n > dns && fds[dns].revents)
            return true;
        for (int i = 0; i < dns; ++i) {
            if (!fds[i].revents)
                continue;
            bool rd = fds[i].revents & (POLLIN | POLLERR | POLLHUP);
            bool wr = fds[i].revents & POLLOUT;
            ares_process_fd(ch, rd ? fds[i].fd : ARES_SOCKET_BAD, wr ? fds[i].fd : ARES_SOCKET_BAD);
        }
    }
}

// In ESMTPStateCache: "127.0.0.2,127.0.0.4", or "-" for a name that does
// not exist.
std::string shared_key(const std::string &name)
{
    return "esmtp:dnsbl:" + name;
}

std::string encode(const std::vector<Ipv4Answer> &answers)
{
    std::string v;
    for (const Ipv4Answer &a : answers) {
        if (!v.empty())
            v.push_back(',');
        v +=
            std::to_string(a[0]) + "." + std::to_string(a[1]) + "." + std::to_string(a[2]) + "." + std::to_string(a[3]);
    }
    return v.empty() ? "-" : v;
}

bool decode(const std::string &v, std::vector<Ipv4Answer> &out)
{
    out.clear();
    if (v == "-")
        return true;
    std::size_t pos = 0;
    while (pos <= v.size()) {
        std::size_t comma = v.find(',', pos);
        std::string one = v.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
        unsigned char b[4];
        if (inet_pton(AF_INET, one.c_str(), b) != 1)
            return false;
        out.push_back(Ipv4Answer{b[0], b[1], b[2], b[3]});
        if (comma == std::string::npos)
            break;
        pos = comma + 1;
    }
    return true;
}

} // namespace

bool dnsbl_library_init(std::string &why)
{
    static std::once_flag once;
    static int rc = ARES_SUCCESS;
    std::call_once(once, [] { rc = ares_library_init(ARES_LIB_INIT_ALL); });
    if (rc != ARES_SUCCESS)
        why = ares_strerror(rc);
    return rc == ARES_SUCCESS;
}

// Queries before the channel: the channel goes first, and its callbacks
// (ARES_EDESTRUCTION) still find their queries.
struct DnsblLookup::State {
    conn_rec *c;
    DnsblOutcome out;
    std::vector<Query> queries;
    Channel channel;
    apr_time_t deadline = 0;
    bool finished = false;
};

DnsblLookup::DnsblLookup(conn_rec *c, const DnsblSettings &settings, std::string_view address)
    : st_(std::make_unique<State>())
{
    State &st = *st_;
    st.c = c;
    if (!settings.sites || settings.sites->empty())
        return;
    apr_time_t now = apr_time_now();
    st.deadline = now + settings.timeout;
    st.queries.reserve(settings.sites->size()); // stable addresses: c-ares keeps pointers to them
    for (const DnsblSite &site : *settings.sites) {
        std::string name = dnsbl_query_name(address, site.domain);
        if (name.empty())
            continue; // not an IP address (a unix socket): nothing to look up
        std::vector<Ipv4Answer> answers;
        if (cache().find(name, answers, now)) {
            dnsbl_add(st.out.score, site, dnsbl_matches(site, answers));
            continue;
        }
        if (std::string v; state_cache_ready() &&
                           state_get(c, shared_key(name), v, "DNSBL answers") == CacheResult::found &&
                           decode(v, answers)) {
            // another child or node asked: kept here a minute
            cache().put(name, answers, kMinTtl, now);
            dnsbl_add(st.out.score, site, dnsbl_matches(site, answers));
            continue;
        }
        Query &q = st.queries.emplace_back();
        q.site = &site;
        q.name = std::move(name);
    }
    if (st.queries.empty())
        return;
    auto fail_all = [&](std::string why) {
        st.out.failed = static_cast<unsigned>(st.queries.size());
        st.out.failure = std::move(why);
        st.queries.clear();
    };
    ares_options opts{};
    // One try, up to the whole deadline: a retry would come after it.
    opts.timeout = static_cast<int>(std::max<apr_interval_time_t>(settings.timeout / 1000, 1));
    opts.tries = 1;
    opts.flags = ARES_FLAG_NOSEARCH | ARES_FLAG_NOALIASES;
    ares_channel raw = nullptr;
    int rc = ares_init_options(&raw, &opts, ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_FLAGS);
    if (rc != ARES_SUCCESS) {
        fail_all(std::string("resolver: ") + ares_strerror(rc));
        return;
    }
    st.channel.reset(raw);
    if (!settings.server.empty() &&
        (rc = ares_set_servers_ports_csv(st.channel.get(), settings.server.c_str())) != ARES_SUCCESS) {
        fail_all("ESMTPDNSServer " + settings.server + ": " + ares_strerror(rc));
        return;
    }
    for (Query &q : st.queries)
        ares_query(st.channel.get(), q.name.c_str(), ns_c_in, ns_t_a, answered, &q);
}

DnsblLookup::~DnsblLookup() = default;

bool DnsblLookup::running() const
{
    return st_->channel && !st_->finished && !all_done(st_->queries) && apr_time_now() < st_->deadline;
}

bool DnsblLookup::wait(apr_time_t until, int client)
{
    if (!running())
        return false;
    return wait_for_answers(st_->channel.get(), st_->queries, std::min(until, st_->deadline), client);
}

DnsblOutcome DnsblLookup::finish()
{
    State &st = *st_;
    if (st.finished || !st.channel) {
        st.finished = true;
        return st.out;
    }
    st.finished = true;
    wait_for_answers(st.channel.get(), st.queries, st.deadline, -1);
    // Late answers: their callbacks run now (ARES_ECANCELLED), before the
    // queries go.
    ares_cancel(st.channel.get());
    apr_time_t now = apr_time_now();
    for (Query &q : st.queries) {
        if (q.status == ARES_SUCCESS || q.status == ARES_ENOTFOUND || q.status == ARES_ENODATA) {
            bool found = q.status == ARES_SUCCESS;
            dnsbl_add(st.out.score, *q.site, found && dnsbl_matches(*q.site, q.answers));
            apr_interval_time_t ttl = std::clamp(found ? q.ttl : kMinTtl, kMinTtl, kMaxTtl);
            if (state_cache_ready())
                state_put(st.c, shared_key(q.name), encode(q.answers), now + ttl, "DNSBL answers");
            cache().put(q.name, std::move(q.answers), ttl, now);
            continue;
        }
        if (!st.out.failed++)
            st.out.failure = q.site->domain + ": " +
                             (q.status == ARES_ECANCELLED || !q.done ? std::string("no answer in time")
                                                                     : std::string(ares_strerror(q.status)));
    }
    return st.out;
}

} // namespace esmtp
