// The mail transaction's envelope: MAIL and RCPT, and the end of a
// transaction (RSET, HELO/EHLO, end of message, connection lost).
#include "engine/session.hpp"
#include "engine/session_internal.hpp"

#include "engine/address.hpp"
#include "engine/dsn.hpp"
#include "engine/queue_id.hpp"
#include "engine/sender_login.hpp"

#include <cctype>

namespace esmtp
{

// "FROM:<path> params" (MAIL) or "TO:<path> params" (RCPT): false when a
// syntax reply was sent.
bool Session::parse_envelope_arg(std::string_view arg, bool mail, MailArgs &a)
{
    std::string_view prefix = mail ? "FROM:" : "TO:";
    if (!istarts_with(arg, prefix)) {
        reply(501, "5.5.4", mail ? "Syntax: MAIL FROM:<address>" : "Syntax: RCPT TO:<address>");
        return false;
    }
    switch (parse_path_and_params(arg.substr(prefix.size()), mail, !mail, a)) {
    case PathError::ok:
        return true;
    case PathError::syntax:
        if (mail)
            reply(501, "5.1.7", "Bad sender address syntax");
        else
            reply(501, "5.1.3", "Bad recipient address syntax");
        return false;
    case PathError::bad_parameter:
        reply(501, "5.5.4", "Bad parameter syntax");
        return false;
    }
    return false;
}

// Each parameter at most once (RFC 3461 4 says so of its own; a second
// SIZE or BODY is as ambiguous). False when a reply refused a second one.
bool Session::unique_params(const Params &params)
{
    for (std::size_t i = 0; i < params.size(); ++i)
        for (std::size_t j = 0; j < i; ++j)
            if (params[j].keyword == params[i].keyword) {
                reply(501, "5.5.4", "Duplicate parameter " + params[i].keyword);
                return false;
            }
    return true;
}

void Session::do_mail(std::string_view arg)
{
    MailArgs a;
    if (!parse_envelope_arg(arg, true, a))
        return;
    if (!unique_params(a.params))
        return;
    bool smtputf8 = false;
    std::string body_type;
    std::uint64_t declared_size = 0;
    std::string_view ret;
    std::string envid;
    bool requiretls = false;
    for (const Param &p : a.params) {
        if (p.keyword == "AUTH" && state_.hello == Hello::ehlo && cfg_.auth_mechanisms)
            continue; // RFC 4954 5: accepted, kept in mail_params for the handler
        if (dsn_offered_ && state_.hello == Hello::ehlo && (p.keyword == "RET" || p.keyword == "ENVID")) {
            if (p.keyword == "RET" ? (ret = dsn_ret(p.value)).empty() : !valid_envid(p.value)) {
                reply(501, "5.5.4", "Bad " + p.keyword + " parameter");
                return;
            }
            if (p.keyword == "ENVID")
                envid = p.value;
            continue;
        }
        if (requiretls_offered_ && state_.hello == Hello::ehlo && p.keyword == "REQUIRETLS") {
            if (!p.value.empty()) {
                reply(501, "5.5.4", "Bad REQUIRETLS parameter");
                return;
            }
            requiretls = true;
            continue;
        }
        unsigned ext = extension_by_name(p.keyword == "BODY" ? "8BITMIME" : p.keyword);
        if (state_.hello != Hello::ehlo || !ext || !(cfg_.extensions & ext)) {
            reply(555, "5.5.4", "Unsupported parameter " + p.keyword);
            return;
        }
        if (p.keyword == "SMTPUTF8") {
            if (!p.value.empty()) {
                reply(501, "5.5.4", "Bad SMTPUTF8 parameter");
                return;
            }
            smtputf8 = true;
        } else if (p.keyword == "SIZE") {
            if (!all_digits(p.value)) {
                reply(501, "5.5.4", "Bad SIZE parameter");
                return;
            }
            // more than 19 digits is more than any limit (and than stoull takes)
            if (p.value.size() > 19 || std::stoull(p.value) > cfg_.limits.max_message_size) {
                report(RejectCause::limits, "declared SIZE exceeds the limit");
                reply(552, "5.3.4", "Message size exceeds fixed limit");
                return;
            }
            declared_size = std::stoull(p.value);
        } else if (p.keyword == "BODY") {
            for (char c : p.value)
                body_type.push_back(static_cast<char>(std::toupper(static_cast<unsigned char>(c))));
            if (body_type != "7BIT" && body_type != "8BITMIME") {
                reply(501, "5.5.4", "Bad BODY parameter");
                return;
            }
        } else {
            reply(555, "5.5.4", "Unsupported parameter " + p.keyword);
            return;
        }
    }
    if (!smtputf8 && has_non_ascii(a.path.mailbox)) {
        reply(553, "5.6.7", "Must declare SMTPUTF8 to send UTF-8 address");
        return;
    }
    if (cfg_.sender_login_map && !a.path.is_null() && auth_user_.empty() &&
        (is_address_literal(a.path.domain) || cfg_.sender_login_map->owners(a.path.mailbox))) {
        // Postfix's reject_sender_login_mismatch: an owned address needs its
        // login. An address literal may name this server under any of its
        // spellings, which no map lists: it counts as owned (only a login the
        // map names for that literal may use it).
        log(log_session, "sender <" + a.path.mailbox + "> needs a login");
        reply(553, "5.7.1", "<" + a.path.mailbox + ">: Sender address rejected: not logged in");
        return;
    }
    if ((cfg_.sender_login_match || cfg_.sender_login_map) && !auth_user_.empty() && !a.path.is_null() &&
        !sender_owned(a.path)) {
        log(log_session, "sender <" + a.path.mailbox + "> not owned by user=" + auth_user_);
        reply(553, "5.7.1", "<" + a.path.mailbox + ">: Sender address rejected: not owned by user " + auth_user_);
        return;
    }
    // Postfix's smtpd_client_message_rate_limit: counted at MAIL, refused
    // without closing.
    if (limiter_ && !limiter_->allow_message()) {
        rate_refused("too much mail", limiter_->message_limit(), "client message rate");
        return;
    }
    // The handler sees the envelope and queue id of the transaction it is asked about.
    env_.sender = std::move(a.path);
    env_.mail_params = std::move(a.params);
    env_.recipients.clear();
    env_.smtputf8 = smtputf8;
    env_.body_type = std::move(body_type);
    env_.declared_size = declared_size;
    env_.dsn_ret = ret;
    env_.dsn_envid = std::move(envid);
    env_.requiretls = requiretls;
    queue_id_ = make_queue_id();
    overshoot_ = 0;
    transit_tx(Tx::mail, "MAIL");
    Reply r = ask(Event::mail, [&] { return handler_->mail(*this, env_.sender, env_.mail_params); });
    if (!r.empty() && !r.positive()) {
        // the transaction never began: no abort()
        env_ = Envelope{};
        queue_id_.clear();
        transit_tx(Tx::none, "MAIL refused");
    } else if (logs(log_commands)) {
        log(log_commands, "from=<" + env_.sender.mailbox + ">");
    }
    reply(r, default_reply(Event::mail));
}

void Session::do_rcpt(std::string_view arg)
{
    MailArgs a;
    if (!parse_envelope_arg(arg, false, a))
        return;
    if (!unique_params(a.params))
        return;
    for (const Param &p : a.params) {
        if (!dsn_offered_ || state_.hello != Hello::ehlo || (p.keyword != "NOTIFY" && p.keyword != "ORCPT")) {
            reply(555, "5.5.4", "Unsupported parameter " + p.keyword);
            return;
        }
        if (p.keyword == "NOTIFY" ? !valid_notify(p.value) : !valid_orcpt(p.value)) {
            reply(501, "5.5.4", "Bad " + p.keyword + " parameter");
            return;
        }
    }
    if (!env_.smtputf8 && has_non_ascii(a.path.mailbox)) {
        reply(553, "5.6.7", "Must declare SMTPUTF8 to send UTF-8 address");
        return;
    }
    // No open relay: only our own domains, before the handler is asked.
    // Authenticated clients relay (submission).
    if (auth_user_.empty() && !recipient_domain_accepted(cfg_, conn_.local_address, a.path)) {
        log(log_session, "relay denied to=<" + a.path.mailbox + ">");
        report(RejectCause::relay, "relay denied from " + conn_.client_address);
        reply(550, "5.7.1", "Relay access denied");
        return;
    }
    if (env_.recipients.size() >= cfg_.limits.max_recipients) {
        // Overshoot is how clients learn the limit: not a client error
        // until it is far beyond it (Postfix's overshoot limit).
        count_error_ = ++overshoot_ > cfg_.limits.max_recipient_overshoot;
        report(RejectCause::limits, "too many recipients");
        reply(452, "4.5.3", "Error: too many recipients");
        return;
    }
    // smtpd_client_recipient_rate_limit
    if (limiter_ && !limiter_->allow_recipient()) {
        rate_refused("too many recipients", limiter_->recipient_limit(), "client recipient rate");
        return;
    }
    if (screen_ && auth_user_.empty()) {
        Screen::Verdict v = screen_->rcpt(env_.sender, a.path);
        if (screened(v)) {
            reply(v.reply);
            return;
        }
    }
    Reply r = ask(Event::rcpt, [&] { return handler_->rcpt(*this, a.path, a.params); });
    if (r.empty() || r.positive()) {
        env_.recipients.push_back(Recipient{std::move(a.path), std::move(a.params)});
        transit_tx(Tx::rcpt, "RCPT");
    }
    reply(r, default_reply(Event::rcpt));
}

void Session::reset_transaction(std::string_view why)
{
    if (state_.tx == Tx::none)
        return;
    if (state_.tx != Tx::aborted)
        abort_handler();
    end_transaction(why);
}

void Session::end_transaction(std::string_view why)
{
    env_ = Envelope{};
    queue_id_.clear();
    trace_.clear();
    data_.reset();
    transit_tx(Tx::none, why);
}

} // namespace esmtp
