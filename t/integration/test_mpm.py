"""The worker and prefork MPMs (the other tests run on event, or on
ESMTP_TEST_MPM), and what must hold on every MPM."""

import os
import signal
import smtplib
import unittest

from harness import PARKING, RawClient, ServerTestCase, children_of, queue_id_of, split_delivered, wait_for

# These tests are about delivery, not the relay policy (test_policy.py):
# accept every recipient domain.
ANY = ["*"]

MESSAGE = b"Subject: mpm test\r\n\r\n.dot\r\nbody\r\n"


class _MpmDelivery:
    @classmethod
    def configure(cls, httpd):
        cls.vh = httpd.add_smtp("maildir", accept_domains=ANY)
        cls.events = httpd.add_smtp("test", accept_domains=ANY)

    def test_delivery(self):
        with smtplib.SMTP("127.0.0.1", self.vh.port, local_hostname="mpm.example", timeout=20) as s:
            s.ehlo()
            s.mail("a@client.example")
            s.rcpt("b@localhost")
            code, text = s.data(MESSAGE)
            self.assertEqual(code, 250, text)
        qid = queue_id_of(text.decode())
        files = wait_for(self.vh.maildir_files, 5)
        self.assertEqual(len(files), 1)
        with open(files[0], "rb") as f:
            _, received, body = split_delivered(f.read())
        self.assertEqual(body, MESSAGE)
        self.assertIn(qid, received)
        self.assertIn("mpm.example", received)

    def test_events(self):
        with smtplib.SMTP("127.0.0.1", self.events.port, local_hostname="mpm.example", timeout=20) as s:
            s.ehlo()
        events = wait_for(lambda: "DISCONNECT" in self.events.event_lines() and self.events.event_lines(), 5)
        self.assertEqual(events, ["CONNECT", "EHLO mpm.example", "QUIT", "DISCONNECT"])


    def test_handler_destroyed_before_the_connection_closes(self):
        """Issue 8: no handler code runs from c->pool's cleanup. The session
        ends (DISCONNECT) and the handler is destroyed in the connection's
        hooks, before httpd closes the socket; the test handler's
        destructor takes 300 ms after HELO slow-destroy.test, so a
        destructor run from the pool cleanup (after the close) shows as a
        DESTROY event missing when the client sees the end of the
        connection."""
        with RawClient(self.events.port) as c:
            self.assertEqual(c.reply()[0], 220)
            self.assertEqual(c.cmd("HELO slow-destroy.test")[0], 250)
            self.assertEqual(c.cmd("QUIT")[0], 221)
            self.assertEqual(c.rest(timeout=10), "")  # until the server closes
            events = self.events.event_lines()
        self.assertEqual(events[-2:], ["DISCONNECT", "DESTROY"], events)


class EventMpmTest(_MpmDelivery, ServerTestCase):
    mpm = "event"


@unittest.skipUnless(PARKING, "the module does not park sessions")
class ParkedTimeoutTest(ServerTestCase):
    """A parked session the event MPM times out (the main server's Timeout)
    gets 421 from pre_close_connection, which also ends the session and
    destroys the handler: not c->pool's cleanup."""
    mpm = "event"
    httpd_options = {"main_extra": ["Timeout 2"]}

    @classmethod
    def configure(cls, httpd):
        cls.events = httpd.add_smtp("test", accept_domains=ANY)

    def test_parked_session_timed_out_by_the_mpm(self):
        with RawClient(self.events.port) as c:
            self.assertEqual(c.reply()[0], 220)
            self.assertEqual(c.cmd("HELO slow-destroy.test")[0], 250)
            rest = c.rest(timeout=15)  # parked until the MPM's Timeout
            events = self.events.event_lines()
        self.assertTrue(rest.startswith("421 ") and "timeout exceeded" in rest, rest)
        self.assertEqual(events[-2:], ["DISCONNECT", "DESTROY"], events)


class WorkerMpmTest(_MpmDelivery, ServerTestCase):
    mpm = "worker"


class PreforkMpmTest(_MpmDelivery, ServerTestCase):
    mpm = "prefork"


class PreforkSigtermTest(ServerTestCase):
    """Issue 20: prefork's SIGTERM handler (just_die -> clean_child_exit)
    destroys the pool of the session in progress, and the module's cleanup
    of it runs inside that signal handler: it must be async-signal-safe (no
    mutex, which the interrupted code may hold; no allocation; no ap_log_*,
    which formats the time under a lock). A child killed mid-DATA exits, its
    client sees the connection end, the module writes nothing from the
    handler (before issue 20 it took the wait registry's mutex and logged
    "abandoned without DISCONNECT" there), and the server goes on."""
    mpm = "prefork"

    @classmethod
    def configure(cls, httpd):
        cls.vh = httpd.add_smtp("maildir", accept_domains=ANY)

    def test_sigterm_mid_data(self):
        with RawClient(self.vh.port) as c:
            self.assertEqual(c.reply()[0], 220)
            self.assertEqual(c.cmd("EHLO sigterm.example")[0], 250)
            self.assertEqual(c.cmd("MAIL FROM:<a@client.example>")[0], 250)
            self.assertEqual(c.cmd("RCPT TO:<b@localhost>")[0], 250)
            self.assertEqual(c.cmd("DATA")[0], 354)
            c.send(b"Subject: cut off\r\n\r\nhalf of the bo")
            # every child, the one serving this session among them
            children = children_of(self.httpd.proc.pid)
            self.assertTrue(children)
            for pid in children:
                os.kill(pid, signal.SIGTERM)
            try:
                self.assertEqual(c.rest(timeout=10), "")  # closed, no reply
            except ConnectionResetError:
                pass  # closed before it read the partial line
        gone = wait_for(lambda: not set(children) & set(children_of(self.httpd.proc.pid)), 10)
        self.assertTrue(gone, "children still there 10 s after SIGTERM")
        logged = [line for line in self.httpd.log_lines() if "abandoned without DISCONNECT" in line]
        self.assertEqual(logged, [])
        self.assertEqual(self.vh.maildir_files(), [])
        # the parent starts new children: delivery goes on
        def deliver():
            try:
                with smtplib.SMTP("127.0.0.1", self.vh.port, local_hostname="after.example", timeout=10) as s:
                    s.ehlo()
                    s.mail("a@client.example")
                    s.rcpt("b@localhost")
                    return s.data(MESSAGE)[0] == 250
            except (OSError, smtplib.SMTPException):
                return False
        self.assertTrue(wait_for(deliver, 20, interval=0.5))


if __name__ == "__main__":
    unittest.main()
