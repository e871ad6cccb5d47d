"""PROXY protocol (ESMTPProxyProtocol): the client's real address, carried
by a load balancer's PROXY header, is what Received:, the transaction log
and httpd's own error log name. Driven by swaks (--proxy-version 1 and 2),
raw sockets (byte by byte, UNKNOWN, LOCAL, malformed headers, silence) and
a real HAProxy (send-proxy and send-proxy-v2, clients bound to 127.0.0.10
and 127.0.0.11); bad configurations fail `apache2 -t` naming the directive."""

import os
import shutil
import smtplib
import socket
import ssl
import struct
import subprocess
import tempfile
import threading
import time
import unittest

from harness import MODULESDIR, Httpd, RawClient, ServerTestCase, free_port, q, wait_for
from peers import HAPROXY, HAProxy

ANY = ["*"]
V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"
MESSAGE = "Subject: proxied\r\n\r\nthrough the balancer\r\n"


def v2_header(cmd, fam, body):
    return V2_SIG + bytes([0x20 | cmd, fam]) + struct.pack(">H", len(body)) + body


def v2_inet(src, dst, sport, dport, tlvs=b""):
    return v2_header(1, 0x11, socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack(">HH", sport, dport)
                     + tlvs)


def tlv(t, value):
    return bytes([t]) + struct.pack(">H", len(value)) + value


def deliver_raw(c, rcpt="user@example.org"):
    """EHLO and one message on an open RawClient whose greeting was read."""
    code, _ = c.cmd("EHLO client.example")
    assert code == 250, code
    for line, want in (("MAIL FROM:<s@client.example>", 250), ("RCPT TO:<%s>" % rcpt, 250), ("DATA", 354)):
        code, lines = c.cmd(line)
        assert code == want, (line, lines)
    code, lines = c.cmd(MESSAGE + ".")
    assert code == 250, lines
    c.cmd("QUIT")


class ProxyProtocolTest(ServerTestCase):
    allowed_log = (r"esmtp:info\].*(ESMTPProxyTrusted|PROXY header)",)

    @classmethod
    def configure(cls, httpd):
        httpd.log_level = "warn esmtp:debug"
        cls.vh = httpd.add_smtp("maildir", accept_domains=ANY, log_file="esmtp.log", log_level=1,
                                extra=["ESMTPProxyProtocol any", "ESMTPProxyTrusted 127.0.0.0/29 ::1",
                                       "ESMTPProxyTimeout 2"])
        cls.v2only = httpd.add_smtp("discard", accept_domains=ANY,
                                    extra=["ESMTPProxyProtocol v2", "ESMTPProxyTrusted 127.0.0.1"])
        cls.untrusted = httpd.add_smtp("discard", accept_domains=ANY,
                                       extra=["ESMTPProxyProtocol v1", "ESMTPProxyTrusted 192.0.2.0/24"])

    def last_message(self, before):
        files = self.vh.maildir_files()
        self.assertEqual(len(files), before + 1, files)
        newest = max(files, key=os.path.getmtime)
        with open(newest, "rb") as f:
            return f.read()

    def swaks(self, *proxy):
        p = subprocess.run(["swaks", "--server", "127.0.0.1", "--port", str(self.vh.port),
                            "--from", "s@client.example", "--to", "user@example.org",
                            "--helo", "client.example", "--body", "via swaks", "--timeout", "20"] + list(proxy),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
        out = p.stdout.decode("utf-8", "replace")
        self.assertEqual(p.returncode, 0, out)
        return out

    def test_swaks_v1_tcp4(self):
        before = len(self.vh.maildir_files())
        self.swaks("--proxy-version", "1", "--proxy-family", "TCP4", "--proxy-source", "192.0.2.44",
                   "--proxy-source-port", "40044", "--proxy-dest", "127.0.0.1",
                   "--proxy-dest-port", str(self.vh.port))
        msg = self.last_message(before)
        self.assertIn(b"Received: from client.example ([192.0.2.44])", msg)
        log = "\n".join(self.vh.log_lines())
        self.assertIn("connect from 192.0.2.44[192.0.2.44]:40044 (PROXY v1 from 127.0.0.1)", log)
        # httpd's own error log names the real client too
        self.assertTrue(wait_for(lambda: any("[client 192.0.2.44:40044]" in l for l in self.httpd.log_lines())),
                        "\n".join(self.httpd.log_lines()[-10:]))

    def test_swaks_v2_tcp6(self):
        before = len(self.vh.maildir_files())
        self.swaks("--proxy-version", "2", "--proxy-family", "AF_INET6", "--proxy-source", "2001:db8::44",
                   "--proxy-source-port", "40046", "--proxy-dest", "2001:db8::1",
                   "--proxy-dest-port", "25")
        msg = self.last_message(before)
        self.assertIn(b"([2001:db8::44])", msg)
        self.assertIn("connect from 2001:db8::44[2001:db8::44]:40046 (PROXY v2 from 127.0.0.1)",
                      "\n".join(self.vh.log_lines()))

    def test_unknown_15_octets_does_not_hang(self):
        with RawClient(self.vh.port) as c:
            c.send(b"PROXY UNKNOWN\r\n")
            code, lines = c.reply()
            self.assertEqual(code, 220, lines)  # a hang would give 421 4.4.2 after 2 s
            code, _ = c.cmd("QUIT")
            self.assertEqual(code, 221)

    def test_byte_by_byte_header_then_mail(self):
        before = len(self.vh.maildir_files())
        header = b"PROXY TCP4 198.51.100.7 127.0.0.1 5555 25\r\n"
        with RawClient(self.vh.port) as c:
            for i in range(len(header)):
                c.send(header[i:i + 1])
                time.sleep(0.005)
            code, lines = c.reply()
            self.assertEqual(code, 220, lines)
            deliver_raw(c)
        self.assertIn(b"([198.51.100.7])", self.last_message(before))

    def test_v2_with_tlvs_in_pieces(self):
        before = len(self.vh.maildir_files())
        h = v2_inet("203.0.113.9", "127.0.0.1", 6000, 25,
                    tlv(0x02, b"mx.example.org") + tlv(0x05, b"conn-42") + tlv(0x20, b"\x00" * 300))
        with RawClient(self.vh.port) as c:
            c.send(h[:7])
            time.sleep(0.05)
            c.send(h[7:20])
            time.sleep(0.05)
            c.send(h[20:])
            code, lines = c.reply()
            self.assertEqual(code, 220, lines)
            deliver_raw(c)
        self.assertIn(b"([203.0.113.9])", self.last_message(before))
        self.assertIn("(PROXY v2 from 127.0.0.1 authority=mx.example.org unique-id=conn-42)",
                      "\n".join(self.vh.log_lines()))

    def test_v2_local_keeps_connection_address(self):
        with RawClient(self.vh.port) as c:
            c.send(v2_header(0, 0x00, b""))
            code, lines = c.reply()
            self.assertEqual(code, 220, lines)
            c.cmd("QUIT")
        self.assertTrue(wait_for(lambda: any("connect from 127.0.0.1[127.0.0.1]" in l and "LOCAL" in l
                                             for l in self.vh.log_lines())))

    def assertRefused(self, port, data, code, text):
        with RawClient(port) as c:
            if data:
                c.send(data)
            rest = c.rest(timeout=10)
        self.assertTrue(rest.startswith("%d " % code), rest)
        self.assertIn(text, rest)
        self.assertTrue(rest.endswith("\r\n"), rest)
        return rest

    def test_direct_smtp_client_is_refused_at_once(self):
        rest = self.assertRefused(self.vh.port, b"EHLO direct\r\n", 421, "4.7.0")
        self.assertIn("bad PROXY header", rest)

    def test_silent_client_times_out(self):
        start = time.monotonic()
        self.assertRefused(self.vh.port, b"", 421, "4.4.2")
        self.assertGreater(time.monotonic() - start, 1.5)  # ESMTPProxyTimeout 2

    def test_malformed_headers(self):
        cases = [
            (b"PROXY TCP4 ::1 127.0.0.1 1 2\r\n", "source address"),
            (b"PROXY TCP4 192.0.2.1 127.0.0.1 1 2\n", "bare LF"),
            (b"PROXY TCP9 a b 1 2\r\n", "unknown protocol"),
            (b"PROXY UNKNOWN " + b"x" * 100 + b"\r\n", "107"),
            (V2_SIG[:11] + b"X" + b"\x21\x11\x00\x0c", "began with"),
            (v2_header(1, 0x21, b"\x00" * 12), "needs 36"),
            (v2_header(1, 0x12, b"\x00" * 12), "STREAM"),
            (v2_inet("192.0.2.1", "127.0.0.1", 1, 2, b"\x05\x00\x09ab"), "runs past"),
        ]
        for data, what in cases:
            with self.subTest(what=what):
                rest = self.assertRefused(self.vh.port, data, 421, "4.7.0")
                self.assertIn(what, rest)

    def test_version_not_accepted(self):
        rest = self.assertRefused(self.v2only.port, b"PROXY UNKNOWN\r\n", 421, "4.7.0")
        self.assertIn("ESMTPProxyProtocol is v2", rest)

    def test_untrusted_peer_refused(self):
        start = time.monotonic()
        rest = self.assertRefused(self.untrusted.port, b"", 421, "4.7.0")
        self.assertIn("load balancer", rest)
        self.assertLess(time.monotonic() - start, 5)  # at once, not after a timeout
        # a header from an untrusted peer is not read either
        self.assertRefused(self.untrusted.port, b"PROXY TCP4 192.0.2.1 127.0.0.1 1 2\r\n", 421, "4.7.0")


@unittest.skipUnless(HAPROXY, "haproxy is not installed")
class HAProxyTest(ServerTestCase):
    """HAProxy in front: the stored message and the transaction log name the
    client's own source address (127.0.0.10, 127.0.0.11), not HAProxy's."""

    @classmethod
    def configure(cls, httpd):
        cls.vh = httpd.add_smtp("maildir", accept_domains=ANY, log_file="esmtp.log", log_level=1,
                                extra=["ESMTPProxyProtocol any", "ESMTPProxyTrusted 127.0.0.1"])

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.v2_port, cls.v1_port = free_port(), free_port()
        try:
            cls.haproxy = HAProxy([(cls.v2_port, [("127.0.0.1", cls.vh.port)], "send-proxy-v2"),
                                   (cls.v1_port, [("127.0.0.1", cls.vh.port)], "send-proxy")])
        except BaseException:
            super().tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.haproxy.stop()
        super().tearDownClass()

    def send_from(self, source, port, tag):
        with smtplib.SMTP("127.0.0.1", port, timeout=30, source_address=(source, 0)) as s:
            s.ehlo("client.example")
            local_port = s.sock.getsockname()[1]
            s.sendmail("s@client.example", ["user@example.org"], "Subject: %s\r\n\r\nbody\r\n" % tag)
        return local_port

    def find(self, tag):
        for path in self.vh.maildir_files():
            with open(path, "rb") as f:
                data = f.read()
            if ("Subject: %s" % tag).encode() in data:
                return data
        self.fail("message %s not stored" % tag)

    def check(self, source, port, tag, version):
        sport = self.send_from(source, port, tag)
        msg = self.find(tag)
        self.assertIn(("Received: from client.example ([%s])" % source).encode(), msg)
        self.assertNotIn(b"[127.0.0.1]", msg)
        log = "\n".join(self.vh.log_lines())
        self.assertIn("connect from %s[%s]:%d (PROXY v%d from 127.0.0.1)" % (source, source, sport, version), log)

    def test_send_proxy_v2(self):
        self.check("127.0.0.10", self.v2_port, "via-v2", 2)

    def test_send_proxy_v1(self):
        self.check("127.0.0.11", self.v1_port, "via-v1", 1)

    def test_direct_connection_without_header(self):
        """The same listener reached directly from a trusted address: the
        missing header is an error, at once (the client talks first)."""
        with RawClient(self.vh.port) as c:
            c.send(b"EHLO direct\r\n")
            rest = c.rest(timeout=10)
        self.assertTrue(rest.startswith("421 4.7.0"), rest)

    allowed_log = (r"esmtp:info\].*PROXY header",)


class XClientTest(ServerTestCase):
    """XCLIENT from a trusted front end (127.0.0.1 is trusted on one port,
    not on the other): the stored message and the log name the client it
    announced; untrusted clients, transactions and bad attributes are refused."""

    @classmethod
    def configure(cls, httpd):
        cls.vh = httpd.add_smtp("maildir", accept_domains=ANY, log_file="esmtp.log", log_level=1,
                                extra=["ESMTPXClientHosts 127.0.0.0/8"])
        cls.closed = httpd.add_smtp("discard", accept_domains=ANY, extra=["ESMTPXClientHosts 192.0.2.0/24"])

    def test_front_end_passes_the_client(self):
        before = len(self.vh.maildir_files())
        with RawClient(self.vh.port) as c:
            self.assertEqual(c.reply()[0], 220)
            code, lines = c.cmd("EHLO front.example")
            self.assertIn("XCLIENT NAME ADDR PORT PROTO HELO LOGIN DESTADDR DESTPORT", lines[-1])
            code, lines = c.cmd("XCLIENT NAME=client.example ADDR=IPV6:2001:db8::5 PORT=4321 LOGIN=joe+40example.org")
            self.assertEqual(code, 220, lines)
            deliver_raw(c)
        files = self.vh.maildir_files()
        self.assertEqual(len(files), before + 1)
        with open(max(files, key=os.path.getmtime), "rb") as f:
            msg = f.read()
        self.assertIn(b"Received: from client.example (client.example [2001:db8::5])", msg)
        log = "\n".join(self.vh.log_lines())
        self.assertIn("XCLIENT from 127.0.0.1[127.0.0.1]: client client.example[2001:db8::5]:4321 login=joe@example.org",
                      log)

    def test_refusals(self):
        with RawClient(self.vh.port) as c:
            c.reply()
            c.cmd("EHLO front.example")
            self.assertEqual(c.cmd("XCLIENT COLOR=blue"), (501, ["501 5.5.4 Bad XCLIENT attribute name: COLOR"]))
            self.assertEqual(c.cmd("XCLIENT NAME=bad+xtext")[0], 501)
            self.assertEqual(c.cmd("XCLIENT HELO=" + "h" * 300)[0], 501)
            c.cmd("MAIL FROM:<s@client.example>")
            self.assertEqual(c.cmd("XCLIENT ADDR=192.0.2.1"),
                             (503, ["503 5.5.1 Error: MAIL transaction in progress"]))
            c.cmd("RSET")
            # to an address outside ESMTPXClientHosts: no further XCLIENT
            self.assertEqual(c.cmd("XCLIENT ADDR=192.0.2.1")[0], 220)
            code, lines = c.cmd("EHLO front.example")
            self.assertNotIn("XCLIENT", "\n".join(lines))
            self.assertEqual(c.cmd("XCLIENT ADDR=127.0.0.1"), (550, ["550 5.7.0 Error: insufficient authorization"]))
            self.assertEqual(c.cmd("QUIT")[0], 221)

    def test_untrusted_client(self):
        with RawClient(self.closed.port) as c:
            c.reply()
            code, lines = c.cmd("EHLO front.example")
            self.assertNotIn("XCLIENT", "\n".join(lines))
            self.assertEqual(c.cmd("XCLIENT ADDR=192.0.2.1"), (550, ["550 5.7.0 Error: insufficient authorization"]))


MOD_SSL = os.path.join(MODULESDIR, "mod_ssl.so")
OPENSSL = shutil.which("openssl")


@unittest.skipUnless(os.path.exists(MOD_SSL) and OPENSSL, "mod_ssl or openssl missing")
class ProxyThenTlsTest(ServerTestCase):
    """Implicit TLS behind a balancer: the PROXY header comes before the TLS
    handshake and is taken off the socket before mod_ssl reads."""

    @classmethod
    def configure(cls, httpd):
        cert = os.path.join(httpd.root, "conf", "cert.pem")
        key = os.path.join(httpd.root, "conf", "key.pem")
        subprocess.run([OPENSSL, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost", "-keyout", key, "-out", cert, "-days", "2"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
        httpd.main_extra += ["LoadModule socache_shmcb_module %s" % q(os.path.join(MODULESDIR,
                                                                                  "mod_socache_shmcb.so")),
                             "LoadModule ssl_module %s" % q(MOD_SSL), "SSLSessionCache none",
                             "SSLRandomSeed startup builtin"]
        cls.vh = httpd.add_smtp("maildir", accept_domains=ANY, extra=[
            "SSLEngine on", "SSLCertificateFile %s" % q(cert), "SSLCertificateKeyFile %s" % q(key),
            "ESMTPProxyProtocol v2", "ESMTPProxyTrusted 127.0.0.1"])

    def test_v2_header_then_tls(self):
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        raw = socket.create_connection(("127.0.0.1", self.vh.port), timeout=20)
        raw.sendall(v2_inet("203.0.113.80", "127.0.0.1", 8080, 465))
        tls = ctx.wrap_socket(raw)
        c = RawClient.__new__(RawClient)  # a RawClient over the TLS socket
        c.sock, c.buf = tls, b""
        with c:
            self.assertEqual(c.reply()[0], 220)
            deliver_raw(c)
        files = self.vh.maildir_files()
        self.assertEqual(len(files), 1)
        with open(files[0], "rb") as f:
            msg = f.read()
        self.assertIn(b"([203.0.113.80])", msg)
        self.assertIn(b" with ESMTPS ", msg)


@unittest.skipUnless(os.path.exists(os.path.join(MODULESDIR, "mod_status.so")), "mod_status is not installed")
class ScoreboardTest(ServerTestCase):
    """httpd's scoreboard (mod_status' Client column) shows the address of
    the PROXY header, not the balancer's."""

    httpd_options = {"main_extra": [
        "LoadModule status_module %s" % os.path.join(MODULESDIR, "mod_status.so"),
        "ExtendedStatus On",
        "<Location /server-status>",
        "    SetHandler server-status",
        "    Require all granted",
        "</Location>"]}

    # The worker MPM: the session keeps its thread, whose scoreboard slot
    # shows the client while the status request runs on another. On the
    # event MPM the session is parked between commands (whatever its
    # timeouts, since the wake timer keeps them), the slot goes back to the
    # MPM, and the status request itself often ran on that worker and
    # overwrote the column: the test failed 1 run in 3.
    mpm = "worker"

    @classmethod
    def configure(cls, httpd):
        cls.vh = httpd.add_smtp("discard", accept_domains=ANY,
                                extra=["ESMTPProxyProtocol v1", "ESMTPProxyTrusted 127.0.0.1"])
        httpd.add_http()

    def test_client_column(self):
        import urllib.request
        url = "http://127.0.0.1:%d/server-status" % self.httpd.http_port

        def page():
            return urllib.request.urlopen(url, timeout=10).read().decode("utf-8", "replace")

        with RawClient(self.vh.port) as c:
            c.send(b"PROXY TCP4 198.51.100.77 127.0.0.1 4077 25\r\n")
            self.assertEqual(c.reply()[0], 220)
            self.assertEqual(c.cmd("EHLO client.example")[0], 250)
            # the worker writes its slot after the reply has gone out
            text = wait_for(lambda: (lambda p: p if "198.51.100.77" in p else None)(page()), 10) or page()
            self.assertIn("198.51.100.77", text)
            self.assertEqual(c.cmd("QUIT")[0], 221)


@unittest.skipUnless(os.path.exists(os.path.join(MODULESDIR, "mod_remoteip.so")), "mod_remoteip is not installed")
class RemoteIPConflictTest(ServerTestCase):
    """mod_remoteip's RemoteIPProxyProtocol on an SMTP address would hide the
    client's address: the connection is refused and the error log says why."""

    httpd_options = {"main_extra": ["LoadModule remoteip_module %s" % os.path.join(MODULESDIR, "mod_remoteip.so")]}
    allowed_log = (r"esmtp:error\].*RemoteIPProxyProtocol is on for this address",)

    @classmethod
    def configure(cls, httpd):
        cls.vh = httpd.add_smtp("discard", accept_domains=ANY, extra=["RemoteIPProxyProtocol On"])

    def test_refused_and_explained(self):
        with RawClient(self.vh.port) as c:
            c.send(b"PROXY TCP4 192.0.2.1 127.0.0.1 1 2\r\n")
            rest = c.rest(timeout=10)
        self.assertTrue(rest.startswith("421 4.3.0"), rest)
        self.assertTrue(wait_for(lambda: any("use ESMTPProxyProtocol" in l for l in self.httpd.log_lines())))


NGINX = shutil.which("nginx", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin"]))
NGINX_MAIL = "/usr/lib/nginx/modules/ngx_mail_module.so"


@unittest.skipUnless(NGINX and os.path.exists(NGINX_MAIL), "nginx with the mail module is not installed")
class NginxXClientTest(ServerTestCase):
    """nginx's mail proxy (`xclient on`, `smtp_auth none`, an auth_http
    server run by the test) in front of mod_esmtp: nginx sends XCLIENT with
    the client's address, and the stored message names the client."""

    @classmethod
    def configure(cls, httpd):
        cls.vh = httpd.add_smtp("maildir", accept_domains=ANY, log_file="esmtp.log", log_level=1,
                                extra=["ESMTPXClientHosts 127.0.0.1"])

    @classmethod
    def setUpClass(cls):
        import http.server
        super().setUpClass()
        backend = cls.vh.port

        class Auth(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Auth-Status", "OK")
                self.send_header("Auth-Server", "127.0.0.1")
                self.send_header("Auth-Port", str(backend))
                self.end_headers()

            def log_message(self, *args):
                pass

        cls.auth = http.server.HTTPServer(("127.0.0.1", 0), Auth)
        threading.Thread(target=cls.auth.serve_forever, daemon=True).start()
        cls.nginx_root = tempfile.mkdtemp(prefix="esmtp-it-nginx-")
        cls.nginx_port = free_port()
        conf = os.path.join(cls.nginx_root, "nginx.conf")
        with open(conf, "w") as f:
            f.write("daemon off;\nmaster_process off;\npid %s/nginx.pid;\nerror_log %s/error.log info;\n"
                    "load_module %s;\nevents { worker_connections 64; }\n"
                    "mail {\n  server_name front.example;\n  auth_http 127.0.0.1:%d/auth;\n  xclient on;\n"
                    "  smtp_auth none;\n  server { listen 127.0.0.1:%d; protocol smtp; }\n}\n"
                    % (cls.nginx_root, cls.nginx_root, NGINX_MAIL, cls.auth.server_address[1], cls.nginx_port))
        cls.nginx = subprocess.Popen([NGINX, "-e", os.path.join(cls.nginx_root, "error.log"), "-c", conf,
                                      "-p", cls.nginx_root], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)

        def up():
            try:
                socket.create_connection(("127.0.0.1", cls.nginx_port), timeout=1).close()
                return True
            except OSError:
                return cls.nginx.poll() is not None
        if not wait_for(up, 15) or cls.nginx.poll() is not None:
            cls.tearDownClass()
            raise RuntimeError("nginx did not start")

    @classmethod
    def tearDownClass(cls):
        if cls.nginx.poll() is None:
            cls.nginx.terminate()
            try:
                cls.nginx.wait(10)
            except subprocess.TimeoutExpired:
                cls.nginx.kill()
                cls.nginx.wait(10)
        cls.auth.shutdown()
        cls.auth.server_close()
        shutil.rmtree(cls.nginx_root, ignore_errors=True)
        super().tearDownClass()

    def test_nginx_passes_the_client(self):
        before = len(self.vh.maildir_files())
        with smtplib.SMTP("127.0.0.1", self.nginx_port, timeout=30, source_address=("127.0.0.12", 0)) as s:
            s.ehlo("client.example")
            s.sendmail("s@client.example", ["user@example.org"], "Subject: via nginx\r\n\r\nhello\r\n")
        files = self.vh.maildir_files()
        self.assertEqual(len(files), before + 1)
        with open(max(files, key=os.path.getmtime), "rb") as f:
            msg = f.read()
        # nginx sends NAME=[UNAVAILABLE] (no reverse lookup): "unknown"
        self.assertIn(b"Received: from client.example (unknown [127.0.0.12])", msg)
        self.assertTrue(wait_for(lambda: any("XCLIENT from 127.0.0.1[127.0.0.1]: client unknown[127.0.0.12]" in l
                                             for l in self.vh.log_lines())), "\n".join(self.vh.log_lines()))


class ProxyConfigTest(unittest.TestCase):
    def setUp(self):
        self.httpd = Httpd()

    def tearDown(self):
        self.httpd.cleanup()

    def assertConfigFails(self, extra, *needles):
        self.httpd.add_smtp("discard", extra=extra)
        rc, out = self.httpd.config_test()
        self.assertNotEqual(rc, 0, "apache2 -t accepted the configuration:\n" + out)
        for n in needles:
            self.assertIn(n, out)

    def test_protocol_needs_trusted(self):
        self.assertConfigFails(["ESMTPProxyProtocol v2"], "ESMTPProxyProtocol", "needs ESMTPProxyTrusted")

    def test_bad_mode(self):
        self.assertConfigFails(["ESMTPProxyProtocol v3"], "ESMTPProxyProtocol: needs Off, v1, v2 or any")

    def test_bad_cidr(self):
        self.assertConfigFails(["ESMTPProxyProtocol v1", "ESMTPProxyTrusted 10.0.0.1/8"], "ESMTPProxyTrusted",
                               "10.0.0.1/8")
        self.httpd.cleanup()
        self.httpd = Httpd()
        self.assertConfigFails(["ESMTPXClientHosts localhost"], "ESMTPXClientHosts", "localhost")

    def test_bad_timeout(self):
        self.assertConfigFails(["ESMTPProxyTimeout 0"], "ESMTPProxyTimeout")

    def test_valid(self):
        self.httpd.add_smtp("discard", extra=["ESMTPProxyProtocol any", "ESMTPProxyTrusted 127.0.0.1 10.0.0.0/8 ::1",
                                              "ESMTPProxyTimeout 3", "ESMTPXClientHosts 192.0.2.0/24"])
        rc, out = self.httpd.config_test()
        self.assertEqual(rc, 0, out)


if __name__ == "__main__":
    unittest.main()
