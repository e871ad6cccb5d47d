// mod_esmtp public API: the handler object.
//
// A handler decides what happens to a session: accept or refuse senders and
// recipients, store or forward the message. The module owns the protocol
// (sequencing, syntax, limits, dot-stuffing, the trace header) and asks the
// handler only about commands that are already valid. One handler object is
// created per connection and destroyed with it, so it may keep per-session
// state in members without locking.
//
// Every method has a default. Methods returning a Reply may return an empty
// Reply() to let the module send its default for that event (see the table in
// README.md). Exceptions thrown by a handler are caught by the module and
// answered with 451 4.3.0 (421 and close for CONNECT).
//
// Replies are checked per event before they are sent or acted on: the code
// must be one the event allows (CONNECT 220, HELO/EHLO/MAIL/EOM 250, RCPT
// 250/251, DATA 354, VRFY 250/251/252, EXPN 250/252, HELP 211/214, QUIT 221
// only; any event 4xx/5xx) and an enhanced code must have the reply code's
// class. A reply that is not valid is logged as the handler's mistake
// (SessionView::error) and replaced: by the module's default where the
// handler meant to accept and nothing is decided by it, otherwise by 451
// 4.3.0 (a refusal with a bad enhanced code, anything wrong from MAIL,
// RCPT, DATA or EOM); QUIT always gets 221. The session then acts on what
// was sent (a replaced RCPT adds no recipient).
#pragma once

#include <esmtp/reply.hpp>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace esmtp
{

// Transaction log levels (ESMTPLogLevel), for SessionView::log().
enum LogLevel : int {
    log_session = 1,  // connections and messages
    log_commands = 2, // every command and reply
    log_events = 3,   // handler events and state transitions
};

// A reverse-path or forward-path. For the null reverse-path (MAIL FROM:<>)
// every field is empty.
struct Path {
    std::string mailbox;    // local@domain, exactly as sent (quotes kept)
    std::string local_part; // as sent, quotes kept
    std::string domain;     // as sent (case kept); empty for <postmaster>
    bool is_null() const { return mailbox.empty(); }
};

// An ESMTP parameter of MAIL or RCPT: keyword upper-cased, value as sent
// (empty when the parameter has none).
struct Param {
    std::string keyword;
    std::string value;
};
using Params = std::vector<Param>;

struct Recipient {
    Path path;
    Params params;
};

// API 2.4: what a handler carries on to the next hop (HandlerFactory::
// carries(), esmtp/provider.hpp). The module offers an extension whose promises outlive the
// session only for a handler that keeps them: a server that offers DSN
// owes the notices its client asks for, which a final-delivery handler
// cannot send; one that offers REQUIRETLS must send the message on only
// over verified TLS to a next hop that offers REQUIRETLS too.
enum Carries : unsigned {
    // DSN (RFC 3461): RET= and ENVID= of MAIL (Envelope::dsn_ret,
    // dsn_envid), NOTIFY= and ORCPT= of RCPT (the recipient's Params), each
    // checked by the module. The handler passes them on (or sends the DSNs).
    carries_dsn = 1u << 0,
    // REQUIRETLS (RFC 8689): offered over TLS only; Envelope::requiretls.
    // The handler relays such a message only over verified TLS to a next
    // hop that offers REQUIRETLS (it passes it on), else refuses it with
    // 550 5.7.30 (RFC 8689 5).
    carries_requiretls = 1u << 1,
};

// The current transaction.
struct Envelope {
    Path sender;
    Params mail_params;
    std::vector<Recipient> recipients;
    // From MAIL's parameters, checked by the module:
    bool smtputf8 = false;           // SMTPUTF8 (RFC 6531): addresses may be UTF-8
    std::string body_type;           // BODY= (RFC 6152): "7BIT", "8BITMIME" or "" (not given)
    std::uint64_t declared_size = 0; // SIZE= (RFC 1870), 0 when not given
    // API 2.4, only for a handler that carries them (esmtp::Carries):
    std::string dsn_ret;     // RET= (RFC 3461): "FULL", "HDRS" or "" (not given)
    std::string dsn_envid;   // ENVID=, the xtext as sent; "" when not given
    bool requiretls = false; // REQUIRETLS (RFC 8689), over TLS only
};

// One header field of the message. `value` is unfolded (CRLF before folding
// whitespace removed, leading whitespace after the colon removed); `raw` is
// the field byte for byte, folding and final CRLF included.
// The views point into the module's buffer and are valid only during the
// Handler::header() call: copy what you keep.
struct HeaderField {
    std::string_view name;
    std::string_view value;
    std::string_view raw;
};

// The session's TLS state (API 2.1): implicit TLS (SSLEngine on, port 465)
// from the start, or after a successful STARTTLS. Values are mod_ssl's
// (ap_ssl_var_lookup), empty when mod_ssl did not give them.
struct TlsInfo {
    bool active = false;   // false: plaintext, every other field empty
    std::string protocol;  // SSL_PROTOCOL: "TLSv1.3"
    std::string cipher;    // SSL_CIPHER (OpenSSL's name): "TLS_AES_256_GCM_SHA384"
    unsigned bits = 0;     // SSL_CIPHER_USEKEYSIZE
    unsigned alg_bits = 0; // SSL_CIPHER_ALGKEYSIZE
    std::string sni;       // SSL_TLS_SNI: the name the client asked for (may be empty)
    // A client certificate, with SSLVerifyClient optional or optional_no_ca
    // in the VirtualHost (require refuses the handshake without one):
    std::string client_verify;      // SSL_CLIENT_VERIFY: NONE, SUCCESS, GENEROUS or FAILED:reason
    std::string client_subject;     // SSL_CLIENT_S_DN (RFC 2253)
    std::string client_issuer;      // SSL_CLIENT_I_DN
    std::string client_fingerprint; // SHA-256 of the DER certificate, upper-case hex with ':'
};

// What a handler can see of (and do with) its session.
class SessionView
{
  public:
    virtual std::string_view client_address() const = 0; // "192.0.2.1" / "::1"
    virtual unsigned client_port() const = 0;
    virtual std::string_view remote_host() const = 0; // reverse DNS name, or the address
    virtual std::string_view local_address() const = 0;
    virtual unsigned local_port() const = 0;
    virtual std::string_view hostname() const = 0;  // our name (ESMTPHostname)
    virtual std::string_view helo_name() const = 0; // empty before HELO/EHLO
    virtual bool esmtp() const = 0;                 // the client said EHLO
    // For Received: "SMTP" (HELO), "ESMTP", "UTF8SMTP" (SMTPUTF8 in MAIL),
    // over TLS "ESMTPS", "UTF8SMTPS" (RFC 3848, RFC 6531 3.7.3); after AUTH
    // with an "A" appended: "ESMTPA", "ESMTPSA", "UTF8SMTPSA" (API 2.2).
    virtual std::string_view protocol() const = 0;
    virtual const Envelope &envelope() const = 0;
    // Unique across processes and restarts; assigned at MAIL, empty outside a transaction.
    virtual std::string_view queue_id() const = 0;
    // "Return-Path: ...\r\nReceived: ...\r\n", to prepend to the stored message.
    // Valid from DATA to EOM.
    virtual std::string_view trace_headers() const = 0;
    virtual std::uint64_t message_size() const = 0; // message octets received so far
    virtual std::uint64_t max_message_size() const = 0;
    // A record for the transaction log (ESMTPLogLevel >= level; see LogLevel).
    virtual void log(int level, std::string_view text) = 0;
    // A problem the administrator must fix (a directory the handler cannot
    // write, a program it cannot run): written to httpd's error log at level
    // error, naming the client, and to the transaction log.
    virtual void error(std::string_view text) = 0;
    // API 2.1: a milter quarantined the message (ESMTPMilter): the reason
    // it gave, from eom() on; empty otherwise. The message also carries it
    // in an X-Quarantine: header field. A handler that can hold mail
    // apart should store it there.
    virtual std::string_view quarantine_reason() const { return {}; }
    // API 2.1: the TLS state (tls().active false on a plaintext session).
    // After STARTTLS the session starts over (RFC 3207 4.2): HELO/EHLO again.
    virtual const TlsInfo &tls() const = 0;
    // API 2.2: the user the client authenticated as (SMTP AUTH through
    // httpd's authn providers, or XCLIENT LOGIN from a trusted front end);
    // empty when it has not. Authenticated clients may relay.
    virtual std::string_view auth_user() const { return {}; }

  protected:
    ~SessionView() = default;
};

// The handler object. Override what you need.
class Handler
{
  public:
    virtual ~Handler() = default;

    // Client connected. Default: 220 <hostname> ESMTP. A 4xx/5xx reply
    // (e.g. 554) refuses the session; the module then only accepts QUIT.
    virtual Reply connect(SessionView &) { return {}; }
    // HELO/EHLO with a syntactically valid domain. Default 250.
    virtual Reply helo(SessionView &, std::string_view /*domain*/) { return {}; }
    // `extensions` holds the EHLO keywords the module will advertise; add or
    // remove entries. A non-empty reply replaces the greeting line only.
    virtual Reply ehlo(SessionView &, std::string_view /*domain*/, std::vector<std::string> & /*extensions*/)
    {
        return {};
    }
    virtual Reply mail(SessionView &, const Path & /*from*/, const Params & /*params*/) { return {}; }
    virtual Reply rcpt(SessionView &, const Path & /*to*/, const Params & /*params*/) { return {}; }
    // DATA accepted by the module (there is at least one recipient). Default 354.
    virtual Reply data(SessionView &) { return {}; }
    // The message, as it arrives: header fields, then end of header (raw is
    // the empty separator line "\r\n", or "" when the header section ended
    // at a line that is not a header field), then body chunks. Dot-stuffing
    // is already removed: raw header fields + eoh raw + body chunks are the
    // message byte for byte.
    virtual void header(SessionView &, const HeaderField & /*field*/) {}
    virtual void eoh(SessionView &, std::string_view /*raw*/) {}
    virtual void body(SessionView &, std::string_view /*chunk*/) {}
    // The message is complete. A 250 means the message is on stable storage
    // (or handed on): return it only when that is true. Default: 250.
    virtual Reply eom(SessionView &) { return {}; }
    // The rule: a transaction that mail() accepted ends either in eom()
    // returning 2xx (the message is accepted) or in exactly one abort(). So
    // abort() runs on RSET, HELO/EHLO, a limit crossed or a handler failure
    // during the content (then eom() is not called), the client gone, AND
    // after eom() refused the message (4xx/5xx, an invalid reply, or an
    // exception): throw away anything stored for the transaction. It does
    // not run when mail() refused the sender (no transaction began).
    virtual void abort(SessionView &) {}
    virtual Reply rset(SessionView &) { return {}; }
    virtual Reply noop(SessionView &) { return {}; }
    virtual Reply vrfy(SessionView &, std::string_view /*arg*/) { return {}; }
    virtual Reply expn(SessionView &, std::string_view /*arg*/) { return {}; }
    virtual Reply help(SessionView &, std::string_view /*arg*/) { return {}; }
    virtual Reply quit(SessionView &) { return {}; }
    // A line that matched a command the factory added (HandlerFactory::
    // commands()): `name` is its CommandSpec name, captures[0] the whole
    // match. Default 502 5.5.1.
    virtual Reply command(SessionView &, std::string_view /*name*/, const std::vector<std::string> & /*captures*/)
    {
        return {};
    }
    // A line that matched no command. Default 500 5.5.2.
    virtual Reply unknown(SessionView &, std::string_view /*line*/) { return {}; }
    // Always called, last, however the session ended.
    virtual void disconnect(SessionView &) {}
};

} // namespace esmtp
