// The lmtp/smtp handler's connection to its server: a non-blocking socket,
// plaintext or TLS (OpenSSL, directly: see README "Sending mail out" for why
// not httpd's ap_ssl_bind_outgoing), with deadlines on every wait. TLS
// starts at once (implicit, port 465) or after STARTTLS; the server's
// certificate chain and name are verified unless the configuration says not.
#pragma once

#include "handlers/fd.hpp"
#include "handlers/stream_socket.hpp"

#include <chrono>
#include <memory>
#include <string>
#include <string_view>

struct ssl_ctx_st; // OpenSSL's SSL_CTX, SSL
struct ssl_st;

namespace esmtp
{

// How to talk TLS to one server, built once at configuration time.
struct TlsClientSettings {
    std::string ca_file;     // empty: the system trust store
    std::string cert_file;   // optional client certificate (PEM, chain allowed)
    std::string key_file;    // its key (PEM); empty: in cert_file
    std::string server_name; // the name the certificate must carry (and SNI)
    bool verify = true;      // false only with verify=none (tests, pinned hosts)
};

// An OpenSSL context for `s`, or nullptr with `error` set (a CA file that
// does not load, a certificate without its key...).
std::shared_ptr<ssl_ctx_st> make_tls_client_context(const TlsClientSettings &s, std::string &error);

class ClientStream
{
  public:
    using time_point = std::chrono::steady_clock::time_point;

    ClientStream() = default;
    explicit ClientStream(Fd fd) : fd_(std::move(fd)) {}
    ClientStream(ClientStream &&) noexcept = default;
    ClientStream &operator=(ClientStream &&) noexcept = default;
    ~ClientStream() { reset(); }

    explicit operator bool() const { return bool(fd_); }
    bool tls() const { return bool(ssl_); }
    int fd() const { return fd_.get(); }
    void reset();

    // TLS handshake on the connected socket; false with `error` (the
    // verification failure in OpenSSL's words) when it fails or the
    // deadline passes.
    bool start_tls(const std::shared_ptr<ssl_ctx_st> &ctx, const std::string &server_name, time_point deadline,
                   std::string &error);
    // All of `data`, or false (timeout or error).
    bool send_all(std::string_view data, time_point deadline);
    // Some bytes into buf: > 0 bytes read, 0 EOF, -1 error or timeout.
    long recv_some(char *buf, std::size_t len, time_point deadline);

  private:
    struct SslFree {
        void operator()(ssl_st *s) const;
    };
    Fd fd_;
    std::shared_ptr<ssl_ctx_st> ctx_; // kept alive while ssl_ uses it
    std::unique_ptr<ssl_st, SslFree> ssl_;
};

} // namespace esmtp
