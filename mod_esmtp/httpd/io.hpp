// Brigade I/O between httpd's connection filters and the session: input is
// fed to the engine as it arrives, replies go down the output filters.
#pragma once

#include "httpd/mod_esmtp.hpp"

#include <apr_buckets.h>
#include <string>

namespace esmtp
{

class Session;

enum class ReadResult { fed, again, eof, error, timeout };

// The brigades are reused for the connection's whole life (a brigade per
// line would grow c->pool without bound).
class Io
{
  public:
    explicit Io(conn_rec *c);

    // Pass `data` (cleared) down the output filters; with `flush`, to the
    // client now. False when the connection is gone (c->aborted is set).
    bool send(std::string &data, bool flush);

    // Read what the filters have and feed it to the session.
    ReadResult read(Session &session, apr_read_type_e block, apr_status_t &rv);

  private:
    conn_rec *c_;
    apr_bucket_brigade *in_;
    apr_bucket_brigade *out_;
};

// Nothing more from the client is waiting to be read.
bool input_drained(conn_rec *c);

// Send a refusal on a connection that has no session.
void send_refusal(conn_rec *c, std::string text);

} // namespace esmtp
