#!/usr/bin/env python3
"""The minimal web application of `bench/run --modes http`: receives what
mod_esmtp's http handler posts, checks the HMAC-SHA256 signature over
"TIMESTAMP.BODY" (as any real receiver must), drops the message and answers
200; GET /count gives the number of messages accepted so far.

  http_receiver.py --port PORT --secret FILE

Threaded, HTTP/1.1 keep-alive (the handler keeps one connection per SMTP
session)."""

import argparse
import hashlib
import hmac
import http.server
import socket
import sys
import threading


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--secret", required=True)
    args = ap.parse_args()
    with open(args.secret, "rb") as f:
        secret = f.read().strip()
    lock = threading.Lock()
    count = [0]

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def setup(self):
            super().setup()
            # the status line and headers, then the body, are two writes: with
            # Nagle each reply on a kept-alive connection waits for the
            # client's delayed ACK (40 ms)
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def answer(self, status, text):
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(text)))
            self.end_headers()
            self.wfile.write(text)

        def do_GET(self):
            with lock:
                n = count[0]
            self.answer(200, b"%d\n" % n)

        def do_POST(self):
            length = int(self.headers.get("Content-Length", "0"))
            ts = self.headers.get("X-ESMTP-Timestamp", "")
            mac = hmac.new(secret, ts.encode() + b".", hashlib.sha256)
            left = length
            while left:
                chunk = self.rfile.read(min(left, 1 << 16))
                if not chunk:
                    return
                mac.update(chunk)
                left -= len(chunk)
            if not hmac.compare_digest("sha256=" + mac.hexdigest(), self.headers.get("X-ESMTP-Signature", "")):
                return self.answer(403, b"bad signature\n")
            with lock:
                count[0] += 1
            self.answer(200, b"ok\n")

    class Server(http.server.ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 256  # listen()'s backlog: the default 5 drops connections under load

    server = Server(("127.0.0.1", args.port), Handler)
    sys.stdout.write("listening %d\n" % args.port)
    sys.stdout.flush()
    server.serve_forever()


if __name__ == "__main__":
    main()
