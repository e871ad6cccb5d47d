"""The http handler (`ESMTPHandler http URL [options]`) in a real httpd,
against a small Python web application (http_app.py) on loopback that
checks the HMAC signature and stores what it gets: byte-exact delivery (what
the maildir handler stores), the envelope headers, every reply mapping, a
hanging application (451 at the timeout), one that closes mid-body, https
with a private CA (a wrong CA is a 451), a Unix socket, the recipient check,
the same httpd proxying to the application (mod_proxy), and a 100 MB message
in bounded memory."""

import os
import re
import shutil
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

from harness import MODULESDIR, TOP_SRCDIR, Httpd, RawClient, ServerTestCase, free_port, q, queue_id_of, split_delivered, wait_for
from http_app import App, tls_context
from test_bulkhead import SilentBackend
from test_extensions import RssSampler
from test_starttls import make_ca
from test_status import STATUS_LINES, fetch, parse_auto

SECRET = b"0123456789abcdef-test-secret"

MESSAGE = (b"From: Alice <alice@client.example>\r\n"
           b"To: Bob <bob@app.test>\r\n"
           b"Subject: http test\r\n"
           b"\r\n"
           b"Hello Bob,\r\n"
           b".a line that starts with a dot\r\n"
           b"..two dots\r\n"
           b"8bit: \xc3\xa9t\xc3\xa9 \xff\xfe\r\n"
           b"-- \r\n"
           b"Alice\r\n")


def header(post, name):
    return [v for k, v in post["headers"] if k.lower() == name.lower()]


class _WithPeers(ServerTestCase):
    """A server test whose configure() starts peers (applications) that
    stop_peers() stops, also when httpd does not start."""

    @classmethod
    def stop_peers(cls):
        raise NotImplementedError

    @classmethod
    def setUpClass(cls):
        try:
            super().setUpClass()
        except BaseException:
            cls.stop_peers()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            cls.stop_peers()


class HttpHandlerTest(_WithPeers):
    # the failures provoked on purpose: each is an error-log line for the administrator
    allowed_log = (r"\[esmtp:error\].*esmtp: http: POST \S+ failed after",
                   r"\[esmtp:error\].*esmtp: http: recipient check \S+ failed after")
    httpd_options = {"main_extra": [
        "LoadModule proxy_module %s" % q(os.path.join(MODULESDIR, "mod_proxy.so")),
        "LoadModule proxy_http_module %s" % q(os.path.join(MODULESDIR, "mod_proxy_http.so")),
    ]}

    @classmethod
    def configure(cls, httpd):
        conf = os.path.join(httpd.root, "conf")
        secret_file = os.path.join(conf, "http-secret")
        with open(secret_file, "wb") as f:
            f.write(SECRET + b"\n")
        os.chmod(secret_file, 0o600)  # read by the parent only
        cls.app = App(SECRET)
        cls.app_port = free_port()
        cls.app.serve_tcp(cls.app_port)
        ca, cert, key = make_ca(conf, "good")
        wrong_ca, _, _ = make_ca(conf, "wrong")
        cls.tls_port = free_port()
        cls.app.serve_tcp(cls.tls_port, tls_context(cert, key))
        cls.sock = os.path.join(httpd.root, "run", "app.sock")
        cls.app.serve_unix(cls.sock)
        os.chmod(os.path.join(httpd.root, "run"), 0o755)
        for path in (ca, wrong_ca):
            os.chmod(path, 0o644)

        def add(handler, **kw):
            return httpd.add_smtp(handler, accept_domains=["app.test"], **kw)

        base = "http://127.0.0.1:%d" % cls.app_port
        sec = "secret=" + secret_file
        cls.vh = add(["http", base + "/inbound", sec, "timeout=3"], log_file="http.log", log_level=1,
                     max_size=200 * 1000 * 1000)
        cls.maildir = add("maildir")
        cls.reject_vh = add(["http", base + "/inbound", sec, "reject=406,422"])
        cls.tls_vh = add(["http", "https://127.0.0.1:%d/tls" % cls.tls_port, sec, "ca=" + ca])
        cls.wrong_ca_vh = add(["http", "https://127.0.0.1:%d/wrongca" % cls.tls_port, sec,
                                "ca=" + wrong_ca])
        cls.unix_vh = add(["http", "http://localhost/unix", sec, "unix=" + cls.sock])
        cls.rcpt_vh = add(["http", base + "/inbound", sec, "rcpt=" + base + "/rcpt"])
        # mail in, HTTP out, one server: the SMTP vhost posts to an HTTP
        # vhost of the same httpd, which proxies to the application
        cls.proxy_port = free_port()
        httpd.main_extra += [
            "Listen 127.0.0.1:%d http" % cls.proxy_port,
            "<VirtualHost 127.0.0.1:%d>" % cls.proxy_port,
            "    ServerName web.test",
            "    ProxyPass /mail/ %s/" % base,
            "</VirtualHost>",
        ]
        cls.proxy_vh = add(["http", "http://127.0.0.1:%d/mail/viaproxy" % cls.proxy_port, sec])
        # AUTH: the user the client logged in as reaches the application
        pwfile = os.path.join(conf, "users.htpasswd")
        subprocess.run([shutil.which("htpasswd") or "htpasswd", "-bcB", pwfile, "alice", "Alice-Pw-7f3kQ"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
        os.chmod(pwfile, 0o644)
        httpd.main_extra += [
            "LoadModule %s_module %s" % (m, q(os.path.join(MODULESDIR, "mod_%s.so" % m)))
            for m in ("authn_core", "authn_file")] + [
            "<AuthnProviderAlias file smtp-file>",
            "    AuthUserFile %s" % q(pwfile),
            "</AuthnProviderAlias>"]
        cls.auth_vh = add(["http", base + "/auth", sec], extra=[
            "ESMTPAuth PLAIN", "ESMTPAuthProvider smtp-file", "ESMTPAuthRequireTLS Off"])

    @classmethod
    def stop_peers(cls):
        if hasattr(cls, "app"):
            cls.app.stop()

    def send(self, vh, rcpts, message=MESSAGE, sender="alice@client.example"):
        with smtplib.SMTP("127.0.0.1", vh.port, local_hostname="client.example", timeout=60) as s:
            s.ehlo()
            code, text = s.mail(sender, ["BODY=8BITMIME"])
            self.assertEqual(code, 250, text)
            for r in rcpts:
                code, text = s.rcpt(r)
                self.assertEqual(code, 250, (r, text))
            return s.data(message)

    def delivered(self, rcpt, count=1):
        found = wait_for(lambda: len(self.app.find(rcpt)) >= count and self.app.find(rcpt), timeout=10)
        self.assertEqual(len(found or []), count, "posts for %s" % rcpt)
        return found[-1]

    # --- delivery

    def test_message_and_headers(self):
        code, text = self.send(self.vh, ["bob@app.test", "carol@app.test"])
        self.assertEqual(code, 250, text)
        qid = queue_id_of(text.decode())
        post = self.delivered("bob@app.test")
        self.assertTrue(post["sig_ok"], "the application could verify the signature")
        self.assertEqual(post["path"], "/inbound")
        self.assertEqual(header(post, "Content-Type"), ["message/rfc822"])
        self.assertEqual(header(post, "X-ESMTP-Recipient"), ["bob@app.test", "carol@app.test"])
        self.assertEqual(header(post, "X-ESMTP-Sender"), ["alice@client.example"])
        self.assertEqual(header(post, "X-ESMTP-Queue-Id"), [qid])
        self.assertEqual(header(post, "X-ESMTP-Client-Address"), ["127.0.0.1"])
        self.assertEqual(header(post, "X-ESMTP-Helo"), ["client.example"])
        # over STARTTLS (ESMTP_TEST_OVER_STARTTLS=1) the TLS facts come too
        protocol = header(post, "X-ESMTP-Protocol")
        self.assertIn(protocol, (["ESMTP"], ["ESMTPS"]))
        tls = header(post, "X-ESMTP-TLS-Protocol") + header(post, "X-ESMTP-TLS-Cipher")
        if protocol == ["ESMTPS"]:
            self.assertEqual(len(tls), 2, post["headers"])
            self.assertTrue(tls[0].startswith("TLSv1."), tls)
        else:
            self.assertEqual(tls, [])
        self.assertEqual(header(post, "X-ESMTP-Auth-User"), [])
        return_path, received, body = split_delivered(post["body"])
        self.assertEqual(return_path, b"Return-Path: <alice@client.example>\r\n")
        self.assertEqual(body, MESSAGE)
        # unfolded as RFC 5322 2.2.3 says: the CRLF goes, the blank stays
        raw = post["body"].split(b"\r\nReceived: ", 1)[1].split(b"\r\n\r\n")[0]
        raw = re.split(rb"\r\n(?![ \t])", raw)[0]
        self.assertEqual(header(post, "X-ESMTP-Received"), [raw.replace(b"\r\n", b"").decode()])
        self.assertIn(qid, received)
        # the transaction log: the URL's status and time
        line = wait_for(lambda: [l for l in self.vh.log_lines() if "http: POST" in l and qid in l], timeout=5)
        self.assertTrue(line, self.vh.log_lines()[-5:])
        self.assertRegex(line[0], r"http: POST http://127\.0\.0\.1:\d+/inbound: 200 in \d+\.\d{3} s")

    def test_same_bytes_as_maildir(self):
        code, text = self.send(self.maildir, ["same@app.test"])
        self.assertEqual(code, 250, text)
        files = wait_for(lambda: self.maildir.maildir_files(), timeout=5)
        with open(files[-1], "rb") as f:
            stored = f.read()
        code, text = self.send(self.vh, ["same@app.test"])
        self.assertEqual(code, 250, text)
        posted = self.delivered("same@app.test")["body"]

        # The two differ only where the two transactions differ: queue id,
        # the receiving server's name and the time in Received:.
        def normalize(content, vh, qid):
            return (content.replace(qid.encode(), b"QID").replace(vh.server_name.encode(), b"HOST")
                    .replace(b"%d" % vh.port, b"PORT"))
        m_qid = re.search(rb"id ([0-9A-Za-z]+)", stored).group(1).decode()
        a = re.sub(rb";[^\r]*\r\n", b";DATE\r\n", normalize(stored, self.maildir, m_qid), count=1)
        b = re.sub(rb";[^\r]*\r\n", b";DATE\r\n", normalize(posted, self.vh, queue_id_of(text.decode())), count=1)
        self.assertEqual(a, b)
        self.assertTrue(b.startswith(b"Return-Path: <alice@client.example>\r\nReceived: "), b[:100])

    def test_quoted_sender_that_looks_like_a_header(self):
        sender = '"Received: forged"@client.example'
        code, text = self.send(self.vh, ["quoted@app.test"], sender=sender)
        self.assertEqual(code, 250, text)
        post = self.delivered("quoted@app.test")
        self.assertEqual(header(post, "X-ESMTP-Sender"), [sender])
        self.assertTrue(header(post, "X-ESMTP-Received")[0].startswith("from client.example"),
                        header(post, "X-ESMTP-Received"))

    def test_null_sender_and_several_messages(self):
        with smtplib.SMTP("127.0.0.1", self.vh.port, timeout=30) as s:
            s.sendmail("", ["bounce@app.test"], b"Subject: 1\r\n\r\none\r\n")
            s.sendmail("alice@client.example", ["second@app.test"], b"Subject: 2\r\n\r\ntwo\r\n")
        self.assertEqual(header(self.delivered("bounce@app.test"), "X-ESMTP-Sender"), [""])
        self.assertTrue(self.delivered("second@app.test")["body"].endswith(b"\r\n\r\ntwo\r\n"))

    def test_auth_user(self):
        with smtplib.SMTP("127.0.0.1", self.auth_vh.port, local_hostname="client.example", timeout=30) as s:
            s.ehlo()
            s.login("alice", "Alice-Pw-7f3kQ")
            s.sendmail("alice@client.example", ["authed@app.test"], MESSAGE)
        post = self.delivered("authed@app.test")
        self.assertEqual(header(post, "X-ESMTP-Auth-User"), ["alice"])
        self.assertIn(header(post, "X-ESMTP-Protocol")[0], ("ESMTPA", "ESMTPSA"))

    # --- replies

    def test_reject_status_is_550_with_the_application_text(self):
        code, text = self.send(self.vh, ["s406@app.test"])
        self.assertEqual((code, text), (550, b"5.7.1 application says 406"))
        code, text = self.send(self.reject_vh, ["s422@app.test"])
        self.assertEqual((code, text), (550, b"5.7.1 application says 422"))

    def test_413_is_552(self):
        code, text = self.send(self.vh, ["s413@app.test"])
        self.assertEqual(code, 552, text)
        self.assertTrue(text.startswith(b"5.3.4 "), text)

    def test_other_statuses_are_451(self):
        for status in (500, 503, 404, 422, 401):
            code, text = self.send(self.vh, ["s%d@app.test" % status])
            self.assertEqual(code, 451, (status, text))
            self.assertTrue(text.startswith(b"4.3.0 "), text)
            self.assertIn(b"HTTP %d" % status, text)
        for status in (200, 201, 204):
            code, text = self.send(self.vh, ["s%d@app.test" % status])
            self.assertEqual(code, 250, (status, text))

    def test_redirect_is_451_and_not_followed(self):
        code, text = self.send(self.vh, ["redirect@app.test"])
        self.assertEqual(code, 451, text)
        self.assertIn(b"HTTP 302", text)
        self.assertNotIn("/elsewhere", self.app.hits)

    def test_hanging_application_is_451_at_the_timeout(self):
        start = time.monotonic()
        code, text = self.send(self.vh, ["hang@app.test"])
        took = time.monotonic() - start
        self.assertEqual(code, 451, text)
        self.assertTrue(text.startswith(b"4.3.0 "), text)
        self.assertGreaterEqual(took, 2.5)
        self.assertLess(took, 15)
        self.assertTrue(wait_for(lambda: any("timed out" in l for l in self.httpd.new_log_lines()), timeout=5))

    def test_application_closing_mid_body_is_451(self):
        big = b"Subject: cut\r\n\r\n" + (b"z" * 998 + b"\r\n") * 3000  # 3 MB: more than the socket buffers
        code, text = self.send(self.vh, ["close@app.test"], message=big)
        self.assertEqual(code, 451, text)
        self.assertTrue(text.startswith(b"4.3.0 "), text)

    # --- transports

    def test_https_with_a_private_ca(self):
        code, text = self.send(self.tls_vh, ["tls@app.test"])
        self.assertEqual(code, 250, text)
        post = self.delivered("tls@app.test")
        self.assertEqual(post["path"], "/tls")
        self.assertTrue(post["sig_ok"])

    def test_https_with_the_wrong_ca_is_451(self):
        code, text = self.send(self.wrong_ca_vh, ["wrongca@app.test"])
        self.assertEqual(code, 451, text)
        self.assertEqual(self.app.find("wrongca@app.test"), [])
        self.assertNotIn("/wrongca", self.app.hits)
        self.assertTrue(wait_for(lambda: any("certificate" in l for l in self.httpd.new_log_lines()), timeout=5))

    def test_unix_socket(self):
        code, text = self.send(self.unix_vh, ["unix@app.test"])
        self.assertEqual(code, 250, text)
        self.assertEqual(self.delivered("unix@app.test")["path"], "/unix")

    def test_through_mod_proxy_of_the_same_httpd(self):
        code, text = self.send(self.proxy_vh, ["viaproxy@app.test"])
        self.assertEqual(code, 250, text)
        post = self.delivered("viaproxy@app.test")
        self.assertEqual(post["path"], "/viaproxy")
        self.assertTrue(post["sig_ok"])
        self.assertEqual(split_delivered(post["body"])[2], MESSAGE)

    # --- the recipient check

    def test_recipient_check(self):
        with RawClient(self.rcpt_vh.port) as c:
            c.reply()
            c.cmd("EHLO client.example")
            self.assertEqual(c.cmd("MAIL FROM:<alice@client.example>")[0], 250)
            self.assertEqual(c.cmd("RCPT TO:<unknown-user@app.test>"), (550, ["550 5.1.1 No such recipient"]))
            code, lines = c.cmd("RCPT TO:<broken@app.test>")
            self.assertEqual(code, 450, lines)
            self.assertTrue(lines[0].startswith("450 4.3.0 "), lines)
            self.assertEqual(c.cmd("RCPT TO:<known@app.test>")[0], 250)
            self.assertEqual(c.cmd("DATA")[0], 354)
            c.send(MESSAGE + b".\r\n")
            self.assertEqual(c.reply()[0], 250)
            c.cmd("QUIT")
        self.assertEqual(header(self.delivered("known@app.test"), "X-ESMTP-Recipient"), ["known@app.test"])
        with self.app.lock:
            checks = list(self.app.rcpt_checks)
        self.assertIn(("unknown-user@app.test", True), checks)
        self.assertIn(("known@app.test", True), checks)

    # --- size

    def test_100_mb_in_bounded_memory(self):
        line = b"x" * 998 + b"\r\n"
        block = line * 1000  # 1 MB
        sampler = RssSampler(self.httpd.proc.pid)
        sampler.start()
        try:
            with RawClient(self.vh.port, timeout=120) as c:
                c.reply()
                c.cmd("EHLO client.example")
                self.assertEqual(c.cmd("MAIL FROM:<alice@client.example>")[0], 250)
                self.assertEqual(c.cmd("RCPT TO:<big@app.test>")[0], 250)
                self.assertEqual(c.cmd("DATA")[0], 354)
                head = b"Subject: big\r\n\r\n"
                c.send(head)
                for _ in range(100):
                    c.send(block)
                c.send(b".\r\n")
                code, lines = c.reply()
                self.assertEqual(code, 250, lines)
                c.cmd("QUIT")
        finally:
            sampler.stop()
        post = self.delivered("big@app.test")
        self.assertTrue(post["sig_ok"])
        trace_len = post["size"] - len(head) - 100 * len(block)
        self.assertGreater(trace_len, 50)
        self.assertLess(sampler.peak, 10 * 1024, "httpd child grew by %d kB" % sampler.peak)


def readme_block(language):
    """The ```LANGUAGE block of the README's http handler section."""
    with open(os.path.join(TOP_SRCDIR, "README.md"), encoding="utf-8") as f:
        text = f.read()
    start = text.index("\n### `http URL")
    section = text[start:text.index("\n### ", start + 1)]
    m = re.search(r"^```%s\n(.*?)^```" % language, section, re.S | re.M)
    if not m:
        raise AssertionError("no ```%s block in the README's http section" % language)
    return m.group(1)


class ReadmeReceiverTest(_WithPeers):
    """The receivers of the README, as written: the Python one (signature,
    recipient check, storage) and the Node check, each posted to by the
    handler with the right secret (250) and a wrong one (refused: 451)."""
    allowed_log = ()

    @classmethod
    def configure(cls, httpd):
        conf = os.path.join(httpd.root, "conf")
        cls.secret_file = os.path.join(conf, "secret")
        with open(cls.secret_file, "wb") as f:
            f.write(SECRET + b"\n")
        wrong = os.path.join(conf, "wrong-secret")
        with open(wrong, "wb") as f:
            f.write(b"not-the-application-secret\n")
        cls.inbox = os.path.join(httpd.root, "inbox")
        os.makedirs(cls.inbox)
        cls.procs = []
        cls.py_port, cls.node_port = free_port(), free_port()
        receiver = os.path.join(httpd.root, "receiver.py")
        with open(receiver, "w") as f:
            f.write(readme_block("python"))
        env = dict(os.environ, SECRET_FILE=cls.secret_file, INBOX=cls.inbox, PORT=str(cls.py_port))
        cls.procs.append(subprocess.Popen([sys.executable, receiver], env=env, stderr=subprocess.DEVNULL))
        cls.node = shutil.which("node") or shutil.which("nodejs")
        if cls.node:
            js = (readme_block("js").replace("/etc/myapp/esmtp-http.secret", cls.secret_file)
                  .replace("8025", str(cls.node_port)))
            node_file = os.path.join(httpd.root, "receiver.js")
            with open(node_file, "w") as f:
                f.write(js)
            cls.procs.append(subprocess.Popen([cls.node, node_file], stderr=subprocess.DEVNULL))
        py = "http://127.0.0.1:%d/inbound" % cls.py_port
        node = "http://127.0.0.1:%d/inbound" % cls.node_port

        def add(handler):
            return httpd.add_smtp(handler, accept_domains=["example.org"])
        cls.py_vh = add(["http", py, "secret=" + cls.secret_file, "rcpt=" + py + "/rcpt"])
        cls.py_wrong_vh = add(["http", py, "secret=" + wrong])
        cls.node_vh = add(["http", node, "secret=" + cls.secret_file])
        cls.node_wrong_vh = add(["http", node, "secret=" + wrong])
        for port in (cls.py_port, cls.node_port) if cls.node else (cls.py_port,):
            if not wait_for(lambda: _listening(port), timeout=15):
                raise AssertionError("the README receiver on port %d did not start" % port)

    @classmethod
    def stop_peers(cls):
        for p in getattr(cls, "procs", []):
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def send(self, vh, rcpt):
        with smtplib.SMTP("127.0.0.1", vh.port, local_hostname="client.example", timeout=60) as s:
            s.ehlo()
            s.mail("carol@client.example")
            code, text = s.rcpt(rcpt)
            if code != 250:
                return code, text
            return s.data(MESSAGE)

    def test_python_receiver(self):
        self.assertEqual(self.send(self.py_vh, "nobody@example.org"), (550, b"5.1.1 No such recipient"))
        code, text = self.send(self.py_vh, "bob@example.org")
        self.assertEqual(code, 250, text)
        stored = os.path.join(self.inbox, queue_id_of(text.decode()) + ".eml")
        self.assertTrue(os.path.exists(stored), os.listdir(self.inbox))
        with open(stored, "rb") as f:
            self.assertEqual(split_delivered(f.read())[2], MESSAGE)
        # a post it cannot verify is refused, and so never acknowledged
        code, text = self.send(self.py_wrong_vh, "bob@example.org")
        self.assertEqual(code, 451, text)
        self.assertIn(b"HTTP 403", text)

    def test_node_check(self):
        if not self.node:
            self.skipTest("node is not installed")
        code, text = self.send(self.node_vh, "bob@example.org")
        self.assertEqual(code, 250, text)
        code, text = self.send(self.node_wrong_vh, "bob@example.org")
        self.assertEqual(code, 451, text)
        self.assertIn(b"HTTP 403", text)


def _listening(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


class HttpBulkheadTest(_WithPeers):
    """The isolation run of the bulkhead (test_bulkhead) with the http
    handler in place of lmtp: with ESMTPMaxWorkers 1, a POST to an
    application that accepts and never answers holds the one SMTP worker; a
    new SMTP session is refused 421 at once, the web site still answers,
    and when the application lets go the held message gets 451 4.3.0."""
    allowed_log = (r"\[esmtp:error\].*esmtp: http: POST \S+ failed after",)

    @classmethod
    def configure(cls, httpd):
        cls.backend = SilentBackend()
        httpd.main_extra += STATUS_LINES + ["ESMTPMaxWorkers 1"]
        httpd.add_http()
        cls.vh = httpd.add_smtp(["http", "http://127.0.0.1:%d/inbound" % cls.backend.port, "timeout=60"])
        cls.other = httpd.add_smtp("discard")

    @classmethod
    def stop_peers(cls):
        if hasattr(cls, "backend"):
            cls.backend.close()

    def held(self):
        return parse_auto(fetch(self.httpd.http_port, "?auto"))["ESMTPWorkersHeld"]

    def test_slow_application_costs_smtp_not_the_web(self):
        a = RawClient(self.vh.port, timeout=60)
        self.assertEqual(a.reply()[0], 220)
        a.cmd("EHLO holder.example")
        self.assertEqual(a.cmd("MAIL FROM:<a@holder.example>")[0], 250)
        self.assertEqual(a.cmd("RCPT TO:<x@%s>" % self.vh.server_name)[0], 250)
        self.assertEqual(a.cmd("DATA")[0], 354)
        a.send(MESSAGE + b".\r\n")
        self.assertTrue(wait_for(lambda: self.held() == 1, timeout=15), "the POST holds no worker")
        self.assertTrue(wait_for(lambda: self.backend.count() > 0, timeout=15), "no POST reached the application")
        # beyond the cap: SMTP is refused at once ...
        start = time.monotonic()
        with RawClient(self.other.port) as b:
            code, lines = b.reply()
        self.assertEqual(code, 421, lines)
        self.assertLess(time.monotonic() - start, 5)
        # ... and the web site answers
        with urllib.request.urlopen("http://127.0.0.1:%d/" % self.httpd.http_port, timeout=10) as r:
            self.assertEqual(r.read(), b"hello from httpd\n")
        self.backend.drop_clients()
        code, lines = a.reply()
        self.assertEqual(code, 451, lines)
        self.assertTrue(lines[0].startswith("451 4.3.0 "), lines)
        a.close()
        self.assertTrue(wait_for(lambda: self.held() == 0, timeout=15))
        with RawClient(self.other.port) as b:
            self.assertEqual(b.reply()[0], 220)


class HttpConfigTest(unittest.TestCase):
    """A bad `ESMTPHandler http` line fails `apache2 -t` naming the
    directive; the secret is read by the parent (a 0600 file is fine)."""

    def check(self, args):
        httpd = Httpd(test_handler=False, prefix="esmtp-it-httpconf-")
        try:
            httpd.add_smtp(args)
            return httpd.config_test()
        finally:
            httpd.cleanup()

    def test_bad_lines(self):
        for args, why in ((["http", "ftp://x/"], "starts with http:// or https://"),
                          (["http", "http://127.0.0.1/", "timeout=900"], "timeout must be"),
                          (["http", "http://127.0.0.1/", "secret=/nonexistent/secret"], "cannot read secret="),
                          (["http", "http://127.0.0.1/", "reject=200"], "reject= lists"),
                          (["http", "http://127.0.0.1/", "follow=yes"], "unknown option")):
            with self.subTest(args=args):
                rc, out = self.check(args)
                self.assertNotEqual(rc, 0, out)
                self.assertIn("ESMTPHandler http: ", out)
                self.assertIn(why, out)

    def test_short_secret(self):
        with tempfile.NamedTemporaryFile("w", suffix=".secret") as f:
            f.write("short\n")
            f.flush()
            rc, out = self.check(["http", "http://127.0.0.1/", "secret=" + f.name])
        self.assertNotEqual(rc, 0, out)
        self.assertIn("fewer than 16 characters", out)

    def test_good_line(self):
        with tempfile.NamedTemporaryFile("w", suffix=".secret") as f:
            f.write("a-secret-long-enough-for-the-check\n")
            f.flush()
            os.chmod(f.name, 0o600)
            rc, out = self.check(["http", "https://127.0.0.1/in", "secret=" + f.name, "timeout=30",
                                  "reject=406,422", "rcpt=https://127.0.0.1/rcpt"])
        self.assertEqual(rc, 0, out)
