#include "httpd/tls.hpp"

#include "engine/sha256.hpp"
#include "httpd/config.hpp"
#include "httpd/guard.hpp"

#include <apr_base64.h>
#include <apr_strings.h>
#include <http_config.h>
#include <http_log.h>
#include <http_ssl.h>

#include <cstring>
#include <string>
#include <string_view>

namespace esmtp
{

namespace
{

bool named(const ap_filter_t *f, const char *name)
{
    return f->frec && f->frec->name && !strcasecmp(f->frec->name, name);
}

// Insert `f` before the first filter of a higher type: where
// ap_add_*_filter put it.
void link(ap_filter_t **head, ap_filter_t *f)
{
    ap_filter_t **pp = head;
    while (*pp && (*pp)->frec && (*pp)->frec->ftype <= f->frec->ftype)
        pp = &(*pp)->next;
    f->next = *pp;
    *pp = f;
}

std::string var(conn_rec *c, const char *name)
{
    const char *v = ap_ssl_var_lookup(c->pool, c->base_server, c, nullptr, name);
    return v ? std::string(v) : std::string();
}

unsigned number(const std::string &s)
{
    unsigned n = 0;
    for (char ch : s) {
        if (ch < '0' || ch > '9' || n > 100000)
            return n;
        n = n * 10 + static_cast<unsigned>(ch - '0');
    }
    return n;
}

// SHA-256 of the DER inside a PEM certificate, "AB:CD:...".
std::string fingerprint(const std::string &pem)
{
    constexpr std::string_view begin = "-----BEGIN CERTIFICATE-----", end = "-----END CERTIFICATE-----";
    std::size_t b = pem.find(begin), e = pem.find(end);
    if (b == std::string::npos || e == std::string::npos || e < b)
        return {};
    std::string b64;
    for (std::size_t i = b + begin.size(); i < e; ++i)
        if (pem[i] != '\r' && pem[i] != '\n' && pem[i] != ' ')
            b64.push_back(pem[i]);
    std::string der(static_cast<std::size_t>(apr_base64_decode_len(b64.c_str())) + 1, '\0');
    int n = apr_base64_decode(der.data(), b64.c_str());
    if (n <= 0)
        return {};
    der.resize(static_cast<std::size_t>(n));
    return sha256_fingerprint(der);
}

} // namespace

bool TlsFilters::detach(conn_rec *c)
{
    for (ap_filter_t *f = c->input_filters; f; f = f->next)
        if (named(f, "SSL/TLS Filter"))
            in_ = f;
    for (ap_filter_t *f = c->output_filters; f; f = f->next) {
        if (named(f, "SSL/TLS Filter"))
            out_ = f;
        else if (named(f, "SSL/TLS Coalescing Filter"))
            coalesce_ = f;
    }
    if (!in_ || !out_) {
        in_ = out_ = coalesce_ = nullptr;
        return false;
    }
    ap_remove_input_filter(in_);
    ap_remove_output_filter(out_);
    if (coalesce_)
        ap_remove_output_filter(coalesce_);
    return true;
}

void TlsFilters::attach(conn_rec *c)
{
    if (!in_)
        return;
    link(&c->input_filters, in_);
    link(&c->output_filters, out_);
    if (coalesce_)
        link(&c->output_filters, coalesce_); // type +4: lands before the +5 filter
    in_ = out_ = coalesce_ = nullptr;
}

TlsInfo tls_info(conn_rec *c)
{
    TlsInfo t;
    t.active = true;
    t.protocol = var(c, "SSL_PROTOCOL");
    t.cipher = var(c, "SSL_CIPHER");
    t.bits = number(var(c, "SSL_CIPHER_USEKEYSIZE"));
    t.alg_bits = number(var(c, "SSL_CIPHER_ALGKEYSIZE"));
    t.sni = var(c, "SSL_TLS_SNI");
    t.client_verify = var(c, "SSL_CLIENT_VERIFY");
    if (!t.client_verify.empty() && t.client_verify != "NONE") {
        t.client_subject = var(c, "SSL_CLIENT_S_DN");
        t.client_issuer = var(c, "SSL_CLIENT_I_DN");
        t.client_fingerprint = fingerprint(var(c, "SSL_CLIENT_CERT"));
    }
    return t;
}

namespace
{

// -1: not set in this section; 0 off; 1 on. Looks into <If...> containers
// (an approximation: their conditions are not evaluated), not into nested
// <VirtualHost> sections.
int ssl_engine_in(const ap_directive_t *d, bool top)
{
    int found = -1;
    for (; d; d = d->next) {
        if (!d->directive)
            continue;
        if (!strcasecmp(d->directive, "SSLEngine") && d->args) {
            std::string a(d->args);
            while (!a.empty() && (a.back() == ' ' || a.back() == '\t'))
                a.pop_back();
            found = !strcasecmp(a.c_str(), "on") ? 1 : 0;
        } else if (d->first_child && !strncasecmp(d->directive, "<If", 3)) {
            int inner = ssl_engine_in(d->first_child, top);
            if (inner != -1)
                found = inner;
        }
    }
    return found;
}

const ap_directive_t *vhost_section(const ap_directive_t *d, const server_rec *s)
{
    for (; d; d = d->next) {
        if (!d->directive)
            continue;
        if (!strcasecmp(d->directive, "<VirtualHost") && static_cast<unsigned>(d->line_num) == s->defn_line_number &&
            d->filename && s->defn_name && !strcmp(d->filename, s->defn_name))
            return d;
        if (d->first_child && strcasecmp(d->directive, "<VirtualHost"))
            if (const ap_directive_t *v = vhost_section(d->first_child, s))
                return v;
    }
    return nullptr;
}

} // namespace

bool ssl_engine_on(const server_rec *s)
{
    int main = ssl_engine_in(ap_conftree, true);
    if (!s->is_virtual)
        return main == 1;
    const ap_directive_t *v = vhost_section(ap_conftree, s);
    int own = v ? ssl_engine_in(v->first_child, false) : -1;
    return own != -1 ? own == 1 : main == 1;
}

int note_fallback_certificate(server_rec *s, apr_pool_t *, apr_array_header_t *, apr_array_header_t *)
{
    return guarded(
        {"ssl_add_fallback_cert_files", nullptr, s},
        [s] {
            ServerConfig *cfg = server_config(s);
            if (!cfg)
                return DECLINED;
            cfg->tls_fallback = 1;
            if (cfg->enabled == 1 && cfg->starttls > 0)
                ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, s,
                             "esmtp: %s (%s:%d) has no TLS certificate yet (mod_ssl asks for a fallback, e.g. "
                             "mod_md's before its first certificate): STARTTLS is not offered until a restart "
                             "brings a certificate",
                             s->server_hostname ? s->server_hostname : "?", s->defn_name ? s->defn_name : "?",
                             s->defn_line_number);
            return DECLINED;
        },
        [](const char *) { return DECLINED; });
}

} // namespace esmtp
