// AUTH (RFC 4954): the verb, the SASL exchange, the Authenticator's
// answer; and which senders a login owns (ESMTPSenderLoginMatch).
#include "engine/session.hpp"
#include "engine/session_internal.hpp"

#include "engine/sender_login.hpp"
#include "engine/text.hpp"

#include <algorithm>

namespace esmtp
{

namespace
{

// Input held while the Authenticator has not answered: a client that sends
// more than this before the reply is not waiting for it (RFC 4954 4).
constexpr std::size_t kMaxHeldInput = 64 * 1024;

} // namespace

// ---- AUTH (RFC 4954)

void Session::do_auth(std::string_view arg)
{
    if (state_.hello != Hello::ehlo) {
        reply(503, "5.5.1", "Error: send EHLO first");
        return;
    }
    if (!auth_user_.empty()) {
        reply(503, "5.5.1", "Error: already authenticated");
        return;
    }
    if (cfg_.auth_require_tls && !conn_.tls) {
        reply(538, "5.7.11", "Encryption required for requested authentication mechanism");
        return;
    }
    std::size_t sp = arg.find_first_of(" \t");
    std::string_view mech = arg.substr(0, sp);
    std::string_view initial = sp == std::string_view::npos ? std::string_view() : arg.substr(sp + 1);
    while (!initial.empty() && (initial.front() == ' ' || initial.front() == '\t'))
        initial.remove_prefix(1);
    if (mech.empty() || initial.find_first_of(" \t") != std::string_view::npos) {
        reply(501, "5.5.4", "Syntax: AUTH mechanism [initial-response]");
        return;
    }
    unsigned m = auth_mechanism_by_name(mech);
    if (!(m & cfg_.auth_mechanisms)) {
        reply(504, "5.5.4", "Unsupported authentication mechanism");
        return;
    }
    // Postfix's smtpd_client_auth_rate_limit: counted once the command is
    // valid, refused without closing.
    if (limiter_ && !limiter_->allow_auth()) {
        rate_refused("too many AUTH commands", limiter_->auth_limit(), "client AUTH rate");
        return;
    }
    sasl_mech_ = static_cast<AuthMechanism>(m);
    sasl_.wipe();
    sasl_.user.clear();
    sasl_.authzid.clear();
    transit_phase(Phase::sasl, "AUTH");
    if (!initial.empty())
        sasl_response(initial);
    else
        sasl_challenge(sasl_mech_ == mech_plain ? "" : "VXNlcm5hbWU6"); // "Username:"
}

void Session::sasl_challenge(std::string_view base64)
{
    // "334 " SP [base64]: the space even with an empty challenge (RFC 4954 4)
    std::size_t before = out_.size();
    out_.append("334 ").append(base64).append("\r\n");
    replied(before, 334, false);
}

void Session::sasl_end(int code, std::string_view enh, std::string_view text)
{
    sasl_.wipe();
    sasl_cut_short_ = true;
    transit_phase(Phase::command, "AUTH ended");
    reply(code, enh, text);
}

void Session::sasl_response(std::string_view line)
{
    if (line == "*") {
        sasl_end(501, "5.7.0", "Authentication aborted");
        return;
    }
    std::string decoded;
    // "=" is an empty initial response (RFC 4954 4)
    if (line != "=" && !base64_decode(line, decoded)) {
        wipe_secret(decoded);
        sasl_end(501, "5.5.2", "Cannot decode response");
        return;
    }
    sasl_step(decoded);
    wipe_secret(decoded);
}

void Session::sasl_step(std::string_view decoded)
{
    SaslError e = SaslError::ok;
    if (sasl_mech_ == mech_plain) {
        e = parse_plain(decoded, sasl_);
    } else if (state_.phase != Phase::sasl_password) {
        sasl_.user.assign(decoded);
        if (!valid_auth_user(sasl_.user)) {
            e = SaslError::bad_user;
        } else {
            transit_phase(Phase::sasl_password, "AUTH LOGIN user");
            sasl_challenge("UGFzc3dvcmQ6"); // "Password:"
            return;
        }
    } else {
        sasl_.password.assign(decoded);
        e = check_login(sasl_);
    }
    switch (e) {
    case SaslError::ok:
        verify();
        return;
    case SaslError::malformed:
        sasl_end(501, "5.5.2",
                 sasl_mech_ == mech_plain ? "Invalid PLAIN response: [authzid] NUL user NUL password"
                                          : "Invalid LOGIN response: empty or with NUL");
        return;
    case SaslError::bad_user:
        sasl_end(501, "5.5.2", "Invalid user name: UTF-8 without control characters, at most 255 octets");
        return;
    case SaslError::too_long:
        sasl_end(501, "5.5.2", "Password too long");
        return;
    case SaslError::authzid:
        if (std::find(cfg_.auth_proxy_users.begin(), cfg_.auth_proxy_users.end(), sasl_.user) !=
                cfg_.auth_proxy_users.end() &&
            valid_auth_user(sasl_.authzid)) {
            verify(); // the proxy's own password; granted, it acts as authzid
            return;
        }
        sasl_.wipe();
        transit_phase(Phase::command, "AUTH ended");
        log(log_session, "AUTH PLAIN user=" + sasl_.user + ": authorization identity refused");
        auth_failed();
        return;
    }
}

void Session::verify()
{
    transit_phase(Phase::auth, "AUTH credentials");
    std::optional<AuthVerdict> v;
    if (!authenticator_) {
        v = AuthVerdict::unavailable;
    } else {
        try {
            v = authenticator_->check(AuthRequest{sasl_mech_, sasl_.user, sasl_.password});
        } catch (...) {
            log(log_session, "AUTH: the password check failed");
            v = AuthVerdict::unavailable;
        }
    }
    sasl_.wipe(); // the Authenticator copied what a later answer needs
    if (v)
        auth_done(*v);
}

void Session::auth_failed()
{
    ++auth_failures_;
    if (cfg_.max_auth_failures && auth_failures_ >= cfg_.max_auth_failures) {
        log(log_session, "too many authentication failures (" + std::to_string(auth_failures_) + ")");
        report(RejectCause::limits, "too many authentication failures");
        reply(Reply(421, cfg_.hostname + " Error: too many authentication failures", "4.7.0", true));
        return;
    }
    reply(535, "5.7.8", "Error: authentication failed");
}

void Session::auth_done(AuthVerdict v)
{
    if (state_.phase != Phase::auth)
        return;
    transit_phase(Phase::command, "AUTH checked");
    std::string what = std::string("AUTH ") + auth_mechanism_name(sasl_mech_) + " user=" + sasl_.user;
    switch (v) {
    case AuthVerdict::granted:
        if (!sasl_.authzid.empty() && sasl_.authzid != sasl_.user) {
            auth_user_ = sasl_.authzid; // ESMTPAuthProxyUsers
            log(log_session, what + ": authenticated, acting as " + auth_user_);
        } else {
            auth_user_ = sasl_.user;
            log(log_session, what + ": authenticated");
        }
        reply(235, "2.7.0", "Authentication successful");
        break;
    case AuthVerdict::denied:
        log(log_session, what + ": authentication failed");
        auth_failed();
        break;
    case AuthVerdict::unavailable:
        log(log_session, what + ": authentication backend unavailable");
        reply(454, "4.7.0", "Temporary authentication failure");
        break;
    case AuthVerdict::busy:
        // A password guesser that finds the server busy gets no answer and
        // no delay, only the door (the glue's bulkhead).
        log(log_session, what + ": not checked, server busy");
        reply(Reply(421, cfg_.hostname + " Server busy, try again later", "4.3.2", true));
        break;
    }
    sasl_.wipe();
    sasl_.user.clear();
    sasl_.authzid.clear();
    // an answer that came later: what the client sent meanwhile, now
    if (!feeding_ && !held_.empty() && state_.phase != Phase::closed) {
        std::string in = std::move(held_);
        held_.clear();
        refeeding_ = true;
        feed(in);
        refeeding_ = false;
    }
}

void Session::hold(std::string_view in)
{
    if (in.empty())
        return;
    if (held_.size() + in.size() > kMaxHeldInput) {
        held_.clear();
        protocol_violation("improper command pipelining after AUTH");
        return;
    }
    held_.append(in);
}

bool Session::sender_owned(const Path &from) const
{
    if (cfg_.sender_login_map)
        return cfg_.sender_login_map->owns(auth_user_, from.mailbox);
    // The login itself, or an address in the login's domain; a login
    // without a domain owns the addresses with that local part.
    // Compared in canonical form: "bob"@x is bob@x.
    std::string canon = canonical_mailbox(from.mailbox);
    std::string_view mailbox = canon;
    std::size_t fat = mailbox.rfind('@');
    std::string_view local = mailbox.substr(0, fat), domain = mailbox.substr(fat + 1);
    std::string_view login = auth_user_;
    std::size_t at = login.rfind('@');
    if (at == std::string_view::npos)
        return iequals(local, login);
    return iequals(mailbox, login) || iequals(domain, login.substr(at + 1));
}

} // namespace esmtp
