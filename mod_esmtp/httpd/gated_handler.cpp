#include "httpd/gated_handler.hpp"

#include "httpd/worker_hold.hpp"

#include <string>

namespace esmtp
{

namespace
{

constexpr const char *kBusy = "Server busy, try again later";

class GatedHandler final : public Handler
{
  public:
    explicit GatedHandler(std::unique_ptr<Handler> inner) : inner_(std::move(inner)) {}

    Reply connect(SessionView &s) override
    {
        WorkerHold h = WorkerHold::try_take();
        if (!h) {
            refused(s, "CONNECT");
            return Reply(421, std::string(s.hostname()) + " " + kBusy, "4.3.2", true);
        }
        return inner_->connect(s);
    }
    Reply helo(SessionView &s, std::string_view domain) override
    {
        return ask(s, "HELO", [&] { return inner_->helo(s, domain); });
    }
    Reply ehlo(SessionView &s, std::string_view domain, std::vector<std::string> &ext) override
    {
        return ask(s, "EHLO", [&] { return inner_->ehlo(s, domain, ext); });
    }
    Reply mail(SessionView &s, const Path &from, const Params &params) override
    {
        content_refused_ = false; // a new transaction
        return ask(s, "MAIL", [&] { return inner_->mail(s, from, params); });
    }
    Reply rcpt(SessionView &s, const Path &to, const Params &params) override
    {
        return ask(s, "RCPT", [&] { return inner_->rcpt(s, to, params); });
    }
    Reply data(SessionView &s) override
    {
        return ask(s, "DATA", [&] { return inner_->data(s); });
    }
    void header(SessionView &s, const HeaderField &f) override
    {
        content(s, "HEADER", [&] { inner_->header(s, f); });
    }
    void eoh(SessionView &s, std::string_view raw) override
    {
        content(s, "EOH", [&] { inner_->eoh(s, raw); });
    }
    void body(SessionView &s, std::string_view chunk) override
    {
        content(s, "BODY", [&] { inner_->body(s, chunk); });
    }
    Reply eom(SessionView &s) override
    {
        if (content_refused_) {
            // the handler missed part of the message: it never sees its end
            content_refused_ = false;
            return Reply(451, kBusy, "4.3.2");
        }
        return ask(s, "EOM", [&] { return inner_->eom(s); });
    }
    void abort(SessionView &s) override
    {
        content_refused_ = false;
        WorkerHold h = WorkerHold::take();
        inner_->abort(s);
    }
    Reply rset(SessionView &s) override
    {
        WorkerHold h = WorkerHold::take();
        return inner_->rset(s);
    }
    Reply noop(SessionView &s) override
    {
        return ask(s, "NOOP", [&] { return inner_->noop(s); });
    }
    Reply vrfy(SessionView &s, std::string_view arg) override
    {
        return ask(s, "VRFY", [&] { return inner_->vrfy(s, arg); });
    }
    Reply expn(SessionView &s, std::string_view arg) override
    {
        return ask(s, "EXPN", [&] { return inner_->expn(s, arg); });
    }
    Reply help(SessionView &s, std::string_view arg) override
    {
        return ask(s, "HELP", [&] { return inner_->help(s, arg); });
    }
    Reply quit(SessionView &s) override
    {
        WorkerHold h = WorkerHold::take();
        return inner_->quit(s);
    }
    Reply command(SessionView &s, std::string_view name, const std::vector<std::string> &captures) override
    {
        return ask(s, "command", [&] { return inner_->command(s, name, captures); });
    }
    Reply unknown(SessionView &s, std::string_view line) override
    {
        return ask(s, "UNKNOWN", [&] { return inner_->unknown(s, line); });
    }
    void disconnect(SessionView &s) override
    {
        WorkerHold h = WorkerHold::take();
        inner_->disconnect(s);
    }

  private:
    template <class Fn> Reply ask(SessionView &s, const char *event, Fn &&fn)
    {
        WorkerHold h = WorkerHold::try_take();
        if (!h) {
            refused(s, event);
            return Reply(451, kBusy, "4.3.2");
        }
        return fn();
    }
    template <class Fn> void content(SessionView &s, const char *event, Fn &&fn)
    {
        if (content_refused_)
            return;
        WorkerHold h = WorkerHold::try_take();
        if (!h) {
            refused(s, event);
            content_refused_ = true;
            return;
        }
        fn();
    }
    static void refused(SessionView &s, const char *event)
    {
        s.log(log_session, std::string(event) + " refused: ESMTPMaxWorkers reached (server busy)");
    }

    std::unique_ptr<Handler> inner_;
    bool content_refused_ = false; // part of this message never reached the handler
};

} // namespace

std::unique_ptr<Handler> gate_handler(std::unique_ptr<Handler> inner)
{
    return std::make_unique<GatedHandler>(std::move(inner));
}

} // namespace esmtp
