// STARTTLS through mod_ssl's own filters (DESIGN.md, "TLS through mod_ssl"):
// on a vhost with SSLEngine on and ESMTPStartTLS On|Required, mod_ssl's
// connection filters are unlinked before mod_ssl's process_connection can
// start the handshake, and the same ap_filter_t structs are linked back
// after STARTTLS's 220 (mod_ssl's context points at them).
#pragma once

#include <esmtp/handler.hpp>

#include <httpd.h>
#include <util_filter.h>

namespace esmtp
{

class TlsFilters
{
  public:
    // Unlink mod_ssl's input filter and its two output filters. False when
    // they are not on the connection (no SSLEngine on).
    bool detach(conn_rec *c);
    // Link them back where they were (by filter type, as httpd added them).
    void attach(conn_rec *c);
    bool detached() const { return in_ != nullptr; }

  private:
    ap_filter_t *in_ = nullptr;
    ap_filter_t *out_ = nullptr;
    ap_filter_t *coalesce_ = nullptr;
};

// The TLS facts of a connection after its handshake, from mod_ssl.
TlsInfo tls_info(conn_rec *c);

// `SSLEngine on` applies to server `s` (its VirtualHost section, or the
// main server's, which a VirtualHost inherits): read from the parsed
// configuration tree, since mod_ssl's server configuration is private.
bool ssl_engine_on(const server_rec *s);

// ssl_add_fallback_cert_files hook, registered first and adding nothing:
// mod_ssl asks for a fallback certificate only for a server that has no
// certificate of its own and none from a module (mod_md before its first
// certificate), so being asked marks the server's certificate as a
// stand-in for this generation: its SMTP sessions do not offer STARTTLS
// (ConnectionInfo::tls_unavailable). Returns DECLINED.
int note_fallback_certificate(server_rec *s, apr_pool_t *p, apr_array_header_t *cert_files,
                              apr_array_header_t *key_files);

} // namespace esmtp
