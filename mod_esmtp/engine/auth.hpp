// SMTP AUTH (RFC 4954) without httpd: the mechanisms, base64, the PLAIN
// message (RFC 4616), the checks on what a client sends, and the interface
// through which the session asks the glue (httpd's authn providers) to
// check a password.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace esmtp
{

// ESMTPAuth: the mechanisms offered. Providers check plaintext passwords
// only, so the mechanisms are those that carry one.
enum AuthMechanism : unsigned {
    mech_plain = 1u << 0,
    mech_login = 1u << 1,
};

// "PLAIN" / "LOGIN" (case-insensitive) to its bit; 0 when unknown.
unsigned auth_mechanism_by_name(std::string_view name);
const char *auth_mechanism_name(AuthMechanism m);
// "PLAIN LOGIN": the EHLO AUTH keyword's parameters for a set of bits.
std::string auth_mechanism_list(unsigned mechanisms);

// RFC 4648 base64, strict: the alphabet, '=' padding to a multiple of four
// and nothing else (no line breaks, no spaces). False on anything else.
bool base64_decode(std::string_view in, std::string &out);
std::string base64_encode(std::string_view in);

// Limits on what a client sends (the line limit bounds the encoded form).
constexpr std::size_t kMaxAuthUser = 255;
constexpr std::size_t kMaxAuthPassword = 255;

// A user name the module passes on to a provider and writes to the log:
// 1..kMaxAuthUser octets of UTF-8 (address.hpp's valid_utf8) without
// control characters.
bool valid_auth_user(std::string_view user);

// Overwrites a string that held a secret, then empties it.
void wipe_secret(std::string &s);
// The same for bytes outside a string (a copy in an APR pool).
void wipe_bytes(char *data, std::size_t size);

struct Credentials {
    std::string authzid;
    std::string user;
    std::string password;
    // Overwrites the password (it must not linger in freed memory).
    void wipe();
    ~Credentials() { wipe(); }
};

enum class SaslError {
    ok,
    malformed, // PLAIN: not exactly two NULs, empty user or password
    bad_user,  // the user name is not acceptable (valid_auth_user)
    too_long,  // the password exceeds kMaxAuthPassword
    authzid,   // PLAIN: an authorization identity other than the user
};

// RFC 4616: message = [authzid] NUL authcid NUL passwd. An authzid equal
// to the authcid is the same as none; another one is refused (no provider
// says who may act for whom).
SaslError parse_plain(std::string_view message, Credentials &c);
// A user name and password from LOGIN's two responses.
SaslError check_login(const Credentials &c);

// The provider's answer.
enum class AuthVerdict {
    granted,     // 235 2.7.0
    denied,      // 535 5.7.8 (wrong password or unknown user), counted
    unavailable, // 454 4.7.0 (the backend failed: LDAP down, SQL error)
    busy,        // 421 4.3.2 and close: not checked, the server is too busy (ESMTPMaxWorkers)
};

struct AuthRequest {
    AuthMechanism mechanism;
    std::string_view user;
    std::string_view password;
};

// Implemented by the glue (httpd/auth.cpp runs httpd's authn providers).
// check() answers now (a verdict) or later (nullopt: the glue then calls
// Session::auth_done() before it feeds the session anything else; the
// session holds what the client sends meanwhile). `r` is valid only during
// the call: copy what a later answer needs, and never log the password.
class Authenticator
{
  public:
    virtual ~Authenticator() = default;
    virtual std::optional<AuthVerdict> check(const AuthRequest &r) = 0;
};

} // namespace esmtp
