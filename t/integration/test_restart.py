"""Graceful (SIGUSR1) and hard (SIGHUP) restarts: httpd unloads and reloads
the DSOs, so handler providers and C++ objects must survive the cycle."""

import smtplib
import threading
import time
import unittest

from harness import ServerTestCase, queue_id_of, wait_for

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


if __name__ == "__main__":
    unittest.main()
