"""The lmtp handler against a real Dovecot LMTP server (Debian's
dovecot-core + dovecot-lmtpd, started by the test as root in a temporary
directory with `dovecot -F -c CONF`, on loopback): byte-exact delivery to
two users, an unknown user refused at RCPT with Dovecot's own reply, and
per-recipient results after DATA that differ (one user's mailbox cannot be
written)."""

import smtplib
import unittest

from harness import ServerTestCase
from peers import Dovecot, dovecot_missing

SKIP = dovecot_missing()

MESSAGE = (b"From: Sender <s@client.example>\r\n"
           b"Subject: %s\r\n"
           b"\r\n"
           b"Hello,\r\n"
           b".a line that starts with a dot\r\n"
           b"8bit: caf\xc3\xa9\r\n")


@unittest.skipIf(SKIP, SKIP or "")
class DovecotLmtpTest(ServerTestCase):

    @classmethod
    def setUpClass(cls):
        cls.dovecot = Dovecot(users=("alice", "bob"), broken=("dave",))
        try:
            super().setUpClass()
        except BaseException:
            cls.dovecot.cleanup(keep=True)
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            cls.dovecot.cleanup(keep=cls._failed)

    @classmethod
    def configure(cls, httpd):
        cls.vh = httpd.add_smtp(["lmtp", "127.0.0.1:%d" % cls.dovecot.port], accept_domains=["example.org"],
                                log_file="esmtp.log", log_level=1)

    def find(self, user, subject):
        # Dovecot stores lines with LF endings
        return [m for m in self.dovecot.messages(user) if b"\nSubject: " + subject + b"\n" in m]

    def test_delivery_to_two_users(self):
        with smtplib.SMTP("127.0.0.1", self.vh.port, timeout=30) as s:
            refused = s.sendmail("s@client.example", ["alice@example.org", "bob@example.org"],
                                 MESSAGE % b"two-users")
        self.assertEqual(refused, {})
        for user in ("alice", "bob"):
            found = self.find(user, b"two-users")
            self.assertEqual(len(found), 1, (user, self.dovecot.log_text()[-2000:]))
            msg = found[0]
            self.assertIn(b"Received: from ", msg)
            self.assertIn(b"(mod_esmtp)", msg)
            # byte-exact after the trace headers (Dovecot stores LF line ends)
            self.assertTrue(msg.endswith((MESSAGE % b"two-users").replace(b"\r\n", b"\n")), msg[-300:])

    def test_unknown_user_refused_at_rcpt(self):
        with smtplib.SMTP("127.0.0.1", self.vh.port, timeout=30) as s:
            s.ehlo("client.example")
            s.mail("s@client.example")
            code, text = s.rcpt("carol@example.org")
            self.assertEqual(code, 550, text)
            self.assertIn(b"5.1.1", text)
            self.assertIn(b"doesn't exist", text)  # Dovecot's own text, passed on
            self.assertEqual(s.rcpt("alice@example.org")[0], 250)
            code, text = s.data(MESSAGE % b"after-unknown")
            self.assertEqual(code, 250, text)
        self.assertEqual(len(self.find("alice", b"after-unknown")), 1)

    def test_per_recipient_results_differ(self):
        """alice is stored, dave's mailbox cannot be written: the client gets
        451 naming dave (and retries; alice then gets a second copy — a
        duplicate rather than a loss, README lmtp)."""
        with smtplib.SMTP("127.0.0.1", self.vh.port, timeout=30) as s:
            s.ehlo("client.example")
            s.mail("s@client.example")
            self.assertEqual(s.rcpt("alice@example.org")[0], 250)
            self.assertEqual(s.rcpt("dave@example.org")[0], 250)
            code, text = s.data(MESSAGE % b"mixed")
        self.assertEqual(code, 451, text)
        self.assertIn(b"dave@example.org", text)
        self.assertNotIn(b"alice@example.org", text)
        self.assertEqual(len(self.find("alice", b"mixed")), 1)

    def test_single_recipient_failure_is_its_reply(self):
        with smtplib.SMTP("127.0.0.1", self.vh.port, timeout=30) as s:
            s.ehlo("client.example")
            s.mail("s@client.example")
            s.rcpt("dave@example.org")
            code, text = s.data(MESSAGE % b"dave-only")
        self.assertEqual(code, 451, text)
        self.assertIn(b"4.2.0", text)  # Dovecot's enhanced code


if __name__ == "__main__":
    unittest.main()
