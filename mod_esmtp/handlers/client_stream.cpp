#include "handlers/client_stream.hpp"

#include <arpa/inet.h>
#include <cerrno>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <sys/socket.h>

namespace esmtp
{

namespace
{

// OpenSSL's error queue as one line (and emptied: it is per thread, and the
// next connection on this thread must not see these).
std::string ssl_errors(std::string_view what)
{
    std::string s(what);
    while (unsigned long e = ::ERR_get_error()) {
        char buf[256];
        ::ERR_error_string_n(e, buf, sizeof buf);
        s += s.empty() ? "" : ": ";
        s += buf;
    }
    return s;
}

bool is_ip_literal(const std::string &name)
{
    unsigned char buf[sizeof(in6_addr)];
    return ::inet_pton(AF_INET, name.c_str(), buf) == 1 || ::inet_pton(AF_INET6, name.c_str(), buf) == 1;
}

} // namespace

std::shared_ptr<ssl_ctx_st> make_tls_client_context(const TlsClientSettings &s, std::string &error)
{
    ::ERR_clear_error();
    std::shared_ptr<SSL_CTX> ctx(::SSL_CTX_new(::TLS_client_method()), ::SSL_CTX_free);
    if (!ctx) {
        error = ssl_errors("cannot create a TLS context");
        return nullptr;
    }
    ::SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION);
    if (s.verify) {
        ::SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
        int ok = s.ca_file.empty() ? ::SSL_CTX_set_default_verify_paths(ctx.get())
                                   : ::SSL_CTX_load_verify_locations(ctx.get(), s.ca_file.c_str(), nullptr);
        if (ok != 1) {
            error =
                ssl_errors(s.ca_file.empty() ? "cannot load the system trust store" : "cannot load ca=" + s.ca_file);
            return nullptr;
        }
    } else {
        ::SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_NONE, nullptr);
    }
    if (!s.cert_file.empty()) {
        const std::string &key = s.key_file.empty() ? s.cert_file : s.key_file;
        if (::SSL_CTX_use_certificate_chain_file(ctx.get(), s.cert_file.c_str()) != 1 ||
            ::SSL_CTX_use_PrivateKey_file(ctx.get(), key.c_str(), SSL_FILETYPE_PEM) != 1 ||
            ::SSL_CTX_check_private_key(ctx.get()) != 1) {
            error = ssl_errors("cannot use cert=" + s.cert_file + " with key " + key);
            return nullptr;
        }
    }
    return ctx;
}

void ClientStream::SslFree::operator()(ssl_st *s) const
{
    ::SSL_free(s);
}

void ClientStream::reset()
{
    // No close_notify: the SMTP exchange (QUIT) says the session is over,
    // and a dead peer must not cost a wait here.
    ssl_.reset();
    ctx_.reset();
    fd_.reset();
}

bool ClientStream::start_tls(const std::shared_ptr<ssl_ctx_st> &ctx, const std::string &server_name,
                             time_point deadline, std::string &error)
{
    ::ERR_clear_error();
    std::unique_ptr<ssl_st, SslFree> ssl(::SSL_new(ctx.get()));
    if (!ssl || ::SSL_set_fd(ssl.get(), fd_.get()) != 1) {
        error = ssl_errors("cannot set up TLS");
        return false;
    }
    if (!server_name.empty()) {
        if (is_ip_literal(server_name)) {
            if (::X509_VERIFY_PARAM_set1_ip_asc(::SSL_get0_param(ssl.get()), server_name.c_str()) != 1) {
                error = ssl_errors("bad address " + server_name);
                return false;
            }
        } else if (::SSL_set_tlsext_host_name(ssl.get(), server_name.c_str()) != 1 ||
                   ::SSL_set1_host(ssl.get(), server_name.c_str()) != 1) {
            error = ssl_errors("bad server name " + server_name);
            return false;
        }
    }
    for (;;) {
        int r = ::SSL_connect(ssl.get());
        if (r == 1)
            break;
        int e = ::SSL_get_error(ssl.get(), r);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
            if (!wait_for(fd_.get(), e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline)) {
                error = "TLS handshake timed out";
                ::ERR_clear_error();
                return false;
            }
            continue;
        }
        long v = ::SSL_get_verify_result(ssl.get());
        if (v != X509_V_OK)
            error = std::string("certificate verification failed: ") + ::X509_verify_cert_error_string(v);
        else
            error = ssl_errors("TLS handshake failed");
        ::ERR_clear_error();
        return false;
    }
    ctx_ = ctx;
    ssl_ = std::move(ssl);
    return true;
}

bool ClientStream::send_all(std::string_view data, time_point deadline)
{
    if (!fd_)
        return false;
    if (!ssl_)
        return esmtp::send_all(fd_.get(), data, deadline) == SendResult::ok;
    while (!data.empty()) {
        std::size_t n = 0;
        int r = ::SSL_write_ex(ssl_.get(), data.data(), data.size(), &n);
        if (r == 1) {
            data.remove_prefix(n);
            continue;
        }
        int e = ::SSL_get_error(ssl_.get(), r);
        if ((e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) ||
            !wait_for(fd_.get(), e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline)) {
            ::ERR_clear_error();
            return false;
        }
    }
    return true;
}

long ClientStream::recv_some(char *buf, std::size_t len, time_point deadline)
{
    if (!fd_)
        return -1;
    for (;;) {
        if (ssl_) {
            std::size_t n = 0;
            int r = ::SSL_read_ex(ssl_.get(), buf, len, &n);
            if (r == 1)
                return static_cast<long>(n);
            int e = ::SSL_get_error(ssl_.get(), r);
            if (e == SSL_ERROR_ZERO_RETURN)
                return 0;
            if ((e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) ||
                !wait_for(fd_.get(), e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline)) {
                ::ERR_clear_error();
                return -1;
            }
            continue;
        }
        ssize_t n = ::recv(fd_.get(), buf, len, 0);
        if (n >= 0)
            return static_cast<long>(n);
        if (errno == EINTR)
            continue;
        if ((errno != EAGAIN && errno != EWOULDBLOCK) || !wait_for(fd_.get(), POLLIN, deadline))
            return -1;
    }
}

} // namespace esmtp
