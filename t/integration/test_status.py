"""Live counters in mod_status (README, Monitoring): the ?auto keys and the
HTML section are checked against what the tests sent, on the event MPM
(sessions parked with the MPM) and on prefork (two child processes, a
graceful restart); the scoreboard names the protocol and the verb only; the
module works without mod_status."""

import os
import shutil
import smtplib
import ssl
import subprocess
import unittest
import urllib.error
import urllib.request

import signal

from harness import MODULESDIR, PARKING, RawClient, ServerTestCase, children_of, q, wait_for

STATUS_LINES = [
    "LoadModule status_module %s" % q(os.path.join(MODULESDIR, "mod_status.so")),
    "ExtendedStatus On",
    "<Location /server-status>",
    "    SetHandler server-status",
    "    Require all granted",
    "</Location>",
]

MESSAGE = b"Subject: status test\r\n\r\nbody\r\n"


def fetch(port, query=""):
    with urllib.request.urlopen("http://127.0.0.1:%d/server-status%s" % (port, query), timeout=20) as r:
        return r.read().decode("utf-8", "replace")


def parse_auto(text):
    """?auto: the server's name, then `Key: value` lines; the ESMTP* values
    are integers."""
    esmtp = {}
    for line in text.splitlines()[1:]:
        if not line.startswith("ESMTP"):
            continue  # mod_status's own (its ServerUptime may have no value)
        key, sep, value = line.partition(": ")
        if not sep or not value.isdigit() or key in esmtp:
            raise AssertionError("not a Key: value line: %r" % line)
        esmtp[key] = int(value)
    return esmtp


KEYS = ["ESMTPSessions", "ESMTPSessionsGreeting", "ESMTPSessionsCommand", "ESMTPSessionsData",
        "ESMTPSessionsParked", "ESMTPSessionsOnThread", "ESMTPSessionsTLS", "ESMTPSessionsPlaintext",
        "ESMTPConnections", "ESMTPMessagesAccepted", "ESMTPMessagesRefused4xx", "ESMTPMessagesRefused5xx",
        "ESMTPRecipients", "ESMTPOctetsReceived", "ESMTPRejectsRelay", "ESMTPRejectsLimits",
        "ESMTPRejectsBareNewline", "ESMTPRejectsEarlyTalker", "ESMTPRejectsPipelining", "ESMTPRejectsTimeout",
        "ESMTPRejectsHandlerError", "ESMTPRejectsDelivery"]


class StatusMixin:
    def auto(self):
        return parse_auto(fetch(self.httpd.http_port, "?auto"))

    def idle(self):
        """Waits until no session is open; returns the counters."""
        return wait_for(lambda: (lambda a: a if a["ESMTPSessions"] == 0 else None)(self.auto()), 10) or self.auto()

    def deliver(self, port, sender="a@client.example", rcpts=("b@localhost",), msg=MESSAGE):
        with smtplib.SMTP("127.0.0.1", port, local_hostname="client.example", timeout=20) as s:
            s.ehlo()
            s.mail(sender)
            for r in rcpts:
                code, text = s.rcpt(r)
                self.assertEqual(code, 250, text)
            return s.data(msg)

    def greeted(self, port):
        c = RawClient(port)
        self.assertEqual(c.reply()[0], 220)
        return c


class StatusEventTest(StatusMixin, ServerTestCase):
    httpd_options = {"main_extra": STATUS_LINES}

    @classmethod
    def configure(cls, httpd):
        httpd.add_http()
        cls.vh = httpd.add_smtp("test", accept_domains=["localhost"], max_recipients=2)
        cls.early = httpd.add_smtp("test", accept_domains=["localhost"], extra=["ESMTPGreetingDelay 1"])
        cls.slow = httpd.add_smtp("test", accept_domains=["localhost"], timeouts={"command": 1})
        cls.limited = httpd.add_smtp("test", accept_domains=["localhost"], extra=[
            "ESMTPClientLimitExceptions none", "ESMTPClientConnectionLimit 1", "ESMTPClientMessageRate 1/60"])

    def test_auto_keys(self):
        a = self.auto()
        for k in KEYS:
            self.assertIn(k, a)
        # mod_status's own lines are still there
        self.assertIn("Total Accesses", fetch(self.httpd.http_port, "?auto"))

    def test_per_client_limits_are_counted(self):
        before = self.idle()
        with self.greeted(self.limited.port) as c:
            # a second session from the same address: 421
            with RawClient(self.limited.port) as second:
                self.assertEqual(second.reply()[0], 421)
            # the message rate (1 a minute): the second MAIL gets 450
            self.assertEqual(c.cmd("EHLO client.example")[0], 250)
            self.assertEqual(c.cmd("MAIL FROM:<a@client.example>")[0], 250)
            self.assertEqual(c.cmd("RSET")[0], 250)
            self.assertEqual(c.cmd("MAIL FROM:<a@client.example>")[0], 450)
            c.cmd("QUIT")
        after = self.idle()
        self.assertEqual(after["ESMTPRejectsLimits"] - before["ESMTPRejectsLimits"], 2)

    def test_counters_match_what_was_sent(self):
        before = self.idle()
        port = self.vh.port
        sent = 0
        for _ in range(3):
            code, _ = self.deliver(port)
            self.assertEqual(code, 250)
            sent += len(MESSAGE)
        # refused 4xx at the end of data (the test handler's eom451 sender)
        self.assertEqual(self.deliver(port, sender="eom451@client.example")[0], 451)
        # a handler that cannot store the message: 451 at DATA
        with smtplib.SMTP("127.0.0.1", port, local_hostname="client.example", timeout=20) as s:
            s.ehlo()
            s.mail("data451@client.example")
            s.rcpt("b@localhost")
            self.assertEqual(s.docmd("DATA")[0], 451)
        # relay, limits (third recipient over ESMTPMaxRecipients 2), handler error
        with smtplib.SMTP("127.0.0.1", port, local_hostname="client.example", timeout=20) as s:
            s.ehlo()
            s.mail("a@client.example")
            self.assertEqual(s.rcpt("x@elsewhere.example")[0], 550)
            self.assertEqual(s.rcpt("b@localhost")[0], 250)
            self.assertEqual(s.rcpt("c@localhost")[0], 250)
            self.assertEqual(s.rcpt("d@localhost")[0], 452)
            s.rset()
            s.mail("a@client.example")
            self.assertEqual(s.rcpt("throw@localhost")[0], 451)
        # bare LF in a message: refused 5xx
        with self.greeted(port) as c:
            self.assertEqual(c.cmd("EHLO client.example")[0], 250)
            self.assertEqual(c.cmd("MAIL FROM:<a@client.example>")[0], 250)
            self.assertEqual(c.cmd("RCPT TO:<b@localhost>")[0], 250)
            self.assertEqual(c.cmd("DATA")[0], 354)
            c.send(b"Subject: x\n\nbody\r\n.\r\n")
            self.assertEqual(c.reply()[0], 550)
            c.cmd("QUIT")
        # unauthorised pipelining after HELO
        with self.greeted(port) as c:
            c.send(b"HELO client.example\r\nMAIL FROM:<a@client.example>\r\n")
            self.assertIn("554", c.rest())
        # early talker
        with RawClient(self.early.port) as c:
            c.send(b"EHLO client.example\r\n")
            self.assertIn("554", c.rest())
        # timeout (ESMTPTimeout command=1)
        with self.greeted(self.slow.port) as c:
            self.assertIn("421", c.rest(timeout=10))
        after = self.idle()
        d = {k: after[k] - before[k] for k in KEYS}
        self.assertEqual(d["ESMTPConnections"], 10, d)
        self.assertEqual(d["ESMTPMessagesAccepted"], 3, d)
        self.assertEqual(d["ESMTPMessagesRefused4xx"], 2, d)
        self.assertEqual(d["ESMTPRejectsDelivery"], 2, d)
        self.assertEqual(d["ESMTPMessagesRefused5xx"], 1, d)
        self.assertEqual(d["ESMTPRecipients"], 3, d)
        self.assertGreater(d["ESMTPOctetsReceived"], sent, d)
        self.assertEqual(d["ESMTPRejectsRelay"], 1, d)
        self.assertEqual(d["ESMTPRejectsLimits"], 1, d)
        self.assertEqual(d["ESMTPRejectsHandlerError"], 1, d)
        self.assertEqual(d["ESMTPRejectsBareNewline"], 1, d)
        self.assertEqual(d["ESMTPRejectsPipelining"], 1, d)
        self.assertEqual(d["ESMTPRejectsEarlyTalker"], 1, d)
        self.assertEqual(d["ESMTPRejectsTimeout"], 1, d)
        for k in ("ESMTPSessions", "ESMTPSessionsCommand", "ESMTPSessionsData", "ESMTPSessionsParked",
                  "ESMTPSessionsOnThread", "ESMTPSessionsGreeting"):
            self.assertEqual(after[k], 0, (k, after))
        # the recent errors name the causes
        page = fetch(self.httpd.http_port)
        for cause in ("relay", "early_talker", "pipelining", "timeout", "handler_error", "bare_newline", "delivery"):
            self.assertIn("<td>%s</td>" % cause, page)
        self.assertIn("DATA: 451 Local error in processing (test handler)", page)
        self.assertIn("end of data: 451 Try again later (test handler)", page)

    def test_sessions_open_now(self):
        self.idle()
        clients = []
        try:
            for _ in range(3):
                c = self.greeted(self.vh.port)
                self.assertEqual(c.cmd("EHLO client.example")[0], 250)
                clients.append(c)
            d = self.greeted(self.vh.port)
            clients.append(d)
            self.assertEqual(d.cmd("EHLO client.example")[0], 250)
            self.assertEqual(d.cmd("MAIL FROM:<a@client.example>")[0], 250)
            self.assertEqual(d.cmd("RCPT TO:<b@localhost>")[0], 250)
            self.assertEqual(d.cmd("DATA")[0], 354)

            def settled():
                a = self.auto()
                ok = a["ESMTPSessions"] == 4 and a["ESMTPSessionsCommand"] == 3 and a["ESMTPSessionsData"] == 1
                # only the event MPM parks (worker and prefork: on a thread)
                if PARKING and self.httpd.mpm == "event":
                    ok = ok and a["ESMTPSessionsParked"] == 4 and a["ESMTPSessionsOnThread"] == 0
                return a if ok else None

            a = wait_for(settled, 10)
            self.assertTrue(a, self.auto())
            self.assertEqual(a["ESMTPSessionsPlaintext"], 4)
            self.assertEqual(a["ESMTPSessionsTLS"], 0)
            page = fetch(self.httpd.http_port)
            self.assertIn("mod_esmtp: SMTP sessions", page)
            self.assertIn("smtp1.test:%d" % self.vh.port, page)
        finally:
            for c in clients:
                c.close()
        after = self.idle()
        self.assertEqual(after["ESMTPSessions"], 0, after)
        self.assertEqual(after["ESMTPSessionsParked"], 0, after)
        self.assertEqual(after["ESMTPSessionsData"], 0, after)


class StatusPreforkTest(StatusMixin, ServerTestCase):
    mpm = "prefork"
    httpd_options = {"main_extra": STATUS_LINES,
                     "mpm_lines": ["StartServers 3", "MinSpareServers 3", "MaxSpareServers 6",
                                   "ServerLimit 8", "MaxRequestWorkers 8"]}
    # the old generation's children end their sessions on the restart;
    # children killed on purpose
    allowed_log = (r"AH00169", r"AH00052: child pid \d+ exit signal Killed \(9\)")

    @classmethod
    def configure(cls, httpd):
        httpd.add_http()
        cls.vh = httpd.add_smtp("test", accept_domains=["localhost"])

    def test_scoreboard_protocol_and_verb(self):
        # a session that waits in its process (prefork: never parked; on
        # the event MPM even a short ESMTPTimeout parks now, with a timer)
        # shows in the scoreboard with its last verb only. The reply reaches
        # the client before the process writes the scoreboard: poll until
        # it has.
        with self.greeted(self.vh.port) as c:
            self.assertEqual(c.cmd("EHLO client.example")[0], 250)
            self.assertEqual(c.cmd("MAIL FROM:<secret-sender@client.example>")[0], 250)
            page = wait_for(lambda: (lambda p: p if "<td>smtp</td>" in p and "MAIL" in p else None)(
                fetch(self.httpd.http_port)), 10) or fetch(self.httpd.http_port)
            self.assertIn("<td>smtp</td>", page)
            self.assertIn("MAIL", page)
            self.assertNotIn("secret-sender", page)
            self.assertEqual(c.cmd("QUIT")[0], 221)

    def test_two_children_and_graceful_restart(self):
        before = self.idle()
        # prefork: each open session holds its own child process
        a, b = self.greeted(self.vh.port), self.greeted(self.vh.port)
        try:
            self.assertEqual(a.cmd("EHLO a.example")[0], 250)
            self.assertEqual(b.cmd("EHLO b.example")[0], 250)
            now = wait_for(lambda: (lambda x: x if x["ESMTPSessions"] == 2 else None)(self.auto()), 10)
            self.assertTrue(now, self.auto())
            self.assertEqual(now["ESMTPSessionsOnThread"], 2)
            self.assertEqual(now["ESMTPSessionsCommand"], 2)
            for c in (a, b):
                self.assertEqual(c.cmd("MAIL FROM:<a@client.example>")[0], 250)
                self.assertEqual(c.cmd("RCPT TO:<b@localhost>")[0], 250)
                self.assertEqual(c.cmd("DATA")[0], 354)
                c.send(MESSAGE + b".\r\n")
                self.assertEqual(c.reply()[0], 250)
                self.assertEqual(c.cmd("QUIT")[0], 221)
        finally:
            a.close()
            b.close()
        mid = self.idle()
        self.assertEqual(mid["ESMTPMessagesAccepted"] - before["ESMTPMessagesAccepted"], 2, (before, mid))
        self.assertEqual(mid["ESMTPConnections"] - before["ESMTPConnections"], 2)
        # a graceful restart keeps the counters; a session open across it
        # ends with the old child and is no longer counted
        held = self.greeted(self.vh.port)
        try:
            self.assertEqual(held.cmd("EHLO held.example")[0], 250)
            self.httpd.restart(graceful=True)
            held.rest(timeout=10)
        finally:
            held.close()
        self.assertEqual(self.deliver(self.vh.port)[0], 250)
        after = self.idle()
        self.assertEqual(after["ESMTPSessions"], 0, after)
        self.assertEqual(after["ESMTPMessagesAccepted"] - before["ESMTPMessagesAccepted"], 3, after)
        self.assertEqual(after["ESMTPConnections"] - before["ESMTPConnections"], 4, after)


    def test_killed_children_drop_out_of_the_sessions(self):
        # SIGKILL runs no cleanup: the sessions of a dead child must not stay
        # counted (each child has its own row of gauges; dead rows are skipped)
        self.idle()
        clients = [self.greeted(self.vh.port) for _ in range(2)]
        try:
            for c in clients:
                self.assertEqual(c.cmd("EHLO k.example")[0], 250)
            now = wait_for(lambda: (lambda x: x if x["ESMTPSessions"] == 2 else None)(self.auto()), 10)
            self.assertTrue(now, self.auto())
            for pid in children_of(self.httpd.proc.pid):
                os.kill(pid, signal.SIGKILL)
            for c in clients:
                c.rest(timeout=5)  # the connection dies with its child
        finally:
            for c in clients:
                c.close()
        after = wait_for(lambda: (lambda x: x if x["ESMTPSessions"] == 0 else None)(self._auto_retry()), 15)
        self.assertTrue(after, self._auto_retry())
        self.assertEqual(after["ESMTPSessionsCommand"], 0, after)
        self.assertEqual(self.deliver(self.vh.port)[0], 250)

    def _auto_retry(self):
        """?auto while the parent replaces the killed children."""
        try:
            return self.auto()
        except (OSError, urllib.error.URLError):
            return {"ESMTPSessions": -1}


MOD_SSL = os.path.join(MODULESDIR, "mod_ssl.so")
MOD_SHMCB = os.path.join(MODULESDIR, "mod_socache_shmcb.so")
OPENSSL = shutil.which("openssl")


@unittest.skipUnless(os.path.exists(MOD_SSL) and OPENSSL, "mod_ssl or openssl missing")
class StatusTlsTest(StatusMixin, ServerTestCase):
    httpd_options = {"main_extra": list(STATUS_LINES)}

    @classmethod
    def configure(cls, httpd):
        cert = os.path.join(httpd.root, "conf", "cert.pem")
        key = os.path.join(httpd.root, "conf", "key.pem")
        subprocess.run([OPENSSL, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
                        "-keyout", key, "-out", cert, "-days", "2"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
        httpd.main_extra += ["LoadModule socache_shmcb_module %s" % q(MOD_SHMCB),
                             "LoadModule ssl_module %s" % q(MOD_SSL),
                             "SSLSessionCache none",
                             "SSLRandomSeed startup builtin"]
        httpd.add_http()
        cls.tls = httpd.add_smtp("test", accept_domains=["localhost"], extra=[
            "SSLEngine on", "SSLCertificateFile %s" % q(cert), "SSLCertificateKeyFile %s" % q(key)])
        cls.plain = httpd.add_smtp("test", accept_domains=["localhost"])
        cls.starttls = httpd.add_smtp("test", accept_domains=["localhost"], extra=[
            "SSLEngine on", "SSLCertificateFile %s" % q(cert), "SSLCertificateKeyFile %s" % q(key),
            "ESMTPStartTLS On"])

    def test_session_in_its_handshake_is_counted(self):
        # after STARTTLS's 220 and before the handshake the session is still
        # open and in the command phase (it was counted in no phase)
        self.idle()
        c = self.greeted(self.starttls.port)
        try:
            self.assertEqual(c.cmd("EHLO client.example")[0], 250)
            self.assertEqual(c.cmd("STARTTLS")[0], 220)
            a = wait_for(lambda: (lambda x: x if x["ESMTPSessions"] == 1 else None)(self.auto()), 10)
            self.assertTrue(a, self.auto())
            self.assertEqual(a["ESMTPSessionsCommand"], 1, a)
            self.assertEqual(a["ESMTPSessionsGreeting"] + a["ESMTPSessionsData"], 0, a)
        finally:
            c.close()
        after = self.idle()
        self.assertEqual(after["ESMTPSessionsCommand"], 0, after)

    def test_tls_and_plaintext_sessions(self):
        self.idle()
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        tls = smtplib.SMTP_SSL("127.0.0.1", self.tls.port, context=ctx, timeout=20)
        plain = smtplib.SMTP("127.0.0.1", self.plain.port, timeout=20)
        try:
            tls.ehlo("tls.example")
            plain.ehlo("plain.example")
            a = wait_for(lambda: (lambda x: x if x["ESMTPSessions"] == 2 else None)(self.auto()), 10)
            self.assertTrue(a, self.auto())
            self.assertEqual(a["ESMTPSessionsTLS"], 1, a)
            self.assertEqual(a["ESMTPSessionsPlaintext"], 1, a)
        finally:
            tls.quit()
            plain.quit()
        after = self.idle()
        self.assertEqual(after["ESMTPSessionsTLS"], 0, after)


class WithoutModStatusTest(StatusMixin, ServerTestCase):
    """mod_esmtp registers an optional hook only: without mod_status it
    loads and works, and nothing is logged about it."""

    @classmethod
    def configure(cls, httpd):
        httpd.add_http()
        cls.vh = httpd.add_smtp("test", accept_domains=["localhost"])

    def test_delivery_without_mod_status(self):
        self.assertEqual(self.deliver(self.vh.port)[0], 250)
        with self.assertRaises(urllib.error.HTTPError) as e:
            fetch(self.httpd.http_port)
        self.assertEqual(e.exception.code, 404)


if __name__ == "__main__":
    unittest.main()
