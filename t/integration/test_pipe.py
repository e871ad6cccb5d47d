"""The pipe handler (`ESMTPHandler pipe [timeout=N] COMMAND ARGS...`) in a
real httpd: the command gets the message on stdin and the envelope as argv
elements that no address can break out of; exit codes become replies; a
command that hangs is killed; no fd is left behind in httpd's children."""

import os
import smtplib
import time
import unittest
import uuid

from harness import Httpd, RawClient, ServerTestCase, queue_id_of, split_delivered, wait_for

MESSAGE = (b"From: Alice <alice@client.example>\r\n"
           b"Subject: pipe test\r\n"
           b"\r\n"
           b"Hello,\r\n"
           b".a line that starts with a dot\r\n"
           b"8bit: \xc3\xa9t\xc3\xa9\r\n")

# The recording command: one directory per message (named by QUEUE_ID) with
# its argv and environment (NUL-separated) and stdin. Its behaviour depends
# on the first recipient's local part.
SCRIPT = r"""#!/bin/sh
d='%(out)s'/"$QUEUE_ID"
mkdir "$d" || exit 75
printf '%%s\0' "$@" > "$d/argv"
cat /proc/$$/environ > "$d/environ"
cat > "$d/stdin"
echo $$ > "$d/pid"
case "$RECIPIENT" in
    tempfail@*) echo "mailbox busy, try later" >&2; echo "second line" >&2; exit 75 ;;
    fail@*) echo "no such mailbox here" >&2; exit 1 ;;
    quiet@*) exit 3 ;;
    sleep@*) sleep 30 & echo $! > "$d/grandchild"; wait ;;
esac
exit 0
"""


def proc_alive(pid):
    """True while `pid` exists and is not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def children_of(pid):
    """Pids whose parent is `pid` (from /proc)."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == pid:
            out.append(int(name))
    return out


class PipeTest(ServerTestCase):

    # httpd expands ${NAME} in its configuration itself and warns about the
    # ones it does not know; the handler also accepts $(name) for that reason
    allowed_log = (r"AH00111: Config variable \$\{recipient\} is not defined",)

    @classmethod
    def configure(cls, httpd):
        cls.out = os.path.join(httpd.root, "pipe-out")
        os.makedirs(cls.out)
        cls.script = os.path.join(httpd.root, "record.sh")
        with open(cls.script, "w") as f:
            f.write(SCRIPT % {"out": cls.out})
        os.chmod(cls.script, 0o755)
        # ${recipient} (the documented form, passed through by httpd with a
        # warning) and $(sender) (the form httpd leaves alone)
        cls.vh = httpd.add_smtp(["pipe", cls.script, "-f", "$(sender)", "--", "${recipient}"],
                                accept_domains=["*"])
        cls.slow = httpd.add_smtp(["pipe", "timeout=2", cls.script, "$(recipient)"], accept_domains=["*"])
        cls.helo = httpd.add_smtp(["pipe", cls.script, "$(helo_name)", "$(recipient)"], accept_domains=["*"])
        cls.pwn = "/tmp/esmtp-pwn-%s" % uuid.uuid4().hex

    def record(self, qid):
        d = os.path.join(self.out, qid)

        def read(name):
            with open(os.path.join(d, name), "rb") as f:
                return f.read()
        return {
            "argv": read("argv").split(b"\0")[:-1],
            "environ": read("environ").split(b"\0")[:-1],
            "stdin": read("stdin"),
            "pid": int(read("pid")),
            "dir": d,
        }

    def test_delivery(self):
        with smtplib.SMTP("127.0.0.1", self.vh.port, local_hostname="client.example", timeout=30) as s:
            s.ehlo()
            s.mail("alice@client.example", ["BODY=8BITMIME"])
            self.assertEqual(s.rcpt("bob@dest.example")[0], 250)
            self.assertEqual(s.rcpt("carol@dest.example")[0], 250)
            code, text = s.data(MESSAGE)
        self.assertEqual(code, 250, text)
        text = text.decode()
        self.assertTrue(text.startswith("2.0.0 Ok: queued as "), text)
        qid = queue_id_of(text)
        rec = self.record(qid)
        self.assertEqual(rec["argv"], [b"-f", b"alice@client.example", b"--",
                                       b"bob@dest.example", b"carol@dest.example"])
        return_path, received, body = split_delivered(rec["stdin"])
        self.assertEqual(return_path, b"Return-Path: <alice@client.example>\r\n")
        self.assertIn("client.example", received)
        self.assertIn(qid, received)
        self.assertEqual(body, MESSAGE)
        env = dict(e.split(b"=", 1) for e in rec["environ"])
        self.assertEqual(set(env), {b"SENDER", b"RECIPIENT", b"CLIENT_ADDRESS", b"CLIENT_HOSTNAME",
                                    b"HELO_NAME", b"QUEUE_ID", b"SIZE", b"PATH", b"LANG"})
        self.assertEqual(env[b"SENDER"], b"alice@client.example")
        self.assertEqual(env[b"RECIPIENT"], b"bob@dest.example carol@dest.example")
        self.assertEqual(env[b"CLIENT_ADDRESS"], b"127.0.0.1")
        self.assertEqual(env[b"HELO_NAME"], b"client.example")
        self.assertEqual(env[b"QUEUE_ID"], qid.encode())
        self.assertEqual(int(env[b"SIZE"]), len(rec["stdin"]))
        self.assertEqual(env[b"PATH"], b"/usr/bin:/bin")

    def test_hostile_addresses(self):
        pwn = self.pwn
        hostile = [
            '"a;rm -rf x"@d.example',
            '"$(touch %s)"@d.example' % pwn,
            '"`touch %s`"@d.example' % pwn,
            '"a | touch %s"@d.example' % pwn,
            '"a && touch %s"@d.example' % pwn,
            '"a > %s"@d.example' % pwn,
            '"x\' ; touch %s ; \'"@d.example' % pwn,
            '"a\\" b"@d.example',
            '"${PATH}"@d.example',
            "a|b&c'd`id`${IFS}@d.example",
            '"-oQ/tmp/x"@d.example',
            '"*"@d.example',
        ]
        sender = '"$(touch %s);"@evil.example' % pwn
        with RawClient(self.vh.port) as c:
            self.assertEqual(c.reply()[0], 220)
            c.cmd("EHLO evil.example")
            self.assertEqual(c.cmd("MAIL FROM:<%s>" % sender)[0], 250)
            for h in hostile:
                code, lines = c.cmd("RCPT TO:<%s>" % h)
                self.assertEqual(code, 250, (h, lines))
            self.assertEqual(c.cmd("DATA")[0], 354)
            c.send(b"Subject: hostile\r\n\r\nbody\r\n.\r\n")
            code, lines = c.reply()
            self.assertEqual(code, 250, lines)
            qid = queue_id_of(lines[0])
            c.cmd("QUIT")
        rec = self.record(qid)
        self.assertEqual(rec["argv"], [b"-f", sender.encode(), b"--"] + [h.encode() for h in hostile])
        self.assertFalse(os.path.exists(pwn), "an address was run by a shell")
        self.assertEqual(sorted(os.listdir(rec["dir"])), ["argv", "environ", "pid", "stdin"])

    def test_leading_dash_refused(self):
        with RawClient(self.vh.port) as c:
            c.reply()
            c.cmd("EHLO dash.example")
            self.assertEqual(c.cmd("MAIL FROM:<-oQ/tmp/x@d.example>"),
                             (553, ["553 5.1.7 Address must not begin with '-'"]))
            self.assertEqual(c.cmd("MAIL FROM:<a@d.example>")[0], 250)
            self.assertEqual(c.cmd("RCPT TO:<-oQ/tmp/x@d.example>"),
                             (553, ["553 5.1.3 Address must not begin with '-'"]))
            self.assertEqual(c.cmd("QUIT")[0], 221)

    def test_leading_dash_helo_refused(self):
        """Issue 8 defect 11: $(helo_name) is client-chosen like the
        addresses; `HELO -oQ/tmp/x` must not become an option of the command."""
        with RawClient(self.helo.port) as c:
            c.reply()
            for verb in ("HELO", "EHLO"):
                code, lines = c.cmd("%s -oQ/tmp/x" % verb)
                self.assertEqual(code, 501, lines)
                self.assertIn("must not begin with '-'", lines[0])
            self.assertEqual(c.cmd("MAIL FROM:<a@d.example>")[0], 503)  # no HELO was taken
            self.assertEqual(c.cmd("EHLO good-name.example")[0], 250)
            self.assertEqual(c.cmd("MAIL FROM:<a@d.example>")[0], 250)
            self.assertEqual(c.cmd("RCPT TO:<b@d.example>")[0], 250)
            self.assertEqual(c.cmd("DATA")[0], 354)
            c.send(b"Subject: helo\r\n\r\nbody\r\n.\r\n")
            code, lines = c.reply()
            self.assertEqual(code, 250, lines)
            qid = queue_id_of(lines[0])
            self.assertEqual(c.cmd("QUIT")[0], 221)
        self.assertEqual(self.record(qid)["argv"], [b"good-name.example", b"b@d.example"])

    def send_one(self, port, rcpt):
        with RawClient(port, timeout=30) as c:
            c.reply()
            c.cmd("EHLO exit.example")
            c.cmd("MAIL FROM:<a@exit.example>")
            self.assertEqual(c.cmd("RCPT TO:<%s>" % rcpt)[0], 250)
            self.assertEqual(c.cmd("DATA")[0], 354)
            c.send(b"Subject: exit codes\r\n\r\nbody\r\n.\r\n")
            started = time.time()
            reply = c.reply()
            took = time.time() - started
            self.assertEqual(c.cmd("QUIT")[0], 221)
        return reply, took

    def test_exit_75_is_451(self):
        reply, _ = self.send_one(self.vh.port, "tempfail@d.example")
        self.assertEqual(reply, (451, ["451 4.3.0 mailbox busy, try later"]))

    def test_exit_1_is_554(self):
        reply, _ = self.send_one(self.vh.port, "fail@d.example")
        self.assertEqual(reply, (554, ["554 5.3.0 no such mailbox here"]))
        reply, _ = self.send_one(self.vh.port, "quiet@d.example")
        self.assertEqual(reply, (554, ["554 5.3.0 delivery failed (exit 3)"]))

    def test_timeout_kills_command(self):
        before = set(os.listdir(self.out))
        reply, took = self.send_one(self.slow.port, "sleep@d.example")
        self.assertEqual(reply, (554, ["554 5.3.0 command timed out"]))
        self.assertGreaterEqual(took, 1.5)
        self.assertLess(took, 15)
        new = set(os.listdir(self.out)) - before
        self.assertEqual(len(new), 1)
        rec = self.record(new.pop())
        with open(os.path.join(rec["dir"], "grandchild")) as f:
            grandchild = int(f.read())
        wait_for(lambda: not proc_alive(rec["pid"]), 5)
        self.assertFalse(proc_alive(rec["pid"]), "the command still runs")
        self.assertTrue(wait_for(lambda: not proc_alive(grandchild), 5), "the command's sleep still runs")

    def httpd_children_fds(self):
        """The most open fds of one of httpd's children (the parent is the
        process we started). Per child, not summed: prefork starts more
        children under load, each with its own listeners and logs."""
        most = 0
        for pid in children_of(self.httpd.proc.pid):
            try:
                most = max(most, len(os.listdir("/proc/%d/fd" % pid)))
            except FileNotFoundError:
                pass
        return most

    def test_no_fd_leak(self):
        # warm up: every child thread pool and lazily opened file
        for _ in range(4):
            self.send_one(self.vh.port, "warm@d.example")
        time.sleep(0.5)
        before = self.httpd_children_fds()
        self.assertGreater(before, 0)
        for i in range(30):
            rcpt = ("ok%d@d.example" % i, "fail@d.example", "tempfail@d.example")[i % 3]
            reply, _ = self.send_one(self.vh.port, rcpt)
            self.assertIn(reply[0], (250, 554, 451))
        # client gone mid-DATA: the spool is closed too
        for _ in range(3):
            with RawClient(self.vh.port) as c:
                c.reply()
                c.cmd("EHLO gone.example")
                c.cmd("MAIL FROM:<a@gone.example>")
                c.cmd("RCPT TO:<b@d.example>")
                c.cmd("DATA")
                c.send(b"Subject: half\r\n\r\nhalf a bo")
        # (closing sessions may linger a moment)
        wait_for(lambda: self.httpd_children_fds() <= before, 10)
        self.assertLessEqual(self.httpd_children_fds(), before, "fds of httpd children grew")
        # and no command process is left (zombie or running)
        for child in children_of(self.httpd.proc.pid):
            self.assertEqual([p for p in children_of(child)], [], "httpd child %d has children" % child)


class PipeConfigTest(unittest.TestCase):
    """Configuration errors fail `apache2 -t` with a clear message."""

    def config_error(self, handler):
        h = Httpd(prefix="esmtp-it-pipecfg-")
        try:
            h.add_smtp(handler, accept_domains=["*"])
            rc, out = h.config_test()
        finally:
            h.cleanup()
        self.assertNotEqual(rc, 0, out)
        self.assertIn("ESMTPHandler pipe:", out)
        return out

    def test_relative_command(self):
        out = self.config_error(["pipe", "cat"])
        self.assertIn("absolute path", out)

    def test_unknown_variable(self):
        out = self.config_error(["pipe", "/bin/cat", "$(nosuch)"])
        self.assertIn("$(nosuch)", out)

    def test_bad_timeout(self):
        self.config_error(["pipe", "timeout=soon", "/bin/cat"])

    def test_missing_command(self):
        self.config_error(["pipe", "/nonexistent/command"])
