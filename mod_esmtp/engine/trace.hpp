// The trace header fields prepended on receipt (RFC 5321 4.4).
#pragma once

#include <esmtp/handler.hpp>

#include <ctime>
#include <string>

namespace esmtp
{

// RFC 5322 date-time in local time: "Sat, 21 Nov 2026 23:45:55 +0000",
// with English day and month names whatever the process locale.
std::string rfc5322_date(std::time_t t);

// "Return-Path: <sender>\r\nReceived: from ...\r\n". The for clause is
// given when there is exactly one recipient.
std::string trace_headers(const SessionView &s, std::time_t now);

} // namespace esmtp
