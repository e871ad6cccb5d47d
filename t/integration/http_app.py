"""The web application the http handler's tests post to: checks the
X-ESMTP-Signature (as the README's receiver does), stores what it gets, and
answers by the first recipient's local part:

  s406, s413, s500, ...  that HTTP status (text/plain "application says NNN")
  redirect               302 to /elsewhere (which records a hit if followed)
  hang                   no answer until released (or 30 s)
  close                  reads 1000 octets of the body, then closes
  big                    streams the body into a SHA-256, keeps no copy
  anything else          200 when the signature holds, else 401

At /rcpt (the recipient check): 404 for local parts starting with
"unknown", 503 for "broken", else 204.

Runs on a loopback port, over TLS with a given certificate, or on a Unix
socket."""

import hashlib
import hmac
import http.server
import os
import socket
import socketserver
import ssl
import threading
import time


def verify(secret, timestamp, body, signature, tolerance=300):
    """The check every receiver makes: HMAC-SHA256 over "TIMESTAMP.BODY"
    with the shared secret, compared in constant time, and a fresh
    timestamp (a replayed post is refused)."""
    if not signature.startswith("sha256=") or not timestamp.isdigit():
        return False
    if abs(time.time() - int(timestamp)) > tolerance:
        return False
    mac = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(mac, signature[len("sha256="):])


class App:
    def __init__(self, secret):
        self.secret = secret
        self.lock = threading.Lock()
        self.posts = []      # dicts: path, headers (list of pairs), body, sig_ok
        self.rcpt_checks = []
        self.hits = []       # every path requested
        self.release = threading.Event()
        self.servers = []

    def recipients(self, headers):
        return [v for k, v in headers if k.lower() == "x-esmtp-recipient"]

    def find(self, rcpt):
        with self.lock:
            return [p for p in self.posts if rcpt in self.recipients(p["headers"])]

    def handler_class(app):
        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def answer(self, status, text=b"", headers=()):
                self.send_response(status)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(text)))
                for k, v in headers:
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(text)

            def do_GET(self):
                with app.lock:
                    app.hits.append(self.path)
                if self.path.startswith("/rcpt"):
                    rcpt = self.headers.get("X-ESMTP-Recipient", "")
                    sig_ok = verify(app.secret, self.headers.get("X-ESMTP-Timestamp", ""), rcpt.encode(),
                                    self.headers.get("X-ESMTP-Signature", ""))
                    with app.lock:
                        app.rcpt_checks.append((rcpt, sig_ok))
                    local = rcpt.split("@")[0]
                    if not sig_ok:
                        return self.answer(401)
                    if local.startswith("unknown"):
                        return self.answer(404, b"no such user")
                    if local.startswith("broken"):
                        return self.answer(503)
                    return self.answer(204)
                self.answer(404)

            def do_POST(self):
                with app.lock:
                    app.hits.append(self.path)
                headers = list(self.headers.items())
                rcpts = app.recipients(headers)
                local = rcpts[0].split("@")[0] if rcpts else ""
                length = int(self.headers.get("Content-Length", "0"))
                if local == "close":
                    self.rfile.read(min(length, 1000))
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if local == "hang":
                    app.release.wait(30)
                    self.close_connection = True
                    return
                if local == "big":
                    h = hashlib.sha256()
                    mac = hmac.new(app.secret, self.headers.get("X-ESMTP-Timestamp", "").encode() + b".",
                                   hashlib.sha256)
                    left = length
                    while left:
                        chunk = self.rfile.read(min(left, 1 << 20))
                        if not chunk:
                            break
                        h.update(chunk)
                        mac.update(chunk)
                        left -= len(chunk)
                    sig_ok = hmac.compare_digest("sha256=" + mac.hexdigest(),
                                                 self.headers.get("X-ESMTP-Signature", ""))
                    with app.lock:
                        app.posts.append({"path": self.path, "headers": headers, "body": None,
                                          "size": length - left, "sha256": h.hexdigest(), "sig_ok": sig_ok})
                    return self.answer(200 if sig_ok else 401)
                body = self.rfile.read(length)
                sig_ok = verify(app.secret, self.headers.get("X-ESMTP-Timestamp", ""), body,
                                self.headers.get("X-ESMTP-Signature", ""))
                with app.lock:
                    app.posts.append({"path": self.path, "headers": headers, "body": body, "sig_ok": sig_ok})
                if local == "redirect":
                    return self.answer(302, b"moved", [("Location", "/elsewhere")])
                if local.startswith("s") and local[1:].isdigit():
                    status = int(local[1:])
                    return self.answer(status, b"application says %d\r\nsecond line\r\n" % status)
                if not sig_ok:
                    return self.answer(401, b"bad signature")
                self.answer(200, b"stored")

        return Handler

    def serve_tcp(self, port, context=None):
        server = http.server.ThreadingHTTPServer(("127.0.0.1", port), self.handler_class())
        server.daemon_threads = True
        if context is not None:
            server.socket = context.wrap_socket(server.socket, server_side=True)
        return self._start(server)

    def serve_unix(self, path):
        class UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
            daemon_threads = True

        handler = self.handler_class()

        class UnixHandler(handler):
            def address_string(self):
                return "unix"

            def setup(self):
                self.client_address = ("unix", 0)
                super().setup()

        server = UnixHTTPServer(path, UnixHandler)
        os.chmod(path, 0o777)  # httpd's children may run as nobody
        return self._start(server)

    def _start(self, server):
        t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        t.start()
        self.servers.append(server)
        return server

    def stop(self):
        self.release.set()
        for s in self.servers:
            s.shutdown()
            s.server_close()


def tls_context(cert, key):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return ctx
