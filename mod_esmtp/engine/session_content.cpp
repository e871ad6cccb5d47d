// The message content: DATA and BDAT (RFC 3030), the handler's content
// events, and the end of a message (EOM, the reply, the counters).
#include "engine/session.hpp"
#include "engine/session_internal.hpp"

#include "engine/trace.hpp"

namespace esmtp
{

namespace
{

// BDAT SP chunk-size [ SP "LAST" ] (RFC 3030), SP or TAB between the
// words as Postfix takes them. False when the line cannot be framed.
bool parse_bdat(std::string_view arg, std::uint64_t &size, bool &last)
{
    auto word = [&arg]() {
        while (!arg.empty() && (arg.front() == ' ' || arg.front() == '\t'))
            arg.remove_prefix(1);
        std::size_t n = arg.find_first_of(" \t");
        std::string_view w = arg.substr(0, n);
        arg.remove_prefix(w.size());
        return w;
    };
    std::string_view digits = word();
    std::string_view marker = word();
    std::string_view extra = word();
    // 18 digits always fit in 64 bits; nobody sends a bigger chunk
    if (!all_digits(digits) || digits.size() > 18 || !extra.empty())
        return false;
    if (!marker.empty() && !(marker.size() == 4 && istarts_with(marker, "LAST")))
        return false;
    size = 0;
    for (char c : digits)
        size = size * 10 + static_cast<std::uint64_t>(c - '0');
    last = !marker.empty();
    return true;
}

} // namespace

void Session::do_data(std::string_view arg)
{
    if (!arg.empty()) {
        reply(501, "5.5.4", "Syntax: DATA");
        return;
    }
    trace_ = esmtp::trace_headers(*this, std::time(nullptr));
    Reply r = ask(Event::data, [&] { return handler_->data(*this); });
    if (!r.empty() && r.code != 354) {
        data_refused(r);
        reply(r);
        return;
    }
    handler_failed_ = false;
    transfer_octets_ = 0;
    data_.reset();
    transit({Phase::data, state_.hello, Tx::data}, "DATA");
    reply(r, default_reply(Event::data), false);
}

bool Session::content_wanted()
{
    if (state_.tx == Tx::aborted)
        return false;
    if (handler_failed_ || content_fault()) {
        // Stop storing now (bounded storage); the client is answered after
        // the end of data.
        transit_tx(Tx::aborted, "content refused");
        abort_handler();
        return false;
    }
    return true;
}

void Session::on_header(const HeaderField &field)
{
    if (!content_wanted())
        return;
    if (logs(log_events))
        log(log_events, std::string("event HEADER ").append(field.name));
    guarded_void("HEADER", [&] { handler_->header(*this, field); });
}

void Session::on_eoh(std::string_view raw)
{
    if (!content_wanted())
        return;
    log(log_events, "event EOH");
    guarded_void("EOH", [&] { handler_->eoh(*this, raw); });
}

void Session::on_body(std::string_view chunk)
{
    if (!content_wanted())
        return;
    if (logs(log_events))
        log(log_events, "event BODY " + std::to_string(chunk.size()) + " octets");
    guarded_void("BODY", [&] { handler_->body(*this, chunk); });
}

void Session::finish_data()
{
    transit_phase(Phase::command, "end of data");
    complete_message();
}

void Session::do_bdat(std::string_view arg, const VerbRule &rule)
{
    std::uint64_t size = 0;
    bool last = false;
    if (!parse_bdat(arg, size, last)) {
        // Without a size the chunk's end is unknown: its octets would be
        // read as commands. Close, as Postfix does.
        log(log_session, "unparsable BDAT command");
        reply(Reply(521, "Error: BDAT command syntax; closing", "5.5.4", true));
        return;
    }
    bdat_chunk_ = bdat_remaining_ = size;
    bdat_last_ = last;
    transfer_octets_ = 0;
    // The chunk's octets follow the command whatever we answer: a refused
    // BDAT still swallows them, or they would be read as commands.
    Reply refusal;
    if (Canned c = check(rule); c.code) {
        refusal = Reply(c.code, std::string(c.text), std::string(c.enhanced));
    } else if (state_.tx != Tx::bdat) {
        trace_ = esmtp::trace_headers(*this, std::time(nullptr));
        Reply r = ask(Event::data, [&] { return handler_->data(*this); });
        if (!r.empty() && r.code != 354) {
            data_refused(r);
            refusal = r;
        } else {
            handler_failed_ = false;
            data_.reset();
            transit_tx(Tx::bdat, "first BDAT");
        }
    }
    bdat_refusal_ = std::move(refusal);
    transit_phase(Phase::bdat, "BDAT chunk");
    if (bdat_remaining_ == 0)
        finish_chunk();
}

void Session::finish_chunk()
{
    transit_phase(Phase::command, "end of chunk");
    if (!bdat_refusal_.empty()) {
        Reply r = std::move(bdat_refusal_);
        bdat_refusal_ = Reply{};
        reply(r);
        return;
    }
    content_wanted(); // aborts the handler's copy if a limit was crossed
    if (state_.tx == Tx::aborted) {
        // RFC 3030 lets the server fail the transaction at any chunk.
        auto fault = content_fault();
        Reply r = fault ? fault->reply : internal_error_reply();
        log(log_session, "rejected during BDAT: " + std::to_string(r.code) + " " + r.lines.front());
        if (obs_) {
            content_refused();
            obs_->message(r.code, static_cast<unsigned>(env_.recipients.size()), data_.size());
        }
        reset_transaction("BDAT refused");
        reply(r);
        return;
    }
    if (!bdat_last_) {
        reply(250, "2.0.0", std::to_string(bdat_chunk_) + " octets received");
        return;
    }
    data_.finish_raw(*this);
    complete_message();
}

// What the message broke, in the order the client is told: the reply and
// the cause for the counters. The one list of content failures.
std::optional<Session::ContentFault> Session::content_fault() const
{
    if (data_.size_exceeded())
        return ContentFault{Reply(552, "Message size exceeds fixed limit", "5.3.4"), RejectCause::limits,
                            "message size exceeds the limit"};
    if (data_.bare_newline() && !cfg_.normalize_bare_newlines)
        return ContentFault{Reply(550, "Message contains bare <CR> or <LF>; use <CR><LF> line endings", "5.5.2"),
                            RejectCause::bare_newline, "bare <LF> or <CR> in message"};
    if (data_.line_too_long())
        return ContentFault{Reply(500, "Message line too long", "5.5.2"), RejectCause::limits, "message line too long"};
    return std::nullopt;
}

// The handler could not take the message (a full disk, a backend down): a
// 4xx at DATA or at its end is the operator's business ("Recent errors").
void Session::delivery_failed(std::string_view when, const Reply &r)
{
    report(RejectCause::delivery,
           std::string(when) + ": " + std::to_string(r.code) + " " + (r.lines.empty() ? "" : r.lines.front()));
}

// The handler refused DATA: the transaction's message is refused.
void Session::data_refused(const Reply &r)
{
    if (!obs_ || r.code < 400)
        return;
    if (r.code < 500)
        delivery_failed("DATA", r);
    obs_->message(r.code, static_cast<unsigned>(env_.recipients.size()), 0);
}

// A message refused for what it contained: the cause for the counters.
void Session::content_refused()
{
    if (auto fault = content_fault())
        report(fault->cause, fault->what);
}

void Session::complete_message()
{
    content_wanted(); // aborts if a limit was crossed in the last chunk
    Reply r;
    if (auto fault = content_fault()) {
        r = fault->reply;
    } else if (state_.tx == Tx::aborted) {
        r = internal_error_reply();
    } else {
        r = ask(Event::eom, [&] { return handler_->eom(*this); });
        if (r.empty())
            r = Reply(250, "Ok: queued as " + queue_id_, "2.0.0");
        if (r.code >= 400 && r.code < 500)
            delivery_failed("end of data", r);
        if (!r.positive()) {
            // The abort() rule: a transaction that mail() accepted ends in
            // a 2xx from eom() or in one abort(); after a refused or failed
            // eom() the handler may have stored part of it.
            transit_tx(Tx::aborted, "EOM refused");
            abort_handler();
        }
    }
    if (r.positive()) {
        ++accepted_;
        junk_ = 0; // a client that delivers is no junk client (Postfix)
    }
    if (obs_) {
        if (!r.positive())
            content_refused();
        obs_->message(r.code, static_cast<unsigned>(env_.recipients.size()), data_.size());
    }
    if (logs(log_session)) {
        std::string summary = "from=<" + env_.sender.mailbox + "> to=";
        for (std::size_t i = 0; i < env_.recipients.size(); ++i) {
            if (i)
                summary += ',';
            summary += '<' + env_.recipients[i].path.mailbox + '>';
        }
        summary += " size=" + std::to_string(data_.size());
        if (conn_.tls)
            summary += " tls=" + conn_.tls_info.protocol + " cipher=" + conn_.tls_info.cipher;
        if (!auth_user_.empty())
            summary += " user=" + auth_user_;
        std::string first = r.lines.empty() ? std::string() : r.lines.front();
        log(log_session,
            (r.positive() ? "accepted " : "rejected ") + summary + ": " + std::to_string(r.code) + " " + first);
    }
    // The transaction is over either way (RFC 5321 4.1.1.4).
    end_transaction("end of message");
    reply(r);
}

} // namespace esmtp
