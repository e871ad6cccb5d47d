"""Per-client limits (ESMTPClient*), as Postfix's anvil keeps them: sessions
and connection, message and recipient rates per client address, shared by
every child process and kept across a graceful restart. Each limit test
runs twice: as written (the default ESMTPStateCache, shmcb: counts per
host) and with ESMTPStateCache in a redis-server (the *OnRedis classes:
the node publishes its counts there); the session and rate tests run on a
memcached too (*OnMemcacheTest). TwoNodesRedisTest and TwoNodesMemcacheTest
run two nodes on one redis, one memcached.

The tests run on loopback, which is exempt by default: each server here
sets ESMTPClientLimitExceptions to none (or to another address)."""

import os
import re
import socket
import time
import unittest

import harness
from harness import MODULESDIR, Httpd, ServerTestCase, free_port, q, stop_nodes, wait_for
from peers import Memcached, Redis, on_cache_server
from test_status import STATUS_LINES, fetch, parse_auto

ANY = ["*"]
TOO_MANY_RE = re.compile(r"^421 4\.7\.0 \S+ Error: too many connections from 127\.0\.0\.1\r\n")


class Client:
    """A raw SMTP client, optionally bound to a source address (127.0.0.0/8
    is all local on Linux)."""

    def __init__(self, port, source="127.0.0.1", timeout=20, host="127.0.0.1"):
        self.sock = socket.create_connection((host, port), timeout=timeout, source_address=(source, 0))
        self.buf = b""

    def reply(self):
        lines = []
        while True:
            while b"\r\n" not in self.buf:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise EOFError("closed; buffered %r" % self.buf)
                self.buf += chunk
            line, _, self.buf = self.buf.partition(b"\r\n")
            line = line.decode()
            lines.append(line)
            if len(line) < 4 or line[3] != "-":
                return line[:3], "\r\n".join(lines) + "\r\n"

    def greeting(self):
        return self.reply()

    def cmd(self, text):
        self.sock.sendall(text.encode() + b"\r\n")
        return self.reply()

    def closed(self, timeout=5):
        """True when the server closes the connection within `timeout`."""
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1) == b""
        except (socket.timeout, ConnectionResetError):
            return False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def open_sessions(port, n, source="127.0.0.1"):
    """n sessions, each greeted before the next connects: [(client, code, text)]."""
    out = []
    for _ in range(n):
        c = Client(port, source)
        code, text = c.greeting()
        out.append((c, code, text))
    return out


def quit_all(sessions):
    for c, code, _ in sessions:
        if code == "220":
            try:
                c.cmd("QUIT")
            except (OSError, EOFError):
                pass
        c.close()


def greeted_when_free(port, source="127.0.0.1", timeout=10, host="127.0.0.1"):
    """Connect until a session is greeted (decrements land when the server
    has ended the sessions); the code of the last try."""
    deadline = time.time() + timeout
    while True:
        c = Client(port, source, host=host)
        code, _ = c.greeting()
        if code == "220":
            c.cmd("QUIT")
        c.close()
        if code == "220" or time.time() > deadline:
            return code
        time.sleep(0.2)


def pids_of_sessions(lines, client="127.0.0.1"):
    """Pids of the error-log lines "connect from ...[client]" (the
    transaction log at level 1 goes to the error log at info)."""
    pids = set()
    for line in lines:
        if "connect from" in line and "[%s]" % client in line:
            m = re.search(r"\[pid (\d+)", line)
            if m:
                pids.add(int(m.group(1)))
    return pids


class ConnectionLimitTest(ServerTestCase):
    """The default limit of 50 sessions per client, on the event MPM with
    two children."""

    @classmethod
    def configure(cls, httpd):
        cls.vh = httpd.add_smtp("maildir", accept_domains=ANY, extra=["ESMTPClientLimitExceptions none"])
        # loopback exempt (the default): never limited
        cls.exempt = httpd.add_smtp("maildir", accept_domains=ANY, extra=["ESMTPClientConnectionLimit 2"])
        cls.other = httpd.add_smtp("maildir", accept_domains=ANY,
                                   extra=["ESMTPClientConnectionLimit 1", "ESMTPClientLimitExceptions 127.0.0.2"])

    def test_51st_session_refused_second_address_served(self):
        sessions = open_sessions(self.vh.port, 60)
        try:
            codes = [code for _, code, _ in sessions]
            self.assertEqual(codes, ["220"] * 50 + ["421"] * 10)
            for c, code, text in sessions[50:]:
                self.assertRegex(text, TOO_MANY_RE)
                self.assertTrue(c.closed(), "a refused session is closed")
            # another address is its own client
            c = Client(self.vh.port, "127.0.0.2")
            self.assertEqual(c.greeting()[0], "220")
            self.assertEqual(c.cmd("EHLO two.example")[0], "250")
            self.assertEqual(c.cmd("MAIL FROM:<a@two.example>")[0], "250")
            self.assertEqual(c.cmd("RCPT TO:<b@localhost>")[0], "250")
            self.assertEqual(c.cmd("DATA")[0], "354")
            self.assertEqual(c.cmd("Subject: x\r\n\r\nhi\r\n.")[0], "250")
            c.cmd("QUIT")
            c.close()
            # Which child took each session is the kernel's choice (both
            # usually do); PreforkChildrenTest shows the count shared by
            # processes for certain.
            self.assertGreaterEqual(len(pids_of_sessions(self.httpd.log_lines())), 1)
            # the refusals are logged with the address and the limit
            log = "\n".join(self.httpd.log_lines())
            self.assertIn("too many connections from 127.0.0.1: connection limit 50", log)
        finally:
            quit_all(sessions)
        # every ended session gave its count back
        self.assertEqual(greeted_when_free(self.vh.port), "220")
        again = wait_for(lambda: self._all_greeted(50), 10, 0.5)
        self.assertTrue(again, "50 sessions again after the first 50 ended")

    def _all_greeted(self, n):
        sessions = open_sessions(self.vh.port, n)
        try:
            return all(code == "220" for _, code, _ in sessions)
        finally:
            quit_all(sessions)

    def test_exceptions_not_limited(self):
        sessions = open_sessions(self.exempt.port, 6)
        try:
            self.assertEqual([code for _, code, _ in sessions], ["220"] * 6)
        finally:
            quit_all(sessions)
        # an exception of its own: 127.0.0.2 unlimited, 127.0.0.1 limited to 1
        sessions = open_sessions(self.other.port, 3, "127.0.0.2")
        first = open_sessions(self.other.port, 2)
        try:
            self.assertEqual([code for _, code, _ in sessions], ["220"] * 3)
            self.assertEqual([code for _, code, _ in first], ["220", "421"])
        finally:
            quit_all(sessions + first)


class EndPathsTest(ServerTestCase):
    """Every way a session ends gives its count back exactly once: after
    QUIT, a timeout, a client gone mid-DATA and one gone while idle, the
    limit admits exactly as many sessions as before."""

    @classmethod
    def configure(cls, httpd):
        cls.vh = httpd.add_smtp("maildir", accept_domains=ANY, timeouts={"command": 2},
                                extra=["ESMTPClientLimitExceptions none", "ESMTPClientConnectionLimit 4"])

    def test_each_end_path_decrements_once(self):
        for _ in range(2):
            sessions = open_sessions(self.vh.port, 5)
            self.assertEqual([code for _, code, _ in sessions], ["220"] * 4 + ["421"])
            (quit, _, _), (timeout, _, _), (mid_data, _, _), (gone, _, _) = sessions[:4]
            quit.cmd("QUIT")
            mid_data.cmd("EHLO x.example")
            mid_data.cmd("MAIL FROM:<a@x.example>")
            mid_data.cmd("RCPT TO:<b@localhost>")
            mid_data.cmd("DATA")
            mid_data.sock.sendall(b"Subject: cut\r\n\r\nhalf a mes")
            mid_data.close()
            gone.close()
            code, text = timeout.reply()  # 421 4.4.2 after command=2
            self.assertEqual(code, "421", text)
            for c, _, _ in sessions:
                c.close()
            again = wait_for(lambda: self._exactly(4), 10, 0.5)
            self.assertTrue(again, "4 sessions admitted and the 5th refused")

    def _exactly(self, n):
        sessions = open_sessions(self.vh.port, n + 1)
        try:
            return [code for _, code, _ in sessions] == ["220"] * n + ["421"]
        finally:
            quit_all(sessions)
            # let the server end them before the next round counts
            time.sleep(0.3)


def ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@unittest.skipUnless(ipv6_loopback(), "no IPv6 loopback")
class Ipv6Test(ServerTestCase):
    """An IPv6 client (::1) is counted like any other (per /64 network)."""

    @classmethod
    def configure(cls, httpd):
        cls.port = harness.free_port()
        httpd.main_extra += [
            "Listen [::1]:%d smtp" % cls.port,
            "<VirtualHost [::1]:%d>" % cls.port,
            "    ServerName smtp6.test",
            "    ESMTPProtocol On",
            "    ESMTPHandler discard",
            "    ESMTPClientLimitExceptions none",
            "    ESMTPClientConnectionLimit 2",
            "</VirtualHost>",
        ]

    def test_ipv6_client_limited(self):
        socks = []
        try:
            replies = []
            for _ in range(3):
                s = socket.create_connection(("::1", self.port), timeout=10)
                socks.append(s)
                replies.append(s.recv(1000).decode())
            self.assertTrue(replies[0].startswith("220 ") and replies[1].startswith("220 "), replies)
            self.assertEqual(replies[2], "421 4.7.0 smtp6.test Error: too many connections from ::1\r\n")
        finally:
            for s in socks:
                s.close()


class RatesTest(ServerTestCase):
    """Connection, message and recipient rates hit, then recover after the
    time unit (3 s here: the hits happen well within it)."""

    @classmethod
    def configure(cls, httpd):
        none = "ESMTPClientLimitExceptions none"
        cls.conn = httpd.add_smtp("maildir", accept_domains=ANY, extra=[none, "ESMTPClientConnectionRate 3/3"])
        cls.mail = httpd.add_smtp("maildir", accept_domains=ANY, extra=[none, "ESMTPClientMessageRate 2/3"])
        cls.rcpt = httpd.add_smtp("maildir", accept_domains=ANY, extra=[none, "ESMTPClientRecipientRate 3/3"])

    def test_connection_rate(self):
        start = time.time()
        codes = []
        for _ in range(4):
            c = Client(self.conn.port)
            code, text = c.greeting()
            codes.append(code)
            if code == "220":
                c.cmd("QUIT")
            else:
                self.assertRegex(text, TOO_MANY_RE)
            c.close()
        if time.time() - start < 2.5:
            self.assertEqual(codes, ["220", "220", "220", "421"])
        time.sleep(max(0, start + 3.2 - time.time()))
        self.assertEqual(greeted_when_free(self.conn.port, timeout=5), "220")
        self.assertIn("connection rate 3/3s", "\n".join(self.httpd.log_lines()))

    def test_message_rate(self):
        c = Client(self.mail.port)
        self.assertEqual(c.greeting()[0], "220")
        c.cmd("EHLO rate.example")
        start = time.time()
        self.assertEqual(c.cmd("MAIL FROM:<a@rate.example>")[0], "250")
        c.cmd("RSET")
        self.assertEqual(c.cmd("MAIL FROM:<a@rate.example>")[0], "250")
        c.cmd("RSET")
        code, text = c.cmd("MAIL FROM:<a@rate.example>")
        # another session of the same client shares the count
        d = Client(self.mail.port)
        d.greeting()
        d.cmd("EHLO rate.example")
        code2, text2 = d.cmd("MAIL FROM:<a@rate.example>")
        if time.time() - start < 2.5:
            self.assertEqual(text, "450 4.7.1 Error: too much mail from 127.0.0.1\r\n")
            self.assertEqual(text2, "450 4.7.1 Error: too much mail from 127.0.0.1\r\n")
        # not closed
        self.assertEqual(c.cmd("NOOP")[0], "250")
        time.sleep(max(0, start + 3.2 - time.time()))
        self.assertEqual(c.cmd("MAIL FROM:<a@rate.example>")[0], "250")
        c.cmd("QUIT")
        d.cmd("QUIT")
        c.close()
        d.close()
        self.assertIn("too much mail from 127.0.0.1: message rate 2/3s", "\n".join(self.httpd.log_lines()))

    def test_recipient_rate(self):
        c = Client(self.rcpt.port)
        self.assertEqual(c.greeting()[0], "220")
        c.cmd("EHLO rate.example")
        c.cmd("MAIL FROM:<a@rate.example>")
        start = time.time()
        codes = [c.cmd("RCPT TO:<r%d@localhost>" % i)[1] for i in range(4)]
        if time.time() - start < 2.5:
            self.assertEqual(codes, ["250 2.1.5 Ok\r\n"] * 3 + ["450 4.7.1 Error: too many recipients from 127.0.0.1\r\n"])
        # the message goes to the accepted ones
        self.assertEqual(c.cmd("DATA")[0], "354")
        self.assertEqual(c.cmd("Subject: x\r\n\r\nhi\r\n.")[0], "250")
        time.sleep(max(0, start + 3.2 - time.time()))
        c.cmd("MAIL FROM:<a@rate.example>")
        self.assertEqual(c.cmd("RCPT TO:<later@localhost>")[0], "250")
        c.cmd("QUIT")
        c.close()
        self.assertIn("too many recipients from 127.0.0.1: recipient rate 3/3s", "\n".join(self.httpd.log_lines()))


class XClientTest(ServerTestCase):
    """Behind a front end (ESMTPXClientHosts) the counts follow the client
    that XCLIENT names, and the front end is held to no connection limit."""

    @classmethod
    def configure(cls, httpd):
        front = "ESMTPXClientHosts 127.0.0.1"
        # loopback exempt (the default): the clients behind it are still counted
        cls.exempt = httpd.add_smtp("maildir", accept_domains=ANY, extra=[front, "ESMTPClientMessageRate 2/60"])
        cls.none = httpd.add_smtp("maildir", accept_domains=ANY,
                                  extra=[front, "ESMTPClientMessageRate 2/60", "ESMTPClientLimitExceptions none",
                                         "ESMTPClientConnectionLimit 3"])

    def behind(self, port, addr):
        c = Client(port)
        self.assertEqual(c.greeting()[0], "220")
        self.assertEqual(c.cmd("EHLO front.example")[0], "250")
        self.assertEqual(c.cmd("XCLIENT ADDR=%s" % addr)[0], "220")
        self.assertEqual(c.cmd("EHLO client.example")[0], "250")
        return c

    def mails(self, c, n):
        codes = []
        for _ in range(n):
            code, text = c.cmd("MAIL FROM:<a@client.example>")
            codes.append(text)
            c.cmd("RSET")
        return codes

    def test_exempt_front_end_counts_its_clients(self):
        c = self.behind(self.exempt.port, "203.0.113.9")
        codes = self.mails(c, 3)
        self.assertEqual(codes[:2], ["250 2.1.0 Ok\r\n"] * 2)
        self.assertEqual(codes[2], "450 4.7.1 Error: too much mail from 203.0.113.9\r\n")
        c.cmd("QUIT")
        c.close()

    def test_each_client_its_own_budget(self):
        a = self.behind(self.none.port, "203.0.113.1")
        self.assertEqual(self.mails(a, 3)[2], "450 4.7.1 Error: too much mail from 203.0.113.1\r\n")
        a.cmd("QUIT")
        a.close()
        b = self.behind(self.none.port, "203.0.113.2")
        self.assertEqual(self.mails(b, 2), ["250 2.1.0 Ok\r\n"] * 2)
        b.cmd("QUIT")
        b.close()

    def test_front_end_not_held_to_the_connection_limit(self):
        # ESMTPClientConnectionLimit 3: the front end's own address opens 6
        sessions = open_sessions(self.none.port, 6)
        try:
            self.assertEqual([code for _, code, _ in sessions], ["220"] * 6)
            # re-keyed to one client, its limit holds: 3 sessions, the 4th refused
            texts = []
            for c, _, _ in sessions[:4]:
                c.cmd("EHLO front.example")
                texts.append(c.cmd("XCLIENT ADDR=198.51.100.7")[1])
            self.assertEqual(texts[:3], [texts[0]] * 3)
            self.assertTrue(texts[0].startswith("220 "), texts)
            self.assertRegex(texts[3], r"^421 4\.7\.0 \S+ Error: too many connections from 198\.51\.100\.7\r\n")
            self.assertTrue(sessions[3][0].closed())
        finally:
            quit_all(sessions)


class PreforkChildrenTest(ServerTestCase):
    """prefork: every session is in its own process; the count is shared."""

    mpm = "prefork"
    httpd_options = {"mpm_lines": ["StartServers 6", "MinSpareServers 6", "MaxSpareServers 10", "ServerLimit 16",
                                   "MaxRequestWorkers 16"]}

    @classmethod
    def configure(cls, httpd):
        cls.vh = httpd.add_smtp("maildir", accept_domains=ANY,
                                extra=["ESMTPClientLimitExceptions none", "ESMTPClientConnectionLimit 3"])

    def test_count_shared_by_processes(self):
        sessions = open_sessions(self.vh.port, 4)
        try:
            self.assertEqual([code for _, code, _ in sessions], ["220", "220", "220", "421"])
            pids = wait_for(lambda: len(pids_of_sessions(self.httpd.log_lines())) >= 3 and
                            pids_of_sessions(self.httpd.log_lines()), 5)
            self.assertEqual(len(pids), 3, "three sessions in three processes")
        finally:
            quit_all(sessions)
        self.assertEqual(greeted_when_free(self.vh.port), "220")

    def test_killed_child_count_dropped_at_hard_restart(self):
        # A child killed with SIGKILL cannot give its sessions back: they
        # count until a non-graceful restart, when no child is left.
        mark = len(self.httpd.log_lines())
        sessions = open_sessions(self.vh.port, 3)
        try:
            self.assertEqual([code for _, code, _ in sessions], ["220"] * 3)
            pids = wait_for(lambda: len(pids_of_sessions(self.httpd.log_lines()[mark:])) >= 3 and
                            pids_of_sessions(self.httpd.log_lines()[mark:]), 5)
            self.assertEqual(len(pids), 3)
            for pid in pids:
                os.kill(pid, 9)
            time.sleep(1)
            c = Client(self.vh.port)
            self.assertEqual(c.greeting()[0], "421", "the killed sessions still count")
            c.close()
            self.httpd.restart(graceful=False)
            self.assertEqual(greeted_when_free(self.vh.port, timeout=5), "220")
        finally:
            for c, _, _ in sessions:
                c.close()


class GracefulRestartTest(ServerTestCase):
    """Sessions of the old generation still count after a graceful restart,
    and give their count back when they end."""

    allowed_log = (r"AH03092",)

    @classmethod
    def configure(cls, httpd):
        cls.vh = httpd.add_smtp("maildir", accept_domains=ANY,
                                extra=["ESMTPClientLimitExceptions none", "ESMTPClientConnectionLimit 2"])

    def test_counts_survive_graceful_restart(self):
        sessions = open_sessions(self.vh.port, 2)
        try:
            for c, code, _ in sessions:
                self.assertEqual(code, "220")
                c.cmd("EHLO restart.example")
                # in a transaction: not idle, so the old child keeps the session
                self.assertEqual(c.cmd("MAIL FROM:<a@restart.example>")[0], "250")
            self.httpd.restart(graceful=True)
            c = Client(self.vh.port)
            code, text = c.greeting()
            c.close()
            self.assertEqual(code, "421", "the old generation's sessions still count: " + text)
            # the old sessions go on and end
            for s, _, _ in sessions:
                self.assertEqual(s.cmd("RCPT TO:<b@localhost>")[0], "250")
        finally:
            quit_all(sessions)
        self.assertEqual(greeted_when_free(self.vh.port), "220")


class FloodTest(ServerTestCase):
    """One-shot sessions from 400 addresses of 127.0.0.0/8 through a table of
    64 entries: all are served (idle entries are evicted), the table stays at
    its size, and the limit still holds afterwards."""

    httpd_options = {"main_extra": ["ESMTPClientLimitTableSize 64"], "log_level": "warn esmtp:debug"}

    @classmethod
    def configure(cls, httpd):
        cls.vh = httpd.add_smtp("maildir", accept_domains=ANY,
                                extra=["ESMTPClientLimitExceptions none", "ESMTPClientConnectionLimit 2"])

    def test_flood_bounded(self):
        log = "\n".join(self.httpd.log_lines())
        m = re.search(r"per-client table of 64 entries \((\d+) bytes\)", log)
        self.assertTrue(m, "table size logged")
        for i in range(400):
            src = "127.0.%d.%d" % (1 + i // 200, 1 + i % 200)
            c = Client(self.vh.port, src)
            code, text = c.greeting()
            self.assertEqual(code, "220", "%s: %s" % (src, text))
            c.cmd("QUIT")
            c.close()
        # the limit still holds for a client after the flood
        sessions = open_sessions(self.vh.port, 3)
        try:
            self.assertEqual([code for _, code, _ in sessions], ["220", "220", "421"])
        finally:
            quit_all(sessions)
        # at the next generation the table reports its use: within its bound
        self.httpd.restart(graceful=True)
        stats = wait_for(lambda: re.findall(r"per-client table: (\d+) of (\d+) entries used, \d+ sessions, (\d+) "
                                            r"evictions", "\n".join(self.httpd.log_lines())), 5)
        used, capacity, evictions = map(int, stats[-1])
        self.assertEqual(capacity, 64)
        self.assertLessEqual(used, 64)
        self.assertGreaterEqual(evictions, 400 - 64)
        evicted = sum("evicted an idle entry" in line for line in self.httpd.log_lines())
        self.assertGreaterEqual(evicted, 400 - 64)


MOD_QOS = os.path.join(harness.MODULESDIR, "mod_qos.so")
# Debian's mod_qos 11.63 was built for an httpd that exported PCRE1's
# symbols; httpd 2.4.71 uses PCRE2, so it loads only with libpcre.so.3
# preloaded ("undefined symbol: pcre_free" otherwise).
LIBPCRE3 = "/lib/x86_64-linux-gnu/libpcre.so.3"


@unittest.skipUnless(os.path.exists(MOD_QOS) and os.path.exists(LIBPCRE3), "mod_qos (libapache2-mod-qos) not installed")
@unittest.skipIf("asan" in os.environ.get("ESMTP_TEST_LD_PRELOAD", "").lower(),
                 "mod_qos needs libpcre3 preloaded; not mixed with the sanitizer runtime")
class ModQosTest(ServerTestCase):
    """What mod_qos's QS_SrvMaxConnPerIP does on an SMTP virtual host: the
    excess connections are closed before any greeting (no 421), logged at
    error level."""

    allowed_log = (r"mod_qos\(031\): access denied, QS_SrvMaxConnPerIP", r"mod_qos\(009\)")
    httpd_options = {"main_extra": ["LoadModule qos_module %s" % MOD_QOS]}

    @classmethod
    def setUpClass(cls):
        cls._saved_preload = harness.HTTPD_ENV.get("LD_PRELOAD")
        # after what is preloaded already (a sanitizer's runtime must come first)
        harness.HTTPD_ENV["LD_PRELOAD"] = " ".join(p for p in (cls._saved_preload, LIBPCRE3) if p)
        try:
            super().setUpClass()
        except BaseException:
            cls._restore_preload()  # tearDownClass does not run after a failed setUpClass
            raise

    @classmethod
    def _restore_preload(cls):
        if cls._saved_preload is None:
            harness.HTTPD_ENV.pop("LD_PRELOAD", None)
        else:
            harness.HTTPD_ENV["LD_PRELOAD"] = cls._saved_preload

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            cls._restore_preload()

    @classmethod
    def configure(cls, httpd):
        cls.vh = httpd.add_smtp("maildir", accept_domains=ANY,
                                extra=["QS_SrvMaxConnPerIP 2", "ESMTPClientConnectionLimit 0"])

    def test_excess_connections_closed_without_reply(self):
        socks = []
        try:
            for _ in range(4):
                s = socket.create_connection(("127.0.0.1", self.vh.port), timeout=10)
                socks.append(s)
                data = b""
                try:
                    data = s.recv(1000)
                except (ConnectionResetError, socket.timeout):
                    pass
                socks[-1] = (s, data)
            got = [data for _, data in socks]
            self.assertTrue(got[0].startswith(b"220 ") and got[1].startswith(b"220 "), got)
            self.assertEqual(got[2:], [b"", b""], "closed without a reply")
        finally:
            for s in socks:
                (s[0] if isinstance(s, tuple) else s).close()


def on_cache(base, cache):
    """`base` again, with ESMTPStateCache in a server of `cache` (a peers
    class: Redis, Memcached) started for the class: the node shares its
    counts there (one node: the limits behave as on shmcb)."""

    class OnCache(base):
        @classmethod
        def setUpClass(cls):
            cls.cache = cache()
            options = dict(base.httpd_options)
            options["main_extra"] = list(options.get("main_extra", [])) + [
                cache.module(), "ESMTPStateCache " + cls.cache.spec()]
            cls.httpd_options = options
            try:
                super().setUpClass()
            except BaseException:
                cls.cache.cleanup()
                raise

        @classmethod
        def tearDownClass(cls):
            try:
                super().tearDownClass()
            finally:
                cls.cache.cleanup()

        def test_counts_shared_through_the_cache(self):
            lines = wait_for(lambda: [line for line in self.httpd.log_lines()
                                      if "per-client counts shared through ESMTPStateCache %s:" % cache.PROVIDER
                                      in line], 5)
            self.assertTrue(lines, "the node shares its counts")
            # the node registered itself and publishes its counts (one line a client)
            node = re.search(r"as node (\S+),", lines[-1]).group(1)
            self.assertTrue(wait_for(lambda: node in (self.cache.get("esmtp-limits:nodes") or "").split(), 5),
                            "node %s not in the registry" % node)
            snapshot = wait_for(lambda: self.cache.get("esmtp-limits:node:" + node), 5)
            self.assertTrue(snapshot and snapshot.startswith("esmtp-counts 1\n"), snapshot)

    suffix = "On%sTest" % cache.PROVIDER.capitalize()
    OnCache.__name__ = OnCache.__qualname__ = base.__name__.replace("Test", suffix)
    OnCache.__doc__ = (base.__doc__ or "") + " (ESMTPStateCache %s)" % cache.PROVIDER
    missing = cache.missing()
    return unittest.skipIf(missing, missing or "")(OnCache)


ConnectionLimitOnRedisTest = on_cache(ConnectionLimitTest, Redis)
EndPathsOnRedisTest = on_cache(EndPathsTest, Redis)
Ipv6OnRedisTest = on_cache(Ipv6Test, Redis)
RatesOnRedisTest = on_cache(RatesTest, Redis)
XClientOnRedisTest = on_cache(XClientTest, Redis)
PreforkChildrenOnRedisTest = on_cache(PreforkChildrenTest, Redis)
GracefulRestartOnRedisTest = on_cache(GracefulRestartTest, Redis)
FloodOnRedisTest = on_cache(FloodTest, Redis)
# memcache: the limits where the cache matters most (sessions and rates)
ConnectionLimitOnMemcacheTest = on_cache(ConnectionLimitTest, Memcached)
RatesOnMemcacheTest = on_cache(RatesTest, Memcached)


def shared(node):
    return parse_auto(fetch(node.http_port, "?auto"))


class TwoNodes:
    """Two httpd nodes sharing one cache server (CACHE: a peers class;
    TwoNodesRedisTest, TwoNodesMemcacheTest), one service: the same port on
    127.0.0.1 (node 1) and 127.0.0.2 (node 2), ESMTPClientConnectionLimit 2.
    The connection limit counts the sessions on both nodes; the cache
    stopped: each node counts its own (fail open), the error log and
    mod_status say so. ESMTPClientMessageRate 2/60: one MAIL on each node
    fills it."""

    CACHE = None

    @classmethod
    def allowed(cls):
        return (r"per-client counts cannot be shared",
                r"ESMTPStateCache %s:127\.0\.0\.1:\d+: (retrieve|store) failed for the per-client counts"
                % cls.CACHE.PROVIDER,
                cls.CACHE.LOG_PATTERN)

    @classmethod
    def setUpClass(cls):
        cls.cache = cls.CACHE()
        cls.port = free_port()
        cls.nodes = []
        try:
            for address in ("127.0.0.1", "127.0.0.2"):
                h = Httpd(main_extra=STATUS_LINES + [cls.CACHE.module(),
                                                     "ESMTPStateCache %s interval=1" % cls.cache.spec()])
                cls.nodes.append(h)
                h.add_http()
                h.address = address
                h.vh = h.add_smtp("maildir", accept_domains=ANY, port=cls.port, address=address,
                                  extra=["ESMTPClientLimitExceptions none", "ESMTPClientConnectionLimit 2",
                                         "ESMTPClientMessageRate 2/60"])
                h.start()
                h.node = re.findall(r"as node (\S+),", "\n".join(h.log_lines()))[-1]
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        stop_nodes(cls.nodes, cls.allowed(), (cls.cache.cleanup, ))

    def setUp(self):
        # The sessions of the test before have ended on both nodes and the
        # other node has read that (a session that has just got its 221 may
        # not have ended yet; a node reads the other's counts each interval).
        one, two = self.nodes
        for node, other in ((one, two), (two, one)):
            self.assertTrue(wait_for(lambda: not re.search(r"^0{20}ffff7f000001/%d [1-9]" % self.port,
                                                           self.cache.get("esmtp-limits:node:" + node.node) or "",
                                                           re.M), 10, 0.1),
                            "the sessions of the test before are still counted on " + node.address)
            self.assertTrue(self.exchanged(other))

    def connect(self, node):
        c = Client(self.port, host=node.address)
        code, text = c.greeting()
        return c, code, text

    def up(self, node):
        return shared(node)["ESMTPSharedLimitsUp"] == 1

    def all_greeted(self, node, n):
        sessions = []
        try:
            for _ in range(n):
                sessions.append(self.connect(node))
            return all(code == "220" for _, code, _ in sessions)
        finally:
            quit_all(sessions)

    def exchanged(self, node, n=2):
        """`node` has done `n` more exchanges with the cache (the first may
        have begun before the state waited for)."""
        start = shared(node)["ESMTPSharedLimitsExchanges"]
        # 30 s: the exchanges run every second, but on prefork under load a
        # 10 s wait once ran out (CI)
        return wait_for(lambda: shared(node)["ESMTPSharedLimitsExchanges"] >= start + n, 30, 0.1)

    def published(self, node, pattern):
        """`node`'s snapshot in the cache has a line matching `pattern`."""
        return wait_for(lambda: re.search(pattern, self.cache.get("esmtp-limits:node:" + node.node) or "", re.M), 10,
                        0.1)

    def test_node_ids_distinct(self):
        self.assertNotEqual(self.nodes[0].node, self.nodes[1].node)

    def test_message_rate_counts_both_nodes(self):
        one, two = self.nodes
        source = "127.0.0.3"  # 7f000003: its own client
        line = r"^0{20}ffff7f000003/%d \d+ 0:0 1:\d+ " % self.port
        c = Client(self.port, source, host=one.address)
        self.assertEqual(c.greeting()[0], "220")
        c.cmd("EHLO rate.example")
        self.assertEqual(c.cmd("MAIL FROM:<a@rate.example>")[0], "250")
        c.cmd("QUIT")
        c.close()
        # node 1 published its MAIL, then node 2 read it
        self.assertTrue(self.published(one, line), "node 1 did not publish the MAIL")
        self.assertTrue(self.exchanged(two))
        d = Client(self.port, source, host=two.address)
        try:
            self.assertEqual(d.greeting()[0], "220")
            d.cmd("EHLO rate.example")
            self.assertEqual(d.cmd("MAIL FROM:<a@rate.example>")[0], "250")
            d.cmd("RSET")
            self.assertEqual(d.cmd("MAIL FROM:<a@rate.example>")[1],
                             "450 4.7.1 Error: too much mail from 127.0.0.3\r\n")
            # and node 1 counts node 2's MAIL
            self.assertTrue(self.published(two, line))
            self.assertTrue(self.exchanged(one))
            e = Client(self.port, source, host=one.address)
            self.assertEqual(e.greeting()[0], "220")
            e.cmd("EHLO rate.example")
            self.assertEqual(e.cmd("MAIL FROM:<a@rate.example>")[1],
                             "450 4.7.1 Error: too much mail from 127.0.0.3\r\n")
            e.cmd("QUIT")
            e.close()
        finally:
            d.cmd("QUIT")
            d.close()

    def test_connection_limit_counts_both_nodes(self):
        one, two = self.nodes
        session = r"^0{20}ffff7f000001/%d 1 " % self.port  # 127.0.0.1, one session
        held = []
        try:
            for node in (one, two):
                c, code, text = self.connect(node)
                held.append((c, code, text))
                self.assertEqual(code, "220", text)
            # each node publishes its session; then the other reads it
            for node, other in ((one, two), (two, one)):
                self.assertTrue(self.published(node, session), "no session published by " + node.address)
                self.assertTrue(self.exchanged(other))
                self.assertTrue(self.up(other))
                self.assertGreaterEqual(shared(other)["ESMTPSharedLimitsNodes"], 1)
                self.assertGreaterEqual(shared(other)["ESMTPSharedLimitsRemoteClients"], 1)
            for node in (one, two):
                c, code, text = self.connect(node)
                self.assertEqual(code, "421", "a third session on %s" % node.address)
                self.assertRegex(text, TOO_MANY_RE)
                self.assertTrue(c.closed())
                c.close()
            self.assertIn("too many connections from 127.0.0.1: connection limit 2 (sessions: 2)",
                          "\n".join(one.log_lines()))
        finally:
            quit_all(held)
        # the closes reach the other node: two sessions on one node again
        self.assertTrue(wait_for(lambda: self.all_greeted(one, 2) and self.all_greeted(two, 2), 10, 0.3),
                        "the counts did not fall after the closes")

    def test_large_snapshot_read(self):
        """A node's counts near their bound (512 KiB, some 8,000 clients)
        are read through the provider: a node "big" put into the cache
        publishes 500,000 octets the nodes skip and, last, two sessions of
        127.0.0.1; they fill the limit on node 1 (memcached keeps items up
        to 1 MiB by default; apr_memcache reads a value that large)."""
        one, two = self.nodes
        session = "%032x/%d 2%s\n" % (0xffff7f000001, self.port, " 0:0" * 4)
        self.cache.set("esmtp-limits:node:big", "esmtp-counts 1\n" + ("#" * 99 + "\n") * 5000 + session, 60)
        self.cache.set("esmtp-limits:nodes", " ".join((one.node, two.node, "big")), 600)
        try:
            self.assertTrue(wait_for(lambda: shared(one)["ESMTPSharedLimitsNodes"] == 2 and self.up(one), 10, 0.1),
                            "node 1 did not read the big node: %r" % shared(one))
            c, code, text = self.connect(one)
            c.close()
            self.assertEqual(code, "421", "the big node's two sessions count on node 1: " + text)
        finally:
            # gone in a second; then the nodes drop it from the registry
            self.cache.set("esmtp-limits:node:big", "esmtp-counts 1\n", 1)
        self.assertTrue(wait_for(lambda: shared(one)["ESMTPSharedLimitsNodes"] == 1, 10, 0.1))

    def test_cache_stopped_limits_per_node(self):
        one, two = self.nodes
        session = r"^0{20}ffff7f000001/%d 1 " % self.port
        self.assertTrue(wait_for(lambda: self.up(one) and self.up(two), 10, 0.2))
        held = []
        try:
            held.append(self.connect(two))
            self.assertEqual(held[-1][1], "220")
            self.assertTrue(self.published(two, session))
            self.assertTrue(self.exchanged(one))
            held.append(self.connect(one))
            self.assertEqual(held[-1][1], "220")
            c, code, _ = self.connect(one)
            c.close()
            self.assertEqual(code, "421", "shared: one session on each node fill the limit")
            before = shared(one)
            one.new_log_lines()
            self.cache.stop()
            try:
                # fail open: node 1 drops node 2's count and counts its own
                self.assertTrue(wait_for(lambda: shared(one)["ESMTPSharedLimitsUp"] == 0 and
                                         shared(one)["ESMTPSharedLimitsRemoteClients"] == 0, 10, 0.2))
                self.assertGreater(shared(one)["ESMTPStateCacheErrors"], before["ESMTPStateCacheErrors"])
                held.append(self.connect(one))
                c, code, text = held[-1]
                self.assertEqual(code, "220", "cache down: node 1 counts its own sessions only: " + text)
                # and mail flows
                self.assertEqual(c.cmd("EHLO down.example")[0], "250")
                self.assertEqual(c.cmd("MAIL FROM:<a@down.example>")[0], "250")
                self.assertEqual(c.cmd("RCPT TO:<b@localhost>")[0], "250")
                self.assertEqual(c.cmd("DATA")[0], "354")
                self.assertEqual(c.cmd("Subject: cache down\r\n\r\nhi\r\n.")[0], "250")
                log = wait_for(lambda: [line for line in one.new_log_lines()
                                        if "per-client counts cannot be shared" in line], 5)
                self.assertTrue(log, "the error log does not say the counts are not shared")
            finally:
                self.cache.start()
            # back: node 2's session counts on node 1 again
            self.assertTrue(wait_for(lambda: self.up(one) and self.up(two), 15, 0.2),
                            "sharing did not come back: %r" % shared(one))
            self.assertTrue(self.published(two, session))
            self.assertTrue(self.exchanged(one))
            c, code, _ = self.connect(one)
            c.close()
            self.assertEqual(code, "421", "shared again: node 2's session counts on node 1")
            self.assertTrue(wait_for(lambda: [line for line in one.new_log_lines()
                                              if "per-client counts shared again" in line], 5))
        finally:
            quit_all(held)


TwoNodesRedisTest = on_cache_server(TwoNodes, Redis)
TwoNodesMemcacheTest = on_cache_server(TwoNodes, Memcached)


class BadValuesTest(unittest.TestCase):
    """Bad values fail `apache2 -t` naming the directive."""

    CASES = [
        ("ESMTPClientConnectionLimit -1", "ESMTPClientConnectionLimit"),
        ("ESMTPClientConnectionLimit many", "ESMTPClientConnectionLimit"),
        ("ESMTPClientConnectionRate 10", "ESMTPClientConnectionRate"),
        ("ESMTPClientConnectionRate 10/0", "ESMTPClientConnectionRate"),
        ("ESMTPClientMessageRate 0/60", "ESMTPClientMessageRate"),
        ("ESMTPClientRecipientRate 5/minute", "ESMTPClientRecipientRate"),
        ("ESMTPClientIPv6Prefix 129", "ESMTPClientIPv6Prefix"),
        ("ESMTPClientLimitExceptions 10.0.0.0/33", "ESMTPClientLimitExceptions"),
        ("ESMTPClientLimitExceptions none 127.0.0.1", "ESMTPClientLimitExceptions"),
        ("ESMTPClientLimitTableSize 4", "ESMTPClientLimitTableSize"),
        ("ESMTPClientLimitTableSize 64", "ESMTPClientLimitTableSize"),  # in a VirtualHost: server config only
    ]

    def test_bad_values(self):
        for line, directive in self.CASES:
            with self.subTest(line=line):
                httpd = Httpd()
                try:
                    httpd.add_smtp("maildir", extra=[line])
                    rc, out = httpd.config_test()
                    self.assertNotEqual(rc, 0, out)
                    self.assertIn(directive, out)
                finally:
                    httpd.cleanup()

    @staticmethod
    def config_test(main_extra):
        """`apache2 -t` of a server with `main_extra` and one SMTP vhost."""
        httpd = Httpd(main_extra=main_extra)
        try:
            httpd.add_smtp("maildir")
            return httpd.config_test()
        finally:
            httpd.cleanup()

    def test_bad_state_cache_options(self):
        for option in ("node=bad/id", "interval=0", "interval=61", "limits=maybe", "share=1"):
            with self.subTest(option=option):
                rc, out = self.config_test(["ESMTPStateCache shmcb " + option])
                self.assertNotEqual(rc, 0, out)
                self.assertIn("ESMTPStateCache", out)
        # the limits would be shared through redis, and mod_socache_redis is not loaded
        rc, out = self.config_test(["ESMTPStateCache redis:127.0.0.1:6379"])
        self.assertNotEqual(rc, 0, out)
        self.assertIn("ESMTPStateCache: no mod_socache provider 'redis'", out)
        # with limits=node nothing needs it
        rc, out = self.config_test(["ESMTPStateCache redis:127.0.0.1:6379 limits=node"])
        self.assertEqual(rc, 0, out)

    def test_good_values(self):
        httpd = Httpd(main_extra=["ESMTPClientLimitTableSize 100000", "ESMTPClientConnectionRate off"])
        try:
            httpd.add_smtp("maildir", extra=["ESMTPClientConnectionLimit 0", "ESMTPClientMessageRate 100/3600",
                                             "ESMTPClientRecipientRate 0", "ESMTPClientIPv6Prefix 56",
                                             "ESMTPClientLimitExceptions 192.0.2.0/24 2001:db8::/32 127.0.0.1"])
            rc, out = httpd.config_test()
            self.assertEqual(rc, 0, out)
        finally:
            httpd.cleanup()


if __name__ == "__main__":
    unittest.main()
