"""Several virtual hosts in one httpd: two SMTP vhosts with different
handlers, logs and log levels stay apart; a piped transaction log; an HTTP
vhost in the same server still serves HTTP."""

import os
import re
import smtplib
import subprocess
import unittest

from harness import RawClient, ServerTestCase, queue_id_of, wait_for

# These tests are about delivery, not the relay policy (test_policy.py):
# accept every recipient domain.
ANY = ["*"]

TXLOG_RE = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} (?:[0-9A-Za-z]+ )?.*\S \[127\.0\.0\.1\]$")
COMMAND_RE = re.compile(r"\b(?:EHLO|HELO|MAIL FROM|RCPT TO|DATA|QUIT)\b", re.I)

MESSAGE = b"Subject: vhost test\r\n\r\nhello\r\n"


def send(port, sender, rcpt, helo):
    with smtplib.SMTP("127.0.0.1", port, local_hostname=helo, timeout=20) as s:
        s.ehlo()
        s.mail(sender)
        s.rcpt(rcpt)
        code, text = s.data(MESSAGE)
        assert code == 250, (code, text)
    return text.decode()


class VirtualHostsTest(ServerTestCase):

    @classmethod
    def configure(cls, httpd):
        cls.a = httpd.add_smtp("maildir", accept_domains=ANY, server_name="a.test", log_file="a.log", log_level=1)
        cls.b = httpd.add_smtp("test", accept_domains=ANY, server_name="b.test", log_file="b.log", log_level=2)
        cls.http_port = httpd.add_http("<p>HTTP and SMTP in one httpd</p>\n")

    def test_two_vhosts_stay_apart(self):
        qa = queue_id_of(send(self.a.port, "sa@client.example", "ra@a.test", "client-a.example"))
        tb = send(self.b.port, "sb@client.example", "rb@b.test", "client-b.example")
        self.assertIn("test handler", tb)
        qb = queue_id_of(tb.replace("accepted as", "queued as"))

        # greeting names
        with smtplib.SMTP("127.0.0.1", self.a.port, timeout=20) as s:
            self.assertIn(b"a.test", s.ehlo()[1])
        with smtplib.SMTP("127.0.0.1", self.b.port, timeout=20) as s:
            self.assertIn(b"b.test", s.ehlo()[1])

        # the maildir vhost stored its message, the test vhost only recorded events
        files = wait_for(lambda: self.a.maildir_files(), 5)
        self.assertEqual(len(files), 1)
        with open(files[0], "rb") as f:
            content = f.read()
        self.assertIn(qa.encode(), content)
        self.assertTrue(content.endswith(MESSAGE))
        events = wait_for(lambda: "DISCONNECT" in self.b.event_lines() and self.b.event_lines(), 5)
        self.assertIn("MAIL <sb@client.example>", events)
        self.assertNotIn("MAIL <sa@client.example>", events)

        log_a = wait_for(lambda: [l for l in self.a.log_lines() if qa in l], 5) and self.a.log_lines()
        log_b = wait_for(lambda: [l for l in self.b.log_lines() if qb in l], 5) and self.b.log_lines()
        self.assertTrue(log_a, "nothing about %s in %s" % (qa, self.a.log_path))
        self.assertTrue(log_b, "nothing about %s in %s" % (qb, self.b.log_path))
        for line in log_a + log_b:
            self.assertRegex(line, TXLOG_RE)
        text_a, text_b = "\n".join(log_a), "\n".join(log_b)
        self.assertNotIn(qb, text_a)
        self.assertNotIn(qa, text_b)
        self.assertNotIn("client-b.example", text_a)
        self.assertNotIn("client-a.example", text_b)
        # level 2 shows the commands, level 1 does not
        self.assertTrue(any(COMMAND_RE.search(l) for l in log_b), "no command in level-2 log:\n" + text_b)
        self.assertTrue(re.search(r"RCPT TO:<rb@b\.test>", text_b, re.I), text_b)
        self.assertFalse(any(re.search(r"\b(?:MAIL FROM|RCPT TO)\s*:", l, re.I) for l in log_a),
                         "commands in level-1 log:\n" + text_a)
        self.assertGreater(len(log_b), len(log_a))

    def test_http_vhost(self):
        p = subprocess.run(["curl", "-sS", "--max-time", "20", "-o", "-", "-w", "\n%{http_code}",
                            "http://127.0.0.1:%d/" % self.http_port],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
        out = p.stdout.decode()
        self.assertEqual(p.returncode, 0, out)
        body, _, code = out.rpartition("\n")
        self.assertEqual(code, "200", out)
        self.assertEqual(body, "<p>HTTP and SMTP in one httpd</p>\n")

    def test_http_on_smtp_port_is_smtp(self):
        """An HTTP request on the SMTP port gets an SMTP refusal and the
        connection is closed (as Postfix does)."""
        with RawClient(self.a.port) as c:
            self.assertEqual(c.reply(), (220, ["220 a.test ESMTP mod_esmtp"]))
            c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            self.assertEqual(c.rest(10), "521 5.7.0 Error: this is an SMTP server, not HTTP; closing\r\n")


class _PipedLog:
    """One SMTP vhost whose transaction log is a piped command."""
    command = None

    @classmethod
    def configure(cls, httpd):
        cls.piped_file = os.path.join(httpd.root, "logs", "piped.log")
        cls.vh = httpd.add_smtp("discard", server_name="piped.test", log_level=1,
                                log_file=cls.command % cls.piped_file)

    def test_piped_log(self):
        text = send(self.vh.port, "s@client.example", "r@piped.test", "client-piped.example")
        qid = queue_id_of(text)
        lines = wait_for(lambda: [l for l in self._piped() if qid in l], 10)
        self.assertTrue(lines, "no record for %s in the piped log %r: %r"
                        % (qid, self.vh.log_file, self._piped()))
        for line in self._piped():
            self.assertRegex(line, TXLOG_RE)

    def _piped(self):
        try:
            with open(self.piped_file, encoding="utf-8", errors="replace") as f:
                return f.read().splitlines()
        except FileNotFoundError:
            return []


class PipedLogTest(_PipedLog, ServerTestCase):
    """ESMTPLogFileName "|program args": run without a shell, as httpd runs
    piped logs since 2.4."""
    command = "|/bin/sh -c 'exec cat >> %s'"


class PipedShellLogTest(_PipedLog, ServerTestCase):
    """ESMTPLogFileName "|$/bin/cat >> FILE" (httpd's explicit shell form)"""
    command = "|$/bin/cat >> %s"


class InheritanceTest(ServerTestCase):
    """A VirtualHost inherits the ESMTP directives it does not set from the
    main server; ESMTPProtocol stays off where it is not switched on."""

    @classmethod
    def configure(cls, httpd):
        import os as _os
        cls.maildir = _os.path.join(httpd.root, "MainMaildir")
        httpd.main_extra += ['ESMTPHandler maildir "%s"' % cls.maildir,
                             "ESMTPHostname inherited.test",
                             "ESMTPMaxRecipients 2",
                             "ESMTPLogFileName main.log",
                             "ESMTPLogLevel 2",
                             "ESMTPAcceptDomains *"]
        cls.vh = httpd.add_smtp(None)                       # only ESMTPProtocol On
        cls.own = httpd.add_smtp("discard", hostname="own.test", max_recipients=3)
        cls.http_port = httpd.add_http("still http\n")

    def test_inherits_from_main_server(self):
        with RawClient(self.vh.port) as c:
            self.assertEqual(c.reply(), (220, ["220 inherited.test ESMTP mod_esmtp"]))
            c.cmd("EHLO inherit.example")
            c.cmd("MAIL FROM:<a@inherit.example>")
            self.assertEqual(c.cmd("RCPT TO:<one@localhost>")[0], 250)
            self.assertEqual(c.cmd("RCPT TO:<two@localhost>")[0], 250)
            self.assertEqual(c.cmd("RCPT TO:<three@localhost>")[0], 452)
            self.assertEqual(c.cmd("DATA")[0], 354)
            c.send(b"Subject: inherited\r\n\r\nx\r\n.\r\n")
            code, lines = c.reply()
            self.assertEqual(code, 250, lines)
            qid = queue_id_of(lines[0])
            c.cmd("QUIT")
        files = wait_for(lambda: os.path.isdir(os.path.join(self.maildir, "new"))
                         and os.listdir(os.path.join(self.maildir, "new")), 5)
        self.assertEqual(len(files), 1)
        log = os.path.join(self.httpd.root, "logs", "main.log")
        text = wait_for(lambda: os.path.exists(log) and qid in open(log).read() and open(log).read(), 5)
        self.assertTrue(text, "no record of %s in main.log" % qid)
        self.assertIn("RCPT TO:<three@localhost>", text)  # level 2, inherited

    def test_vhost_overrides(self):
        with RawClient(self.own.port) as c:
            self.assertEqual(c.reply(), (220, ["220 own.test ESMTP mod_esmtp"]))
            c.cmd("EHLO own.example")
            c.cmd("MAIL FROM:<a@own.example>")
            for i in range(3):
                self.assertEqual(c.cmd("RCPT TO:<r%d@localhost>" % i)[0], 250)
            self.assertEqual(c.cmd("RCPT TO:<r4@localhost>")[0], 452)
            c.cmd("QUIT")

    def test_http_not_affected(self):
        p = subprocess.run(["curl", "-sS", "--max-time", "20", "http://127.0.0.1:%d/" % self.http_port],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
        self.assertEqual(p.stdout, b"still http\n")


if __name__ == "__main__":
    unittest.main()
