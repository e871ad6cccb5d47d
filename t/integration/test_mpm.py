"""The worker and prefork MPMs (the other tests run on event, or on
ESMTP_TEST_MPM)."""

import smtplib
import unittest

from harness import ServerTestCase, queue_id_of, split_delivered, wait_for

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


class WorkerMpmTest(_MpmDelivery, ServerTestCase):
    mpm = "worker"


class PreforkMpmTest(_MpmDelivery, ServerTestCase):
    mpm = "prefork"


if __name__ == "__main__":
    unittest.main()
