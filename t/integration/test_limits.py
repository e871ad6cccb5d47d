"""Limits set by directives (ESMTPMaxMessageSize, ESMTPMaxRecipients) and
the RFC 5321 text-line limit, in a live server."""

import smtplib
import time
import unittest

from harness import RawClient, ServerTestCase, wait_for

# These tests are about delivery, not the relay policy (test_policy.py):
# accept every recipient domain.
ANY = ["*"]


def body_of_size(n):
    """A message of exactly n octets (n >= 40), lines well under 1000 octets."""
    head = b"Subject: size test\r\n\r\n"
    left = n - len(head)
    lines = []
    while left > 0:
        take = min(left, 80)
        if take < 2:
            lines[-1] = lines[-1][:-2] + b"x" * take + b"\r\n"
            break
        lines.append(b"x" * (take - 2) + b"\r\n")
        left -= take
    msg = head + b"".join(lines)
    assert len(msg) == n, (len(msg), n)
    return msg


class LimitsTest(ServerTestCase):

    @classmethod
    def configure(cls, httpd):
        cls.small = httpd.add_smtp("maildir", accept_domains=ANY, max_size=1000, max_recipients=2)
        cls.default = httpd.add_smtp("maildir", accept_domains=ANY)

    def assertNothingStored(self, vh, before):
        time.sleep(0.2)
        self.assertEqual(sorted(set(vh.maildir_files("new")) - set(before)), [])
        self.assertEqual(vh.maildir_files("tmp"), [])

    def test_size_advertised(self):
        with smtplib.SMTP("127.0.0.1", self.small.port, timeout=20) as s:
            s.ehlo()
            self.assertEqual(s.esmtp_features.get("size"), "1000")
        with smtplib.SMTP("127.0.0.1", self.default.port, timeout=20) as s:
            s.ehlo()
            self.assertEqual(s.esmtp_features.get("size"), "10240000")

    def test_message_too_big(self):
        before = self.small.maildir_files()
        with smtplib.SMTP("127.0.0.1", self.small.port, timeout=20) as s:
            s.ehlo()
            s.mail("a@client.example")
            s.rcpt("b@localhost")
            code, text = s.data(body_of_size(5000))
            self.assertEqual((code, text), (552, b"5.3.4 Message size exceeds fixed limit"))
            self.assertNothingStored(self.small, before)
            # the session goes on
            self.assertEqual(s.noop()[0], 250)
            s.mail("a@client.example")
            s.rcpt("b@localhost")
            self.assertEqual(s.data(body_of_size(300))[0], 250)
        self.assertEqual(len(wait_for(lambda: set(self.small.maildir_files()) - set(before), 5)), 1)

    def test_size_boundary(self):
        before = self.small.maildir_files()
        with smtplib.SMTP("127.0.0.1", self.small.port, timeout=20) as s:
            s.ehlo()
            s.mail("a@client.example")
            s.rcpt("b@localhost")
            self.assertEqual(s.data(body_of_size(1000))[0], 250, "exactly the limit is accepted")
            s.mail("a@client.example")
            s.rcpt("b@localhost")
            self.assertEqual(s.data(body_of_size(1001))[0], 552, "one octet over is refused")
        files = wait_for(lambda: sorted(set(self.small.maildir_files()) - set(before)), 5)
        self.assertEqual(len(files), 1)
        with open(files[0], "rb") as f:
            self.assertTrue(f.read().endswith(body_of_size(1000)))

    def test_mail_size_parameter(self):
        with RawClient(self.small.port) as c:
            c.reply()
            c.cmd("EHLO size.example")
            self.assertEqual(c.cmd("MAIL FROM:<a@size.example> SIZE=5000"),
                             (552, ["552 5.3.4 Message size exceeds fixed limit"]))
            self.assertEqual(c.cmd("MAIL FROM:<a@size.example> SIZE=500"), (250, ["250 2.1.0 Ok"]))
            self.assertEqual(c.cmd("QUIT")[0], 221)

    def test_too_many_recipients(self):
        before = self.small.maildir_files()
        with RawClient(self.small.port) as c:
            c.reply()
            c.cmd("EHLO rcpt.example")
            c.cmd("MAIL FROM:<a@rcpt.example>")
            self.assertEqual(c.cmd("RCPT TO:<one@localhost>")[0], 250)
            self.assertEqual(c.cmd("RCPT TO:<two@localhost>")[0], 250)
            self.assertEqual(c.cmd("RCPT TO:<three@localhost>"), (452, ["452 4.5.3 Error: too many recipients"]))
            self.assertEqual(c.cmd("DATA")[0], 354)
            c.send(b"Subject: two recipients\r\n\r\nhi\r\n.\r\n")
            self.assertEqual(c.reply()[0], 250)
            self.assertEqual(c.cmd("QUIT")[0], 221)
        self.assertEqual(len(wait_for(lambda: set(self.small.maildir_files()) - set(before), 5)), 1)

    def test_smtplib_120_recipients(self):
        """Recipients beyond ESMTPMaxRecipients get 452 and are no client
        errors (issue 8 #3): smtplib delivers to the first 100 and learns
        which 20 to send again, instead of losing the transaction to 421."""
        before = self.default.maildir_files()
        rcpts = ["r%d@localhost" % i for i in range(120)]
        with smtplib.SMTP("127.0.0.1", self.default.port, timeout=20) as s:
            refused = s.sendmail("a@client.example", rcpts, body_of_size(200))
            self.assertEqual(sorted(refused), sorted(rcpts[100:]))
            self.assertTrue(all(code == 452 for code, _ in refused.values()), refused)
            # the rest in a second transaction on the same connection
            self.assertEqual(s.sendmail("a@client.example", rcpts[100:], body_of_size(200)), {})
        self.assertEqual(len(wait_for(lambda: set(self.default.maildir_files()) - set(before), 5)), 2)

    def test_text_line_too_long(self):
        before = self.default.maildir_files()
        with RawClient(self.default.port) as c:
            c.reply()
            c.cmd("EHLO line.example")
            c.cmd("MAIL FROM:<a@line.example>")
            c.cmd("RCPT TO:<b@localhost>")
            self.assertEqual(c.cmd("DATA")[0], 354)
            c.send(b"Subject: long line\r\n\r\n" + b"y" * 998 + b"\r\n" + b"z" * 999 + b"\r\n.\r\n")
            self.assertEqual(c.reply(), (500, ["500 5.5.2 Message line too long"]))
            self.assertEqual(c.cmd("NOOP")[0], 250)
            c.cmd("MAIL FROM:<a@line.example>")
            c.cmd("RCPT TO:<b@localhost>")
            self.assertEqual(c.cmd("DATA")[0], 354)
            c.send(b"Subject: longest allowed line\r\n\r\n" + b"y" * 998 + b"\r\n.\r\n")
            self.assertEqual(c.reply()[0], 250, "998 octets + CRLF is allowed")
            self.assertEqual(c.cmd("QUIT")[0], 221)
        self.assertEqual(len(wait_for(lambda: set(self.default.maildir_files()) - set(before), 5)), 1)


if __name__ == "__main__":
    unittest.main()
