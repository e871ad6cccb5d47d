// The one table of defaults: every protocol limit and session setting,
// named, with its default value. The httpd glue starts from SessionConfig{}
// and overrides only what a directive set, so the module, the engine and
// the README cannot disagree (the README's directive reference quotes
// these values).
#pragma once

#include "engine/client_limits.hpp"
#include "engine/cidr.hpp"
#include "engine/proxy_protocol.hpp"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace esmtp
{

struct Limits {
    // RFC 5321 4.5.3.1.4: command line including CRLF.
    std::size_t max_command_line = 512;
    // RFC 5321 4.5.3.1.6: text line of DATA including CRLF.
    std::size_t max_text_line = 1000;
    // ESMTPMaxMessageSize: message octets (after dot-unstuffing, without trace headers).
    std::uint64_t max_message_size = 10240000;
    // ESMTPMaxRecipients.
    std::size_t max_recipients = 100;
    // Recipients beyond max_recipients answered 452 4.5.3 without counting
    // as client errors (Postfix's smtpd_recipient_overshoot_limit): a
    // client such as Python's smtplib sends them all and delivers in turns.
    std::size_t max_recipient_overshoot = 1000;
    // ESMTPMaxErrors: error replies before 421 and close (0: no limit).
    unsigned max_errors = 20;
    // ESMTPMaxJunkCommands: commands the verb table marks as junk (HELO,
    // EHLO, MAIL, RSET, NOOP, VRFY, EXPN, HELP) before 421 and close; the
    // count restarts after each delivered message (0: no limit).
    unsigned max_junk_commands = 100;
    // A single header field (folded lines together) bigger than this ends
    // header parsing: the rest goes to the handler as body, byte-exact.
    std::size_t max_header_field = 64 * 1024;
};

// ESMTP extensions a server offers (ESMTPExtensions).
enum Extension : unsigned {
    ext_pipelining = 1u << 0,
    ext_size = 1u << 1,
    ext_8bitmime = 1u << 2,
    ext_enhancedstatuscodes = 1u << 3,
    ext_smtputf8 = 1u << 4,
    ext_chunking = 1u << 5,
    // Offered only when the handler carries them on as well
    // (SessionConfig::handler_carries): these bits can only take them away.
    ext_dsn = 1u << 6,
    ext_requiretls = 1u << 7,
    ext_all = (1u << 8) - 1,
};

// The EHLO keyword of an extension bit, and back (0 when unknown).
const char *extension_name(Extension e);
unsigned extension_by_name(std::string_view name);

class CommandTable;
class SenderLoginMap;
namespace milter
{
struct Config;
}

// ESMTPStartTLS: off (no STARTTLS; with SSLEngine on the port is implicit
// TLS), on (offered after EHLO on a plaintext session), required (on, and
// the verbs the table marks needs_tls get 530 5.7.0 until TLS is active).
enum class StartTls { off, on, required };

struct SessionConfig {
    std::string hostname = "localhost";
    Limits limits;
    // ESMTPLogLevel (esmtp::log_session .. log_events).
    int log_level = 1;
    unsigned extensions = ext_all;
    // The handler's HandlerFactory::carries() (esmtp::Carries, API 2.4):
    // DSN is offered, and REQUIRETLS over TLS, only when it carries them on
    // and `extensions` leaves them on (Session::carried()).
    unsigned handler_carries = 0;
    // Recipient domains this server accepts mail for: lower-case patterns
    // with the wildcards * and ? ("*" alone accepts every domain, an open
    // relay). <postmaster> and the local address literal are always accepted.
    std::vector<std::string> accept_domains;
    // ESMTPBareLineFeed: false = reject (550 5.5.2) commands and messages
    // with a bare LF or CR; true = take a bare LF or CR as CRLF.
    bool normalize_bare_newlines = false;
    // ESMTPForbidUnauthPipelining: commands sent ahead of our reply without
    // PIPELINING (HELO sessions, before EHLO) end the session.
    bool forbid_unauth_pipelining = true;
    // RFC 5321 4.5.3.2 timeouts in seconds, enforced by the I/O glue.
    unsigned command_timeout = 300;
    unsigned data_timeout = 180;
    // ESMTPTimeout tls=N: the TLS handshake after STARTTLS's 220 must end
    // within this many seconds (whole handshake, not per read).
    unsigned tls_timeout = 60;
    // ESMTPStartTLS (the glue checks SSLEngine on for on/required).
    StartTls starttls = StartTls::off;
    // ESMTPGreetingDelay (milliseconds): wait this long before the 220; a
    // client that talks first is refused (554 5.5.0). Enforced by the glue.
    unsigned greeting_delay_ms = 0;
    // ESMTPPregreet (postscreen's pregreet test): when on, a `220-` teaser
    // line (unless pregreet_teaser is off) goes out, then the glue waits
    // pregreet_ms; a client that talks before the rest of the greeting is
    // refused (554 5.5.1). pregreet_text: the teaser's text (empty: the
    // hostname and "ESMTP").
    bool pregreet = false;
    unsigned pregreet_ms = 0;
    bool pregreet_teaser = true;
    std::string pregreet_text;
    // ESMTPMinDataRate (octets/second, 0 off): slower DATA/BDAT transfers
    // are ended with 421 4.4.2 after a grace period. Enforced by the glue
    // with Session::transfer_octets(). A modem does 3,000 octets/s: a
    // client slower than this is holding the session, not sending mail.
    unsigned min_data_rate = 128;
    // The handler's own commands (HandlerFactory::commands()), compiled
    // once when ESMTPHandler is read and shared by every session of the
    // server; null: built-in verbs only.
    std::shared_ptr<const CommandTable> commands;
    // ESMTPClient*: per-client limits (engine/client_limits.hpp holds the
    // defaults: 50 sessions per client, rates off, loopback exempt).
    // Applied by the glue (sessions, connection rate) and through the
    // session's ClientLimiter (message, recipient and AUTH rates).
    ClientLimitsConfig client_limits;
    // ESMTPMilter (milter/client.hpp): the milters, in order; null: none
    // (then no spooling, no extra copy of the message).
    std::shared_ptr<const milter::Config> milters;
    // ESMTPProxyProtocol: a PROXY header (v1, v2 or either) is read before
    // the greeting from the addresses of ESMTPProxyTrusted (required when
    // on); other clients get 421 4.7.0. ESMTPProxyTimeout: seconds for the
    // whole header, as Postfix's smtpd_upstream_proxy_timeout. Glue only.
    ProxyAccept proxy_protocol = ProxyAccept::off;
    CidrList proxy_trusted;
    unsigned proxy_timeout = 5;
    // ESMTPXClientHosts: the clients that may send XCLIENT (and see it in
    // EHLO); empty, the default: nobody.
    CidrList xclient_hosts;
    // ESMTPAuth: the SASL mechanisms offered (engine/auth.hpp bits); 0, the
    // default: no AUTH. The glue checks the passwords (Authenticator).
    unsigned auth_mechanisms = 0;
    // ESMTPAuthRequireTLS: AUTH is offered and accepted only over TLS
    // (RFC 4954 section 4); before TLS it is not advertised and answered
    // 538 5.7.11.
    bool auth_require_tls = true;
    // ESMTPSubmission (RFC 6409): MAIL needs a successful AUTH (530 5.7.0).
    bool submission = false;
    // ESMTPAuthProxyUsers: logins that may give a PLAIN authorization
    // identity other than themselves (RFC 4616) and then act as that user
    // (a helpdesk or a gateway submitting for others); empty, the default:
    // nobody, and such an attempt is refused and counted.
    std::vector<std::string> auth_proxy_users;
    // ESMTPMaxAuthFailures: failed AUTH attempts per session; the one that
    // reaches it is answered 421 4.7.0 and the session closes (0: no limit).
    unsigned max_auth_failures = 3;
    // ESMTPSenderLoginMatch On: an authenticated client's MAIL FROM must be
    // its login, or an address in the login's domain (553 5.7.1).
    bool sender_login_match = false;
    // ESMTPSenderLoginMatch FILE: who owns which sender (instead of the
    // rule above): authenticated clients may use only the addresses their
    // login owns, others none that has an owner. Null: no map.
    std::shared_ptr<const SenderLoginMap> sender_login_map;
    // ESMTPAuthFailureDelay (milliseconds): the glue waits this long
    // before a refused password is answered (Postfix's
    // smtpd_error_sleep_time).
    unsigned auth_failure_delay_ms = 1000;
};

} // namespace esmtp
