"""The `smtp` handler (issue 22): each transaction relayed synchronously to
a smarthost. The smarthost is a second mod_esmtp (its own httpd) with
STARTTLS Required and AUTH through an htpasswd file; the relay verifies its
certificate against ca= and its name against servername=, and logs in with
the credentials of auth=FILE. Checked: the message arrives (our Received
on top, no Return-Path from the relay) and the 250 comes only after the
smarthost's, with both queue ids in the transaction log; a recipient the
smarthost refuses is refused at RCPT; a smarthost that is down, presents a
certificate for another name or one we do not trust, or does not offer
STARTTLS gives 451 and nothing is acknowledged; opendkim signs before the
relay and the signature verifies at the smarthost.

DSN and REQUIRETLS (the smtp handler carries them on): NOTIFY, ORCPT, RET
and ENVID reach a smarthost that offers DSN (a mod_esmtp whose handler
carries DSN, two hops on; Postfix, which records them in its queue file)
and are dropped for one that does not; REQUIRETLS is offered only over TLS
and travels end to end through a mod_esmtp smarthost that itself relays
with the smtp handler over verified TLS; a smarthost without REQUIRETLS
(Postfix, a mod_esmtp whose handler does not carry it) gets nothing and
the client 550 5.7.30."""

import os
import re
import smtplib
import sys
import time
import unittest

import test_postfix
from harness import Httpd, RawClient, ServerTestCase, free_port, queue_id_of, unexpected_log_lines, wait_for
from peers import PostfixSmarthost, dovecot_missing
from test_auth import USERS_FILE, authn_lines
from test_auth import missing as auth_missing
from test_milter import OPENDKIM, dkim, start_opendkim, stop, wait_port
from test_starttls import client_context, ehlo_keywords, make_cert, ssl_main_lines, ssl_vhost_lines, tls_wrap

SMART_NAME = "smarthost.test"
USER = "alice@example.org"
# the smarthost's vhosts: relaying only when authenticated
SMART_AUTH = ["ESMTPAuth PLAIN LOGIN", "ESMTPAuthProvider smtp-file", "ESMTPAuthFailureDelay 0"]
# what the smarthost's httpd logs when our client refuses its certificate
SMART_ALLOWED = (r"AH0199[0-9]|AH0200[0-9]|AH01873|AH01906|AH01909|SSL handshake|SSL Library Error|ssl_engine",
                 r"AH02008|AH02007|SSL_accept|alert")

MESSAGE = (b"From: Alice <alice@example.org>\r\n"
           b"To: Bob <bob@example.net>\r\n"
           b"Subject: relayed\r\n"
           b"Date: Tue, 1 Dec 2026 12:00:00 +0000\r\n"
           b"Message-ID: <relay-test@example.org>\r\n"
           b"\r\n"
           b"Hello Bob,\r\n"
           b".a line with a leading dot\r\n"
           b"the end.\r\n")


def missing():
    why = auth_missing()
    if why:
        return why
    if not os.path.exists(OPENDKIM) or dkim is None:
        return "opendkim or python3-dkim missing"
    return None


@unittest.skipIf(missing(), missing() or "")
class RelayTest(ServerTestCase):
    # the relay's error log names every smarthost it could not use; mod_ssl
    # notes the test certificates again at the graceful restart
    allowed_log = (r"esmtp: .*smtp: ", r"AH01873|AH01906|AH01909")
    smart = None

    @classmethod
    def setUpClass(cls):
        cls.smart = Httpd(prefix="esmtp-it-smarthost-")
        try:
            conf = os.path.join(cls.smart.root, "conf")
            cls.cert, key = make_cert(conf, cn=SMART_NAME, names=(SMART_NAME, ))
            os.chmod(cls.cert, 0o644)
            cls.smart.main_extra += ssl_main_lines() + authn_lines(conf)
            tls = ssl_vhost_lines(cls.cert, key, "Required")
            cls.smart_mx = cls.smart.add_smtp("maildir", server_name=SMART_NAME, accept_domains=["example.com"],
                                              log_file="smart.log", log_level=2, extra=tls + SMART_AUTH)
            cls.smart_test = cls.smart.add_smtp("test", server_name=SMART_NAME, accept_domains=["example.com"],
                                                extra=tls + SMART_AUTH)
            cls.smart_plain = cls.smart.add_smtp("maildir", server_name=SMART_NAME, accept_domains=["*"])
            # only the idle-timer tests talk to these
            cls.smart_idle = cls.smart.add_smtp("test", server_name=SMART_NAME, accept_domains=["example.com"],
                                                extra=tls + SMART_AUTH)
            cls.smart_keep = cls.smart.add_smtp("test", server_name=SMART_NAME, accept_domains=["example.com"],
                                                extra=tls + SMART_AUTH)
            # port 465's way: TLS from the first byte
            cls.smart_465 = cls.smart.add_smtp("maildir", server_name=SMART_NAME, accept_domains=["example.com"],
                                               extra=ssl_vhost_lines(cls.cert, key) + SMART_AUTH)
            # the last hop of DSN and REQUIRETLS: the test handler says it
            # carries them on (HandlerFactory::carries()) and records what
            # MAIL and RCPT brought
            cls.smart_dsn = cls.smart.add_smtp("test", server_name=SMART_NAME, accept_domains=["example.com"],
                                               extra=tls)
            cls.smart_dsn.handler.append("carries=dsn,requiretls")
            # a smarthost that relays on with the smtp handler over verified
            # TLS: it offers DSN, and REQUIRETLS over TLS
            cls.smart_relay = cls.smart.add_smtp(
                ["smtp", "127.0.0.1:%d" % cls.smart_dsn.port, "servername=" + SMART_NAME, "ca=" + cls.cert,
                 "timeout=10"], server_name=SMART_NAME, accept_domains=["example.com"], extra=tls)
            cls.smart.start()
        except BaseException:
            cls.smart.cleanup(keep=True)
            raise
        cls.addClassCleanup(cls.stop_smarthost)
        super().setUpClass()

    @classmethod
    def stop_smarthost(cls):
        cls.smart.stop()
        bad = unexpected_log_lines(cls.smart.log_lines(), SMART_ALLOWED)
        if bad:
            sys.stderr.write("\n--- smarthost error log\n%s\n" % "\n".join(bad))
        cls.smart.cleanup(keep=bool(bad) or cls._failed)

    @classmethod
    def configure(cls, httpd):
        d = os.path.join(httpd.root, "conf")
        cred = os.path.join(d, "smarthost.secret")
        with open(cred, "w") as f:
            f.write("%s:%s\n" % (USER, USERS_FILE[USER]))
        os.chmod(cred, 0o600)  # read by root at configuration time
        # opendkim signs what the relay passes on
        cls.dkim_port, cls.dkim_proc, cls.dkim_log, cls.dns_txt = start_opendkim(
            os.path.join(httpd.root, "dkim"), "example.org", "relay", "s", "relaxed/simple")
        cls.addClassCleanup(cls.dkim_log.close)
        cls.addClassCleanup(stop, cls.dkim_proc)
        wait_port(cls.dkim_port)

        def to(vh, *opts):
            return ["smtp", "127.0.0.1:%d" % vh.port, "servername=" + SMART_NAME, "ca=" + cls.cert,
                    "auth=" + cred, "timeout=10"] + list(opts)

        relay = dict(accept_domains=["example.com"], log_file="relay.log", log_level=2)
        cls.relay = httpd.add_smtp(to(cls.smart_mx), server_name="relay.example.org",
                                   extra=["ESMTPMilter inet:127.0.0.1:%d" % cls.dkim_port], **relay)
        cls.relay_test = httpd.add_smtp(to(cls.smart_test), **relay)
        cls.relay_idle = httpd.add_smtp(to(cls.smart_idle, "idle=1"), **relay)
        cls.relay_keep = httpd.add_smtp(to(cls.smart_keep, "idle=300"), **relay)
        cls.down_port = free_port()
        cls.relay_down = httpd.add_smtp(["smtp", "127.0.0.1:%d" % cls.down_port, "timeout=5"], **relay)
        cls.relay_wrong_name = httpd.add_smtp(
            ["smtp", "127.0.0.1:%d" % cls.smart_mx.port, "servername=other.test", "ca=" + cls.cert, "auth=" + cred],
            **relay)
        cls.relay_untrusted = httpd.add_smtp(
            ["smtp", "127.0.0.1:%d" % cls.smart_mx.port, "servername=" + SMART_NAME, "auth=" + cred], **relay)
        cls.relay_465 = httpd.add_smtp(to(cls.smart_465, "tls=implicit"), **relay)
        cls.relay_no_starttls = httpd.add_smtp(
            ["smtp", "127.0.0.1:%d" % cls.smart_plain.port, "servername=" + SMART_NAME, "ca=" + cls.cert], **relay)
        # clients may use STARTTLS (REQUIRETLS is offered only then)
        sub_cert, sub_key = make_cert(d, cn="relay.example.org", names=("relay.example.org", ), prefix="sub-")
        httpd.main_extra += ssl_main_lines()
        starttls = ssl_vhost_lines(sub_cert, sub_key, "On")
        cls.relay_rt = httpd.add_smtp(["smtp", "127.0.0.1:%d" % cls.smart_relay.port, "servername=" + SMART_NAME,
                                       "ca=" + cls.cert, "timeout=10"], extra=starttls, **relay)
        cls.relay_rt_lacking = httpd.add_smtp(to(cls.smart_test), extra=starttls, **relay)
        # the operator takes DSN and REQUIRETLS away from a handler that
        # carries both (ESMTPExtensions -DSN -REQUIRETLS)
        cls.relay_rt_off = httpd.add_smtp(["smtp", "127.0.0.1:%d" % cls.smart_relay.port, "servername=" + SMART_NAME,
                                           "ca=" + cls.cert, "timeout=10"], extra=starttls,
                                          extensions=["-DSN", "-REQUIRETLS"], **relay)

    def verify(self, content):
        def dnsfunc(name, timeout=5):
            self.assertEqual(name, b"relay._domainkey.example.org.")
            return self.dns_txt
        return dkim.verify(content, dnsfunc=dnsfunc)

    def test_relayed_signed_and_acknowledged_after_the_smarthost(self):
        before = len(self.smart_mx.maildir_files())
        with smtplib.SMTP("127.0.0.1", self.relay.port, timeout=60) as s:
            s.ehlo("client.example")
            s.mail("alice@example.org")
            code, _ = s.rcpt("bob@example.com")
            self.assertEqual(code, 250)
            code, text = s.data(MESSAGE)
        self.assertEqual(code, 250, text)
        our_qid = queue_id_of(text.decode())
        # the 250 came after the smarthost's: the message is already there
        files = self.smart_mx.maildir_files()
        self.assertEqual(len(files), before + 1)
        with open(files[-1], "rb") as f:
            content = f.read()
        # the smarthost's own Return-Path and Received, then ours, no second Return-Path
        self.assertTrue(content.startswith(b"Return-Path: <alice@example.org>\r\nReceived: from relay.example.org"),
                        content[:400])
        self.assertEqual(content.count(b"Return-Path:"), 1)
        self.assertIn(b"by relay.example.org (mod_esmtp) with ESMTP id " + our_qid.encode(), content)
        # TLS and AUTH at the smarthost: ESMTPSA in its Received
        self.assertRegex(content[:600].decode("utf-8", "replace"), r"with ESMTPSA id")
        self.assertIn(b"\r\n.a line with a leading dot\r\nthe end.\r\n", content)
        # DKIM-signed by opendkim at the relay, verified as the smarthost stored it
        self.assertIn(b"DKIM-Signature: ", content)
        self.assertTrue(self.verify(content), content[:1500])
        self.assertFalse(self.verify(content.replace(b"Hello Bob", b"Hello Eve")))
        # both queue ids in the relay's transaction log
        smart_qid = wait_for(lambda: [l for l in self.smart_mx.log_lines() if "250" in l and "queued as" in l], 5)
        lines = wait_for(lambda: [l for l in self.relay.log_lines() if "relayed " + our_qid in l], 5)
        self.assertTrue(lines, "\n".join(self.relay.log_lines()))
        m = re.search(r"queued as ([0-9A-F]+)", lines[0])
        self.assertTrue(m, lines[0])
        self.assertTrue(any(m.group(1) in l for l in self.smart_mx.log_lines()), (m.group(1), smart_qid))

    def test_implicit_tls(self):
        before = len(self.smart_465.maildir_files())
        with smtplib.SMTP("127.0.0.1", self.relay_465.port, timeout=60) as s:
            s.sendmail("alice@example.org", ["bob@example.com"], b"Subject: over 465\r\n\r\nhi\r\n")
        files = self.smart_465.maildir_files()
        self.assertEqual(len(files), before + 1)
        with open(files[-1], "rb") as f:
            content = f.read()
        self.assertIn(b"Subject: over 465", content)
        # TLS and AUTH at the smarthost
        self.assertRegex(content[:600].decode("utf-8", "replace"), r"with ESMTPSA id")

    def test_refused_recipient_is_refused_at_rcpt(self):
        before = len(self.smart_test.event_lines())
        with RawClient(self.relay_test.port) as c:
            self.assertEqual(c.reply()[0], 220)
            self.assertEqual(c.cmd("EHLO client.example")[0], 250)
            self.assertEqual(c.cmd("MAIL FROM:<alice@example.org>")[0], 250)
            code, lines = c.cmd("RCPT TO:<reject@example.com>")
            self.assertEqual(code, 550, lines)
            self.assertIn("5.1.1 No such user here", lines[0])
            code, lines = c.cmd("RCPT TO:<tempfail@example.com>")
            self.assertEqual(code // 100, 4, lines)
            self.assertEqual(c.cmd("RCPT TO:<bob@example.com>")[0], 250)
            self.assertEqual(c.cmd("DATA")[0], 354)
            c.send(b"Subject: x\r\n\r\nhi\r\n.\r\n")
            self.assertEqual(c.reply()[0], 250)
            self.assertEqual(c.cmd("QUIT")[0], 221)
        # the smarthost saw exactly the recipients the client sent
        events = wait_for(lambda: [e for e in self.smart_test.event_lines()[before:] if e.startswith("RCPT")], 5)
        self.assertEqual(events, ["RCPT <reject@example.com>", "RCPT <tempfail@example.com>",
                                  "RCPT <bob@example.com>"])

    def test_connection_reused_by_the_next_session(self):
        """The second session of a child takes the first one's connection
        (TLS and AUTH done): the smarthost sees one connection for both.
        Sessions go to whichever child, so a few are sent: at least one
        must find an idle connection."""
        before = self.smart_test.event_lines()
        sessions = 6
        for i in range(sessions):
            with smtplib.SMTP("127.0.0.1", self.relay_test.port, timeout=60) as s:
                s.sendmail("alice@example.org", ["bob@example.com"], b"Subject: %d\r\n\r\nhi\r\n" % i)
        events = wait_for(lambda: [e for e in self.smart_test.event_lines()[len(before):] if e == "EOM"] and
                          self.smart_test.event_lines()[len(before):], 5)
        connects = [e for e in events if e.startswith("CONNECT")]
        self.assertEqual(events.count("EOM"), sessions, events)
        self.assertLess(len(connects), sessions, events)

    def test_idle_connection_ended_by_its_timer(self):
        """idle=1: the connection a session left for the next one gets its
        QUIT about a second later, from the pool's own timer, without
        waiting for another session in that child."""
        with smtplib.SMTP("127.0.0.1", self.relay_idle.port, timeout=60) as s:
            s.sendmail("alice@example.org", ["bob@example.com"], b"Subject: idle\r\n\r\nhi\r\n")
        ended = time.monotonic()
        events = wait_for(lambda: "DISCONNECT" in self.smart_idle.event_lines() and self.smart_idle.event_lines(), 15)
        took = time.monotonic() - ended
        self.assertTrue(events, self.smart_idle.event_lines())
        self.assertEqual([e for e in events if e.startswith("CONNECT")], ["CONNECT"], events)
        self.assertLess(events.index("EOM"), events.index("QUIT"), events)
        # kept in the pool first (reuse=0 would have said QUIT at once)
        self.assertGreaterEqual(took, 0.5, events)

    def test_idle_connection_gets_quit_when_the_child_ends(self):
        """A child that ends (here at a graceful restart) says QUIT on the
        connections in its pool instead of dropping them."""
        with smtplib.SMTP("127.0.0.1", self.relay_keep.port, timeout=60) as s:
            s.sendmail("alice@example.org", ["bob@example.com"], b"Subject: keep\r\n\r\nhi\r\n")
        events = wait_for(lambda: "EOM" in self.smart_keep.event_lines() and self.smart_keep.event_lines(), 10)
        self.assertTrue(events, self.smart_keep.event_lines())
        self.assertNotIn("QUIT", events)  # kept: idle=300
        self.httpd.restart()
        events = wait_for(lambda: "DISCONNECT" in self.smart_keep.event_lines() and self.smart_keep.event_lines(), 20)
        self.assertTrue(events, self.smart_keep.event_lines())
        self.assertLess(events.index("EOM"), events.index("QUIT"), events)

    def unavailable(self, vh, why):
        with RawClient(vh.port) as c:
            self.assertEqual(c.reply()[0], 220)
            self.assertEqual(c.cmd("EHLO client.example")[0], 250)
            code, lines = c.cmd("MAIL FROM:<alice@example.org>")
            self.assertEqual(code, 451, lines)
            self.assertIn("4.4.1", lines[0])
            # nothing acknowledged: no transaction began
            self.assertEqual(c.cmd("RCPT TO:<bob@example.com>")[0], 503)
            self.assertEqual(c.cmd("QUIT")[0], 221)
        self.assertTrue(wait_for(lambda: any(re.search(why, l) for l in self.httpd.log_lines()), 5),
                        "\n".join(self.httpd.log_lines()[-10:]))

    def test_smarthost_down(self):
        self.unavailable(self.relay_down, r"smtp: cannot connect to 127\.0\.0\.1:%d" % self.down_port)

    def test_wrong_host_name(self):
        before = len(self.smart_mx.maildir_files())
        self.unavailable(self.relay_wrong_name, r"smtp: .*TLS: certificate verification failed: "
                                                r"[Hh]ostname mismatch")
        self.assertEqual(len(self.smart_mx.maildir_files()), before)

    def test_untrusted_certificate(self):
        self.unavailable(self.relay_untrusted, r"smtp: .*TLS: certificate verification failed: "
                                               r"self[- ]signed certificate")

    def test_no_starttls_when_required(self):
        before = len(self.smart_plain.maildir_files())
        self.unavailable(self.relay_no_starttls, r"smtp: .*does not offer STARTTLS")
        self.assertEqual(len(self.smart_plain.maildir_files()), before)

    # --- DSN (RFC 3461) and REQUIRETLS (RFC 8689)

    def transaction(self, c, mail, rcpts, message=b"Subject: dsn\r\n\r\nhi\r\n"):
        """MAIL, RCPTs, DATA on an open session: each must be accepted."""
        code, lines = c.cmd(mail)
        self.assertEqual(code, 250, lines)
        for r in rcpts:
            code, lines = c.cmd(r)
            self.assertEqual(code, 250, lines)
        self.assertEqual(c.cmd("DATA")[0], 354)
        c.send(message + b".\r\n")
        code, lines = c.reply()
        self.assertEqual(code, 250, lines)

    def envelope_at(self, vh, before):
        """The MAIL and RCPT events of the next message `vh` took."""
        events = wait_for(lambda: "EOM" in vh.event_lines()[before:] and vh.event_lines()[before:], 10)
        self.assertTrue(events, vh.event_lines()[before:])
        return [e for e in events if e.startswith(("MAIL ", "RCPT "))]

    def test_dsn_passed_on_where_offered(self):
        """Two hops (relay, a mod_esmtp smarthost relaying with the smtp
        handler) and the parameters arrive as the client sent them."""
        before = len(self.smart_dsn.event_lines())
        with RawClient(self.relay_rt.port) as c:
            self.assertEqual(c.reply()[0], 220)
            code, lines = c.cmd("EHLO client.example")
            self.assertIn("DSN", ehlo_keywords(lines))
            # plaintext: REQUIRETLS is not offered, so it is no parameter here
            self.assertNotIn("REQUIRETLS", ehlo_keywords(lines))
            code, lines = c.cmd("MAIL FROM:<alice@example.org> REQUIRETLS")
            self.assertEqual(code, 555, lines)
            self.assertIn("5.5.4 Unsupported parameter REQUIRETLS", lines[0])
            code, lines = c.cmd("MAIL FROM:<alice@example.org> RET=FULL ENVID=a+0Ab")
            self.assertEqual(code, 501, lines)
            self.transaction(c, "MAIL FROM:<alice@example.org> RET=HDRS ENVID=QQ+2B314159",
                             ["RCPT TO:<bob@example.com> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob@example.com",
                              "RCPT TO:<carol@example.com> NOTIFY=NEVER", "RCPT TO:<dave@example.com>"])
            self.assertEqual(c.cmd("QUIT")[0], 221)
        self.assertEqual(self.envelope_at(self.smart_dsn, before),
                         ["MAIL <alice@example.org> RET=HDRS ENVID=QQ+2B314159",
                          "RCPT <bob@example.com> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob@example.com",
                          "RCPT <carol@example.com> NOTIFY=NEVER", "RCPT <dave@example.com>"])

    def test_dsn_dropped_where_not_offered(self):
        """The test handler without carries= does not offer DSN: its server
        gets the transaction without the parameters (RFC 3461 4.1)."""
        before = len(self.smart_test.event_lines())
        with RawClient(self.relay_test.port) as c:
            self.assertEqual(c.reply()[0], 220)
            self.assertIn("DSN", ehlo_keywords(c.cmd("EHLO client.example")[1]))
            self.transaction(c, "MAIL FROM:<alice@example.org> RET=FULL ENVID=x1",
                             ["RCPT TO:<bob@example.com> NOTIFY=DELAY ORCPT=rfc822;bob@example.com"])
            self.assertEqual(c.cmd("QUIT")[0], 221)
        self.assertEqual(self.envelope_at(self.smart_test, before),
                         ["MAIL <alice@example.org>", "RCPT <bob@example.com>"])
        self.assertTrue(wait_for(lambda: any("does not offer DSN: NOTIFY/ORCPT not passed on" in l
                                             for l in self.relay_test.log_lines()), 5))

    def starttls(self, c):
        self.assertEqual(c.reply()[0], 220)
        code, lines = c.cmd("EHLO client.example")
        self.assertNotIn("REQUIRETLS", ehlo_keywords(lines))
        self.assertEqual(c.cmd("STARTTLS")[0], 220)
        tls_wrap(c)
        code, lines = c.cmd("EHLO client.example")
        self.assertEqual(code, 250, lines)
        return ehlo_keywords(lines)

    def test_requiretls_end_to_end(self):
        """Client, relay and smarthost over TLS: REQUIRETLS reaches the last
        hop, which the smarthost (the smtp handler again) reached only
        because it offers REQUIRETLS."""
        before = len(self.smart_dsn.event_lines())
        with RawClient(self.relay_rt.port) as c:
            self.assertIn("REQUIRETLS", self.starttls(c))
            code, lines = c.cmd("MAIL FROM:<alice@example.org> REQUIRETLS=YES")
            self.assertEqual(code, 501, lines)
            self.transaction(c, "MAIL FROM:<alice@example.org> REQUIRETLS",
                             ["RCPT TO:<bob@example.com> NOTIFY=FAILURE"])
            self.assertEqual(c.cmd("QUIT")[0], 221)
        self.assertEqual(self.envelope_at(self.smart_dsn, before),
                         ["MAIL <alice@example.org> REQUIRETLS", "RCPT <bob@example.com> NOTIFY=FAILURE"])

    def test_extensions_take_dsn_and_requiretls_away(self):
        """ESMTPExtensions -DSN -REQUIRETLS: the smtp handler carries both,
        yet neither is offered, even over TLS, and their parameters get
        555; the mail itself is relayed without them."""
        before = len(self.smart_dsn.event_lines())
        with RawClient(self.relay_rt_off.port) as c:
            keywords = self.starttls(c)
            self.assertNotIn("DSN", keywords)
            self.assertNotIn("REQUIRETLS", keywords)
            self.assertIn("PIPELINING", keywords)
            for mail in ("MAIL FROM:<alice@example.org> REQUIRETLS", "MAIL FROM:<alice@example.org> RET=HDRS",
                         "MAIL FROM:<alice@example.org> ENVID=x1"):
                code, lines = c.cmd(mail)
                self.assertEqual(code, 555, (mail, lines))
                self.assertIn("5.5.4 Unsupported parameter", lines[0])
            self.assertEqual(c.cmd("MAIL FROM:<alice@example.org>")[0], 250)
            code, lines = c.cmd("RCPT TO:<bob@example.com> NOTIFY=NEVER")
            self.assertEqual(code, 555, lines)
            self.assertEqual(c.cmd("RSET")[0], 250)
            self.transaction(c, "MAIL FROM:<alice@example.org>", ["RCPT TO:<bob@example.com>"])
            self.assertEqual(c.cmd("QUIT")[0], 221)
        # the MAIL before the RSET reached the smarthost too: no parameter
        # in any of them
        events = self.envelope_at(self.smart_dsn, before)
        self.assertEqual(events[-2:], ["MAIL <alice@example.org>", "RCPT <bob@example.com>"])
        self.assertEqual(set(events), {"MAIL <alice@example.org>", "RCPT <bob@example.com>"})

    def test_requiretls_refused_when_the_smarthost_lacks_it(self):
        before = len(self.smart_test.event_lines())
        with RawClient(self.relay_rt_lacking.port) as c:
            self.assertIn("REQUIRETLS", self.starttls(c))
            code, lines = c.cmd("MAIL FROM:<alice@example.org> REQUIRETLS")
            self.assertEqual(code, 550, lines)
            self.assertEqual(lines[0], "550 5.7.30 REQUIRETLS support required")
            # no transaction began; the next one without it goes through
            self.assertEqual(c.cmd("RCPT TO:<bob@example.com>")[0], 503)
            self.transaction(c, "MAIL FROM:<alice@example.org>", ["RCPT TO:<bob@example.com>"])
            self.assertEqual(c.cmd("QUIT")[0], 221)
        self.assertEqual(self.envelope_at(self.smart_test, before),
                         ["MAIL <alice@example.org>", "RCPT <bob@example.com>"])

    def test_maildir_offers_no_dsn(self):
        """A final-delivery handler does not carry DSN on: not offered, and
        its parameters are unknown, as before."""
        with RawClient(self.smart_plain.port) as c:
            self.assertEqual(c.reply()[0], 220)
            keywords = ehlo_keywords(c.cmd("EHLO client.example")[1])
            self.assertNotIn("DSN", keywords)
            self.assertNotIn("REQUIRETLS", keywords)
            code, lines = c.cmd("MAIL FROM:<alice@example.org> RET=HDRS")
            self.assertEqual(code, 555, lines)
            self.assertEqual(c.cmd("MAIL FROM:<alice@example.org>")[0], 250)
            code, lines = c.cmd("RCPT TO:<bob@example.com> NOTIFY=NEVER")
            self.assertEqual((code, lines[0]), (555, "555 5.5.4 Unsupported parameter NOTIFY"))
            self.assertEqual(c.cmd("QUIT")[0], 221)

    def test_message_refused_after_the_dot_is_refused(self):
        # the test handler answers 451 4.3.0 at the end of a message from eom451@
        with RawClient(self.relay_test.port) as c:
            self.assertEqual(c.reply()[0], 220)
            c.cmd("EHLO client.example")
            self.assertEqual(c.cmd("MAIL FROM:<eom451@example.org>")[0], 250)
            self.assertEqual(c.cmd("RCPT TO:<bob@example.com>")[0], 250)
            self.assertEqual(c.cmd("DATA")[0], 354)
            c.send(b"Subject: x\r\n\r\nhi\r\n.\r\n")
            code, lines = c.reply()
            self.assertEqual(code, 451, lines)
            self.assertIn("4.3.0", lines[0])
            # the connection to the smarthost is reused for the next transaction
            self.assertEqual(c.cmd("MAIL FROM:<alice@example.org>")[0], 250)
            self.assertEqual(c.cmd("RCPT TO:<bob@example.com>")[0], 250)
            self.assertEqual(c.cmd("DATA")[0], 354)
            c.send(b"Subject: y\r\n\r\nhi\r\n.\r\n")
            self.assertEqual(c.reply()[0], 250)
            self.assertEqual(c.cmd("QUIT")[0], 221)


class SmtpHandlerConfigTest(unittest.TestCase):
    """A bad `ESMTPHandler smtp` line fails `apache2 -t` naming the directive."""

    def config_test(self, handler, files=None):
        h = Httpd(prefix="esmtp-it-smtpcfg-")
        try:
            for name, text in (files or {}).items():
                with open(os.path.join(h.root, name), "w") as f:
                    f.write(text)
            h.add_smtp([a.replace("ROOT", h.root) for a in handler])
            return h.config_test()
        finally:
            h.cleanup()

    def config_error(self, handler, expect, files=None):
        rc, out = self.config_test(handler, files)
        self.assertNotEqual(rc, 0, out)
        self.assertIn("ESMTPHandler smtp: ", out)
        self.assertIn(expect, out)

    def test_errors(self):
        self.config_error(["smtp", "smarthost.example"], "HOST:PORT")
        self.config_error(["smtp", "127.0.0.1:587", "tls=maybe"], "tls must be starttls, implicit or none")
        self.config_error(["smtp", "127.0.0.1:587", "ca=ROOT/missing.pem"], "cannot load ca=")
        self.config_error(["smtp", "127.0.0.1:587", "auth=ROOT/missing.secret"], "cannot read auth=")
        self.config_error(["smtp", "127.0.0.1:587", "auth=ROOT/bad.secret"], "USER:PASSWORD",
                          files={"bad.secret": "no colon here\n"})
        self.config_error(["smtp", "127.0.0.1:587", "tls=none", "auth=ROOT/ok.secret"], "in the clear",
                          files={"ok.secret": "user:pw\n"})

    def test_good(self):
        rc, out = self.config_test(["smtp", "127.0.0.1:587", "auth=ROOT/ok.secret", "reuse=2", "idle=10"],
                                   files={"ok.secret": "user:pw\n"})
        self.assertEqual(rc, 0, out)


POSTFIX_USER = "relayuser"
POSTFIX_PASSWORD = "Relay-Pw-5tG2x"


@unittest.skipIf(test_postfix.SKIP_REASON or dovecot_missing() or auth_missing(),
                 test_postfix.SKIP_REASON or dovecot_missing() or auth_missing() or "")
class PostfixSmarthostTest(ServerTestCase):
    """A private Postfix as the smarthost: smtpd on a free port with
    STARTTLS (smtpd_tls_auth_only) and SASL AUTH through Dovecot; relaying
    only when authenticated (mynetworks does not include 127.0.0.1). It
    holds what it accepts (static:HOLD): postcat shows the message."""

    allowed_log = (r"esmtp: .*smtp: ", )
    postfix = None

    @classmethod
    def configure(cls, httpd):
        d = os.path.join(httpd.root, "conf")
        cls.smarthost = PostfixSmarthost({POSTFIX_USER: POSTFIX_PASSWORD}, SMART_NAME)
        cls.addClassCleanup(lambda: cls.smarthost.cleanup(keep=cls._failed))
        cls.postfix, cls.smtpd_port, cls.cert = cls.smarthost.postfix, cls.smarthost.port, cls.smarthost.cert
        cls.smarthost.start()
        cred = os.path.join(d, "postfix.secret")
        with open(cred, "w") as f:
            f.write("%s:%s\n" % (POSTFIX_USER, POSTFIX_PASSWORD))
        wrong = os.path.join(d, "wrong.secret")
        with open(wrong, "w") as f:
            f.write("%s:not-the-password\n" % POSTFIX_USER)
        base = ["smtp", "127.0.0.1:%d" % cls.smtpd_port, "servername=" + SMART_NAME, "ca=" + cls.cert, "timeout=10"]
        relay = dict(accept_domains=["example.com"], log_file="relay.log", log_level=2)
        cls.relay = httpd.add_smtp(base + ["auth=" + cred], server_name="relay.example.org", **relay)
        cls.relay_wrong_pw = httpd.add_smtp(base + ["auth=" + wrong], **relay)
        cls.relay_no_auth = httpd.add_smtp(base, **relay)
        # clients may use STARTTLS here (REQUIRETLS is offered only then)
        sub_cert, sub_key = make_cert(d, cn="relay.example.org", names=("relay.example.org", ), prefix="relay-")
        httpd.main_extra += ssl_main_lines()
        cls.relay_tls = httpd.add_smtp(base + ["auth=" + cred], extra=ssl_vhost_lines(sub_cert, sub_key, "On"),
                                       **relay)

    def held(self, qid, what="-bh"):
        """The message Postfix holds as `qid` (postcat -q): header and
        body, or with what="-e" the envelope records."""
        rc, out = self.postfix.run(test_postfix._which("postcat"), "-c", self.postfix.config_dir, what, "-q", qid)
        self.assertEqual(rc, 0, out)
        return out

    def relayed_qid(self, text):
        """Postfix's queue id of the message our 250 `text` acknowledged."""
        our_qid = queue_id_of(text)
        lines = wait_for(lambda: [l for l in self.relay.log_lines() if "relayed " + our_qid in l], 5)
        self.assertTrue(lines, "\n".join(self.relay.log_lines()))
        m = re.search(r"queued as ([0-9A-Za-z]+)", lines[0])
        self.assertTrue(m, lines[0])
        return m.group(1)

    def test_dsn_passed_to_postfix(self):
        """Postfix offers DSN: what the client asked for is in its queue
        file, for the notices Postfix will send."""
        with RawClient(self.relay.port) as c:
            self.assertEqual(c.reply()[0], 220)
            self.assertIn("DSN", ehlo_keywords(c.cmd("EHLO client.example")[1]))
            for cmd in ("MAIL FROM:<alice@example.org> RET=HDRS ENVID=QQ+2B314159",
                        "RCPT TO:<bob@example.com> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;bob+2Bx@example.com",
                        "RCPT TO:<carol@example.com> NOTIFY=NEVER", "DATA"):
                code, lines = c.cmd(cmd)
                self.assertIn(code, (250, 354), (cmd, lines, self.postfix.log_text()[-2000:]))
            c.send(b"Subject: dsn\r\n\r\nhi\r\n.\r\n")
            code, lines = c.reply()
            self.assertEqual(code, 250, lines)
        envelope = self.held(self.relayed_qid(lines[0]), "-e")
        # Postfix keeps them decoded: ENVID, RET=HDRS (2), NOTIFY as flags
        # (NEVER 1, SUCCESS 2, FAILURE 4, DELAY 8), ORCPT
        self.assertIn("named_attribute: envelope_id=QQ+314159\n", envelope)
        self.assertIn("named_attribute: ret_flags=2\n", envelope)
        self.assertRegex(envelope, r"notify_flags=10\nnamed_attribute: dsn_orig_rcpt=rfc822;bob\+x@example\.com\n"
                                   r"original_recipient: bob@example\.com\nrecipient: bob@example\.com\n")
        self.assertRegex(envelope, r"notify_flags=1\n(.*\n){2}recipient: carol@example\.com\n")

    def test_requiretls_refused_by_postfix(self):
        """Postfix does not implement REQUIRETLS: the client that requires
        it gets 550 5.7.30 and Postfix no MAIL for it."""
        with RawClient(self.relay_tls.port) as c:
            self.assertEqual(c.reply()[0], 220)
            self.assertNotIn("REQUIRETLS", ehlo_keywords(c.cmd("EHLO client.example")[1]))
            self.assertEqual(c.cmd("STARTTLS")[0], 220)
            tls_wrap(c)
            self.assertIn("REQUIRETLS", ehlo_keywords(c.cmd("EHLO client.example")[1]))
            code, lines = c.cmd("MAIL FROM:<requiretls@example.org> REQUIRETLS")
            self.assertEqual(lines, ["550 5.7.30 REQUIRETLS support required"])
            self.assertEqual(c.cmd("MAIL FROM:<alice@example.org>")[0], 250)
            self.assertEqual(c.cmd("QUIT")[0], 221)
        self.assertNotIn("requiretls@example.org", self.postfix.log_text())

    def test_relayed_through_postfix(self):
        with smtplib.SMTP("127.0.0.1", self.relay.port, timeout=60) as s:
            s.ehlo("client.example")
            code, text = s.mail("alice@example.org")
            self.assertEqual(code, 250, "%s\n%s\n%s" % (text, "\n".join(self.httpd.log_lines()[-5:]),
                                                       self.postfix.log_text()[-3000:]))
            code, text = s.rcpt("refused@example.com")
            self.assertEqual(code, 550, text)
            self.assertIn(b"5.1.1", text)
            self.assertEqual(s.rcpt("bob@example.com")[0], 250)
            code, text = s.data(MESSAGE)
        self.assertEqual(code, 250, text)
        our_qid = queue_id_of(text.decode())
        lines = wait_for(lambda: [l for l in self.relay.log_lines() if "relayed " + our_qid in l], 5)
        self.assertTrue(lines, "\n".join(self.relay.log_lines()))
        m = re.search(r"queued as ([0-9A-Za-z]+)", lines[0])
        self.assertTrue(m, lines[0])
        content = self.held(m.group(1))
        self.assertIn("Subject: relayed", content)
        self.assertIn("by relay.example.org (mod_esmtp) with ESMTP id " + our_qid, content)
        # Postfix saw TLS and the login
        log = self.postfix.log_text()
        self.assertRegex(log, r"Anonymous TLS connection established|TLS connection established")
        self.assertRegex(log, r"sasl_method=PLAIN, sasl_username=" + POSTFIX_USER)

    def test_wrong_password_and_no_auth(self):
        for vh, why in ((self.relay_wrong_pw, r"smtp: .*AUTH as relayuser failed: 535"), ):
            with RawClient(vh.port) as c:
                self.assertEqual(c.reply()[0], 220)
                c.cmd("EHLO client.example")
                code, lines = c.cmd("MAIL FROM:<alice@example.org>")
                self.assertEqual(code, 451, lines)
            self.assertTrue(wait_for(lambda: any(re.search(why, l) for l in self.httpd.log_lines()), 5))
        # without AUTH, Postfix does not relay: its refusal is ours at RCPT
        with RawClient(self.relay_no_auth.port) as c:
            self.assertEqual(c.reply()[0], 220)
            c.cmd("EHLO client.example")
            self.assertEqual(c.cmd("MAIL FROM:<alice@example.org>")[0], 250)
            code, lines = c.cmd("RCPT TO:<bob@example.com>")
            self.assertEqual(code, 554, lines)
            self.assertIn("Relay access denied", lines[0])


if __name__ == "__main__":
    unittest.main()
