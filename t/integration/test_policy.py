"""Session policy in a live server: relay refusal (ServerName, ServerAlias,
<postmaster>, ESMTPAcceptDomains), ESMTPMaxErrors, ESMTPTimeout for commands
and DATA, `apache2 -t` on bad values, and 421 to idle clients when httpd
stops."""

import os
import signal
import socket
import subprocess
import time
import unittest

from harness import HTTPD, HTTPD_ENV, Httpd, RawClient, ServerTestCase, unexpected_log_lines, wait_for

DENIED = (550, ["550 5.7.1 Relay access denied"])


def rcpt_events(vh):
    return [l for l in vh.event_lines() if l.startswith("RCPT ")]


class PolicyTest(ServerTestCase):

    @classmethod
    def configure(cls, httpd):
        cls.named = httpd.add_smtp("test", server_name="mx.policy.test", aliases=["*.example.org", "alias.test"])
        cls.other = httpd.add_smtp("test", server_name="mx2.policy.test", accept_domains=["other.test"])
        cls.errors = httpd.add_smtp("test", server_name="err.policy.test", max_errors=3)
        cls.slow = httpd.add_smtp("maildir", server_name="slow.policy.test", timeouts={"command": 2, "data": 2})

    def session(self, vh):
        c = RawClient(vh.port)
        self.assertEqual(c.reply()[0], 220)
        self.assertEqual(c.cmd("EHLO client.example")[0], 250)
        self.assertEqual(c.cmd("MAIL FROM:<a@client.example>")[0], 250)
        return c

    # --- recipient policy

    def test_relay_denied(self):
        before = len(rcpt_events(self.named))
        with self.session(self.named) as c:
            for r in ("a@elsewhere.test", "a@example.org", "a@mx.policy.test.evil.test", "a@policy.test",
                      "a@[127.0.0.2]", "@mx.policy.test:a@elsewhere.test"):
                self.assertEqual(c.cmd("RCPT TO:<%s>" % r), DENIED, r)
            self.assertEqual(c.cmd("DATA"), (503, ["503 5.5.1 Error: need RCPT command"]))
        # the handler was never asked about them
        time.sleep(0.1)
        self.assertEqual(rcpt_events(self.named)[before:], [])

    def test_server_name_and_aliases(self):
        with self.session(self.named) as c:
            for r in ("a@mx.policy.test", "a@MX.Policy.TEST", "a@mx.example.org", "a@deep.sub.example.org",
                      "a@alias.test", "a@[127.0.0.1]"):
                self.assertEqual(c.cmd("RCPT TO:<%s>" % r), (250, ["250 2.1.5 Ok"]), r)
        self.assertIn("RCPT <a@mx.example.org>", wait_for(lambda: rcpt_events(self.named), 2))

    def test_postmaster_without_domain(self):
        for vh in (self.named, self.other):
            with self.session(vh) as c:
                self.assertEqual(c.cmd("RCPT TO:<postmaster>"), (250, ["250 2.1.5 Ok"]))
                self.assertEqual(c.cmd("RCPT TO:<PostMaster>"), (250, ["250 2.1.5 Ok"]))

    def test_accept_domains_replaces_default(self):
        with self.session(self.other) as c:
            self.assertEqual(c.cmd("RCPT TO:<a@other.test>"), (250, ["250 2.1.5 Ok"]))
            self.assertEqual(c.cmd("RCPT TO:<a@OTHER.test>"), (250, ["250 2.1.5 Ok"]))
            self.assertEqual(c.cmd("RCPT TO:<a@mx2.policy.test>"), DENIED)
            self.assertEqual(c.cmd("RCPT TO:<a@sub.other.test>"), DENIED)

    # --- ESMTPMaxErrors

    def test_max_errors(self):
        with RawClient(self.errors.port) as c:
            self.assertEqual(c.reply()[0], 220)
            self.assertEqual(c.cmd("EHLO client.example")[0], 250)
            self.assertEqual(c.cmd("FOO")[0], 500)
            self.assertEqual(c.cmd("NOOP")[0], 250)  # successes do not reset the count
            self.assertEqual(c.cmd("RCPT TO:<a@err.policy.test>")[0], 503)
            c.send("BAR\r\n")
            self.assertEqual(c.reply(), (500, ["500 5.5.2 Command unrecognized"]))
            self.assertEqual(c.reply(), (421, ["421 4.7.0 err.policy.test Error: too many errors"]))
            self.assertEqual(c.rest(5), "")  # closed by the server
        self.assertEqual(wait_for(lambda: self.errors.event_lines()[-1:], 2), ["DISCONNECT"])

    def test_max_errors_pipelined(self):
        with RawClient(self.errors.port) as c:
            self.assertEqual(c.reply()[0], 220)
            # EHLO alone: the client may pipeline once it has seen PIPELINING
            self.assertEqual(c.cmd("EHLO client.example")[0], 250)
            c.send("A\r\nB\r\nC\r\nNOOP\r\nNOOP\r\n")
            for _ in range(3):
                self.assertEqual(c.reply()[0], 500)
            self.assertEqual(c.reply()[0], 421)
            self.assertEqual(c.rest(5), "")  # nothing for the NOOPs

    # --- ESMTPTimeout

    def test_command_timeout(self):
        with RawClient(self.slow.port) as c:
            self.assertEqual(c.reply()[0], 220)
            self.assertEqual(c.cmd("EHLO client.example")[0], 250)
            start = time.time()
            code, lines = c.reply()
            elapsed = time.time() - start
            self.assertEqual((code, lines), (421, ["421 4.4.2 slow.policy.test Error: timeout exceeded"]))
            self.assertGreater(elapsed, 1.5)
            self.assertLess(elapsed, 6)
            self.assertEqual(c.rest(5), "")

    def test_activity_keeps_session(self):
        with RawClient(self.slow.port) as c:
            self.assertEqual(c.reply()[0], 220)
            for _ in range(4):  # 4 x 1 s > the 2 s timeout, but never 2 s idle
                self.assertEqual(c.cmd("NOOP")[0], 250)
                time.sleep(1)
            self.assertEqual(c.cmd("QUIT")[0], 221)

    def test_data_timeout(self):
        before = self.slow.maildir_files()
        with RawClient(self.slow.port) as c:
            self.assertEqual(c.reply()[0], 220)
            self.assertEqual(c.cmd("EHLO client.example")[0], 250)
            self.assertEqual(c.cmd("MAIL FROM:<a@client.example>")[0], 250)
            self.assertEqual(c.cmd("RCPT TO:<b@slow.policy.test>")[0], 250)
            self.assertEqual(c.cmd("DATA")[0], 354)
            c.send(b"Subject: half\r\n\r\nthe first half of the body\r\n")
            start = time.time()
            code, lines = c.reply()
            elapsed = time.time() - start
            self.assertEqual((code, lines), (421, ["421 4.4.2 slow.policy.test Error: timeout exceeded"]))
            self.assertGreater(elapsed, 1.5)
            self.assertLess(elapsed, 6)
            self.assertEqual(c.rest(5), "")
        time.sleep(0.2)
        self.assertEqual(sorted(set(self.slow.maildir_files()) - set(before)), [])
        self.assertEqual(self.slow.maildir_files("tmp"), [])


class PolicyConfigTest(unittest.TestCase):
    """`apache2 -t` refuses bad values with a message naming the directive."""

    def config_test(self, **kw):
        httpd = Httpd()
        try:
            httpd.add_smtp("maildir", **kw)
            return httpd.config_test()
        finally:
            httpd.cleanup()

    def test_bad_values(self):
        cases = [
            ("ESMTPTimeout", dict(extra=["ESMTPTimeout command=abc"])),
            ("ESMTPTimeout", dict(extra=["ESMTPTimeout command=-1"])),
            ("ESMTPTimeout", dict(extra=["ESMTPTimeout command=0"])),
            ("ESMTPTimeout", dict(extra=["ESMTPTimeout nosuch=5"])),
            ("ESMTPTimeout", dict(extra=["ESMTPTimeout 30"])),
            ("ESMTPTimeout", dict(extra=["ESMTPTimeout"])),
            ("ESMTPExtensions", dict(extensions=["-NOSUCH"])),
            ("ESMTPExtensions", dict(extensions=["+CHUNKING", "XFOO"])),
            ("ESMTPMaxErrors", dict(max_errors=-1)),
            ("ESMTPMaxErrors", dict(extra=["ESMTPMaxErrors abc"])),
            ("ESMTPAcceptDomains", dict(extra=["ESMTPAcceptDomains"])),
        ]
        for directive, kw in cases:
            with self.subTest(kw=kw):
                rc, out = self.config_test(**kw)
                self.assertNotEqual(rc, 0, out)
                self.assertIn(directive, out)

    def test_good_values(self):
        rc, out = self.config_test(timeouts={"command": 60, "data": 30}, extensions=["-CHUNKING", "+SMTPUTF8"],
                                   max_errors=0, accept_domains=["*.example.org", "other.test"])
        self.assertEqual(rc, 0, out)
        rc, out = self.config_test(extensions=["PIPELINING", "size", "8BITMIME"], accept_domains=["*"],
                                   extra=["ESMTPTimeout data=600"])
        self.assertEqual(rc, 0, out)


class StopTest(unittest.TestCase):
    """Idle sessions get 421 4.3.2 when httpd stops (event MPM; the
    subclasses below run the same with worker and prefork)."""

    mpm = "event"

    def setUp(self):
        self.httpd = Httpd(mpm=self.mpm)
        self.vh = self.httpd.add_smtp("maildir", server_name="stop.policy.test")
        self.httpd.start()
        self.ok = False

    def tearDown(self):
        self.httpd.stop()
        bad = unexpected_log_lines(self.httpd.log_lines() + self.httpd.stderr_lines())
        self.httpd.cleanup(keep=not self.ok or bool(bad))
        self.assertEqual(bad, [])

    def idle_client(self):
        c = RawClient(self.vh.port)
        self.assertEqual(c.reply()[0], 220)
        self.assertEqual(c.cmd("EHLO client.example")[0], 250)
        return c

    def check_421(self, stop):
        clients = [self.idle_client(), self.idle_client()]
        time.sleep(0.2)  # both are waiting for a command
        stop()
        start = time.time()
        for c in clients:
            with c:
                c.sock.settimeout(10)
                try:
                    code, lines = c.reply()
                except (EOFError, socket.timeout, ConnectionResetError) as e:
                    self.fail("no 421 after stopping httpd: %r" % (e,))
                self.assertEqual((code, lines), (421, ["421 4.3.2 stop.policy.test Server shutting down"]))
                self.assertEqual(c.rest(5), "")
        self.assertLess(time.time() - start, 5)
        # and httpd is gone soon after
        self.httpd.proc.wait(15)
        self.ok = True

    def test_graceful_stop(self):
        def graceful_stop():
            # sends SIGWINCH to the pid in PidFile
            p = subprocess.run([HTTPD, "-k", "graceful-stop", "-f", self.httpd.conf_path],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30, env=HTTPD_ENV)
            self.assertEqual(p.returncode, 0, p.stdout)
        self.check_421(graceful_stop)

    def test_stop(self):
        # On a hard stop (SIGTERM) the MPM itself closes the sockets of busy
        # workers (event/worker: close_worker_sockets()) before a module can
        # write anything: a 421 is welcome but not possible to guarantee.
        # The client must not be left hanging, and whatever it gets is 421.
        c = self.idle_client()
        time.sleep(0.2)
        os.kill(self.httpd.proc.pid, signal.SIGTERM)
        start = time.time()
        with c:
            text = c.rest(10)
        self.assertLess(time.time() - start, 5, "client not closed promptly")
        self.assertIn(text, ("", "421 4.3.2 stop.policy.test Server shutting down\r\n"))
        self.httpd.proc.wait(15)
        self.ok = True


class StopWorkerTest(StopTest):
    mpm = "worker"


class StopPreforkTest(StopTest):
    mpm = "prefork"


if __name__ == "__main__":
    unittest.main()
