// The one wrapper every C entry point of the module goes through: hooks,
// pool cleanups, directive handlers, the child_stopping hook. httpd is C: an
// exception that reached it would terminate the child, so every entry point
// catches everything here, logs it at error level and returns a fallback.
#pragma once

#include "httpd/mod_esmtp.hpp"

#include <exception>
#include <new>

namespace esmtp
{

// Where a failure is reported: the connection's log context when there is
// one, else the server's (or the start-up log when both are null).
struct EntryPoint {
    const char *name;
    const conn_rec *c = nullptr;
    const server_rec *s = nullptr;
};

void log_entry_failure(const EntryPoint &where, const char *what) noexcept;

// Runs `body()`; when it throws, logs and returns `on_failure(what)`, which
// must not throw (it is typically a constant or an apr_pstrcat).
template <class Body, class OnFailure>
auto guarded(const EntryPoint &where, Body &&body, OnFailure &&on_failure) noexcept -> decltype(body())
{
    try {
        return body();
    } catch (const std::bad_alloc &) {
        log_entry_failure(where, "out of memory");
        return on_failure("out of memory");
    } catch (const std::exception &e) {
        log_entry_failure(where, e.what());
        return on_failure(e.what());
    } catch (...) {
        log_entry_failure(where, "unknown exception");
        return on_failure("unknown exception");
    }
}

} // namespace esmtp
