// A SessionView that passes every call on to the session's own: a handler
// that wraps another (the milter handler) shows it what it changed by
// overriding only that.
#pragma once

#include <esmtp/handler.hpp>

namespace esmtp
{

class ForwardingView : public SessionView
{
  public:
    SessionView *s = nullptr; // the view passed on to; set before use

    std::string_view client_address() const override { return s->client_address(); }
    unsigned client_port() const override { return s->client_port(); }
    std::string_view remote_host() const override { return s->remote_host(); }
    std::string_view local_address() const override { return s->local_address(); }
    unsigned local_port() const override { return s->local_port(); }
    std::string_view hostname() const override { return s->hostname(); }
    std::string_view helo_name() const override { return s->helo_name(); }
    bool esmtp() const override { return s->esmtp(); }
    std::string_view protocol() const override { return s->protocol(); }
    const Envelope &envelope() const override { return s->envelope(); }
    std::string_view queue_id() const override { return s->queue_id(); }
    std::string_view trace_headers() const override { return s->trace_headers(); }
    std::uint64_t message_size() const override { return s->message_size(); }
    std::uint64_t max_message_size() const override { return s->max_message_size(); }
    void log(int level, std::string_view text) override { s->log(level, text); }
    void error(std::string_view text) override { s->error(text); }
    std::string_view quarantine_reason() const override { return s->quarantine_reason(); }
    const TlsInfo &tls() const override { return s->tls(); }
    std::string_view auth_user() const override { return s->auth_user(); }

  protected:
    ~ForwardingView() = default;
};

} // namespace esmtp
