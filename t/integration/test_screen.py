"""Screening clients before they get a session (README, Screening clients):
the pregreet test (ESMTPPregreet): a `220-` teaser, a pause, and 554 5.5.1
for a client that talks before the end of the greeting; counted in
mod_status."""

import os
import smtplib
import time
import urllib.request

from harness import MODULESDIR, RawClient, ServerTestCase, plaintext_only, q, wait_for

STATUS_LINES = [
    "LoadModule status_module %s" % q(os.path.join(MODULESDIR, "mod_status.so")),
    "<Location /server-status>",
    "    SetHandler server-status",
    "    Require all granted",
    "</Location>",
]

PAUSE = 1.5


def status(port):
    with urllib.request.urlopen("http://127.0.0.1:%d/server-status?auto" % port, timeout=20) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition(": ")
        if key.startswith("ESMTP") and value.isdigit():
            out[key] = int(value)
    return out


class PregreetTest(ServerTestCase):
    allowed_log = (r"pregreet test failed: client 127\.0\.0\.1 talked before the end of the greeting",)

    @classmethod
    def configure(cls, httpd):
        httpd.main_extra += STATUS_LINES
        httpd.add_http()
        cls.teaser = httpd.add_smtp("maildir", extra=["ESMTPPregreet %s" % PAUSE])
        cls.text = httpd.add_smtp("maildir", extra=['ESMTPPregreet 0.5 "teaser=Welcome; please wait"'])
        cls.silent = httpd.add_smtp("maildir", extra=["ESMTPPregreet %s teaser=Off" % PAUSE])
        cls.off = httpd.add_smtp("maildir")

    def refused(self, c, vh):
        self.assertEqual(c.reply(), (554, ["554 5.5.1 %s Protocol error: talked before the end of the greeting"
                                           % vh.name]))
        self.assertEqual(c.rest(5), "")

    @plaintext_only("the pregreet test is before STARTTLS")
    def test_talker_after_the_teaser_is_refused(self):
        before = status(self.httpd.http_port)
        files = self.teaser.maildir_files()
        t0 = time.monotonic()
        with RawClient(self.teaser.port) as c:
            self.assertEqual(c.line(), "220-%s ESMTP\r\n" % self.teaser.name)
            c.send("EHLO bot.example\r\n")
            self.refused(c, self.teaser)
        self.assertLess(time.monotonic() - t0, PAUSE + 1)
        after = wait_for(lambda: (lambda a: a if a["ESMTPRejectsPregreet"] > before["ESMTPRejectsPregreet"]
                                  else None)(status(self.httpd.http_port)), 5)
        self.assertTrue(after, "ESMTPRejectsPregreet did not move")
        self.assertEqual(after["ESMTPRejectsPregreet"], before["ESMTPRejectsPregreet"] + 1)
        self.assertEqual(after["ESMTPRejectsEarlyTalker"], before["ESMTPRejectsEarlyTalker"])
        self.assertEqual(self.teaser.maildir_files(), files)
        log = wait_for(lambda: [l for l in self.httpd.new_log_lines() if "pregreet test failed" in l], 5)
        self.assertTrue(log, "the refusal is not in the error log")

    @plaintext_only("the pregreet test is before STARTTLS")
    def test_talker_before_the_teaser_is_refused(self):
        """A bot that sends at once, without reading: refused all the same
        (early talker if it beat the teaser, pregreet otherwise)."""
        with RawClient(self.teaser.port) as c:
            c.send("EHLO bot.example\r\nMAIL FROM:<a@bot.example>\r\n")
            text = c.rest(PAUSE + 5)
        self.assertRegex(text, r"(?s)^(220-%s ESMTP\r\n)?554 5\.5\.[01] " % self.teaser.name)
        self.assertNotIn("250", text)

    @plaintext_only("the pregreet test is before STARTTLS")
    def test_patient_client_is_served(self):
        t0 = time.monotonic()
        with RawClient(self.teaser.port) as c:
            code, lines = c.reply()
            waited = time.monotonic() - t0
            self.assertEqual(code, 220)
            self.assertEqual(lines, ["220-%s ESMTP" % self.teaser.name, "220 %s ESMTP mod_esmtp" % self.teaser.name])
            self.assertGreaterEqual(waited, PAUSE * 0.9)
            self.assertEqual(c.cmd("EHLO client.example")[0], 250)
            self.assertEqual(c.cmd("QUIT")[0], 221)

    def test_patient_smtplib_delivers(self):
        before = status(self.httpd.http_port)
        for vh in (self.teaser, self.text, self.silent):
            with smtplib.SMTP("127.0.0.1", vh.port, local_hostname="client.example", timeout=20) as s:
                s.ehlo()
                s.mail("a@client.example")
                s.rcpt("b@%s" % vh.server_name)
                code, _ = s.data(b"Subject: patient\r\n\r\nbody\r\n")
                self.assertEqual(code, 250)
            self.assertTrue(wait_for(vh.maildir_files, 5), vh.name)
        self.assertEqual(status(self.httpd.http_port)["ESMTPRejectsPregreet"], before["ESMTPRejectsPregreet"])

    @plaintext_only("the greeting is before STARTTLS")
    def test_teaser_text(self):
        with RawClient(self.text.port) as c:
            self.assertEqual(c.reply()[1], ["220-Welcome; please wait", "220 %s ESMTP mod_esmtp" % self.text.name])
            c.cmd("QUIT")

    @plaintext_only("the pregreet test is before STARTTLS")
    def test_without_teaser(self):
        """teaser=Off: a pause and a one-line greeting; talking in the pause
        is refused the same way."""
        t0 = time.monotonic()
        with RawClient(self.silent.port) as c:
            self.assertEqual(c.reply(), (220, ["220 %s ESMTP mod_esmtp" % self.silent.name]))
            self.assertGreaterEqual(time.monotonic() - t0, PAUSE * 0.9)
            c.cmd("QUIT")
        with RawClient(self.silent.port) as c:
            time.sleep(0.2)
            c.send("EHLO bot.example\r\n")
            self.refused(c, self.silent)

    @plaintext_only("the greeting is before STARTTLS")
    def test_off_by_default(self):
        t0 = time.monotonic()
        with RawClient(self.off.port) as c:
            self.assertEqual(c.reply(), (220, ["220 %s ESMTP mod_esmtp" % self.off.name]))
            self.assertLess(time.monotonic() - t0, 1)
            c.cmd("QUIT")
