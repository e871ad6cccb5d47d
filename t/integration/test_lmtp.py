"""The lmtp handler (`ESMTPHandler lmtp HOST:PORT|unix:/path`) in a real
httpd, against a real LMTP server (aiosmtpd's LMTP class, run by the test on
a loopback port and on a unix socket): byte-exact delivery with dot-stuffing
and 8-bit content, per-recipient replies at RCPT and after DATA, a server
that is down."""

import asyncio
import os
import smtplib
import threading
import unittest

from harness import Httpd, RawClient, ServerTestCase, free_port, queue_id_of, split_delivered, wait_for

try:
    from aiosmtpd.controller import Controller, UnixSocketController
    from aiosmtpd.lmtp import LMTP
except ImportError:  # python3-aiosmtpd is not installed
    LMTP = None

MESSAGE = (b"From: Alice <alice@client.example>\r\n"
           b"To: Bob <good@smtp1.test>\r\n"
           b"Subject: lmtp test\r\n"
           b"\r\n"
           b"Hello Bob,\r\n"
           b".a line that starts with a dot\r\n"
           b"..two dots\r\n"
           b".\r\n"
           b"a line with only a dot came before\r\n"
           b"8bit: \xc3\xa9t\xc3\xa9 \xff\xfe\r\n"
           b"-- \r\n"
           b"Alice\r\n")


class RecordingLmtpHandler:
    """aiosmtpd handler: stores messages, refuses "unknown" at RCPT (550
    5.1.1), tempfails "tempfail" after DATA (451 4.2.0) and "rcpttemp" at
    RCPT (451 4.2.0)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.messages = []  # dicts: mail_from, mail_options, rcpt_tos, content, session

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.split("@")[0].lower()
        if local == "unknown":
            return "550 5.1.1 <%s>: Recipient address rejected" % address
        if local == "rcpttemp":
            return "451 4.2.0 <%s>: try again at RCPT" % address
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        replies = []
        delivered = []
        for rcpt in envelope.rcpt_tos:  # RFC 2033: one reply per recipient
            if rcpt.split("@")[0].lower() == "tempfail":
                replies.append("451 4.2.0 <%s>: mailbox temporarily unavailable" % rcpt)
            else:
                delivered.append(rcpt)
                replies.append("250 2.0.0 <%s> delivered" % rcpt)
        if delivered:
            with self.lock:
                self.messages.append({
                    "mail_from": envelope.mail_from,
                    "mail_options": list(envelope.mail_options),
                    "rcpt_tos": delivered,
                    "content": bytes(envelope.original_content),
                    "session": id(session),
                })
        return "\r\n".join(replies)

    def find(self, rcpt):
        with self.lock:
            return [m for m in self.messages if rcpt in m["rcpt_tos"]]


class LmtpController(Controller):
    def factory(self):
        return LMTP(self.handler, **self.SMTP_kwargs)


class LmtpUnixController(UnixSocketController):
    def factory(self):
        return LMTP(self.handler, **self.SMTP_kwargs)


@unittest.skipIf(LMTP is None, "python3-aiosmtpd is not installed")
class LmtpTest(ServerTestCase):
    # the LMTP server that is down on purpose: each refusal is an error-log line
    allowed_log = (r"\[esmtp:error\].*esmtp: lmtp: cannot connect to 127\.0\.0\.1:\d+: Connection refused",)

    @classmethod
    def configure(cls, httpd):
        cls.store = RecordingLmtpHandler()
        cls.lmtp_port = free_port()
        cls.tcp_server = LmtpController(cls.store, hostname="127.0.0.1", port=cls.lmtp_port,
                                        server_hostname="lmtp.test")
        cls.tcp_server.start()
        sock_dir = os.path.join(httpd.root, "lmtp")
        os.makedirs(sock_dir)
        cls.sock = os.path.join(sock_dir, "lmtp.sock")
        cls.unix_server = LmtpUnixController(cls.store, unix_socket=cls.sock, server_hostname="lmtp.test")
        cls.unix_server.start()
        os.chmod(cls.sock, 0o777)  # httpd's children run as nobody
        cls.down_port = free_port()  # nobody listens there
        cls.vh = httpd.add_smtp(["lmtp", "127.0.0.1:%d" % cls.lmtp_port, "timeout=20"],
                                log_file="lmtp.log", log_level=3)
        cls.unix_vh = httpd.add_smtp(["lmtp", "unix:" + cls.sock])
        cls.down_vh = httpd.add_smtp(["lmtp", "127.0.0.1:%d" % cls.down_port, "timeout=5"])

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            for server in (getattr(cls, "tcp_server", None), getattr(cls, "unix_server", None)):
                if server is not None:
                    server.stop()

    @classmethod
    def setUpClass(cls):
        try:
            super().setUpClass()
        except BaseException:
            for server in (getattr(cls, "tcp_server", None), getattr(cls, "unix_server", None)):
                if server is not None:
                    server.stop()
            raise

    def sendmail(self, vh, rcpts, message=MESSAGE, options=("BODY=8BITMIME",)):
        with smtplib.SMTP("127.0.0.1", vh.port, local_hostname="client.example", timeout=30) as s:
            s.ehlo()
            code, text = s.mail("alice@client.example", list(options))
            self.assertEqual(code, 250, text)
            for r in rcpts:
                code, text = s.rcpt(r)
                self.assertEqual(code, 250, (r, text))
            return s.data(message)

    def assertDelivered(self, rcpt, reply_text, message=MESSAGE):
        qid = queue_id_of(reply_text.decode())
        found = self.store.find(rcpt)
        self.assertEqual(len(found), 1, "messages for %s: %r" % (rcpt, found))
        m = found[0]
        self.assertEqual(m["mail_from"], "alice@client.example")
        return_path, received, body = split_delivered(m["content"])
        self.assertEqual(return_path, b"Return-Path: <alice@client.example>\r\n")
        self.assertIn(qid, received)
        self.assertIn("client.example", received)
        self.assertEqual(body, message)  # byte for byte: stuffing undone, 8-bit kept
        return m

    def test_delivery_byte_exact(self):
        code, text = self.sendmail(self.vh, ["good@smtp1.test"])
        self.assertEqual(code, 250, text)
        self.assertTrue(text.startswith(b"2.0.0 Ok: queued as "), text)
        m = self.assertDelivered("good@smtp1.test", text)
        self.assertIn("BODY=8BITMIME", m["mail_options"])

    def test_unix_socket(self):
        code, text = self.sendmail(self.unix_vh, ["viaunix@smtp2.test"])
        self.assertEqual(code, 250, text)
        self.assertDelivered("viaunix@smtp2.test", text)

    def test_rcpt_replies_reach_client(self):
        with RawClient(self.vh.port) as c:
            c.reply()
            c.cmd("EHLO client.example")
            self.assertEqual(c.cmd("MAIL FROM:<alice@client.example>")[0], 250)
            self.assertEqual(c.cmd("RCPT TO:<unknown@smtp1.test>"),
                             (550, ["550 5.1.1 <unknown@smtp1.test>: Recipient address rejected"]))
            self.assertEqual(c.cmd("RCPT TO:<rcpttemp@smtp1.test>"),
                             (451, ["451 4.2.0 <rcpttemp@smtp1.test>: try again at RCPT"]))
            self.assertEqual(c.cmd("RCPT TO:<also-good@smtp1.test>"), (250, ["250 2.1.5 OK"]))
            self.assertEqual(c.cmd("DATA")[0], 354)
            c.send(b"Subject: one of three\r\n\r\nbody\r\n.\r\n")
            code, lines = c.reply()
            self.assertEqual(code, 250, lines)
            self.assertEqual(c.cmd("QUIT")[0], 221)
        self.assertEqual(len(self.store.find("also-good@smtp1.test")), 1)

    def test_mixed_results_are_451(self):
        code, text = self.sendmail(self.vh, ["mixed-ok@smtp1.test", "tempfail@smtp1.test"])
        self.assertEqual(code, 451, text)
        self.assertTrue(text.startswith(b"4.3.0 "), text)
        self.assertIn(b"<tempfail@smtp1.test>", text)
        self.assertNotIn(b"mixed-ok", text)
        # the one that worked was delivered: the client's retry duplicates it,
        # which is the lesser evil
        self.assertEqual(len(self.store.find("mixed-ok@smtp1.test")), 1)

    def test_single_recipient_gets_its_reply(self):
        code, text = self.sendmail(self.vh, ["tempfail@smtp1.test"])
        self.assertEqual((code, text), (451, b"4.2.0 <tempfail@smtp1.test>: mailbox temporarily unavailable"))

    def test_two_messages_one_connection(self):
        with smtplib.SMTP("127.0.0.1", self.vh.port, timeout=30) as s:
            s.sendmail("alice@client.example", ["first@smtp1.test"], b"Subject: 1\r\n\r\none\r\n")
            s.sendmail("alice@client.example", ["second@smtp1.test"], b"Subject: 2\r\n\r\ntwo\r\n")
        first, second = self.store.find("first@smtp1.test"), self.store.find("second@smtp1.test")
        self.assertEqual((len(first), len(second)), (1, 1))
        self.assertEqual(first[0]["session"], second[0]["session"], "one LMTP session per SMTP session")
        self.assertTrue(second[0]["content"].endswith(b"\r\nSubject: 2\r\n\r\ntwo\r\n"))

    def test_server_down(self):
        with RawClient(self.down_vh.port) as c:
            c.reply()
            c.cmd("EHLO client.example")
            self.assertEqual(c.cmd("MAIL FROM:<alice@client.example>")[0], 250)
            self.assertEqual(c.cmd("RCPT TO:<good@smtp3.test>"), (451, ["451 4.4.1 LMTP server unavailable"]))
            self.assertEqual(c.cmd("DATA"), (503, ["503 5.5.1 Error: need RCPT command"]))
            self.assertEqual(c.cmd("QUIT")[0], 221)
        # issue 8 defect 18: the administrator learns why, in the error log
        lines = wait_for(lambda: [l for l in self.httpd.log_lines()
                                  if "[esmtp:error]" in l and "lmtp: cannot connect to" in l], 5)
        self.assertTrue(lines, "no error-log line for the unreachable LMTP server")

    def test_large_message(self):
        body = b"".join(b"%06d .line with a dot inside and 8-bit \xe2\x82\xac\r\n.%06d\r\n" % (i, i)
                        for i in range(20000))
        message = b"Subject: large\r\n\r\n" + body
        code, text = self.sendmail(self.vh, ["large@smtp1.test"], message)
        self.assertEqual(code, 250, text)
        self.assertDelivered("large@smtp1.test", text, message)


class LmtpConfigTest(unittest.TestCase):
    """Configuration errors fail `apache2 -t` with a clear message."""

    def config_error(self, handler):
        h = Httpd(prefix="esmtp-it-lmtpcfg-")
        try:
            h.add_smtp(handler)
            rc, out = h.config_test()
        finally:
            h.cleanup()
        self.assertNotEqual(rc, 0, out)
        self.assertIn("ESMTPHandler lmtp:", out)
        return out

    def test_bad_target(self):
        self.assertIn("HOST:PORT", self.config_error(["lmtp", "localhost"]))
        self.config_error(["lmtp", "unix:relative"])
        self.config_error(["lmtp", "::1:24"])

    def test_bad_option(self):
        self.config_error(["lmtp", "127.0.0.1:24", "timeout=never"])
