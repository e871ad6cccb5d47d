"""STARTTLS (RFC 3207) through mod_ssl's own filters (issue 9):
ESMTPStartTLS On|Required in a VirtualHost with `SSLEngine on`, driven by
real clients (Python's smtplib, openssl s_client, swaks, curl), the
plaintext-injection attack (CVE-2011-0411), Required mode's 530s, bad
input, the TLS facts in Received: and the transaction log, and the
configuration check. Implicit TLS stays in test_tls.py."""

import os
import re
import shutil
import smtplib
import socket
import ssl
import subprocess
import time
import unittest

import test_postfix
from harness import (MODULESDIR, PARKING, Httpd, RawClient, ServerTestCase, q, split_delivered, wait_for)

MOD_SSL = os.path.join(MODULESDIR, "mod_ssl.so")
MOD_SHMCB = os.path.join(MODULESDIR, "mod_socache_shmcb.so")
OPENSSL = shutil.which("openssl")
SWAKS = shutil.which("swaks")
CURL = shutil.which("curl")

USING_RE = re.compile(r"\(using TLSv1\.[23] with cipher [A-Z0-9_-]+ \(\d+/\d+ bits\)\)")


def make_cert(directory, cn="localhost", names=("localhost",), prefix=""):
    cert = os.path.join(directory, prefix + "cert.pem")
    key = os.path.join(directory, prefix + "key.pem")
    subprocess.run([OPENSSL, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=%s" % cn,
                    "-addext", "subjectAltName=" + ",".join("DNS:" + n for n in names),
                    "-keyout", key, "-out", cert, "-days", "2"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
    return cert, key


def make_ca(directory, name, names=("IP:127.0.0.1", "DNS:localhost")):
    """A private CA and a certificate it signed for `names` (subjectAltName
    entries): (ca, cert, key)."""
    ca_key, ca = os.path.join(directory, name + "-ca.key"), os.path.join(directory, name + "-ca.pem")
    key, csr, cert = (os.path.join(directory, name + s) for s in ("-srv.key", "-srv.csr", "-srv.pem"))
    ext = os.path.join(directory, name + ".ext")
    with open(ext, "w") as f:
        f.write("subjectAltName=%s\n" % ",".join(names))
    quiet = {"check": True, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "timeout": 60}
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=%s test CA" % name,
                    "-keyout", ca_key, "-out", ca, "-days", "2"], **quiet)
    subprocess.run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
                    "-keyout", key, "-out", csr], **quiet)
    subprocess.run(["openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
                    "-out", cert, "-days", "2", "-extfile", ext], **quiet)
    return ca, cert, key


def ssl_main_lines():
    return ["LoadModule socache_shmcb_module %s" % q(MOD_SHMCB),
            "LoadModule ssl_module %s" % q(MOD_SSL),
            "SSLSessionCache none",
            "SSLRandomSeed startup builtin"]


def ssl_vhost_lines(cert, key, starttls=None):
    out = ["SSLEngine on", "SSLCertificateFile %s" % q(cert), "SSLCertificateKeyFile %s" % q(key)]
    if starttls:
        out.append("ESMTPStartTLS %s" % starttls)
    return out


def client_context():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def ehlo_keywords(lines):
    return [l[4:].split(" ")[0].upper() for l in lines[1:]]


def tls_wrap(raw, ctx=None, server_hostname=None):
    """Upgrade a RawClient after 220 (what it buffered must be empty)."""
    assert raw.buf == b"", raw.buf
    raw.sock = (ctx or client_context()).wrap_socket(raw.sock, server_hostname=server_hostname)
    return raw


class StartTlsBase(ServerTestCase):
    # mod_ssl's notes on a self-signed test certificate (at a restart) and on
    # the bad handshakes the tests make
    allowed_log = (r"AH0199[0-9]|AH0200[0-9]|AH01873|AH01906|AH01909|SSL handshake|SSL Library Error|ssl_engine", )

    @classmethod
    def ssl_setup(cls, httpd):
        d = os.path.join(httpd.root, "conf")
        cls.cert, cls.key = make_cert(d)
        httpd.main_extra += ssl_main_lines()

    def received_of(self, vh, count=1):
        files = wait_for(lambda: len(vh.maildir_files()) >= count and vh.maildir_files(), 5)
        self.assertTrue(files, "nothing delivered")
        with open(files[-1], "rb") as f:
            _, received, _ = split_delivered(f.read())
        return received


@unittest.skipUnless(os.path.exists(MOD_SSL) and OPENSSL, "mod_ssl or openssl missing")
class StartTlsTest(StartTlsBase):

    @classmethod
    def configure(cls, httpd):
        cls.ssl_setup(httpd)
        cls.on = httpd.add_smtp("maildir", accept_domains=["*"], log_file="on.log", log_level=2,
                                extra=ssl_vhost_lines(cls.cert, cls.key, "On"))
        cls.req = httpd.add_smtp("maildir", accept_domains=["*"], log_file="req.log",
                                 extra=ssl_vhost_lines(cls.cert, cls.key, "Required"))
        # one write of EHLO, STARTTLS and more is allowed here
        cls.pipe = httpd.add_smtp("maildir", accept_domains=["*"], log_file="pipe.log",
                                  extra=ssl_vhost_lines(cls.cert, cls.key, "On") +
                                  ["ESMTPForbidUnauthPipelining Off"])
        cls.plain = httpd.add_smtp("maildir", accept_domains=["*"])
        # STARTTLS then silence: a short handshake deadline
        cls.short = httpd.add_smtp("maildir", accept_domains=["*"], log_file="short.log",
                                   timeouts={"tls": 2},
                                   extra=ssl_vhost_lines(cls.cert, cls.key, "On"))
        cls.tls13 = httpd.add_smtp("maildir", accept_domains=["*"],
                                   extra=ssl_vhost_lines(cls.cert, cls.key, "On") + ["SSLProtocol -all +TLSv1.3"])

    # ---- Python's smtplib

    def test_smtplib_starttls_delivers_with_esmtps(self):
        with smtplib.SMTP("127.0.0.1", self.on.port, timeout=20) as s:
            code, text = s.ehlo("client.example")
            self.assertEqual(code, 250)
            self.assertTrue(s.has_extn("starttls"), text)
            code, text = s.starttls(context=client_context())
            self.assertEqual((code, text), (220, b"2.0.0 Ready to start TLS"))
            self.assertIsInstance(s.sock, ssl.SSLSocket)
            code, text = s.ehlo("client.example")
            self.assertEqual(code, 250)
            self.assertFalse(s.has_extn("starttls"), "STARTTLS offered again after the handshake")
            s.sendmail("a@client.example", ["b@localhost"], b"Subject: starttls\r\n\r\nover STARTTLS\r\n")
        received = self.received_of(self.on)
        self.assertIn(" with ESMTPS ", received)
        self.assertRegex(received, USING_RE)
        log = "\n".join(self.on.log_lines())
        self.assertRegex(log, r"STARTTLS: TLSv1\.[23] cipher=\S+ bits=\d+/\d+")
        self.assertRegex(log, r"accepted from=<a@client.example> .* tls=TLSv1\.[23] cipher=\S+")

    def test_plaintext_vhost_does_not_offer(self):
        with smtplib.SMTP("127.0.0.1", self.plain.port, timeout=20) as s:
            s.ehlo("client.example")
            self.assertFalse(s.has_extn("starttls"))
            self.assertEqual(s.docmd("STARTTLS")[0], 502)

    # ---- the rules of RFC 3207 and the issue

    def test_second_starttls_arguments_and_transaction(self):
        with RawClient(self.on.port) as c:
            self.assertEqual(c.reply()[0], 220)
            self.assertEqual(c.cmd("EHLO client.example")[0], 250)
            self.assertEqual(c.cmd("STARTTLS now"), (501, ["501 5.5.4 Syntax: STARTTLS"]))
            self.assertEqual(c.cmd("MAIL FROM:<a@client.example>")[0], 250)
            code, lines = c.cmd("STARTTLS")
            self.assertEqual(code, 503, lines)
            self.assertTrue(lines[0].startswith("503 5.5.1"), lines)
            self.assertEqual(c.cmd("RSET")[0], 250)
            self.assertEqual(c.cmd("STARTTLS"), (220, ["220 2.0.0 Ready to start TLS"]))
            tls_wrap(c)
            # the session starts over: MAIL needs EHLO again
            self.assertEqual(c.cmd("MAIL FROM:<a@client.example>")[0], 503)
            code, lines = c.cmd("EHLO client.example")
            self.assertEqual(code, 250)
            self.assertNotIn("STARTTLS", ehlo_keywords(lines))
            self.assertEqual(c.cmd("STARTTLS"), (503, ["503 5.5.1 Error: TLS already active"]))
            self.assertEqual(c.cmd("QUIT")[0], 221)

    def test_required_refuses_before_tls(self):
        must = (530, ["530 5.7.0 Must issue a STARTTLS command first"])
        with RawClient(self.req.port) as c:
            self.assertEqual(c.reply()[0], 220)
            code, lines = c.cmd("EHLO client.example")
            self.assertIn("STARTTLS", ehlo_keywords(lines))
            self.assertEqual(c.cmd("MAIL FROM:<a@client.example>"), must)
            self.assertEqual(c.cmd("RCPT TO:<b@localhost>"), must)
            self.assertEqual(c.cmd("DATA"), must)
            # BDAT's chunk is swallowed with the refusal
            c.send("BDAT 6 LAST\r\nRSET\r\n")
            self.assertEqual(c.reply(), must)
            self.assertEqual(c.cmd("NOOP")[0], 250)
            self.assertEqual(c.cmd("STARTTLS")[0], 220)
            tls_wrap(c)
            self.assertEqual(c.cmd("EHLO client.example")[0], 250)
            self.assertEqual(c.cmd("MAIL FROM:<a@client.example>")[0], 250)
            self.assertEqual(c.cmd("RCPT TO:<b@localhost>")[0], 250)
            self.assertEqual(c.cmd("DATA")[0], 354)
            self.assertEqual(c.cmd("Subject: req\r\n\r\nafter STARTTLS\r\n.")[0], 250)
            self.assertEqual(c.cmd("QUIT")[0], 221)
        self.assertIn(" with ESMTPS ", self.received_of(self.req))

    # ---- CVE-2011-0411

    def assert_silent_until_ehlo(self, c):
        """After the handshake nothing is answered until the client
        speaks; then the first reply is its new EHLO's."""
        c.sock.settimeout(1.0)
        with self.assertRaises((socket.timeout, ssl.SSLError)):
            data = c.sock.recv(4096)
            raise AssertionError("unsolicited reply after the handshake: %r" % data)
        c.sock.settimeout(20)
        code, lines = c.cmd("EHLO new.example")
        self.assertEqual(code, 250, lines)
        self.assertTrue(lines[0].startswith("250-"), lines)

    def injection(self, vh, first_write, discarded_verb):
        before = len(vh.maildir_files())
        with RawClient(vh.port) as c:
            self.assertEqual(c.reply()[0], 220)
            c.send(first_write)
            code, lines = c.reply()
            if first_write.startswith("EHLO"):
                self.assertEqual(code, 250, lines)
                code, lines = c.reply()
            self.assertEqual((code, lines), (220, ["220 2.0.0 Ready to start TLS"]))
            tls_wrap(c)
            self.assert_silent_until_ehlo(c)
            self.assertEqual(c.cmd("QUIT")[0], 221)
        self.assertEqual(len(vh.maildir_files()), before)
        log = "\n".join(vh.log_lines())
        self.assertIn("CVE-2011-0411", log)

    def test_injection_rset_discarded(self):
        # EHLO first (the default ESMTPForbidUnauthPipelining On refuses
        # EHLO and more in one write), then STARTTLS and RSET in one write
        with RawClient(self.on.port) as c:
            self.assertEqual(c.reply()[0], 220)
            self.assertEqual(c.cmd("EHLO x")[0], 250)
            c.send("STARTTLS\r\nRSET\r\n")
            self.assertEqual(c.reply(), (220, ["220 2.0.0 Ready to start TLS"]))
            tls_wrap(c)
            self.assert_silent_until_ehlo(c)
        self.assertTrue(wait_for(lambda: any("CVE-2011-0411" in l for l in self.on.log_lines()), 5))

    def test_injection_one_write_with_ehlo(self):
        self.injection(self.pipe, "EHLO x\r\nSTARTTLS\r\nRSET\r\n", "RSET")

    def test_injection_mail_variant(self):
        self.injection(self.pipe, "EHLO x\r\nSTARTTLS\r\nMAIL FROM:<evil@attacker.example>\r\n"
                       "RCPT TO:<b@localhost>\r\nDATA\r\nSubject: injected\r\n\r\nx\r\n.\r\n", "MAIL")

    def test_one_write_with_ehlo_is_refused_by_default(self):
        with RawClient(self.on.port) as c:
            self.assertEqual(c.reply()[0], 220)
            c.send("EHLO x\r\nSTARTTLS\r\nRSET\r\n")
            rest = c.rest()
        self.assertIn("554 5.5.0", rest)
        self.assertNotIn("220 2.0.0", rest)

    # ---- bad input

    def test_client_hello_on_plaintext_vhost(self):
        with socket.create_connection(("127.0.0.1", self.plain.port), timeout=20) as raw:
            ctx = client_context()
            with self.assertRaises((ssl.SSLError, OSError)):
                with ctx.wrap_socket(raw) as s:
                    s.recv(10)

    def test_http_bytes_after_starttls(self):
        with RawClient(self.on.port) as c:
            self.assertEqual(c.reply()[0], 220)
            self.assertEqual(c.cmd("EHLO x")[0], 250)
            self.assertEqual(c.cmd("STARTTLS")[0], 220)
            c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            rest = c.rest(timeout=10)
        # closed, and nothing in plaintext (no SMTP reply, no HTML page)
        self.assertEqual(rest, "")

    def test_truncated_handshake(self):
        # the first 40 octets of a real ClientHello, then close
        hello = self.client_hello()
        with RawClient(self.on.port) as c:
            self.assertEqual(c.reply()[0], 220)
            self.assertEqual(c.cmd("EHLO x")[0], 250)
            self.assertEqual(c.cmd("STARTTLS")[0], 220)
            c.send(hello[:40])
            c.sock.shutdown(socket.SHUT_WR)
            self.assertEqual(c.rest(timeout=10), "")
        # the server is fine
        with smtplib.SMTP("127.0.0.1", self.on.port, timeout=20) as s:
            self.assertEqual(s.noop()[0], 250)

    def client_hello(self):
        """The bytes of a ClientHello, from a memory BIO."""
        ctx = client_context()
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = ctx.wrap_bio(incoming, outgoing)
        try:
            obj.do_handshake()
        except ssl.SSLWantReadError:
            pass
        return outgoing.read()

    def test_silence_after_starttls_closed_at_deadline(self):
        with RawClient(self.short.port) as c:
            self.assertEqual(c.reply()[0], 220)
            self.assertEqual(c.cmd("EHLO x")[0], 250)
            self.assertEqual(c.cmd("STARTTLS")[0], 220)
            start = time.monotonic()
            rest = c.rest(timeout=30)
            elapsed = time.monotonic() - start
        self.assertEqual(rest, "")
        self.assertGreater(elapsed, 1.5)
        self.assertLess(elapsed, 20)
        self.assertTrue(wait_for(lambda: any("TLS handshake failed: timeout" in l
                                             for l in self.short.log_lines()), 5))

    def test_forbidden_protocol_version(self):
        ctx = client_context()
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        before = len(self.tls13.maildir_files())
        with RawClient(self.tls13.port) as c:
            self.assertEqual(c.reply()[0], 220)
            self.assertEqual(c.cmd("EHLO x")[0], 250)
            self.assertEqual(c.cmd("STARTTLS")[0], 220)
            with self.assertRaises((ssl.SSLError, OSError)):
                tls_wrap(c, ctx)
                c.cmd("EHLO x")
        self.assertEqual(len(self.tls13.maildir_files()), before)
        # a TLS 1.3 client is fine
        with smtplib.SMTP("127.0.0.1", self.tls13.port, timeout=20) as s:
            s.starttls(context=client_context())
            s.ehlo("x")
            self.assertEqual(s.sock.version(), "TLSv1.3")


class _TlsOnMpm:
    """A STARTTLS session with pauses between commands (on event it is
    parked with the MPM between them: nothing may stay buffered in mod_ssl
    or OpenSSL), a pipelined burst larger than a TLS record, and a graceful
    restart with a TLS session open (421 over TLS)."""

    @classmethod
    def configure(cls, httpd):
        cls.ssl_setup(httpd)
        cls.vh = httpd.add_smtp("maildir", accept_domains=["*"],
                                extra=ssl_vhost_lines(cls.cert, cls.key, "On") + ["ESMTPMaxJunkCommands 0"])

    def starttls_client(self, pause=0.0):
        c = RawClient(self.vh.port)
        self.assertEqual(c.reply()[0], 220)
        self.assertEqual(c.cmd("EHLO x")[0], 250)
        self.assertEqual(c.cmd("STARTTLS")[0], 220)
        time.sleep(pause)  # the handshake waits (parked on event)
        tls_wrap(c)
        self.assertEqual(c.cmd("EHLO x")[0], 250)
        return c

    def test_session_with_pauses(self):
        before = len(self.vh.maildir_files())
        with self.starttls_client(pause=1.2) as c:
            for command, code in (("NOOP", 250), ("MAIL FROM:<a@client.example>", 250),
                                  ("RCPT TO:<b@localhost>", 250), ("DATA", 354)):
                time.sleep(1.2)
                self.assertEqual(c.cmd(command)[0], code, command)
            body = b"".join(b"line %06d of a message bigger than one TLS record\r\n" % i for i in range(3000))
            c.send(b"Subject: pauses\r\n\r\n" + body + b".\r\n")
            self.assertEqual(c.reply()[0], 250)
            time.sleep(1.2)
            self.assertEqual(c.cmd("QUIT")[0], 221)
        self.assertEqual(len(self.vh.maildir_files()), before + 1)
        received = self.received_of(self.vh, before + 1)
        self.assertIn(" with ESMTPS ", received)

    def test_pipelined_burst_bigger_than_a_record(self):
        with self.starttls_client() as c:
            n = 4000  # 24,000 octets: two TLS records and more than mod_ssl's 8 KB reads
            c.send("NOOP\r\n" * n)
            for i in range(n):
                self.assertEqual(c.reply()[0], 250, i)
            time.sleep(1.2)
            self.assertEqual(c.cmd("NOOP")[0], 250)
            self.assertEqual(c.cmd("QUIT")[0], 221)

    def test_split_and_coalesced_records(self):
        """TLS records cut in the middle with a pause (the server waits,
        or parks, holding half a record) and several records in one TCP
        write (all but the first wait inside OpenSSL or httpd's buffers,
        invisible to the MPM's poll)."""
        with RawClient(self.vh.port) as c:
            self.assertEqual(c.reply()[0], 220)
            self.assertEqual(c.cmd("EHLO x")[0], 250)
            self.assertEqual(c.cmd("STARTTLS")[0], 220)
            incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
            tls = client_context().wrap_bio(incoming, outgoing)

            def pump_handshake():
                while True:
                    try:
                        tls.do_handshake()
                        c.sock.sendall(outgoing.read())
                        return
                    except ssl.SSLWantReadError:
                        c.sock.sendall(outgoing.read())
                        data = c.sock.recv(65536)
                        self.assertTrue(data, "closed during the handshake")
                        incoming.write(data)

            def read_reply():
                buf = b""
                while True:
                    try:
                        buf += tls.read(65536)
                    except ssl.SSLWantReadError:
                        data = c.sock.recv(65536)
                        self.assertTrue(data, "closed")
                        incoming.write(data)
                        continue
                    lines = buf.split(b"\r\n")
                    for i, line in enumerate(lines[:-1]):
                        if len(line) >= 4 and line[3:4] == b" ":
                            return int(line[:3]), b"\r\n".join(lines[i + 1:])
                    # multi-line reply not complete yet: keep reading

            pump_handshake()
            tls.write(b"EHLO x\r\n")
            c.sock.sendall(outgoing.read())
            code, rest = read_reply()
            self.assertEqual(code, 250)
            # one record cut in two, with a pause longer than the server's
            # wait before parking
            tls.write(b"NOOP\r\n")
            record = outgoing.read()
            c.sock.sendall(record[:len(record) // 2])
            time.sleep(1.2)
            c.sock.sendall(record[len(record) // 2:])
            self.assertEqual(read_reply()[0], 250)
            # three records in one TCP write, then silence: every reply must come
            for _ in range(3):
                tls.write(b"NOOP\r\n")
            c.sock.sendall(outgoing.read())
            codes = []
            pending = b""
            while len(codes) < 3:
                try:
                    pending += tls.read(65536)
                except ssl.SSLWantReadError:
                    data = c.sock.recv(65536)
                    self.assertTrue(data, "closed")
                    incoming.write(data)
                    continue
                codes = [l[:3] for l in pending.split(b"\r\n") if l]
            self.assertEqual(codes, [b"250"] * 3)

    def test_graceful_restart_421_over_tls(self):
        c = self.starttls_client()
        try:
            time.sleep(0.5)
            self.httpd.restart(graceful=True)
            c.sock.settimeout(20)
            code, lines = c.reply()
            self.assertEqual(code, 421, lines)
            self.assertIn("4.3.2", lines[0])
        finally:
            c.close()


@unittest.skipUnless(os.path.exists(MOD_SSL) and OPENSSL, "mod_ssl or openssl missing")
class EventTlsTest(_TlsOnMpm, StartTlsBase):
    mpm = "event"


@unittest.skipUnless(os.path.exists(MOD_SSL) and OPENSSL, "mod_ssl or openssl missing")
class WorkerTlsTest(_TlsOnMpm, StartTlsBase):
    mpm = "worker"


@unittest.skipUnless(os.path.exists(MOD_SSL) and OPENSSL, "mod_ssl or openssl missing")
class PreforkTlsTest(_TlsOnMpm, StartTlsBase):
    mpm = "prefork"


@unittest.skipUnless(os.path.exists(MOD_SSL) and OPENSSL and PARKING, "mod_ssl, openssl or parking missing")
class ParkedHandshakeTest(StartTlsBase):
    """Event MPM, one child with 4 threads: clients that send STARTTLS and go
    silent hold no thread (their handshake is parked with the MPM) and are
    closed at the MPM's Timeout, without a plaintext reply."""
    mpm = "event"
    httpd_options = {"main_extra": ["Timeout 6"],
                     "mpm_lines": ["StartServers 1", "ServerLimit 1", "ThreadsPerChild 4", "ThreadLimit 4",
                                   "MinSpareThreads 1", "MaxSpareThreads 4", "MaxRequestWorkers 4",
                                   "AsyncRequestWorkerFactor 8"]}

    @classmethod
    def configure(cls, httpd):
        cls.ssl_setup(httpd)
        cls.vh = httpd.add_smtp("maildir", accept_domains=["*"], log_file="parked.log",
                                extra=ssl_vhost_lines(cls.cert, cls.key, "On"))

    def test_silent_handshakes_hold_no_thread(self):
        silent = []
        try:
            for _ in range(8):
                c = RawClient(self.vh.port)
                self.assertEqual(c.reply()[0], 220)
                self.assertEqual(c.cmd("EHLO x")[0], 250)
                self.assertEqual(c.cmd("STARTTLS")[0], 220)
                silent.append(c)
            # 8 silent handshakes > 4 threads: a new client still gets
            # through long before the MPM's Timeout (6 s) frees anything
            start = time.monotonic()
            with smtplib.SMTP("127.0.0.1", self.vh.port, timeout=5) as s:
                s.starttls(context=client_context())
                self.assertEqual(s.ehlo("x")[0], 250)
            self.assertLess(time.monotonic() - start, 4)
            for c in silent:
                self.assertEqual(c.rest(timeout=15), "")
            self.assertLess(time.monotonic() - start, 15)
        finally:
            for c in silent:
                c.close()
        self.assertTrue(wait_for(lambda: sum("TLS handshake failed: timeout" in l
                                             for l in self.vh.log_lines()) == 8, 5), self.vh.log_lines())


@unittest.skipUnless(os.path.exists(MOD_SSL) and OPENSSL and PARKING, "mod_ssl, openssl or parking missing")
class ParkedHandshakeRestartTest(StartTlsBase):
    """Event MPM: a handshake parked with the MPM (the client sent STARTTLS
    and went silent) ends at a graceful restart, not at its deadline (the
    main server's Timeout, 30 s here)."""
    mpm = "event"
    httpd_options = {"main_extra": ["Timeout 30"]}

    @classmethod
    def configure(cls, httpd):
        cls.ssl_setup(httpd)
        cls.vh = httpd.add_smtp("maildir", accept_domains=["*"], log_file="parked-restart.log",
                                extra=ssl_vhost_lines(cls.cert, cls.key, "On"))

    def test_graceful_restart_ends_parked_handshake(self):
        c = RawClient(self.vh.port)
        try:
            self.assertEqual(c.reply()[0], 220)
            self.assertEqual(c.cmd("EHLO x")[0], 250)
            self.assertEqual(c.cmd("STARTTLS")[0], 220)
            time.sleep(0.5)  # parked by now (it waits 1 ms in its thread)
            start = time.monotonic()
            self.httpd.restart(graceful=True)
            self.assertEqual(c.rest(timeout=25), "")  # closed, no plaintext reply
            self.assertLess(time.monotonic() - start, 10)
        finally:
            c.close()
        self.assertTrue(wait_for(lambda: any("TLS handshake failed" in l for l in self.vh.log_lines()), 5),
                        self.vh.log_lines())


def make_ca_and_client(directory):
    """A CA, a client certificate it signed, and a self-signed client certificate."""
    def run(*args):
        subprocess.run([OPENSSL] + list(args), check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=60, cwd=directory)
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=Test Client CA", "-keyout", "ca.key",
        "-out", "ca.pem", "-days", "2")
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=client.example/O=Signed", "-keyout", "client.key",
        "-out", "client.csr")
    run("x509", "-req", "-in", "client.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "client.pem", "-days", "2")
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=stranger.example", "-keyout",
        "stranger.key", "-out", "stranger.pem", "-days", "2")
    return {n: os.path.join(directory, n) for n in ("ca.pem", "client.pem", "client.key", "stranger.pem",
                                                     "stranger.key")}


def der_fingerprint(pem_path):
    out = subprocess.run([OPENSSL, "x509", "-in", pem_path, "-noout", "-fingerprint", "-sha256"],
                         check=True, stdout=subprocess.PIPE, timeout=30).stdout.decode()
    return out.strip().split("=", 1)[1]


@unittest.skipUnless(os.path.exists(MOD_SSL) and OPENSSL, "mod_ssl or openssl missing")
class RealClientsTest(StartTlsBase):
    """openssl s_client, swaks and curl; two certificates on one port by
    SNI (mod_ssl's name-based virtual hosts); client certificates with
    SSLVerifyClient optional_no_ca, seen by the handler (SessionView::tls())."""

    @classmethod
    def configure(cls, httpd):
        httpd.main_extra += ssl_main_lines()
        d = os.path.join(httpd.root, "conf")
        cls.cert_a, cls.key_a = make_cert(d, "a.test", ("a.test",), "a-")
        cls.cert_b, cls.key_b = make_cert(d, "b.test", ("b.test",), "b-")
        cls.pki = make_ca_and_client(d)
        client_ca = ["SSLVerifyClient optional_no_ca", "SSLVerifyDepth 2",
                     "SSLCACertificateFile %s" % q(cls.pki["ca.pem"])]
        cls.vh = httpd.add_smtp("test", accept_domains=["*"], server_name="a.test", log_file="clients.log",
                                extra=ssl_vhost_lines(cls.cert_a, cls.key_a, "On") + client_ca)
        # the second name on the same port: mod_ssl picks its certificate by
        # SNI (the session keeps the first VirtualHost's ESMTP settings)
        httpd.main_extra += [
            "<VirtualHost 127.0.0.1:%d>" % cls.vh.port,
            "    ServerName b.test",
            "    ESMTPProtocol On",
            "    ESMTPHandler test %s" % q(cls.vh.events),
            "    ESMTPAcceptDomains *",
            "    ESMTPLogFileName clients.log",
        ] + ["    " + l for l in ssl_vhost_lines(cls.cert_b, cls.key_b, "On") + client_ca] + ["</VirtualHost>"]
        cls.implicit = httpd.add_smtp("maildir", accept_domains=["*"], extra=ssl_vhost_lines(cls.cert_a, cls.key_a))
        cls.mx = httpd.add_smtp("maildir", accept_domains=["*"], extra=ssl_vhost_lines(cls.cert_a, cls.key_a, "On"))

    def tls_events(self, count):
        ok = wait_for(lambda: len([e for e in self.vh.event_lines() if e.startswith("TLS ")]) >= count, 5)
        self.assertTrue(ok, self.vh.event_lines())
        return [e for e in self.vh.event_lines() if e.startswith("TLS ")]

    @unittest.skipUnless(OPENSSL, "openssl missing")
    def test_openssl_s_client_starttls_and_sni(self):
        greeted = set()
        for name in ("a.test", "b.test"):
            p = subprocess.Popen([OPENSSL, "s_client", "-starttls", "smtp", "-connect",
                                  "127.0.0.1:%d" % self.vh.port, "-servername", name, "-crlf", "-ign_eof"],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            try:
                # one command per write: no pipelining without PIPELINING
                time.sleep(1.0)
                p.stdin.write(b"EHLO sni.example\n")
                p.stdin.flush()
                time.sleep(1.0)
                p.stdin.write(b"QUIT\n")
                p.stdin.close()
                out = p.stdout.read().decode("utf-8", "replace")
            finally:
                p.wait(timeout=30)
            self.assertRegex(out, r"subject=\s*CN\s*=\s*%s" % re.escape(name))
            after_tls = out.split("Verify return code", 1)[1]
            m = re.search(r"250-([a-z.]+)\r?\n", after_tls)
            self.assertTrue(m, out)
            greeted.add(m.group(1))
            self.assertNotIn("STARTTLS", after_tls)
            self.assertIn("221 2.0.0", after_tls)
            events = self.tls_events(1)
            self.assertRegex(events[-1], r"^TLS TLSv1\.3 \S+ \d+ sni=%s verify=NONE" % re.escape(name))
        # SNI picks mod_ssl's certificate; the SMTP settings stay those of
        # the port's first VirtualHost
        self.assertEqual(len(greeted), 1, greeted)
        log = "\n".join(self.vh.log_lines())
        self.assertIn("sni=b.test", log)

    @unittest.skipUnless(SWAKS, "swaks missing")
    def test_swaks_tls_with_client_certificates(self):
        for cert, key, verify in ((self.pki["client.pem"], self.pki["client.key"], "SUCCESS"),
                                  (self.pki["stranger.pem"], self.pki["stranger.key"], "FAILED:self-signed certificate")):
            n = len(self.tls_events(0))
            p = subprocess.run([SWAKS, "--server", "127.0.0.1", "--port", str(self.vh.port), "--tls",
                                "--tls-cert", cert, "--tls-key", key, "--helo", "swaks.example",
                                "--from", "a@client.example", "--to", "b@localhost", "--timeout", "20"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
            out = p.stdout.decode("utf-8", "replace")
            self.assertEqual(p.returncode, 0, out)
            self.assertIn("TLS started", out)
            events = self.tls_events(n + 1)
            # optional_no_ca: the session goes on and the handler sees why
            # the certificate did not verify
            self.assertIn("verify=%s" % verify, events[-1])
            self.assertIn("fp=%s" % der_fingerprint(cert), events[-1])
            if verify == "SUCCESS":
                self.assertRegex(events[-1], r"subject=\S*CN=client\.example")
                self.assertRegex(events[-1], r"subject=\S*O=Signed")
                self.assertIn("issuer=CN=Test Client CA", events[-1])
        # without a client certificate
        p = subprocess.run([SWAKS, "--server", "127.0.0.1", "--port", str(self.mx.port), "--tls",
                            "--from", "a@client.example", "--to", "b@localhost", "--timeout", "20"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
        self.assertEqual(p.returncode, 0, p.stdout.decode("utf-8", "replace"))
        self.assertIn(" with ESMTPS ", self.received_of(self.mx))

    @unittest.skipUnless(SWAKS, "swaks missing")
    def test_swaks_tlsc_implicit(self):
        p = subprocess.run([SWAKS, "--server", "127.0.0.1", "--port", str(self.implicit.port), "--tlsc",
                            "--from", "a@client.example", "--to", "b@localhost", "--timeout", "20"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
        out = p.stdout.decode("utf-8", "replace")
        self.assertEqual(p.returncode, 0, out)
        received = self.received_of(self.implicit)
        self.assertIn(" with ESMTPS ", received)
        self.assertRegex(received, USING_RE)

    @unittest.skipUnless(CURL, "curl missing")
    def test_curl_ssl_reqd_and_smtps(self):
        msg = os.path.join(self.httpd.root, "curl-message.txt")
        with open(msg, "wb") as f:
            f.write(b"Subject: curl\r\n\r\nsent by curl\r\n")
        for url, vh in (("smtp://127.0.0.1:%d" % self.mx.port, self.mx),
                        ("smtps://127.0.0.1:%d" % self.implicit.port, self.implicit)):
            before = len(vh.maildir_files())
            p = subprocess.run([CURL, "-sS", "--ssl-reqd", "-k", url, "--mail-from", "a@client.example",
                                "--mail-rcpt", "b@localhost", "-T", msg, "--max-time", "30"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
            self.assertEqual(p.returncode, 0, p.stdout.decode("utf-8", "replace"))
            self.assertIn(" with ESMTPS ", self.received_of(vh, before + 1))


@unittest.skipUnless(os.path.exists(MOD_SSL) and OPENSSL, "mod_ssl or openssl missing")
@unittest.skipIf(test_postfix.SKIP_REASON, test_postfix.SKIP_REASON or "")
class PostfixStartTlsTest(test_postfix.PostfixRelayCase, StartTlsBase):
    """A private Postfix relays to a STARTTLS Required vhost with
    smtp_tls_security_level = encrypt: the message arrives `with ESMTPS`
    and Postfix logs the TLS connection."""

    @classmethod
    def configure(cls, httpd):
        cls.ssl_setup(httpd)
        cls.vh = httpd.add_smtp("maildir", server_name="mx.postfix.test", log_file="esmtp.log",
                                extra=ssl_vhost_lines(cls.cert, cls.key, "Required"))

    @classmethod
    def prepare_postfix(cls, postfix):
        with open(os.path.join(postfix.config_dir, "main.cf"), "a") as f:
            f.write("smtp_tls_security_level = encrypt\nsmtp_tls_loglevel = 1\n")
        # Postfix's TLS client needs its TLS manager
        with open(os.path.join(postfix.config_dir, "master.cf"), "a") as f:
            f.write("tlsmgr    unix  -       -       n       1000?   1       tlsmgr\n")

    def test_postfix_relays_with_encrypt(self):
        rcpt = "rcpt@" + self.vh.server_name
        message = b"From: <sender@client.example>\nSubject: over TLS from Postfix\n\nencrypted hop\n"
        before = self.vh.maildir_files()
        rc, out = self.postfix.run(test_postfix._which("sendmail"), "-C", self.postfix.config_dir,
                                   "-f", "sender@client.example", rcpt, stdin=message)
        self.assertEqual(rc, 0, out)
        files = wait_for(lambda: sorted(set(self.vh.maildir_files()) - set(before)), 60, 0.2)
        self.assertEqual(len(files), 1, "no delivery within 60 s; Postfix log:\n" + self.postfix.log_text())
        with open(files[0], "rb") as f:
            _, received, _ = split_delivered(f.read())
        self.assertIn(" with ESMTPS ", received)
        self.assertRegex(received, USING_RE)
        log = wait_for(lambda: "status=sent" in self.postfix.log_text() and self.postfix.log_text(), 10)
        self.assertRegex(log, r"TLS connection established to 127\.0\.0\.1\[127\.0\.0\.1\]:%d: TLSv1\.[23]"
                         % self.vh.port)


@unittest.skipUnless(os.path.exists(MOD_SSL) and OPENSSL, "mod_ssl or openssl missing")
class ConcurrentTlsTest(StartTlsBase):
    """200 TLS sessions open at once on the event MPM (idle ones parked),
    each then delivers nothing and QUITs over TLS; the memory the children
    hold per idle TLS session is printed for the README."""
    mpm = "event"
    httpd_options = {"main_extra": ["AsyncRequestWorkerFactor 10"]}
    SESSIONS = 200

    @classmethod
    def configure(cls, httpd):
        cls.ssl_setup(httpd)
        cls.vh = httpd.add_smtp("maildir", accept_domains=["*"], extra=ssl_vhost_lines(cls.cert, cls.key, "On"))

    def children_pss(self):
        from harness import children_of
        total = 0
        for pid in children_of(self.httpd.proc.pid):
            try:
                with open("/proc/%d/smaps_rollup" % pid) as f:
                    for line in f:
                        if line.startswith("Pss:"):
                            total += int(line.split()[1])
            except OSError:
                pass
        return total

    def test_200_concurrent_tls_sessions(self):
        clients = []
        try:
            before = self.children_pss()
            for i in range(self.SESSIONS):
                c = RawClient(self.vh.port, timeout=30)
                clients.append(c)
                self.assertEqual(c.reply()[0], 220, i)
                self.assertEqual(c.cmd("EHLO x")[0], 250, i)
                self.assertEqual(c.cmd("STARTTLS")[0], 220, i)
                tls_wrap(c)
                self.assertEqual(c.cmd("EHLO x")[0], 250, i)
            time.sleep(0.5)
            after = self.children_pss()
            if before and after:
                print("\n%d idle TLS sessions: children PSS %d KB -> %d KB (%.1f KB per session)"
                      % (self.SESSIONS, before, after, (after - before) / self.SESSIONS))
            for i, c in enumerate(clients):
                self.assertEqual(c.cmd("QUIT")[0], 221, i)
        finally:
            for c in clients:
                c.close()


@unittest.skipUnless(os.path.exists(MOD_SSL) and OPENSSL, "mod_ssl or openssl missing")
class SampleTlsConfigTest(StartTlsBase):
    """conf/esmtp-tls.conf (ports, certificate and Maildir moved into the
    test's root) runs: STARTTLS on the MX port, implicit TLS on 465."""

    @classmethod
    def configure(cls, httpd):
        cls.ssl_setup(httpd)
        from harness import TOP_SRCDIR, free_port
        with open(os.path.join(TOP_SRCDIR, "conf", "esmtp-tls.conf")) as f:
            sample = f.read()
        cls.mx_port, cls.sub_port = free_port(), free_port()
        cls.maildir = os.path.join(httpd.root, "Maildir")
        for sub in ("tmp", "new", "cur"):
            os.makedirs(os.path.join(cls.maildir, sub))
        sample = sample.replace("Listen 25 smtp", "Listen 127.0.0.1:%d smtp" % cls.mx_port)
        sample = sample.replace("Listen 465 smtp", "Listen 127.0.0.1:%d smtp" % cls.sub_port)
        sample = sample.replace("<VirtualHost *:25>", "<VirtualHost 127.0.0.1:%d>" % cls.mx_port)
        sample = sample.replace("<VirtualHost *:465>", "<VirtualHost 127.0.0.1:%d>" % cls.sub_port)
        sample = re.sub(r"(SSLCertificateFile\s+)\S+", lambda m: m.group(1) + q(cls.cert), sample)
        sample = re.sub(r"(SSLCertificateKeyFile\s+)\S+", lambda m: m.group(1) + q(cls.key), sample)
        sample = re.sub(r"(ESMTPHandler\s+maildir\s+)\S+", lambda m: m.group(1) + q(cls.maildir), sample)
        sample = sample.replace("ServerName mx.example.org", "ServerName localhost\n        ESMTPAcceptDomains *")
        sample = sample.replace("ServerName mail.example.org",
                                "ServerName localhost\n        ESMTPAcceptDomains *")
        httpd.main_extra.append(sample)
        # the harness's ports list drives the start-up probe
        httpd.add_smtp("maildir", accept_domains=["*"])

    def test_sample_mx_and_submission(self):
        with smtplib.SMTP("127.0.0.1", self.mx_port, timeout=20) as s:
            s.ehlo("client.example")
            self.assertTrue(s.has_extn("starttls"))
            s.starttls(context=client_context())
            s.ehlo("client.example")
            s.sendmail("a@client.example", ["b@localhost"], b"Subject: mx\r\n\r\nmx\r\n")
        with smtplib.SMTP_SSL("127.0.0.1", self.sub_port, context=client_context(), timeout=20) as s:
            s.ehlo("client.example")
            self.assertFalse(s.has_extn("starttls"))
            s.sendmail("a@client.example", ["b@localhost"], b"Subject: submission\r\n\r\nsub\r\n")
        files = wait_for(lambda: len(os.listdir(os.path.join(self.maildir, "new"))) == 2 and
                         os.listdir(os.path.join(self.maildir, "new")), 5)
        self.assertTrue(files)
        for name in files:
            with open(os.path.join(self.maildir, "new", name), "rb") as f:
                _, received, _ = split_delivered(f.read())
            self.assertIn(" with ESMTPS ", received)
            self.assertRegex(received, USING_RE)


@unittest.skipUnless(os.path.exists(MOD_SSL) and OPENSSL, "mod_ssl or openssl missing")
class PlaintextChecksOverTlsTest(StartTlsBase):
    """The project's own plaintext checks, again over STARTTLS: SMTP
    smuggling, line limits, bare LF, pipelining and the size limit behave
    the same inside TLS."""

    @classmethod
    def configure(cls, httpd):
        cls.ssl_setup(httpd)
        cls.vh = httpd.add_smtp("maildir", accept_domains=["*"], max_size=5000,
                                extra=ssl_vhost_lines(cls.cert, cls.key, "Required"))

    def client(self):
        c = RawClient(self.vh.port)
        self.assertEqual(c.reply()[0], 220)
        self.assertEqual(c.cmd("EHLO x")[0], 250)
        self.assertEqual(c.cmd("STARTTLS")[0], 220)
        tls_wrap(c)
        self.assertEqual(c.cmd("EHLO client.example")[0], 250)
        return c

    def test_smuggling_does_not_end_data(self):
        before = len(self.vh.maildir_files())
        with self.client() as c:
            self.assertEqual(c.cmd("MAIL FROM:<a@client.example>")[0], 250)
            self.assertEqual(c.cmd("RCPT TO:<b@localhost>")[0], 250)
            self.assertEqual(c.cmd("DATA")[0], 354)
            c.send("Subject: smuggle\r\n\r\nbody\n.\nMAIL FROM:<evil@x>\nRCPT TO:<c@localhost>\nDATA\n"
                   "evil\r\n.\r\n")
            code, lines = c.reply()
            # bare LF in the content: refused after the real end, in sync
            self.assertEqual(code, 550, lines)
            self.assertEqual(c.cmd("NOOP")[0], 250)
            self.assertEqual(c.cmd("QUIT")[0], 221)
        time.sleep(0.2)
        self.assertEqual(len(self.vh.maildir_files()), before)

    def test_line_limits_and_bare_lf(self):
        with self.client() as c:
            self.assertEqual(c.cmd("NOOP " + "x" * 600), (500, ["500 5.5.2 Line too long"]))
            c.send("NOOP\n")
            self.assertEqual(c.reply()[0], 550)
            self.assertEqual(c.cmd("NOOP")[0], 250)

    def test_pipelined_transaction_and_size_limit(self):
        before = len(self.vh.maildir_files())
        with self.client() as c:
            c.send("MAIL FROM:<a@client.example>\r\nRCPT TO:<b@localhost>\r\nDATA\r\n")
            self.assertEqual([c.reply()[0] for _ in range(3)], [250, 250, 354])
            c.send("Subject: pipelined\r\n\r\nin one write\r\n.\r\n")
            self.assertEqual(c.reply()[0], 250)
            self.assertEqual(c.cmd("MAIL FROM:<a@client.example> SIZE=6000")[0], 552)
            self.assertEqual(c.cmd("MAIL FROM:<a@client.example>")[0], 250)
            self.assertEqual(c.cmd("RCPT TO:<b@localhost>")[0], 250)
            self.assertEqual(c.cmd("DATA")[0], 354)
            c.send("Subject: big\r\n\r\n" + ("y" * 70 + "\r\n") * 100 + ".\r\n")
            self.assertEqual(c.reply()[0], 552)
            self.assertEqual(c.cmd("QUIT")[0], 221)
        self.assertTrue(wait_for(lambda: len(self.vh.maildir_files()) == before + 1, 5))


@unittest.skipUnless(os.path.exists(MOD_SSL) and OPENSSL, "mod_ssl or openssl missing")
class StartTlsConfigTest(unittest.TestCase):
    """ESMTPStartTLS On|Required without SSLEngine on fails `apache2 -t`."""

    def check(self, value, ssl_on):
        httpd = Httpd()
        try:
            cert, key = make_cert(os.path.join(httpd.root, "conf"))
            httpd.main_extra += ssl_main_lines()
            extra = ["ESMTPStartTLS %s" % value]
            if ssl_on:
                extra = ssl_vhost_lines(cert, key) + extra
            httpd.add_smtp("maildir", accept_domains=["*"], extra=extra)
            return httpd.config_test()
        finally:
            httpd.cleanup()

    def test_on_without_sslengine_fails(self):
        for value in ("On", "Required"):
            rc, out = self.check(value, False)
            self.assertNotEqual(rc, 0, out)
            self.assertIn("ESMTPStartTLS %s" % value, out)
            self.assertIn("SSLEngine on", out)

    def test_with_sslengine_passes(self):
        rc, out = self.check("Required", True)
        self.assertEqual(rc, 0, out)

    def test_inherited_sslengine(self):
        """SSLEngine on in the main server counts for a VirtualHost that
        does not set it; SSLEngine off in the VirtualHost wins."""
        for vhost_lines, ok in (([], True), (["SSLEngine off"], False)):
            httpd = Httpd()
            try:
                cert, key = make_cert(os.path.join(httpd.root, "conf"))
                httpd.main_extra += ssl_main_lines() + ssl_vhost_lines(cert, key)
                httpd.add_smtp("maildir", accept_domains=["*"], extra=vhost_lines + ["ESMTPStartTLS On"])
                rc, out = httpd.config_test()
            finally:
                httpd.cleanup()
            self.assertEqual(rc == 0, ok, out)

    def test_bad_value(self):
        rc, out = self.check("Maybe", True)
        self.assertNotEqual(rc, 0, out)
        self.assertIn("ESMTPStartTLS: needs Off, On or Required", out)


if __name__ == "__main__":
    unittest.main()
