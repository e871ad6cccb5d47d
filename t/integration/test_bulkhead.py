"""The bulkhead (README, "Sharing workers with the web sites";
ESMTPMaxWorkers): with a cap of one worker, a session held in a backend
(lmtp to a loopback server that accepts and never greets) makes another
session's handler steps answer 451 4.3.2 at once, a new session 421 (with
ESMTPGreetingDelay: at once, without the delay), a message whose content
could not reach the handler 451 4.3.2 at its end, and an AUTH attempt
421 4.3.2 without the failure delay; a prefork child killed while holding
the worker gives it back; mod_status shows
the cap, the workers held and the refusals. On event, worker and prefork.
Also: the default cap with and without a web site among the virtual hosts,
and `apache2 -t` on bad values. States are awaited by polling mod_status."""

import base64
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import unittest
import urllib.error

from harness import Httpd, MODULESDIR, RawClient, ServerTestCase, children_of, free_port, q, wait_for
from test_status import STATUS_LINES, fetch, parse_auto

HTPASSWD = shutil.which("htpasswd")
DELAY = 2.0  # ESMTPAuthFailureDelay of the AUTH server


class SilentBackend:
    """A loopback TCP server that accepts and never says a word (an LMTP
    server that never greets); close() lets go of its clients."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.clients = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.clients.append(c)

    def count(self):
        with self.lock:
            return len(self.clients)

    def drop_clients(self):
        with self.lock:
            for c in self.clients:
                c.close()
            self.clients = []

    def close(self):
        self.drop_clients()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.thread.join(5)


def plain(user, password):
    return base64.b64encode(("\0%s\0%s" % (user, password)).encode()).decode()


class _Bulkhead:
    """A cap of one worker; smtp[0] delivers by lmtp to the silent backend,
    smtp[1] runs the test handler and offers AUTH (plaintext allowed)."""

    # the held session's backend, let go of at the end of each test
    allowed_log = (r"esmtp: lmtp: 127\.0\.0\.1:\d+: no greeting",)

    @classmethod
    def configure(cls, httpd):
        cls.backend = SilentBackend()
        conf = os.path.join(httpd.root, "conf")
        pwfile = os.path.join(conf, "users.htpasswd")
        subprocess.run([HTPASSWD, "-bcB", pwfile, "alice", "Alice-Pw-7f3kQ"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
        os.chmod(pwfile, 0o644)
        httpd.main_extra += STATUS_LINES + [
            "LoadModule %s_module %s" % (m, q(os.path.join(MODULESDIR, "mod_%s.so" % m)))
            for m in ("authn_core", "authn_file")] + [
            "<AuthnProviderAlias file smtp-file>",
            "    AuthUserFile %s" % q(pwfile),
            "</AuthnProviderAlias>",
            "ESMTPMaxWorkers 1"]
        httpd.add_http()
        cls.lmtp = httpd.add_smtp(["lmtp", "127.0.0.1:%d" % cls.backend.port, "timeout=60"])
        cls.test = httpd.add_smtp("test", extra=[
            "ESMTPAuth PLAIN", "ESMTPAuthProvider smtp-file", "ESMTPAuthRequireTLS Off",
            "ESMTPAuthFailureDelay %s" % DELAY])
        cls.delayed = httpd.add_smtp("discard", extra=["ESMTPGreetingDelay %s" % DELAY])
        cls.pregreet = httpd.add_smtp("discard", extra=["ESMTPPregreet %s" % DELAY])

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            cls.backend.close()

    def auto(self):
        return parse_auto(fetch(self.httpd.http_port, "?auto"))

    def await_held(self, n, timeout=15):
        got = wait_for(lambda: self.auto()["ESMTPWorkersHeld"] == n, timeout)
        self.assertTrue(got, "ESMTPWorkersHeld never became %d: %r" % (n, self.auto()))

    def hold_the_worker(self):
        """A session whose RCPT waits for the silent backend (the lmtp
        handler connects at the first RCPT): it holds the one worker until
        the backend lets go."""
        a = RawClient(self.lmtp.port)
        self.assertEqual(a.reply()[0], 220)
        self.assertEqual(a.cmd("EHLO holder.example")[0], 250)
        self.assertEqual(a.cmd("MAIL FROM:<a@holder.example>")[0], 250)
        a.send("RCPT TO:<x@%s>\r\n" % self.lmtp.server_name)
        self.await_held(1)
        # accepted by the backend (not only in its listen queue): let_go can drop it
        self.assertTrue(wait_for(lambda: self.backend.count() > 0, 15), "the backend got no connection")
        return a

    def let_go(self, a):
        self.backend.drop_clients()
        code, lines = a.reply()  # the lmtp handler's answer, now
        self.assertEqual(code // 100, 4, lines)
        a.close()
        self.await_held(0)

    def greeted(self):
        b = RawClient(self.test.port)
        self.assertEqual(b.reply()[0], 220)
        self.assertEqual(b.cmd("EHLO second.example")[0], 250)
        return b

    def refused_then_quit(self, b, line):
        """`line` is answered 451 4.3.2; the session goes on (QUIT is never
        refused)."""
        code, lines = b.cmd(line)
        self.assertEqual(code, 451, lines)
        self.assertTrue(lines[0].startswith("451 4.3.2 "), lines)
        self.assertEqual(b.cmd("QUIT")[0], 221)
        b.close()

    def test_cap_and_status(self):
        before = self.auto()
        self.assertEqual(before["ESMTPWorkersCap"], 1)
        self.assertEqual(before["ESMTPWorkersHeld"], 0)
        b = self.greeted()
        # a session waiting for its client (parked or not) holds nothing
        self.assertEqual(self.auto()["ESMTPWorkersHeld"], 0)
        a = self.hold_the_worker()
        try:
            self.refused_then_quit(b, "MAIL FROM:<b@second.example>")
            # a new session: CONNECT cannot be refused alone (no enhanced
            # code before EHLO)
            with RawClient(self.test.port) as c:
                code, lines = c.reply()
                self.assertEqual(code, 421, lines)
                self.assertEqual(lines[0], "421 %s Server busy, try again later" % self.test.name)
                self.assertEqual(c.rest(10), "")  # and closed
            after = self.auto()
            self.assertEqual(after["ESMTPWorkersHeld"], 1)
            self.assertEqual(after["ESMTPWorkersRefused"] - before["ESMTPWorkersRefused"], 2)
            page = fetch(self.httpd.http_port)
            self.assertIn("MPM workers held by SMTP", page)
            self.assertIn("ESMTPMaxWorkers", page)
        finally:
            self.let_go(a)
        # the handler never saw the refused MAIL
        self.assertNotIn("MAIL <b@second.example>", self.test.event_lines())
        # under the cap again: the same step goes through
        with self.greeted() as d:
            self.assertEqual(d.cmd("MAIL FROM:<d@second.example>")[0], 250)
            self.assertEqual(d.cmd("QUIT")[0], 221)
        self.assertIn("MAIL <d@second.example>", self.test.event_lines())

    def set_cap(self, value):
        """A new ESMTPMaxWorkers by a graceful restart."""
        self.httpd.main_extra = [line for line in self.httpd.main_extra if not line.startswith("ESMTPMaxWorkers")]
        self.httpd.main_extra.append("ESMTPMaxWorkers %s" % value)
        self.httpd.write_config()
        self.httpd.restart(graceful=True)

    def test_graceful_restart(self):
        """A graceful restart takes the new cap and keeps counting the
        worker an old child still holds."""
        a = self.hold_the_worker()
        try:
            self.set_cap(2)
            now = self.auto()
            self.assertEqual((now["ESMTPWorkersCap"], now["ESMTPWorkersHeld"]), (2, 1), now)
            with self.greeted() as b:
                self.assertEqual(b.cmd("MAIL FROM:<b@second.example>")[0], 250)
                b.cmd("QUIT")
        finally:
            self.let_go(a)
            self.set_cap(1)
        self.assertEqual(self.auto()["ESMTPWorkersCap"], 1)

    def test_greeting_delay_beyond_cap(self):
        """ESMTPGreetingDelay waits in a worker: beyond the cap the session
        is refused at once instead; under the cap it waits, as before."""
        a = self.hold_the_worker()
        try:
            t0 = time.monotonic()
            with RawClient(self.delayed.port) as c:
                code, lines = c.reply()
                self.assertEqual(lines[0], "421 4.3.2 %s Server busy, try again later" % self.delayed.name)
                self.assertLess(time.monotonic() - t0, DELAY / 2, "the refusal waited")
        finally:
            self.let_go(a)
        t0 = time.monotonic()
        with RawClient(self.delayed.port) as c:
            self.assertEqual(c.reply()[0], 220)
            self.assertGreaterEqual(time.monotonic() - t0, DELAY * 0.9)
            c.cmd("QUIT")

    def test_pregreet_beyond_cap(self):
        """ESMTPPregreet's pause waits in a worker too: beyond the cap the
        session is refused at once, before the teaser."""
        a = self.hold_the_worker()
        try:
            t0 = time.monotonic()
            with RawClient(self.pregreet.port) as c:
                self.assertEqual(c.reply()[1], ["421 4.3.2 %s Server busy, try again later" % self.pregreet.name])
                self.assertLess(time.monotonic() - t0, DELAY / 2, "the refusal waited")
        finally:
            self.let_go(a)
        t0 = time.monotonic()
        with RawClient(self.pregreet.port) as c:
            code, lines = c.reply()
            self.assertEqual((code, lines[0]), (220, "220-%s ESMTP" % self.pregreet.name))
            self.assertGreaterEqual(time.monotonic() - t0, DELAY * 0.9)
            c.cmd("QUIT")

    def test_content_refused(self):
        """The message's content could not reach the handler: the end of
        message answers 451 4.3.2, the handler's transaction is aborted."""
        b = self.greeted()
        self.assertEqual(b.cmd("MAIL FROM:<content@second.example>")[0], 250)
        self.assertEqual(b.cmd("RCPT TO:<x@%s>" % self.test.server_name)[0], 250)
        self.assertEqual(b.cmd("DATA")[0], 354)
        a = self.hold_the_worker()
        try:
            self.refused_then_quit(b, "Subject: held back\r\n\r\nbody\r\n.")
        finally:
            self.let_go(a)
        events = self.test.event_lines()
        start = events.index("MAIL <content@second.example>")
        mine = events[start:]
        self.assertIn("ABORT", mine)
        self.assertNotIn("EOM", mine[:mine.index("ABORT")])
        self.assertFalse(any(e.startswith("HEADER Subject") for e in mine), mine)

    def test_auth_beyond_cap(self):
        """Beyond the cap an AUTH attempt gets 421 4.3.2 at once: no
        provider call, no ESMTPAuthFailureDelay; under the cap a wrong
        password waits the delay, as before."""
        b = self.greeted()
        a = self.hold_the_worker()
        try:
            t0 = time.monotonic()
            code, lines = b.cmd("AUTH PLAIN " + plain("alice", "Wrong-Pw-4u8mT"))
            took = time.monotonic() - t0
            self.assertEqual(code, 421, lines)
            self.assertIn("4.3.2", lines[0])
            self.assertLess(took, DELAY / 2, "the refusal waited")
            self.assertEqual(b.rest(10), "")  # closed
            b.close()
        finally:
            self.let_go(a)
        with self.greeted() as c:
            t0 = time.monotonic()
            code, lines = c.cmd("AUTH PLAIN " + plain("alice", "Wrong-Pw-4u8mT"))
            self.assertEqual(code, 535, lines)
            self.assertGreaterEqual(time.monotonic() - t0, DELAY * 0.9)
            self.assertEqual(c.cmd("AUTH PLAIN " + plain("alice", "Alice-Pw-7f3kQ"))[0], 235)
            c.cmd("QUIT")


@unittest.skipIf(not HTPASSWD, "htpasswd missing (apache2-utils)")
class EventBulkheadTest(_Bulkhead, ServerTestCase):
    mpm = "event"


@unittest.skipIf(not HTPASSWD, "htpasswd missing (apache2-utils)")
class WorkerBulkheadTest(_Bulkhead, ServerTestCase):
    mpm = "worker"


@unittest.skipIf(not HTPASSWD, "htpasswd missing (apache2-utils)")
class PreforkBulkheadTest(_Bulkhead, ServerTestCase):
    mpm = "prefork"
    # killed on purpose (the last test)
    allowed_log = _Bulkhead.allowed_log + (r"AH00052: child pid \d+ exit signal Killed \(9\)",)

    def test_dead_child_gives_back(self):
        """A child killed while it holds the one worker (SIGKILL: no
        destructor runs) does not keep it: its own row of holds is given
        back, so the page shows 0 and the next session is served."""
        a = self.hold_the_worker()
        try:
            for pid in children_of(self.httpd.proc.pid):
                os.kill(pid, signal.SIGKILL)
            a.rest(timeout=5)  # the connection dies with its child
        finally:
            a.close()
            self.backend.drop_clients()
        self.assertTrue(wait_for(lambda: self._held_retry() == 0, 15), self._held_retry())
        with self.greeted() as d:
            self.assertEqual(d.cmd("MAIL FROM:<after@second.example>")[0], 250)
            self.assertEqual(d.cmd("QUIT")[0], 221)

    def _held_retry(self):
        """ESMTPWorkersHeld while the parent replaces the killed children."""
        try:
            return self.auto()["ESMTPWorkersHeld"]
        except (OSError, urllib.error.URLError):
            return -1


class DefaultCapTest(unittest.TestCase):
    """Without ESMTPMaxWorkers: half of MaxRequestWorkers when a virtual
    host serves the web, all of them when every virtual host speaks SMTP
    (mod_status is then served by the main server). The harness sizes
    event and worker with MaxRequestWorkers 128, prefork with 64."""

    WORKERS = {"event": 128, "worker": 128, "prefork": 64}

    def cap(self, mpm, http_vhost):
        httpd = Httpd(mpm=mpm, main_extra=list(STATUS_LINES))
        ok = False
        try:
            if http_vhost:
                port = httpd.add_http()
            else:
                # the main server's own listener (http_port would add a vhost)
                port = free_port()
                httpd.main_extra.append("Listen 127.0.0.1:%d http" % port)
            httpd.add_smtp("discard")
            httpd.start()  # the listeners are all open once the SMTP port answers
            cap = parse_auto(fetch(port, "?auto"))["ESMTPWorkersCap"]
            httpd.stop()
            self.assertEqual(httpd.check_log(), [])
            ok = True
            return cap
        finally:
            if httpd.running():
                httpd.stop()
            httpd.cleanup(keep=not ok)

    def test_default_cap(self):
        for mpm, workers in sorted(self.WORKERS.items()):
            with self.subTest(mpm=mpm):
                self.assertEqual(self.cap(mpm, True), workers // 2)
                self.assertEqual(self.cap(mpm, False), workers)


class BadValueTest(unittest.TestCase):
    def check(self, lines, *needles, vhost=False):
        httpd = Httpd()
        try:
            if vhost:
                httpd.add_smtp("discard", extra=lines)
            else:
                httpd.main_extra += lines
                httpd.add_smtp("discard")
            rc, out = httpd.config_test()
        finally:
            httpd.cleanup()
        for n in needles:
            self.assertIn(n, out)
        return rc, out

    def test_bad_values(self):
        for value in ("0", "101%", "0%", "many", "-3", "12.5"):
            with self.subTest(value=value):
                rc, out = self.check(["ESMTPMaxWorkers %s" % value], "ESMTPMaxWorkers")
                self.assertNotEqual(rc, 0, out)
                self.assertIn(value, out)

    def test_server_config_only(self):
        rc, out = self.check(["ESMTPMaxWorkers 5"], "ESMTPMaxWorkers", vhost=True)
        self.assertNotEqual(rc, 0, out)

    def test_good_values(self):
        for value in ("1", "40", "25%", "100%"):
            with self.subTest(value=value):
                rc, out = self.check(["ESMTPMaxWorkers %s" % value])
                self.assertEqual(rc, 0, out)


if __name__ == "__main__":
    unittest.main()
