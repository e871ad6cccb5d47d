"""ESMTP extensions in a live server: PIPELINING (swaks --pipeline, a whole
transaction in one write), 8BITMIME, SIZE (MAIL SIZE=, messages growing past
the limit, memory bounded for a huge message), ENHANCEDSTATUSCODES (after
EHLO only), SMTPUTF8, CHUNKING (BDAT), ESMTPExtensions turning keywords off,
and a handler adding its own EHLO keyword."""

import os
import re
import shutil
import smtplib
import subprocess
import tempfile
import threading
import time
import unittest

from harness import OVER_STARTTLS, children_of, RawClient, ServerTestCase, queue_id_of, split_delivered, wait_for

LIMIT = 1000000  # ESMTPMaxMessageSize of the maildir server
ENH_RE = re.compile(r"^\d{3}[ -][245]\.\d{1,3}\.\d{1,3}( |$)")

MESSAGE = (b"From: Alice <alice@client.example>\r\n"
           b"Subject: extensions\r\n"
           b"\r\n"
           b"Hello.\r\n"
           b"..a dot-stuffed line\r\n")
UNSTUFFED = MESSAGE.replace(b"\r\n..a", b"\r\n.a")


def status_kb(pid, field):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class RssSampler(threading.Thread):
    """Samples VmRSS of httpd's children every 20 ms; `peak` holds the largest
    growth over the baseline, in kB, of any child."""

    def __init__(self, parent_pid):
        super().__init__(daemon=True)
        self.parent = parent_pid
        self.base = {p: status_kb(p, "VmRSS") for p in children_of(parent_pid)}
        self.peak = 0
        self.stop_event = threading.Event()

    def run(self):
        while not self.stop_event.is_set():
            for p in children_of(self.parent):
                rss = status_kb(p, "VmRSS")
                base = self.base.setdefault(p, rss)
                self.peak = max(self.peak, rss - base)
            time.sleep(0.02)

    def stop(self):
        self.stop_event.set()
        self.join(5)


class ExtensionsTest(ServerTestCase):

    @classmethod
    def configure(cls, httpd):
        cls.md = httpd.add_smtp("maildir", server_name="mx.ext.test", max_size=LIMIT)
        cls.th = httpd.add_smtp("test", server_name="th.ext.test")
        cls.noext = httpd.add_smtp("maildir", server_name="noext.ext.test",
                                   extensions=["-CHUNKING", "-SMTPUTF8"])
        cls.tmpdir = tempfile.mkdtemp(prefix="esmtp-it-ext-")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmpdir, ignore_errors=True)
        super().tearDownClass()

    # --- helpers

    def rcpt(self, vh, local="user"):
        return "%s@%s" % (local, vh.server_name)

    def new_file(self, vh, before):
        files = wait_for(lambda: sorted(set(vh.maildir_files()) - set(before)), 5)
        self.assertEqual(len(files), 1, "expected one new file, got %r" % files)
        with open(files[0], "rb") as f:
            return split_delivered(f.read())

    def assertNothingNew(self, vh, before):
        time.sleep(0.2)  # a delivery would be renamed into new/ before the reply
        self.assertEqual(sorted(set(vh.maildir_files()) - set(before)), [])
        self.assertEqual(vh.maildir_files("tmp"), [])

    def ehlo(self, c, name="client.example"):
        self.assertEqual(c.reply()[0], 220)
        code, lines = c.cmd("EHLO " + name)
        self.assertEqual(code, 250, lines)
        return [l[4:] for l in lines[1:]]

    # --- PIPELINING

    def test_swaks_pipeline(self):
        path = os.path.join(self.tmpdir, "pipe.eml")
        with open(path, "wb") as f:
            f.write(MESSAGE[:-2])  # swaks adds CRLF.CRLF
        before = self.md.maildir_files()
        p = subprocess.run(["swaks", "--pipeline", "--server", "127.0.0.1:%d" % self.md.port,
                            "--helo", "swaks.example", "--from", "alice@client.example",
                            "--to", self.rcpt(self.md), "--data", "@" + path, "--timeout", "20"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
        out = p.stdout.decode("utf-8", "replace")
        self.assertEqual(p.returncode, 0, out)
        self.assertIn("PIPELINING", out)
        # pipelined: RCPT (and DATA) went out before MAIL's reply came back
        self.assertLess(out.index(" -> RCPT TO:"), out.index("<-  250 2.1.0"), out)
        self.assertLess(out.index(" -> DATA"), out.index("<-  250 2.1.5"), out)
        qid = queue_id_of(out)
        _, received, body = self.new_file(self.md, before)
        self.assertIn(qid, received)
        self.assertEqual(body, MESSAGE)  # swaks dot-stuffs what it sends

    def test_whole_transaction_in_one_write(self):
        before = self.md.maildir_files()
        r = [self.rcpt(self.md, n) for n in ("one", "two", "three")]
        with RawClient(self.md.port) as c:
            self.assertEqual(c.reply()[0], 220)
            # the client may pipeline once it has seen PIPELINING in the EHLO reply
            code, lines = c.cmd("EHLO client.example")
            self.assertEqual(code, 250)
            self.assertIn("250-PIPELINING", lines)
            c.send(("MAIL FROM:<alice@client.example>\r\n"
                    "RCPT TO:<%s>\r\nRCPT TO:<%s>\r\nRCPT TO:<%s>\r\nDATA\r\n" % tuple(r)).encode()
                   + MESSAGE + b".\r\nQUIT\r\n")
            self.assertEqual(c.reply(), (250, ["250 2.1.0 Ok"]))
            for _ in r:
                self.assertEqual(c.reply(), (250, ["250 2.1.5 Ok"]))
            self.assertEqual(c.reply()[0], 354)
            code, lines = c.reply()
            self.assertEqual(code, 250, lines)
            qid = queue_id_of(lines[0])
            self.assertEqual(c.reply(), (221, ["221 2.0.0 Bye"]))
            self.assertEqual(c.rest(5), "")  # closed, nothing more
        _, received, body = self.new_file(self.md, before)
        self.assertIn(qid, received)
        self.assertEqual(body, UNSTUFFED)

    # --- 8BITMIME

    def test_8bitmime_byte_exact(self):
        eight = bytes(range(0x80, 0x100))
        message = (b"Subject: 8bit\r\nContent-Type: text/plain; charset=latin1\r\n"
                   b"Content-Transfer-Encoding: 8bit\r\n\r\n" + eight + b"\r\n" +
                   b"caf\xe9 \xc3\xa9t\xc3\xa9\r\n")
        before = self.md.maildir_files()
        with smtplib.SMTP("127.0.0.1", self.md.port, local_hostname="client.example", timeout=20) as s:
            s.ehlo()
            self.assertTrue(s.has_extn("8bitmime"))
            refused = s.sendmail("alice@client.example", [self.rcpt(self.md)], message,
                                 mail_options=["BODY=8BITMIME"])
            self.assertEqual(refused, {})
        _, _, body = self.new_file(self.md, before)
        self.assertEqual(body, message)

    def test_body_parameter_checked(self):
        with RawClient(self.md.port) as c:
            self.ehlo(c)
            self.assertEqual(c.cmd("MAIL FROM:<a@client.example> BODY=BINARYMIME"),
                             (501, ["501 5.5.4 Bad BODY parameter"]))
            self.assertEqual(c.cmd("MAIL FROM:<a@client.example> BODY=7BIT")[0], 250)

    # --- SIZE

    def test_size_parameter_over_limit(self):
        with RawClient(self.md.port) as c:
            exts = self.ehlo(c)
            self.assertIn("SIZE %d" % LIMIT, exts)
            self.assertEqual(c.cmd("MAIL FROM:<a@client.example> SIZE=%d" % (LIMIT + 1)),
                             (552, ["552 5.3.4 Message size exceeds fixed limit"]))
            # refused before DATA: there is no transaction
            self.assertEqual(c.cmd("RCPT TO:<%s>" % self.rcpt(self.md))[0], 503)
            self.assertEqual(c.cmd("MAIL FROM:<a@client.example> SIZE=%d" % LIMIT)[0], 250)

    def test_message_grows_past_limit(self):
        before = self.md.maildir_files()
        body = b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * (LIMIT // 1000 + 10)
        with smtplib.SMTP("127.0.0.1", self.md.port, timeout=30) as s:
            s.ehlo()
            s.mail("a@client.example")
            s.rcpt(self.rcpt(self.md))
            self.assertEqual(s.data(body), (552, b"5.3.4 Message size exceeds fixed limit"))
            self.assertEqual(s.noop()[0], 250)
        self.assertNothingNew(self.md, before)

    def _huge_transfer(self, send_message):
        """Runs send_message(client) while sampling the children's RSS; returns
        (reply, peak growth in kB)."""
        sampler = RssSampler(self.httpd.proc.pid)
        sampler.start()
        try:
            with RawClient(self.md.port, timeout=60) as c:
                self.ehlo(c)
                self.assertEqual(c.cmd("MAIL FROM:<a@client.example>")[0], 250)
                self.assertEqual(c.cmd("RCPT TO:<%s>" % self.rcpt(self.md))[0], 250)
                reply = send_message(c)
                self.assertEqual(c.cmd("NOOP")[0], 250)
        finally:
            sampler.stop()
        return reply, sampler.peak

    def test_huge_message_memory_bounded(self):
        before = self.md.maildir_files()
        block = (b"y" * 78 + b"\r\n") * 1000  # 80 kB
        total = 20 * 1024 * 1024

        def send(c):
            self.assertEqual(c.cmd("DATA")[0], 354)
            c.send(b"Subject: huge\r\n\r\n")
            sent = 0
            while sent < total:
                c.send(block)
                sent += len(block)
            c.send(b".\r\n")
            return c.reply()

        reply, peak = self._huge_transfer(send)
        self.assertEqual(reply, (552, ["552 5.3.4 Message size exceeds fixed limit"]))
        self.assertLess(peak, 20 * 1024, "httpd children grew by %d kB for a 20 MB message" % peak)
        self.assertNothingNew(self.md, before)

    def test_huge_bdat_memory_bounded(self):
        before = self.md.maildir_files()
        total = 20 * 1024 * 1024
        block = b"z" * 65536

        def send(c):
            c.send(b"BDAT %d LAST\r\n" % total)
            sent = 0
            while sent < total:
                c.send(block)
                sent += len(block)
            return c.reply()

        reply, peak = self._huge_transfer(send)
        self.assertEqual(reply, (552, ["552 5.3.4 Message size exceeds fixed limit"]))
        self.assertLess(peak, 20 * 1024, "httpd children grew by %d kB for a 20 MB chunk" % peak)
        self.assertNothingNew(self.md, before)

    # --- ENHANCEDSTATUSCODES

    def test_enhanced_codes_after_ehlo_only(self):
        th = self.th
        with RawClient(th.port) as c:
            self.assertEqual(c.reply()[0], 220)
            # before HELO/EHLO: with codes
            self.assertEqual(c.cmd("NOOP"), (250, ["250 2.0.0 Ok"]))
            c.cmd("EHLO client.example")
            replies = [c.cmd("MAIL FROM:<a@client.example>"),
                       c.cmd("RCPT TO:<%s>" % self.rcpt(th)),
                       c.cmd("RCPT TO:<%s>" % self.rcpt(th, "reject")),
                       c.cmd("RCPT TO:<%s>" % self.rcpt(th, "tempfail")),
                       c.cmd("RCPT TO:<%s>" % self.rcpt(th, "throw")),
                       c.cmd("RCPT TO:<x@elsewhere.test>"),
                       c.cmd("VRFY x"), c.cmd("NOOP"), c.cmd("RSET"), c.cmd("FOO")]
            for code, lines in replies:
                for l in lines:
                    self.assertRegex(l, ENH_RE)
            self.assertEqual(replies[2], (550, ["550 5.1.1 No such user here"]))
            self.assertEqual(replies[3], (451, ["451 4.2.0 Try again later"]))
            self.assertEqual(replies[4][0], 451)
            self.assertTrue(replies[4][1][0].startswith("451 4.3.0 "), replies[4])
            self.assertEqual(replies[5], (550, ["550 5.7.1 Relay access denied"]))

            c.cmd("HELO client.example")
            replies = [c.cmd("MAIL FROM:<a@client.example>"),
                       c.cmd("RCPT TO:<%s>" % self.rcpt(th)),
                       c.cmd("RCPT TO:<%s>" % self.rcpt(th, "reject")),
                       c.cmd("RCPT TO:<%s>" % self.rcpt(th, "tempfail")),
                       c.cmd("RCPT TO:<%s>" % self.rcpt(th, "throw")),
                       c.cmd("RCPT TO:<x@elsewhere.test>"),
                       c.cmd("VRFY x"), c.cmd("NOOP"), c.cmd("RSET"), c.cmd("FOO"),
                       c.cmd("MAIL FROM:<a@client.example> SIZE=10")]
            for code, lines in replies:
                for l in lines:
                    self.assertNotRegex(l, ENH_RE)
            self.assertEqual(replies[2], (550, ["550 No such user here"]))
            self.assertEqual(replies[3], (451, ["451 Try again later"]))
            self.assertEqual(replies[5], (550, ["550 Relay access denied"]))
            self.assertEqual(replies[10], (555, ["555 Unsupported parameter SIZE"]))

    # --- SMTPUTF8

    def test_smtputf8_delivered(self):
        before = self.md.maildir_files()
        sender = "j\u00f6rg@client.example"
        rcpt = "\u7528\u6237@" + self.md.server_name
        message = "Subject: utf8\r\nFrom: J\u00f6rg <%s>\r\n\r\nGr\u00fc\u00dfe.\r\n" % sender
        with smtplib.SMTP("127.0.0.1", self.md.port, local_hostname="client.example", timeout=20) as s:
            s.ehlo()
            self.assertTrue(s.has_extn("smtputf8"))
            refused = s.sendmail(sender, [rcpt], message.encode("utf-8"), mail_options=["SMTPUTF8"])
            self.assertEqual(refused, {})
        return_path, received, body = self.new_file(self.md, before)
        self.assertEqual(return_path, ("Return-Path: <%s>\r\n" % sender).encode("utf-8"))
        # RFC 6531 3.7.3; UTF8SMTPS over TLS (the ESMTP_TEST_OVER_STARTTLS run)
        self.assertRegex(received, r"\bwith UTF8SMTPS\b" if OVER_STARTTLS else r"\bwith UTF8SMTP\b")
        self.assertIn(rcpt, received)
        self.assertEqual(body, message.encode("utf-8"))

    def test_utf8_without_smtputf8_refused(self):
        with RawClient(self.md.port) as c:
            self.ehlo(c)
            refused = (553, ["553 5.6.7 Must declare SMTPUTF8 to send UTF-8 address"])
            self.assertEqual(c.cmd("MAIL FROM:<j\u00f6rg@client.example>"), refused)
            self.assertEqual(c.cmd("MAIL FROM:<a@client.example>")[0], 250)
            self.assertEqual(c.cmd("RCPT TO:<\u7528\u6237@%s>" % self.md.server_name), refused)
            self.assertEqual(c.cmd("DATA")[0], 503)

    # --- CHUNKING

    def test_bdat_pipelined(self):
        before = self.md.maildir_files()
        chunks = [b"From: a@client.example\r\nSubject: bdat\r\n\r\n",
                  b"a line\r\n.\r\n..two dots stay\r\n",
                  b"no stuffing, no end marker\r\n"]
        with RawClient(self.md.port) as c:
            self.assertIn("CHUNKING", self.ehlo(c))
            data = b"MAIL FROM:<a@client.example>\r\nRCPT TO:<%s>\r\n" % self.rcpt(self.md).encode()
            for ch in chunks:
                data += b"BDAT %d\r\n" % len(ch) + ch
            data += b"BDAT 0 LAST\r\nNOOP\r\n"
            c.send(data)  # one write
            self.assertEqual(c.reply()[0], 250)
            self.assertEqual(c.reply()[0], 250)
            for ch in chunks:
                self.assertEqual(c.reply(), (250, ["250 2.0.0 %d octets received" % len(ch)]))
            code, lines = c.reply()
            self.assertEqual(code, 250, lines)
            qid = queue_id_of(lines[0])
            self.assertEqual(c.reply(), (250, ["250 2.0.0 Ok"]))
        _, received, body = self.new_file(self.md, before)
        self.assertIn(qid, received)
        self.assertEqual(body, b"".join(chunks))

    def test_bdat_message_without_final_crlf(self):
        before = self.md.maildir_files()
        msg = b"Subject: no crlf\r\n\r\nlast line"
        with RawClient(self.md.port) as c:
            self.ehlo(c)
            c.cmd("MAIL FROM:<a@client.example>")
            c.cmd("RCPT TO:<%s>" % self.rcpt(self.md))
            c.send(b"BDAT %d LAST\r\n" % len(msg) + msg)
            code, lines = c.reply()
            self.assertEqual(code, 250, lines)
        _, _, body = self.new_file(self.md, before)
        self.assertTrue(body.startswith(msg), body)

    def test_data_after_bdat(self):
        before = self.md.maildir_files()
        with RawClient(self.md.port) as c:
            self.ehlo(c)
            c.cmd("MAIL FROM:<a@client.example>")
            c.cmd("RCPT TO:<%s>" % self.rcpt(self.md))
            c.send(b"BDAT 12\r\nSubject: x\r\n")
            self.assertEqual(c.reply(), (250, ["250 2.0.0 12 octets received"]))
            self.assertEqual(c.cmd("DATA"), (503, ["503 5.5.1 Error: DATA after BDAT"]))
            c.send(b"BDAT 8 LAST\r\n\r\nbody\r\n")
            self.assertEqual(c.reply()[0], 250)
        _, _, body = self.new_file(self.md, before)
        self.assertEqual(body, b"Subject: x\r\n\r\nbody\r\n")

    def test_bdat_sequencing(self):
        with RawClient(self.md.port) as c:
            self.ehlo(c)
            c.send(b"BDAT 6\r\nNOOP\r\n")  # the 6 octets are swallowed
            self.assertEqual(c.reply(), (503, ["503 5.5.1 Error: need MAIL command"]))
            self.assertEqual(c.cmd("MAIL FROM:<a@client.example>")[0], 250)
            c.send(b"BDAT 6 LAST\r\nQUIT\r\n")
            self.assertEqual(c.reply(), (503, ["503 5.5.1 Error: need RCPT command"]))
            self.assertEqual(c.cmd("NOOP"), (250, ["250 2.0.0 Ok"]))

    def test_bdat_unparsable_closes(self):
        """Without a chunk size the framing is lost (issue 8 #2): 521 and
        close, so the octets that follow never run as commands."""
        for line in (b"BDAT x", b"BDAT 3 LAST LAST", b"BDAT -1", b"BDAT", b"BDAT 9999999999999999999 LAST"):
            with RawClient(self.md.port) as c:
                self.ehlo(c)
                c.cmd("MAIL FROM:<a@client.example>")
                c.cmd("RCPT TO:<%s>" % self.rcpt(self.md))
                c.send(line + b"\r\nRSET\r\nMAIL FROM:<evil@client.example>\r\n")
                self.assertEqual(c.reply(), (521, ["521 5.5.4 Error: BDAT command syntax; closing"]), line)
                self.assertEqual(c.rest(5), "")

    def test_bdat_tab_separator(self):
        before = self.md.maildir_files()
        with RawClient(self.md.port) as c:
            self.ehlo(c)
            c.cmd("MAIL FROM:<a@client.example>")
            c.cmd("RCPT TO:<%s>" % self.rcpt(self.md))
            c.send(b"BDAT 14\tLAST\r\nSubject: tab\r\n")
            self.assertEqual(c.reply()[0], 250)
        _, _, body = self.new_file(self.md, before)
        self.assertEqual(body, b"Subject: tab\r\n")

    def test_bdat_bare_lf_refused(self):
        """Bare LF in BDAT content: 550 5.5.2 as documented, not 451 (issue 8 #4)."""
        before = self.md.maildir_files()
        with RawClient(self.md.port) as c:
            self.ehlo(c)
            c.cmd("MAIL FROM:<a@client.example>")
            c.cmd("RCPT TO:<%s>" % self.rcpt(self.md))
            chunk = b"Subject: lf\r\n\r\nbare\nlf\r\n"
            c.send(b"BDAT %d LAST\r\n" % len(chunk) + chunk)
            code, lines = c.reply()
            self.assertEqual(code, 550, lines)
            self.assertTrue(lines[0].startswith("550 5.5.2 "), lines)
        self.assertNothingNew(self.md, before)

    def test_help_follows_extensions(self):
        """HELP names BDAT only where CHUNKING is offered (issue 8 #16)."""
        with RawClient(self.md.port) as c:
            self.ehlo(c)
            code, lines = c.cmd("HELP")
            self.assertEqual(code, 214)
            self.assertIn(" BDAT", lines[-1])
        with RawClient(self.noext.port) as c:
            self.ehlo(c)
            code, lines = c.cmd("HELP")
            self.assertEqual(code, 214)
            self.assertIn(" DATA", lines[-1])
            self.assertNotIn("BDAT", lines[-1])

    def test_bdat_size_limit(self):
        before = self.md.maildir_files()
        half = b"w" * (LIMIT // 2 + 1000)
        with RawClient(self.md.port) as c:
            self.ehlo(c)
            c.cmd("MAIL FROM:<a@client.example>")
            c.cmd("RCPT TO:<%s>" % self.rcpt(self.md))
            c.send(b"BDAT %d\r\n" % len(half) + half + b"BDAT %d LAST\r\n" % len(half) + half)
            self.assertEqual(c.reply(), (250, ["250 2.0.0 %d octets received" % len(half)]))
            self.assertEqual(c.reply(), (552, ["552 5.3.4 Message size exceeds fixed limit"]))
            self.assertEqual(c.cmd("NOOP")[0], 250)
        self.assertNothingNew(self.md, before)

    # --- ESMTPExtensions

    def test_extensions_turned_off(self):
        with RawClient(self.noext.port) as c:
            exts = self.ehlo(c)
            self.assertNotIn("CHUNKING", exts)
            self.assertNotIn("SMTPUTF8", exts)
            for k in ("PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES"):
                self.assertIn(k, exts)
            self.assertTrue(any(e.startswith("SIZE ") for e in exts), exts)
            self.assertEqual(c.cmd("MAIL FROM:<a@client.example> SMTPUTF8"),
                             (555, ["555 5.5.4 Unsupported parameter SMTPUTF8"]))
            self.assertEqual(c.cmd("MAIL FROM:<a@client.example>")[0], 250)
            self.assertEqual(c.cmd("RCPT TO:<%s>" % self.rcpt(self.noext))[0], 250)
            # refused, and its 12 octets ("QUIT\r\nRSET\r\n") are not read as commands
            c.send(b"BDAT 12 LAST\r\nQUIT\r\nRSET\r\n")
            self.assertEqual(c.reply(), (502, ["502 5.5.1 Error: command not implemented"]))
            self.assertEqual(c.cmd("NOOP"), (250, ["250 2.0.0 Ok"]))
            # the transaction survived: DATA works
            self.assertEqual(c.cmd("DATA")[0], 354)
            c.send(MESSAGE + b".\r\n")
            self.assertEqual(c.reply()[0], 250)

    def test_handler_adds_keyword(self):
        with RawClient(self.th.port) as c:
            exts = self.ehlo(c)
            self.assertIn("XPING", exts)
            self.assertIn("CHUNKING", exts)
            self.assertEqual(c.cmd("XPING hi"), (250, ["250 2.0.0 PONG hi"]))


if __name__ == "__main__":
    unittest.main()
