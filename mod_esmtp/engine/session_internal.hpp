// Shared by the files of the Session class (session*.cpp), which is split
// along the verb table: small parsers and the templates that ask the
// handler. Not for the rest of the engine.
#pragma once

#include "engine/session.hpp"

#include <cctype>
#include <exception>
#include <string>
#include <string_view>

namespace esmtp
{

inline bool istarts_with(std::string_view s, std::string_view prefix)
{
    if (s.size() < prefix.size())
        return false;
    for (std::size_t i = 0; i < prefix.size(); ++i)
        if (std::toupper(static_cast<unsigned char>(s[i])) != prefix[i])
            return false;
    return true;
}

inline bool all_digits(std::string_view s)
{
    if (s.empty())
        return false;
    for (char c : s)
        if (c < '0' || c > '9')
            return false;
    return true;
}

inline std::string tls_summary(const TlsInfo &t)
{
    std::string s =
        t.protocol + " cipher=" + t.cipher + " bits=" + std::to_string(t.bits) + "/" + std::to_string(t.alg_bits);
    if (!t.sni.empty())
        s += " sni=" + t.sni;
    if (!t.client_verify.empty() && t.client_verify != "NONE")
        s += " client_verify=" + t.client_verify + " client_dn=\"" + t.client_subject + "\"";
    return s;
}

// ---- asking the handler

template <class F> Reply Session::ask(Event ev, F &&f)
{
    const char *name = event_name(ev);
    if (logs(log_events))
        log(log_events, std::string("event ") + name);
    handler_threw_ = false;
    Reply r;
    try {
        r = f();
    } catch (const std::exception &e) {
        log(log_session, std::string("handler failed in ") + name + ": " + e.what());
        handler_threw_ = true;
        report(RejectCause::handler_error, std::string("handler failed in ") + name);
        return internal_error_reply();
    } catch (...) {
        log(log_session, std::string("handler failed in ") + name);
        handler_threw_ = true;
        report(RejectCause::handler_error, std::string("handler failed in ") + name);
        return internal_error_reply();
    }
    if (r.empty())
        return r;
    std::string problem = reply_problem(ev, r);
    if (problem.empty())
        return r;
    Reply instead = replacement_reply(ev, r);
    error("handler reply \"" + std::to_string(r.code) + (r.enhanced.empty() ? "" : " " + r.enhanced) + "\" to " + name +
          " not sent: " + problem + "; sent " +
          (instead.empty() ? std::string("the module's default")
                           : std::to_string(instead.code) + " " + instead.enhanced) +
          " instead");
    return instead;
}

template <class F> void Session::guarded_void(const char *event, F &&f)
{
    try {
        f();
    } catch (const std::exception &e) {
        handler_failed_ = true;
        log(log_session, std::string("handler failed in ") + event + ": " + e.what());
        report(RejectCause::handler_error, std::string("handler failed in ") + event);
    } catch (...) {
        handler_failed_ = true;
        log(log_session, std::string("handler failed in ") + event);
        report(RejectCause::handler_error, std::string("handler failed in ") + event);
    }
}

} // namespace esmtp
