"""Every wait is bounded by its own timeout, parked with the event MPM or
held in a thread (issue 20; README, Running on the event MPM): implicit TLS
with half a ClientHello or nothing, STARTTLS then silence, a DATA stall after
the first block; the stalled connections are counted by the per-client
limits and shown in mod_status; a PROXY refusal is counted too. The main
server's Timeout is set far above the module's deadlines, so a connection
closed well before it was closed by the module's own timeout."""

import os
import shutil
import socket
import ssl
import time
import unittest

from harness import MODULESDIR, PARKING, RawClient, ServerTestCase, q, wait_for
from test_starttls import make_cert, ssl_main_lines, ssl_vhost_lines, tls_wrap
from test_status import STATUS_LINES, parse_auto, fetch

MOD_SSL = os.path.join(MODULESDIR, "mod_ssl.so")
OPENSSL = shutil.which("openssl")
HAVE_SSL = os.path.exists(MOD_SSL) and OPENSSL

# far above every module deadline below: a close before it is the module's
MAIN_TIMEOUT = 60
# ESMTPTimeout tls= of the stalling tests
TLS_TIMEOUT = 2


def client_hello():
    """The first flight of a real TLS client (a ClientHello record)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    hello = outgoing.read()
    assert hello[:1] == b"\x16", hello[:8]  # a handshake record
    return hello


def closed_after(sock, start, limit):
    """Reads until the server closes; seconds from `start`, or None when the
    connection is still open at `limit` seconds."""
    data = b""
    while True:
        left = start + limit - time.monotonic()
        if left <= 0:
            return None, data
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            return None, data
        except (ConnectionResetError, ssl.SSLError, OSError):
            return time.monotonic() - start, data
        if not chunk:
            return time.monotonic() - start, data
        data += chunk


class Stalls:
    """Checks shared by the MPMs."""

    # too many connections: on purpose; mod_ssl's start-up warnings again
    # after the graceful restart
    allowed_log = (r"esmtp:info\].*too many connections", r"AH01873|AH01906|AH01909")
    httpd_options = {"main_extra": STATUS_LINES + ["Timeout %d" % MAIN_TIMEOUT]}

    @classmethod
    def configure(cls, httpd):
        httpd.main_extra += ssl_main_lines()
        httpd.add_http()
        cert, key = make_cert(os.path.join(httpd.root, "conf"))
        tls = ssl_vhost_lines(cert, key)
        cls.implicit = httpd.add_smtp("maildir", accept_domains=["*"], log_file="implicit.log",
                                      timeouts={"tls": TLS_TIMEOUT}, extra=tls)
        cls.limited = httpd.add_smtp("maildir", accept_domains=["*"], log_file="limited.log",
                                     timeouts={"tls": 30},
                                     extra=tls + ["ESMTPClientLimitExceptions none", "ESMTPClientConnectionLimit 3"])
        cls.starttls = httpd.add_smtp("maildir", accept_domains=["*"], log_file="starttls.log",
                                      timeouts={"tls": TLS_TIMEOUT, "command": 3},
                                      extra=ssl_vhost_lines(cert, key, "On"))
        cls.data = httpd.add_smtp("maildir", accept_domains=["*"], timeouts={"data": 3})
        cls.rate = httpd.add_smtp("maildir", accept_domains=["*"], timeouts={"data": 50},
                                  extra=["ESMTPMinDataRate 1000"])

    def auto(self):
        return parse_auto(fetch(self.httpd.http_port, "?auto"))

    def sessions(self, n):
        """Waits until exactly `n` sessions are open; returns the counters."""
        return wait_for(lambda: (lambda a: a if a["ESMTPSessions"] == n else None)(self.auto()), 10)

    def assert_closed_at_tls(self, sock, start, parked=False):
        if parked:
            # held by no thread while it waits (event MPM)
            a = wait_for(lambda: (lambda a: a if a["ESMTPSessionsParked"] >= 1 else None)(self.auto()), 5)
            self.assertTrue(a, self.auto())
        took, data = closed_after(sock, start, MAIN_TIMEOUT / 2)
        self.assertIsNotNone(took, "still open after %ds (tls=%d)" % (MAIN_TIMEOUT / 2, TLS_TIMEOUT))
        self.assertGreater(took, TLS_TIMEOUT - 0.5)
        self.assertLess(took, TLS_TIMEOUT + 10)
        return data

    def test_implicit_tls_nothing_sent(self):
        self.assertTrue(self.sessions(0), self.auto())
        start = time.monotonic()
        with socket.create_connection(("127.0.0.1", self.implicit.port)) as s:
            self.assertEqual(self.assert_closed_at_tls(s, start, parked=self.parks), b"")
        self.assertTrue(wait_for(lambda: any("TLS handshake failed: timeout" in l
                                             for l in self.implicit.log_lines()), 5), self.implicit.log_lines())

    def test_implicit_tls_half_client_hello(self):
        hello = client_hello()
        self.assertTrue(self.sessions(0), self.auto())
        start = time.monotonic()
        with socket.create_connection(("127.0.0.1", self.implicit.port)) as s:
            s.sendall(hello[:len(hello) // 2])
            # no ServerHello can come: nothing at all, then the close
            self.assertEqual(self.assert_closed_at_tls(s, start, parked=self.parks), b"")

    def test_implicit_tls_stalls_counted_and_shown(self):
        # ESMTPClientConnectionLimit 3: three stalls are open and shown in
        # mod_status; the fourth from the same address is refused at once
        self.assertTrue(self.sessions(0), self.auto())
        stalls = [socket.create_connection(("127.0.0.1", self.limited.port)) for _ in range(3)]
        try:
            a = self.sessions(3)
            self.assertTrue(a, self.auto())
            self.assertEqual(a["ESMTPSessionsTLS"], 3, a)
            start = time.monotonic()
            with socket.create_connection(("127.0.0.1", self.limited.port)) as fourth:
                took, data = closed_after(fourth, start, 20)
            self.assertIsNotNone(took)
            self.assertLess(took, 5)  # its tls= is 30 s
            self.assertEqual(data, b"")  # nothing can be said before the handshake
            self.assertTrue(wait_for(lambda: any("too many connections from 127.0.0.1" in l
                                                 for l in self.limited.log_lines()), 5),
                            self.limited.log_lines())
            # the three are still open
            for s in stalls:
                s.settimeout(0.2)
                with self.assertRaises(socket.timeout):
                    s.recv(1)
            self.assertEqual(self.auto()["ESMTPSessions"], 3)
        finally:
            for s in stalls:
                s.close()
        self.assertTrue(self.sessions(0), self.auto())

    def test_implicit_tls_still_delivers(self):
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        raw = socket.create_connection(("127.0.0.1", self.implicit.port), timeout=20)
        c = RawClient.__new__(RawClient)
        c.sock = ctx.wrap_socket(raw)
        c.buf = b""
        try:
            self.assertEqual(c.reply()[0], 220)
            code, lines = c.cmd("EHLO client.example")
            self.assertEqual(code, 250)
            self.assertEqual(c.cmd("QUIT")[0], 221)
        finally:
            c.close()

    def test_clients_leaving_at_the_deadline(self):
        # the timer and the connection's end race: 30 stalls closed by their
        # clients around tls= (2 s), some before the wake-up, some after;
        # no child dies (the error log is checked) and all are gone
        self.assertTrue(self.sessions(0), self.auto())
        socks = [socket.create_connection(("127.0.0.1", self.implicit.port)) for _ in range(30)]
        start = time.monotonic()
        try:
            for i, s in enumerate(socks):
                time.sleep(max(0.0, start + TLS_TIMEOUT - 0.3 + i * 0.02 - time.monotonic()))
                s.close()
        finally:
            for s in socks:
                s.close()
        self.assertTrue(self.sessions(0), self.auto())
        self.test_implicit_tls_still_delivers()

    def test_graceful_restart_ends_a_stalled_implicit_handshake(self):
        # tls=30 here: the restart, not the deadline, ends it
        with socket.create_connection(("127.0.0.1", self.limited.port)) as s:
            self.assertTrue(self.sessions(1), self.auto())
            start = time.monotonic()
            self.httpd.restart(graceful=True)
            took, data = closed_after(s, start, 25)
        self.assertIsNotNone(took)
        self.assertLess(took, 10)
        self.assertEqual(data, b"")

    def test_starttls_then_silence(self):
        c = RawClient(self.starttls.port)
        try:
            self.assertEqual(c.reply()[0], 220)
            self.assertEqual(c.cmd("EHLO client.example")[0], 250)
            self.assertEqual(c.cmd("STARTTLS")[0], 220)
            start = time.monotonic()
            self.assertEqual(self.assert_closed_at_tls(c.sock, start, parked=self.parks), b"")
        finally:
            c.close()
        self.assertTrue(wait_for(lambda: any("TLS handshake failed: timeout" in l
                                             for l in self.starttls.log_lines()), 5), self.starttls.log_lines())

    def test_starttls_session_times_out_at_command_inside_tls(self):
        # after the handshake the session's own command= (3 s) holds too
        c = RawClient(self.starttls.port)
        try:
            self.assertEqual(c.reply()[0], 220)
            self.assertEqual(c.cmd("EHLO client.example")[0], 250)
            self.assertEqual(c.cmd("STARTTLS")[0], 220)
            tls_wrap(c)
            self.assertEqual(c.cmd("EHLO client.example")[0], 250)
            start = time.monotonic()
            took, data = closed_after(c.sock, start, MAIN_TIMEOUT / 2)
            self.assertIsNotNone(took)
            self.assertGreater(took, 2.5)
            self.assertLess(took, 13)
            self.assertIn(b"421 4.4.2", data)
        finally:
            c.close()

    def data_stall(self, vh, first_block):
        c = RawClient(vh.port)
        try:
            self.assertEqual(c.reply()[0], 220)
            self.assertEqual(c.cmd("EHLO client.example")[0], 250)
            self.assertEqual(c.cmd("MAIL FROM:<a@client.example>")[0], 250)
            self.assertEqual(c.cmd("RCPT TO:<b@localhost>")[0], 250)
            self.assertEqual(c.cmd("DATA")[0], 354)
            # the first block right after 354: it arrives while the session
            # may still be on its thread, then the client stalls
            c.send(first_block)
            start = time.monotonic()
            took, data = closed_after(c.sock, start, MAIN_TIMEOUT / 2)
        finally:
            c.close()
        self.assertIsNotNone(took, "DATA stall still open after %ds" % (MAIN_TIMEOUT / 2))
        self.assertIn(b"421 4.4.2", data)
        return took

    def test_data_stall_closed_at_data_timeout(self):
        took = self.data_stall(self.data, b"Subject: stall\r\n\r\nfirst block\r\n")
        self.assertGreater(took, 2.5)  # data=3
        self.assertLess(took, 15)

    def test_data_stall_closed_by_min_data_rate(self):
        # data=50, ESMTPMinDataRate 1000: after the 10 s grace the 30 octets
        # so far are far below the rate
        took = self.data_stall(self.rate, b"Subject: slow\r\n\r\nfirst block\r\n")
        self.assertGreater(took, 9)
        self.assertLess(took, 25)


@unittest.skipUnless(HAVE_SSL and PARKING, "mod_ssl, openssl or parking missing")
class EventStallTest(Stalls, ServerTestCase):
    """Event MPM: every stall is parked with the MPM (no thread held) and
    woken at its own deadline by the module's timer thread."""
    mpm = "event"
    parks = True


@unittest.skipUnless(HAVE_SSL, "mod_ssl or openssl missing")
class WorkerStallTest(Stalls, ServerTestCase):
    """Worker MPM: the same deadlines, waited for in the thread."""
    mpm = "worker"
    parks = False


class ProxyRefusalCountedTest(ServerTestCase):
    """A peer not in ESMTPProxyTrusted is counted by the per-client limit
    before it is refused; the lingering close is the MPM's (the refused
    client keeps its entry until then)."""
    mpm = "event"
    allowed_log = (r"esmtp:info\].*(ESMTPProxyTrusted|too many connections)",)

    @classmethod
    def configure(cls, httpd):
        cls.vh = httpd.add_smtp("maildir", accept_domains=["*"], log_file="proxy.log", extra=[
            "ESMTPProxyProtocol v2", "ESMTPProxyTrusted 192.0.2.1",
            "ESMTPClientLimitExceptions none", "ESMTPClientConnectionLimit 2"])

    def test_refused_peers_are_counted(self):
        held = []
        try:
            for _ in range(2):
                c = RawClient(self.vh.port)
                code, lines = c.reply()
                self.assertEqual(code, 421)
                self.assertIn("load balancer", lines[0])
                held.append(c)  # stays open: the MPM lingers on it
            c = RawClient(self.vh.port)
            code, lines = c.reply()
            c.close()
            self.assertEqual(code, 421)
            self.assertIn("too many connections from 127.0.0.1", lines[0])
        finally:
            for c in held:
                c.close()
        # once the MPM has closed them, the address gets in again (and is
        # refused for what it is)
        def refused_for_balancer():
            with RawClient(self.vh.port) as c:
                return "load balancer" in c.reply()[1][0]
        self.assertTrue(wait_for(refused_for_balancer, 10))


if __name__ == "__main__":
    unittest.main()
