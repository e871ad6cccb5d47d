"""A handler from another module (t/handler/mod_esmtp_test_handler.cpp,
`ESMTPHandler test EVENTFILE`): the events it sees, in order, and replies
that reach the client."""

import smtplib
import time
import unittest

import os

from harness import Httpd, RawClient, ServerTestCase, q, wait_for

# These tests are about delivery, not the relay policy (test_policy.py):
# accept every recipient domain.
ANY = ["*"]


class TestHandlerEvents(ServerTestCase):

    # the "throw" recipient makes the handler throw on purpose; the module may
    # log that (it must not crash)
    allowed_log = (r"exception on purpose",)

    @classmethod
    def configure(cls, httpd):
        cls.vh = httpd.add_smtp("test", accept_domains=ANY)

    def session_events(self, start):
        """Events since line `start`, once the session's DISCONNECT is there."""
        def done():
            ev = self.vh.event_lines()[start:]
            return ev if ev and ev[-1] == "DISCONNECT" else None
        events = wait_for(done, 5)
        self.assertTrue(events, "no DISCONNECT; events: %r" % self.vh.event_lines()[start:])
        return events

    def test_event_sequence(self):
        start = len(self.vh.event_lines())
        body = b"line one\r\nline two\r\n"
        message = (b"From: a@client.example\r\n"
                   b"Subject: the\r\n  folded subject\r\n"
                   b"\r\n" + body)
        with smtplib.SMTP("127.0.0.1", self.vh.port, local_hostname="client.example", timeout=20) as s:
            s.ehlo()
            self.assertIn(b"XPING", s.ehlo_resp)
            self.assertEqual(s.mail("a@client.example")[0], 250)
            self.assertEqual(s.rcpt("x@y.example")[0], 250)
            code, text = s.rcpt("reject@y.example")
            self.assertEqual((code, text), (550, b"5.1.1 No such user here"))
            code, text = s.data(message)
            self.assertEqual(code, 250, text)
            self.assertIn(b"test handler", text)
        events = self.session_events(start)
        bodies = [e for e in events if e.startswith("BODY ")]
        self.assertTrue(bodies)
        self.assertEqual(sum(int(e.split()[1]) for e in bodies), len(body))
        without_body = [e for e in events if not e.startswith("BODY ")]
        self.assertEqual(without_body, [
            "CONNECT",
            "EHLO client.example",
            "MAIL <a@client.example>",
            "RCPT <x@y.example>",
            "RCPT <reject@y.example>",
            "DATA",
            "HEADER From: a@client.example",
            "HEADER Subject: the  folded subject",  # RFC 5322 unfolding: only the CRLF goes
            "EOH",
            "EOM",
            "QUIT",
            "DISCONNECT",
        ])
        # the body events come between EOH and EOM
        self.assertEqual(events.index("EOH") + 1, events.index(bodies[0]))
        self.assertEqual(events.index(bodies[-1]) + 1, events.index("EOM"))

    def test_handler_reply_without_enhanced_code_gets_class_default(self):
        with RawClient(self.vh.port) as c:
            self.assertEqual(c.reply()[0], 220)
            self.assertEqual(c.cmd("EHLO code.example")[0], 250)
            self.assertEqual(c.cmd("MAIL FROM:<a@code.example>")[0], 250)
            self.assertEqual(c.cmd("RCPT TO:<nocode@y.example>"),
                             (550, ["550 5.0.0 Refused without an enhanced code"]))
            self.assertEqual(c.cmd("RCPT TO:<tempfail@y.example>"), (451, ["451 4.2.0 Try again later"]))
            self.assertEqual(c.cmd("QUIT")[0], 221)

    def test_rejected_recipient_smtplib(self):
        with smtplib.SMTP("127.0.0.1", self.vh.port, timeout=20) as s:
            with self.assertRaises(smtplib.SMTPRecipientsRefused) as cm:
                s.sendmail("a@client.example", ["reject@y.example"], b"Subject: x\r\n\r\nx\r\n")
            self.assertEqual(cm.exception.recipients,
                             {"reject@y.example": (550, b"5.1.1 No such user here")})
            # one good recipient of two: delivered, the other one reported
            refused = s.sendmail("a@client.example", ["reject@y.example", "ok@y.example"],
                                 b"Subject: x\r\n\r\nx\r\n")
            self.assertEqual(refused, {"reject@y.example": (550, b"5.1.1 No such user here")})

    def test_rejected_recipient_raw(self):
        with RawClient(self.vh.port) as c:
            self.assertEqual(c.reply()[0], 220)
            self.assertEqual(c.cmd("HELO raw.example"), (250, ["250 smtp1.test"]))
            c.cmd("MAIL FROM:<a@raw.example>")
            # a HELO session gets plain SMTP replies: no enhanced status codes
            self.assertEqual(c.cmd("RCPT TO:<Reject@y.example>"), (550, ["550 No such user here"]))
            self.assertEqual(c.cmd("DATA"), (503, ["503 Error: need RCPT command"]))
            self.assertEqual(c.cmd("QUIT")[0], 221)

    def test_rset_and_abort(self):
        start = len(self.vh.event_lines())
        with RawClient(self.vh.port) as c:
            c.reply()
            c.cmd("EHLO rset.example")
            c.cmd("MAIL FROM:<a@rset.example>")
            c.cmd("RCPT TO:<b@y.example>")
            self.assertEqual(c.cmd("RSET"), (250, ["250 2.0.0 Ok"]))
            self.assertEqual(c.cmd("NOOP"), (250, ["250 2.0.0 Ok"]))
            self.assertEqual(c.cmd("QUIT"), (221, ["221 2.0.0 Bye"]))
        events = self.session_events(start)
        self.assertEqual(events[:4], ["CONNECT", "EHLO rset.example", "MAIL <a@rset.example>", "RCPT <b@y.example>"])
        self.assertIn("RSET", events)
        self.assertIn("ABORT", events, "RSET inside a transaction aborts it")
        self.assertEqual(events[-3:], ["NOOP", "QUIT", "DISCONNECT"])

    def test_disconnect_mid_data_aborts(self):
        start = len(self.vh.event_lines())
        with RawClient(self.vh.port) as c:
            c.reply()
            c.cmd("EHLO gone.example")
            c.cmd("MAIL FROM:<a@gone.example>")
            c.cmd("RCPT TO:<b@y.example>")
            self.assertEqual(c.cmd("DATA")[0], 354)
            c.send(b"Subject: cut\r\n\r\nhalf a bo")
            time.sleep(0.2)
        events = self.session_events(start)
        self.assertNotIn("EOM", events)
        self.assertNotIn("QUIT", events)
        self.assertEqual(events[-2:], ["ABORT", "DISCONNECT"])

    def test_client_vanishes_without_quit(self):
        start = len(self.vh.event_lines())
        with RawClient(self.vh.port) as c:
            c.reply()
            c.cmd("EHLO rude.example")
        events = self.session_events(start)
        self.assertEqual(events, ["CONNECT", "EHLO rude.example", "DISCONNECT"])

    def test_handler_exception_is_451(self):
        with RawClient(self.vh.port) as c:
            c.reply()
            c.cmd("EHLO throw.example")
            c.cmd("MAIL FROM:<a@throw.example>")
            self.assertEqual(c.cmd("RCPT TO:<throw@y.example>"),
                             (451, ["451 4.3.0 Internal error; try again later"]))
            self.assertEqual(c.cmd("RCPT TO:<tempfail@y.example>"), (451, ["451 4.2.0 Try again later"]))
            self.assertEqual(c.cmd("RCPT TO:<fine@y.example>")[0], 250)
            self.assertEqual(c.cmd("QUIT")[0], 221)

    def test_handler_command(self):
        """A command the handler's factory declared (HandlerFactory::commands(),
        compiled once when the configuration is read)."""
        start = len(self.vh.event_lines())
        with RawClient(self.vh.port) as c:
            c.reply()
            self.assertEqual(c.cmd("XPING"), (250, ["250 2.0.0 PONG"]))
            code, lines = c.cmd("HELP")
            self.assertEqual(code, 214)
            self.assertIn(" XPING", lines[-1])
            self.assertEqual(c.cmd("xping hello there"), (250, ["250 2.0.0 PONG hello there"]))
            self.assertEqual(c.cmd("XPONG")[0], 500)
            self.assertEqual(c.cmd("QUIT")[0], 221)
        events = self.session_events(start)
        self.assertEqual(events, ["CONNECT", "XPING", "HELP", "XPING hello there", "UNKNOWN XPONG", "QUIT",
                                  "DISCONNECT"])


class TestHandlerOwnDirective(ServerTestCase):
    """Issue 25: a handler module's own per-server directive (the test
    module's TestHandlerTag) reaches the handler of each VirtualHost through
    HandlerFactory::for_server(), whether it comes before or after
    ESMTPHandler, in a VirtualHost or inherited from the main server, and
    with an ESMTPHandler line inherited from the main server."""

    @classmethod
    def configure(cls, httpd):
        cls.main_events = os.path.join(httpd.root, "events-main.log")
        httpd.main_extra += ["TestHandlerTag main-default", "ESMTPHandler test %s" % q(cls.main_events)]
        cls.after = httpd.add_smtp("test", extra=["TestHandlerTag alpha"])
        cls.before_events = os.path.join(httpd.root, "events-before.log")
        cls.before = httpd.add_smtp(None, extra=["TestHandlerTag beta",
                                                 "ESMTPHandler test %s" % q(cls.before_events)])
        cls.inherited_handler = httpd.add_smtp(None, extra=["TestHandlerTag gamma"])
        cls.inherited_tag = httpd.add_smtp("test")
        # registered under the bare "2" of API 2.0-2.2 headers: runs, but has
        # no for_server() to call
        cls.legacy_events = os.path.join(httpd.root, "events-legacy.log")
        cls.legacy = httpd.add_smtp(None, extra=["ESMTPHandler test22 %s" % q(cls.legacy_events),
                                                 "TestHandlerTag epsilon"])

    def connect_event(self, vh, events_file):
        """The CONNECT line of one session on `vh`, from `events_file`."""
        def lines():
            try:
                with open(events_file, encoding="utf-8") as f:
                    return f.read().splitlines()
            except FileNotFoundError:
                return []
        start = len(lines())
        with smtplib.SMTP("127.0.0.1", vh.port, local_hostname="client.example", timeout=20) as s:
            self.assertEqual(s.noop()[0], 250)
        events = wait_for(lambda: (lines()[start:] if lines()[start:][-1:] == ["DISCONNECT"] else None), 5)
        self.assertTrue(events, "no DISCONNECT in %s: %r" % (events_file, lines()[start:]))
        return events[0]

    def test_directive_after_handler_line(self):
        self.assertEqual(self.connect_event(self.after, self.after.events), "CONNECT tag=alpha")

    def test_directive_before_handler_line(self):
        self.assertEqual(self.connect_event(self.before, self.before_events), "CONNECT tag=beta")

    def test_handler_line_inherited_from_main_server(self):
        self.assertEqual(self.connect_event(self.inherited_handler, self.main_events), "CONNECT tag=gamma")

    def test_directive_inherited_from_main_server(self):
        self.assertEqual(self.connect_event(self.inherited_tag, self.inherited_tag.events),
                         "CONNECT tag=main-default")

    def test_handler_of_api_2_2_is_not_asked_for_server(self):
        self.assertEqual(self.connect_event(self.legacy, self.legacy_events), "CONNECT")


class TestHandlerCarries(ServerTestCase):
    """API 2.4: HandlerFactory::carries() of a handler in another module
    decides whether DSN is offered (the test handler's carries=dsn); a
    handler registered as API 2.2 (test22) is not asked: none."""

    @classmethod
    def configure(cls, httpd):
        cls.carries = httpd.add_smtp("test")
        cls.carries.handler.append("carries=dsn")
        cls.plain = httpd.add_smtp("test")
        cls.legacy_events = os.path.join(httpd.root, "events-legacy.log")
        cls.legacy = httpd.add_smtp(None, extra=["ESMTPHandler test22 %s carries=dsn" % q(cls.legacy_events)])

    def ehlo_and_notify(self, vh):
        with RawClient(vh.port) as c:
            self.assertEqual(c.reply()[0], 220)
            code, lines = c.cmd("EHLO client.example")
            self.assertEqual(code, 250, lines)
            self.assertEqual(c.cmd("MAIL FROM:<a@example.org>")[0], 250)
            code, _ = c.cmd("RCPT TO:<b@%s> NOTIFY=FAILURE" % vh.server_name)
            self.assertEqual(c.cmd("QUIT")[0], 221)
        return [l[4:] for l in lines[1:]], code

    def test_carried(self):
        keywords, code = self.ehlo_and_notify(self.carries)
        self.assertIn("DSN", keywords)
        self.assertEqual(code, 250)
        events = wait_for(lambda: [e for e in self.carries.event_lines() if e.startswith("RCPT")], 5)
        self.assertEqual(events, ["RCPT <b@%s> NOTIFY=FAILURE" % self.carries.server_name])

    def test_not_carried(self):
        keywords, code = self.ehlo_and_notify(self.plain)
        self.assertNotIn("DSN", keywords)
        self.assertEqual(code, 555)

    def test_handler_of_api_2_2_is_not_asked(self):
        keywords, code = self.ehlo_and_notify(self.legacy)
        self.assertNotIn("DSN", keywords)
        self.assertEqual(code, 555)


class TestHandlerCommandConfig(unittest.TestCase):
    """A handler command whose pattern does not compile fails `apache2 -t`,
    naming the directive and the command."""

    def test_bad_command_pattern(self):
        httpd = Httpd()
        try:
            vh = httpd.add_smtp("test")
            vh.handler.append("badcommand")
            rc, out = httpd.config_test()
            self.assertNotEqual(rc, 0, out)
            self.assertIn("ESMTPHandler", out)
            self.assertIn("XBROKEN", out)
        finally:
            httpd.cleanup()


if __name__ == "__main__":
    unittest.main()
