"""Delivery into a Maildir with real clients: Python smtplib, swaks, curl;
dot-stuffing, SMTP smuggling, clients that vanish mid-DATA, many clients
at once, and the transaction log."""

import os
import re
import shutil
import smtplib
import subprocess
import tempfile
import threading
import time
import unittest

from harness import (RawClient, ServerTestCase, queue_id_of, split_delivered, wait_for)

# These tests are about delivery, not the relay policy (test_policy.py):
# accept every recipient domain.
ANY = ["*"]

TXLOG_RE = re.compile(r"^(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}) (?:([0-9A-Za-z]+) )?(.*\S) \[127\.0\.0\.1\]$")

MESSAGE = (b"From: Alice <alice@client.example>\r\n"
           b"To: Bob <bob@localhost>\r\n"
           b"Subject: integration test\r\n"
           b"Message-ID: <it-1@client.example>\r\n"
           b"\r\n"
           b"Hello Bob,\r\n"
           b".a line that starts with a dot\r\n"
           b"..two dots\r\n"
           b"\r\n"
           b"  indented line with trailing space \r\n"
           b"8bit: \xc3\xa9t\xc3\xa9\r\n"
           b"-- \r\n"
           b"Alice\r\n")


def new_files(vh, before):
    return sorted(set(vh.maildir_files("new")) - set(before))


class DeliveryTest(ServerTestCase):

    @classmethod
    def configure(cls, httpd):
        cls.vh = httpd.add_smtp("maildir", accept_domains=ANY, log_file="esmtp.log", log_level=1,
                                hostname="mx.integration.test")
        cls.tmpdir = tempfile.mkdtemp(prefix="esmtp-it-clients-")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmpdir, ignore_errors=True)
        super().tearDownClass()

    # --- helpers

    def assertDelivered(self, path, sender, message, helo, queue_id):
        with open(path, "rb") as f:
            content = f.read()
        return_path, received, body = split_delivered(content)
        self.assertEqual(return_path, b"Return-Path: <" + sender.encode() + b">\r\n")
        self.assertIn(helo, received)
        self.assertIn("127.0.0.1", received)
        self.assertIn(queue_id, received)
        self.assertIn(self.vh.name, received)
        self.assertEqual(body, message, "message not stored byte-exact")
        return received

    def only_new_file(self, before):
        files = wait_for(lambda: new_files(self.vh, before), 5)
        self.assertEqual(len(files), 1, "expected exactly one new file, got %r" % files)
        return files[0]

    def write_file(self, name, data):
        path = os.path.join(self.tmpdir, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    # --- clients

    def test_smtplib(self):
        before = self.vh.maildir_files()
        with smtplib.SMTP("127.0.0.1", self.vh.port, local_hostname="pyclient.example", timeout=20) as s:
            code, banner = s.ehlo()
            self.assertEqual(code, 250)
            self.assertIn(b"PIPELINING", banner)
            self.assertIn(b"ENHANCEDSTATUSCODES", banner)
            self.assertIn(b"8BITMIME", banner)
            self.assertEqual(s.mail("alice@client.example")[0], 250)
            self.assertEqual(s.rcpt("bob@localhost")[0], 250)
            code, text = s.data(MESSAGE)
            self.assertEqual(code, 250, text)
            text = text.decode()
            self.assertTrue(text.startswith("2.0.0 Ok: queued as "), text)
            qid = queue_id_of(text)
            self.assertRegex(qid, r"^[0-9A-Z]+$")
        path = self.only_new_file(before)
        self.assertDelivered(path, "alice@client.example", MESSAGE, "pyclient.example", qid)
        self.assertEqual(self.vh.maildir_files("tmp"), [])

    def test_smtplib_sendmail_helo(self):
        before = self.vh.maildir_files()
        with smtplib.SMTP("127.0.0.1", self.vh.port, local_hostname="helo.example", timeout=20) as s:
            self.assertEqual(s.helo()[0], 250)
            refused = s.sendmail("carol@client.example", ["bob@localhost"], MESSAGE)
            self.assertEqual(refused, {})
        path = self.only_new_file(before)
        with open(path, "rb") as f:
            _, received, body = split_delivered(f.read())
        self.assertEqual(body, MESSAGE)
        self.assertIn("helo.example", received)
        self.assertRegex(received, r"\bwith SMTP\b")

    def test_null_sender(self):
        before = self.vh.maildir_files()
        with smtplib.SMTP("127.0.0.1", self.vh.port, local_hostname="bounce.example", timeout=20) as s:
            s.ehlo()
            self.assertEqual(s.mail("<>")[0], 250)
            self.assertEqual(s.rcpt("bob@localhost")[0], 250)
            code, text = s.data(MESSAGE)
            self.assertEqual(code, 250)
        path = self.only_new_file(before)
        self.assertDelivered(path, "", MESSAGE, "bounce.example", queue_id_of(text.decode()))

    def test_swaks(self):
        message = MESSAGE.replace(b"8bit: \xc3\xa9t\xc3\xa9\r\n", b"")  # swaks is line-oriented text
        # swaks sends the file, then always "<CR><LF>.<CR><LF>": leave off the last CRLF
        path = self.write_file("swaks.eml", message[:-2])
        before = self.vh.maildir_files()
        p = subprocess.run(["swaks", "--server", "127.0.0.1:%d" % self.vh.port, "--helo", "swaks.example",
                            "--from", "alice@client.example", "--to", "bob@localhost",
                            "--data", "@" + path, "--timeout", "20"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
        out = p.stdout.decode("utf-8", "replace")
        self.assertEqual(p.returncode, 0, out)
        self.assertRegex(out, r"<-  250 2\.0\.0 Ok: queued as ")
        qid = queue_id_of(out)
        delivered = self.only_new_file(before)
        self.assertDelivered(delivered, "alice@client.example", message, "swaks.example", qid)

    def test_curl(self):
        path = self.write_file("curl.eml", MESSAGE)
        before = self.vh.maildir_files()
        p = subprocess.run(["curl", "-sS", "-v", "--max-time", "30",
                            "smtp://127.0.0.1:%d/curl.example" % self.vh.port,
                            "--mail-from", "alice@client.example", "--mail-rcpt", "bob@localhost",
                            "--upload-file", path],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
        out = p.stdout.decode("utf-8", "replace")
        self.assertEqual(p.returncode, 0, out)
        self.assertRegex(out, r"< 250 2\.0\.0 Ok: queued as ")
        qid = queue_id_of(out)
        delivered = self.only_new_file(before)
        self.assertDelivered(delivered, "alice@client.example", MESSAGE, "curl.example", qid)

    # --- the DATA stream

    def test_dot_stuffing_raw(self):
        before = self.vh.maildir_files()
        with RawClient(self.vh.port) as c:
            code, lines = c.reply()
            self.assertEqual(code, 220)
            self.assertEqual(lines, ["220 mx.integration.test ESMTP mod_esmtp"])
            self.assertEqual(c.cmd("EHLO raw.example")[0], 250)
            self.assertEqual(c.cmd("MAIL FROM:<a@raw.example>"), (250, ["250 2.1.0 Ok"]))
            self.assertEqual(c.cmd("RCPT TO:<b@localhost>"), (250, ["250 2.1.5 Ok"]))
            self.assertEqual(c.cmd("DATA"), (354, ["354 End data with <CR><LF>.<CR><LF>"]))
            c.send(b"Subject: dots\r\n\r\n..\r\n...\r\n..x\r\n.y\r\nz.\r\n.\r\n")
            code, lines = c.reply()
            self.assertEqual(code, 250, lines)
            qid = queue_id_of(lines[0])
            self.assertEqual(c.cmd("QUIT"), (221, ["221 2.0.0 Bye"]))
        delivered = self.only_new_file(before)
        self.assertDelivered(delivered, "a@raw.example", b"Subject: dots\r\n\r\n.\r\n..\r\n.x\r\ny\r\nz.\r\n",
                             "raw.example", qid)

    def test_smuggling_bare_lf_dot(self):
        """<LF>.<LF>, <LF>.<CR><LF>, <CR><LF>.<LF> and <CR>.<CR> do not end DATA."""
        before = self.vh.maildir_files()
        content = (b"Subject: smuggling\r\n\r\n"
                   b"part one\n.\nMAIL FROM:<evil1@x>\r\n"
                   b"part two\n.\r\nMAIL FROM:<evil2@x>\r\n"
                   b"part three\r\n.\nMAIL FROM:<evil3@x>\r\n"
                   b"part four\r.\rMAIL FROM:<evil4@x>\r\n"
                   b"end\r\n")
        with RawClient(self.vh.port) as c:
            c.reply()
            c.cmd("EHLO smuggler.example")
            c.cmd("MAIL FROM:<a@smuggler.example>")
            c.cmd("RCPT TO:<b@localhost>")
            self.assertEqual(c.cmd("DATA")[0], 354)
            c.send(content + b".\r\nQUIT\r\n")
            rest = c.rest(10)
        replies = rest.split("\r\n")
        # Nothing ended early: exactly one reply for the message (none of the
        # smuggled MAIL commands ran), and by default (ESMTPBareLineFeed
        # reject) a message with bare LF/CR is refused and not delivered.
        self.assertEqual(len([r for r in replies if r]), 2, "one reply for the message, one for QUIT: %r" % rest)
        self.assertTrue(replies[0].startswith("550 5.5.2 Message contains bare"), rest)
        self.assertEqual(replies[1], "221 2.0.0 Bye")
        self.assertEqual(self.vh.maildir_files(), before)

    def test_disconnect_mid_data(self):
        before = self.vh.maildir_files()
        with RawClient(self.vh.port) as c:
            c.reply()
            c.cmd("EHLO quitter.example")
            c.cmd("MAIL FROM:<a@quitter.example>")
            c.cmd("RCPT TO:<b@localhost>")
            self.assertEqual(c.cmd("DATA")[0], 354)
            c.send(b"Subject: half a message\r\n\r\n" + b"x" * 20000 + b"\r\nmore\r\n")
            time.sleep(0.2)
        # The server must notice the end of the connection and clean up.
        self.assertTrue(wait_for(lambda: self.vh.maildir_files("tmp") == [], 5),
                        "tmp/ not cleaned: %r" % self.vh.maildir_files("tmp"))
        time.sleep(0.3)
        self.assertEqual(new_files(self.vh, before), [])
        self.assertEqual(self.vh.maildir_files("tmp"), [])
        # and the next client is served as usual
        with smtplib.SMTP("127.0.0.1", self.vh.port, timeout=20) as s:
            self.assertEqual(s.sendmail("a@client.example", ["b@localhost"], MESSAGE), {})
        self.assertEqual(len(new_files(self.vh, before)), 1)

    def test_concurrent_sessions(self):
        before = self.vh.maildir_files()
        n = 50
        results = [None] * n
        start = threading.Event()

        def client(i):
            try:
                start.wait(10)
                msg = MESSAGE + b"client number %d\r\n" % i
                with smtplib.SMTP("127.0.0.1", self.vh.port, local_hostname="c%d.example" % i,
                                  timeout=60) as s:
                    s.ehlo()
                    s.mail("c%d@client.example" % i)
                    s.rcpt("bob@localhost")
                    code, text = s.data(msg)
                    results[i] = (code, text.decode())
            except Exception as e:  # reported below
                results[i] = ("error", repr(e))

        threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        start.set()
        for t in threads:
            t.join(120)
        failed = [(i, r) for i, r in enumerate(results) if r is None or r[0] != 250]
        self.assertEqual(failed, [])
        qids = {queue_id_of(r[1]) for r in results}
        self.assertEqual(len(qids), n, "queue ids are not unique")
        files = wait_for(lambda: len(new_files(self.vh, before)) >= n and new_files(self.vh, before), 10)
        self.assertEqual(len(files), n)
        seen = set()
        for path in files:
            with open(path, "rb") as f:
                _, received, body = split_delivered(f.read())
            m = re.search(rb"client number (\d+)\r\n$", body)
            self.assertIsNotNone(m)
            i = int(m.group(1))
            self.assertEqual(body, MESSAGE + b"client number %d\r\n" % i)
            self.assertIn("c%d.example" % i, received)
            seen.add(i)
        self.assertEqual(seen, set(range(n)))

    # --- protocol limits in a live session

    def test_long_command_line(self):
        with RawClient(self.vh.port) as c:
            c.reply()
            c.cmd("EHLO long.example")
            code, lines = c.cmd("NOOP " + "x" * 595)  # 600 octets + CRLF
            self.assertEqual(code, 500)
            self.assertTrue(lines[0].startswith("500 5.5.2"), lines)
            self.assertEqual(c.cmd("NOOP"), (250, ["250 2.0.0 Ok"]))
            self.assertEqual(c.cmd("QUIT")[0], 221)

    def test_megabyte_line(self):
        with RawClient(self.vh.port, timeout=60) as c:
            c.reply()
            c.cmd("EHLO huge.example")
            c.send(b"A" * (1 << 20))
            time.sleep(0.2)
            c.send(b"\r\n")
            code, lines = c.reply()
            self.assertEqual(code, 500)
            self.assertTrue(lines[0].startswith("500 5.5.2"), lines)
            # exactly one reply for the whole line: the next one answers NOOP
            self.assertEqual(c.cmd("NOOP"), (250, ["250 2.0.0 Ok"]))
            self.assertEqual(c.cmd("QUIT")[0], 221)

    def test_line_of_dot_alone_in_pipeline(self):
        """PIPELINING: a whole transaction in one write gets all its replies."""
        before = self.vh.maildir_files()
        with RawClient(self.vh.port) as c:
            c.reply()
            c.cmd("EHLO pipe.example")
            c.send(b"MAIL FROM:<p@pipe.example>\r\nRCPT TO:<b@localhost>\r\nDATA\r\n")
            self.assertEqual(c.reply()[0], 250)
            self.assertEqual(c.reply()[0], 250)
            self.assertEqual(c.reply()[0], 354)
            c.send(b"Subject: pipelined\r\n\r\nbody\r\n.\r\nNOOP\r\nQUIT\r\n")
            self.assertEqual(c.reply()[0], 250)
            self.assertEqual(c.reply(), (250, ["250 2.0.0 Ok"]))
            self.assertEqual(c.reply()[0], 221)
        self.only_new_file(before)

    # --- the transaction log

    def test_txlog_format(self):
        with smtplib.SMTP("127.0.0.1", self.vh.port, local_hostname="logged.example", timeout=20) as s:
            s.ehlo()
            s.mail("log@client.example")
            s.rcpt("bob@localhost")
            code, text = s.data(MESSAGE)
            self.assertEqual(code, 250)
        qid = queue_id_of(text.decode())
        lines = wait_for(lambda: [l for l in self.vh.log_lines() if qid in l], 5)
        self.assertTrue(lines, "no record for %s in %s:\n%s" % (qid, self.vh.log_path,
                                                               "\n".join(self.vh.log_lines())))
        all_lines = self.vh.log_lines()
        for line in all_lines:
            self.assertRegex(line, TXLOG_RE)
        for line in lines:
            m = TXLOG_RE.match(line)
            self.assertEqual(m.group(2), qid, line)
            stamp = time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S"))
            self.assertLess(abs(stamp - time.time()), 300, "time stamp is not local time now: %s" % line)


if __name__ == "__main__":
    unittest.main()
