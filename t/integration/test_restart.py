"""Graceful (SIGUSR1) and hard (SIGHUP) restarts: httpd unloads and reloads
the DSOs, so handler providers and C++ objects must survive the cycle."""

import os
import signal
import smtplib
import socket
import subprocess
import threading
import time
import unittest

from harness import HTTPD, HTTPD_ENV, PARKING, Httpd, ServerTestCase, children_of, queue_id_of, wait_for

# These tests are about delivery, not the relay policy (test_policy.py):
# accept every recipient domain.
ANY = ["*"]

MESSAGE = b"Subject: restart test\r\n\r\nbody\r\n"


class RestartTest(ServerTestCase):
    # The event MPM of the old generation may fail to re-add a closing
    # connection to its pollset while it is being torn down (httpd's own
    # race during a restart, not a session's fault).
    allowed_log = (r"AH03092",)

    @classmethod
    def configure(cls, httpd):
        cls.vh = httpd.add_smtp("maildir", accept_domains=ANY, log_file="esmtp.log", log_level=1)
        cls.events = httpd.add_smtp("test", accept_domains=ANY)

    def deliver(self):
        with smtplib.SMTP("127.0.0.1", self.vh.port, local_hostname="restart.example", timeout=20) as s:
            s.ehlo()
            s.mail("a@client.example")
            s.rcpt("b@localhost")
            code, text = s.data(MESSAGE)
        self.assertEqual(code, 250, text)
        return queue_id_of(text.decode())

    def ping_test_handler(self):
        start = len(self.events.event_lines())
        with smtplib.SMTP("127.0.0.1", self.events.port, local_hostname="restart.example", timeout=20) as s:
            self.assertEqual(s.ehlo()[0], 250)
            self.assertEqual(s.docmd("XPING", "after restart"), (250, b"2.0.0 PONG after restart"))
        events = wait_for(lambda: "DISCONNECT" in self.events.event_lines()[start:], 5)
        self.assertTrue(events)

    def test_graceful_and_hard_restart(self):
        qids = [self.deliver()]
        self.ping_test_handler()
        self.httpd.restart(graceful=True)
        qids.append(self.deliver())
        self.ping_test_handler()
        self.httpd.restart(graceful=False)
        qids.append(self.deliver())
        self.ping_test_handler()
        self.assertEqual(len(set(qids)), 3)
        self.assertEqual(len(wait_for(lambda: len(self.vh.maildir_files()) >= 3 and self.vh.maildir_files(), 5)), 3)
        # the transaction log is reopened: records of all three messages
        log = "\n".join(self.vh.log_lines())
        for q in qids:
            self.assertIn(q, log)

    def test_graceful_restart_during_session(self):
        """A session open across a graceful restart finishes its message."""
        with smtplib.SMTP("127.0.0.1", self.vh.port, local_hostname="long.example", timeout=30) as s:
            s.ehlo()
            s.mail("a@client.example")
            s.rcpt("b@localhost")
            self.httpd.restart(graceful=True)
            code, text = s.data(MESSAGE)
            self.assertEqual(code, 250, text)
        self.deliver()



class StopAfterMassCloseTest(unittest.TestCase):
    """Issue 8: children outlived SIGTERM by about 5 s after thousands of
    sessions closed at once. N sessions park in one event child (greeted,
    EHLO answered), then all of them close (or QUIT, or stay), and httpd
    gets SIGTERM right after: every process must be gone within STOP_LIMIT
    seconds, as quickly as a stop without the mass close.

    httpd 2.4's event listener has a race of its own here: when SIGTERM
    finds it waiting for an idle worker to hand a readable connection to,
    it may wait until join_workers() gives up (10 x 500 ms, logged as
    AH00475), whatever the module does (about 1 stop in 10 on this machine,
    with the old module too). Such a run is reported as skipped, not
    passed; a slow stop without AH00475 fails. A graceful stop wakes the
    parked sessions (child_stopping), which all get 421 at once."""

    # Without parking each idle session holds one of the 16 threads.
    SESSIONS = 400 if PARKING else 12
    STOP_LIMIT = 2.5  # seconds; a healthy stop takes well under 1 s

    def setUp(self):
        from test_load import raise_nofile
        raise_nofile(4096)
        self.httpd = Httpd(mpm="event", log_level="warn esmtp:debug mpm_event:debug", mpm_lines=[
            "StartServers 1", "ServerLimit 1", "ThreadsPerChild 16", "ThreadLimit 16",
            "MinSpareThreads 1", "MaxSpareThreads 16", "MaxRequestWorkers 16",
            "AsyncRequestWorkerFactor 64", "ListenBacklog 1024"])
        self.vh = self.httpd.add_smtp("discard", accept_domains=ANY, server_name="stop.test")
        self.httpd.start()
        self.addCleanup(self.httpd.cleanup)

    def open_parked_sessions(self, n):
        socks = []
        self.addCleanup(lambda: [s.close() for s in socks])
        for _ in range(n):
            socks.append(socket.create_connection(("127.0.0.1", self.vh.port), timeout=20))
        for s in socks:
            self.assertTrue(s.recv(512).startswith(b"220"))
            s.sendall(b"EHLO stop.example\r\n")
        for s in socks:
            buf = b""
            while b"250 " not in buf:
                chunk = s.recv(4096)
                self.assertTrue(chunk, "closed before the EHLO reply")
                buf += chunk
        return socks

    def wait_gone(self, children):
        self.httpd.proc.wait(30)
        self.httpd.proc = None
        # the parent waits for its children, but make sure none is left
        wait_for(lambda: not any(os.path.exists("/proc/%d" % c) for c in children), 10, 0.01)

    def check_stop(self, end_session):
        socks = self.open_parked_sessions(self.SESSIONS)
        for s in socks:
            end_session(s)
        pid = self.httpd.proc.pid
        children = children_of(pid)
        self.assertTrue(children)
        start = time.monotonic()
        os.kill(pid, signal.SIGTERM)
        self.wait_gone(children)
        took = time.monotonic() - start
        log = "\n".join(self.httpd.log_lines())
        # a hard stop leaves the sessions to the MPM: none is woken
        self.assertNotIn("waiting session(s) woken", log)
        if took >= self.STOP_LIMIT and "AH00475" in log:
            self.skipTest("httpd's own listener race (AH00475): stop took %.2f s" % took)
        self.assertLess(took, self.STOP_LIMIT, "httpd took %.2f s to stop after %d sessions ended at once"
                        % (took, self.SESSIONS))

    def test_stop_right_after_mass_close(self):
        self.check_stop(lambda s: s.close())

    def test_stop_right_after_mass_quit(self):
        self.check_stop(lambda s: s.sendall(b"QUIT\r\n"))

    def test_stop_with_parked_sessions(self):
        self.check_stop(lambda s: None)

    def test_graceful_stop_wakes_every_parked_session(self):
        socks = self.open_parked_sessions(self.SESSIONS)
        children = children_of(self.httpd.proc.pid)
        start = time.monotonic()
        p = subprocess.run([HTTPD, "-k", "graceful-stop", "-f", self.httpd.conf_path],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30, env=HTTPD_ENV)
        self.assertEqual(p.returncode, 0, p.stdout)
        for s in socks:
            s.settimeout(10)
            buf = b""
            while b"\r\n" not in buf:
                chunk = s.recv(4096)
                if not chunk:
                    break
                buf += chunk
            self.assertEqual(buf, b"421 4.3.2 stop.test Server shutting down\r\n")
        took = time.monotonic() - start
        self.wait_gone(children)
        self.assertLess(took, self.STOP_LIMIT, "%d parked sessions got their 421 after %.2f s"
                        % (self.SESSIONS, took))


if __name__ == "__main__":
    unittest.main()
