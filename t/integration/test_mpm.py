"""The worker and prefork MPMs (the other tests run on event, or on
ESMTP_TEST_MPM), and what must hold on every MPM."""

import smtplib
import unittest

from harness import PARKING, RawClient, ServerTestCase, queue_id_of, split_delivered, wait_for

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


if __name__ == "__main__":
    unittest.main()
