// The session's states and the verb table: the only place where the
// sequencing rules of the protocol live (as Postfix's smtpd_cmd_table).
//
// A verb's row says what the session's state must be for the verb to run;
// Session::command() checks the row before the verb's own code runs, and
// the state changes only through Session::transit(). A coming feature is a
// new column (TLS required, AUTH required, allowed before a PROXY header,
// the milter stage a verb reaches), not a new boolean in the session.
#pragma once

#include "engine/command_table.hpp"

#include <string>

namespace esmtp
{

struct SessionConfig;

// Connection phase: what the next input octets are.
enum class Phase {
    greeting,      // nothing sent yet
    command,       // command lines
    data,          // DATA content, up to CRLF.CRLF
    bdat,          // the octets of a BDAT chunk (taken or swallowed)
    tls,           // STARTTLS answered 220: no input until the glue's TLS handshake ends
    sasl,          // AUTH answered 334: the next line is a SASL response, not a command
    sasl_password, // AUTH LOGIN asked for the password (334 "Password:"): the next line is it
    auth,          // the glue checks a password (Authenticator): input is held until it answers
    closed,        // nothing more is read
};

// What the client said about itself: HELO/EHLO, or CONNECT refused it.
enum class Hello {
    none,    // no HELO/EHLO yet
    refused, // the handler refused the session at CONNECT: only QUIT
    helo,    // HELO: plain SMTP
    ehlo,    // EHLO: ESMTP
};

// The mail transaction (RFC 5321 3.3). Ordered: a verb that needs a
// transaction "at least this far" compares with <.
enum class Tx {
    none, // no MAIL accepted
    mail, // MAIL accepted, no recipient yet
    rcpt, // at least one recipient accepted
    data, // DATA content is being received
    bdat, // a BDAT transfer is open (between or during chunks)
    // the handler's transaction was aborted (abort() sent: a content limit
    // crossed, the handler failed or refused EOM) while the client's content
    // still arrives; its end gets the failure reply, no second abort()
    aborted,
};

const char *phase_name(Phase p);
const char *hello_name(Hello h);
const char *tx_name(Tx t);

// One row per verb.
struct VerbRule {
    Verb verb;
    const char *name;
    unsigned extension;   // offered only after EHLO with this ESMTPExtensions bit (0: always); else 502
    bool junk;            // counts toward ESMTPMaxJunkCommands (reset after a delivered message)
    bool when_refused;    // allowed after CONNECT refused the session
    bool needs_hello;     // 503 before HELO/EHLO
    Tx needs_tx;          // 503 unless the transaction is at least this far (mail: need MAIL, rcpt: need RCPT)
    bool refused_in_tx;   // 503 inside a transaction (nested MAIL)
    bool refused_in_bdat; // 503 while a BDAT transfer is open (RFC 3030)
    bool resets_tx;       // ends an open transaction (the handler's abort()) once its syntax is valid
    bool in_help;         // named by HELP (when offered)
    bool needs_tls;       // 530 5.7.0 before STARTTLS when ESMTPStartTLS is Required
    bool privileged;      // 550 5.7.0 unless the client is in ESMTPXClientHosts (XCLIENT)
    bool restarts;        // a success takes the session back to its start (XCLIENT: 220, HELO/EHLO again)
    bool needs_auth;      // 530 5.7.0 until AUTH succeeded when ESMTPSubmission is On
};

// The row of a verb; Verb::custom and Verb::unknown have permissive rows.
const VerbRule &verb_rule(Verb v);

// The text of the default HELP reply: the verbs this configuration offers
// to a client in state `hello` (no extension verbs after a plain HELO;
// STARTTLS while `tls` (TLS active or unavailable) is false and
// ESMTPStartTLS is on) and the handler's own commands.
std::string help_text(const SessionConfig &cfg, Hello hello, bool tls = false);

} // namespace esmtp
