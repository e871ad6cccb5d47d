"""Faults in a live server (issue 4): the Maildir's file system is full, the
httpd child serving a session is killed mid-DATA, a graceful restart hits
20 sessions mid-transaction, and clients vanish at every phase of a session
(nothing delivered, no file descriptor leaked by the httpd child)."""

import os
import re
import signal
import smtplib
import socket
import struct
import subprocess
import tempfile
import time
import unittest

from harness import children_of, IS_ROOT, RawClient, ServerTestCase, queue_id_of, run_ids, wait_for

ANY = ["*"]

# One event child, so that "the child serving the session" is known and its
# descriptors can be counted.
ONE_CHILD = ["StartServers 1", "ServerLimit 1", "ThreadsPerChild 16", "ThreadLimit 16",
             "MinSpareThreads 1", "MaxSpareThreads 16", "MaxRequestWorkers 16"]

MSGID_RE = re.compile(rb"^Message-ID: (<[^>\r\n]*>)", re.M | re.I)
QID_RE = re.compile(rb"\bid ([0-9A-Za-z]+)\r\n\tfor ")


def fd_count(pid):
    try:
        return len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        return None


def message(msgid, body=b"body line\r\n" * 20):
    return (b"From: <a@client.example>\r\nSubject: fault test\r\nMessage-ID: " + msgid.encode() + b"\r\n\r\n" + body)


def message_ids(vh):
    """Message-IDs of the files in new/ (a list: duplicates show)."""
    ids = []
    for path in vh.maildir_files():
        with open(path, "rb") as f:
            m = MSGID_RE.search(f.read())
        ids.append(m.group(1).decode() if m else None)
    return ids


def greet(vh, timeout=20):
    c = RawClient(vh.port, timeout=timeout)
    code, lines = c.reply()
    assert code == 220, lines
    code, lines = c.cmd("EHLO client.example")
    assert code == 250, lines
    return c


def to_rcpt(c, vh):
    for cmd in ("MAIL FROM:<a@client.example>", "RCPT TO:<b@%s>" % vh.server_name):
        code, lines = c.cmd(cmd)
        assert code == 250, (cmd, lines)


def smtplib_deliver(testcase, vh, msgid):
    with smtplib.SMTP("127.0.0.1", vh.port, local_hostname="client.example", timeout=30) as s:
        s.ehlo()
        s.mail("a@client.example")
        s.rcpt("b@%s" % vh.server_name)
        code, text = s.data(message(msgid))
    testcase.assertEqual(code, 250, text)
    return queue_id_of(text.decode())


# ---------------------------------------------------------------- full file system

def _can_mount():
    if not IS_ROOT:
        return "mounting a tmpfs needs root"
    d = tempfile.mkdtemp(prefix="esmtp-it-mnt-")
    try:
        p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", d],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=20)
        if p.returncode != 0:
            return "mount -t tmpfs not permitted here: %s" % p.stdout.decode("utf-8", "replace").strip()
        subprocess.run(["umount", d], timeout=20)
        return None
    except OSError as e:
        return "cannot run mount: %s" % e
    finally:
        os.rmdir(d)


class FullFileSystemTest(ServerTestCase):
    """The Maildir on a 1 MB tmpfs: a message bigger than the free space
    gets 451 4.3.0 and leaves nothing in new/ or tmp/."""

    mounted = None
    # the refusal is the administrator's to fix: said at level error (issue 8 defect 18)
    allowed_log = (r"\[esmtp:error\].*esmtp: maildir: cannot write .*No space left on device",)

    @classmethod
    def setUpClass(cls):
        reason = _can_mount()
        if reason:
            raise unittest.SkipTest(reason)
        try:
            super().setUpClass()
        except BaseException:
            cls._umount()  # tearDownClass does not run when setUpClass fails
            raise

    @classmethod
    def configure(cls, httpd):
        cls.vh = httpd.add_smtp("maildir", accept_domains=ANY, log_file="esmtp.log", log_level=1)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", cls.vh.maildir],
                       check=True, timeout=20)
        cls.mounted = cls.vh.maildir
        uid, gid = run_ids()
        for sub in ("tmp", "new", "cur"):
            d = os.path.join(cls.vh.maildir, sub)
            os.makedirs(d, exist_ok=True)
            os.chown(d, uid, gid)
        os.chown(cls.vh.maildir, uid, gid)

    @classmethod
    def tearDownClass(cls):
        if cls.httpd:
            cls.httpd.stop()
        cls._umount()
        super().tearDownClass()

    @classmethod
    def _umount(cls):
        if cls.mounted:
            subprocess.run(["umount", "-l", cls.mounted], timeout=20)
            cls.mounted = None

    def test_full_file_system(self):
        big = message("<big@client.example>", (b"x" * 78 + b"\r\n") * 20000)  # 1.6 MB > 1 MB
        with smtplib.SMTP("127.0.0.1", self.vh.port, local_hostname="client.example", timeout=30) as s:
            s.ehlo()
            s.mail("a@client.example")
            s.rcpt("b@localhost")
            code, text = s.data(big)
            self.assertEqual(code, 451, text)
            self.assertTrue(text.startswith(b"4.3.0 "), text)
            # the session goes on; a small message fits
            self.assertEqual(s.rset()[0], 250)
            s.mail("a@client.example")
            s.rcpt("b@localhost")
            code, text = s.data(message("<small@client.example>"))
            self.assertEqual(code, 250, text)
        self.assertEqual(self.vh.maildir_files("tmp"), [])
        self.assertEqual(message_ids(self.vh), ["<small@client.example>"])
        st = os.statvfs(self.vh.maildir)
        self.assertGreater(st.f_bavail * st.f_frsize, 900 * 1024, "space of the refused message not freed")
        self.assertTrue([l for l in self.vh.log_lines() if "maildir: cannot write" in l and "No space left" in l],
                        "\n".join(self.vh.log_lines()))
        self.assertTrue([l for l in self.httpd.log_lines() if "[esmtp:error]" in l and "No space left" in l],
                        "no error-log line for the refused message")


# ---------------------------------------------------------------- child killed

class KilledChildTest(ServerTestCase):
    """SIGKILL to the child serving a session mid-DATA."""

    mpm = "event"  # the sizing directives below are the event MPM's
    httpd_options = {"mpm_lines": ONE_CHILD}
    allowed_log = (r"AH00052: child pid \d+ exit signal Killed \(9\)",)

    @classmethod
    def configure(cls, httpd):
        cls.vh = httpd.add_smtp("maildir", accept_domains=ANY)

    def test_sigkill_mid_data(self):
        c = greet(self.vh)
        try:
            to_rcpt(c, self.vh)
            self.assertEqual(c.cmd("DATA")[0], 354)
            c.send(message("<killed@client.example>")[:200])
            time.sleep(0.3)  # the child has read it
            children = children_of(self.httpd.proc.pid)
            self.assertEqual(len(children), 1, children)
            os.kill(children[0], signal.SIGKILL)
            # the client sees the connection die; it may still push the rest
            try:
                c.send(b"more body\r\n.\r\n")
                rest = c.rest(5)
            except OSError:
                rest = ""
            self.assertNotIn("250", rest)
        finally:
            c.close()
        # a new child takes over and serves the next client
        self.assertTrue(wait_for(lambda: [p for p in children_of(self.httpd.proc.pid) if p != children[0]], 10))
        smtplib_deliver(self, self.vh, "<after-kill@client.example>")
        self.assertEqual(message_ids(self.vh), ["<after-kill@client.example>"])
        # Maildir leaves a killed writer's file in tmp/ (cleaned by age, never
        # seen by readers); at most that one.
        leftover = self.vh.maildir_files("tmp")
        print("\n  left in tmp/ by the killed child: %d file(s)" % len(leftover), end=" ")
        self.assertLessEqual(len(leftover), 1)
        self.assertTrue(self.httpd.running())


# ---------------------------------------------------------------- graceful restart

class GracefulRestartTest(ServerTestCase):
    """`apache2 -k graceful` while 20 sessions are mid-transaction."""
    allowed_log = (r"AH03092",)  # httpd's own pollset race in the old generation

    @classmethod
    def configure(cls, httpd):
        cls.vh = httpd.add_smtp("maildir", accept_domains=ANY, log_file="esmtp.log", log_level=1)

    def test_graceful_restart_mid_transaction(self):
        sessions = []  # (client, msgid, state)
        try:
            for i in range(20):
                msgid = "<graceful-%d@client.example>" % i
                c = greet(self.vh)
                sessions.append([c, msgid, "rcpt"])
                to_rcpt(c, self.vh)
                if i % 2:
                    self.assertEqual(c.cmd("DATA")[0], 354)
                    c.send(message(msgid)[:60])  # mid-DATA: in the header
                    sessions[-1][2] = "data"
            self.httpd.restart(graceful=True)
            time.sleep(0.3)
            accepted, outcomes = [], []
            for c, msgid, state in sessions:
                try:
                    if state == "rcpt":
                        code, lines = c.cmd("DATA")
                        if code == 354:
                            c.send(message(msgid) + b".\r\n")
                            code, lines = c.reply()
                    else:
                        c.send(message(msgid)[60:] + b".\r\n")
                        code, lines = c.reply()
                except (EOFError, OSError) as e:
                    self.fail("%s (%s): connection ended without a reply: %s" % (msgid, state, e))
                outcomes.append((msgid, state, code, lines[0]))
                self.assertTrue(code == 250 or 400 <= code < 500, (msgid, state, lines))
                if code == 250:
                    accepted.append(msgid)
        finally:
            for c, _, _ in sessions:
                c.close()
        print("\n  outcomes: %d x 250, others: %r" % (len(accepted), [o for o in outcomes if o[2] != 250]), end=" ")
        time.sleep(0.2)
        self.assertEqual(sorted(message_ids(self.vh)), sorted(accepted))  # no loss, no duplicate
        self.assertEqual(self.vh.maildir_files("tmp"), [])
        smtplib_deliver(self, self.vh, "<after-graceful@client.example>")


# ---------------------------------------------------------------- unusable handlers

# child_init's HandlerFactory::check() failure, at error level in the error log
CHECK_FAILED_RE = r"\[esmtp:error\] .*esmtp: ESMTPHandler %s of %s \(.*\) cannot work: "


class UnusableHandlerTest(ServerTestCase):
    """Issue 8 (#18): a handler that cannot write where it must says so at
    error level in the error log when the children start (checked as the
    server's user in child_init), not only in the transaction log when mail
    comes. The directories are made read-only (mode 0555: neither the
    children's User nor, when not root, we ourselves can write there).
    (Since issue 24 a Maildir that is unwritable already fails `apache2 -t`
    and the start, test_config.PreflightTest; here it becomes unwritable
    after the start.)"""

    allowed_log = (r"\[esmtp:error\]",)

    @classmethod
    def configure(cls, httpd):
        locked = os.path.join(httpd.root, "locked")
        os.makedirs(locked)
        cls.test_vh = httpd.add_smtp(["test", os.path.join(locked, "events.log")], accept_domains=ANY)
        cls.maildir_vh = httpd.add_smtp("maildir", accept_domains=ANY, log_file="esmtp.log", log_level=1)
        cls.fine_vh = httpd.add_smtp("test", accept_domains=ANY)
        os.chmod(locked, 0o555)

    def startup_lines(self, pattern):
        rx = re.compile(pattern)
        return wait_for(lambda: [l for l in self.httpd.log_lines() if rx.search(l)], 5)

    def test_test_handler_check_fails_at_startup(self):
        lines = self.startup_lines(CHECK_FAILED_RE % ("test", re.escape(self.test_vh.server_name)))
        self.assertTrue(lines, "no start-up error for the unwritable event file:\n" +
                        "\n".join(self.httpd.log_lines()[-20:]))
        self.assertIn("is not writable", lines[0])
        # the server whose handler is fine is not named
        fine = CHECK_FAILED_RE % ("test", re.escape(self.fine_vh.server_name))
        self.assertFalse([l for l in self.httpd.log_lines() if re.search(fine, l)])
        # before that, the start warned (a check of another handler than
        # maildir does not stop httpd)
        self.assertTrue([l for l in self.httpd.stderr_lines()
                         if "ESMTPHandler test of server %s" % self.test_vh.server_name in l and "is not writable" in l],
                        self.httpd.startup_output())

    def test_maildir_refusal_is_logged(self):
        maildir = self.maildir_vh.maildir
        for d in [maildir] + [os.path.join(maildir, sub) for sub in ("tmp", "new", "cur")]:
            os.chmod(d, 0o555)
        self.httpd.new_log_lines()
        with smtplib.SMTP("127.0.0.1", self.maildir_vh.port, timeout=20) as s:
            s.ehlo("fault.example")
            s.mail("a@client.example")
            s.rcpt("b@localhost")
            # refused at DATA (no file can be made in tmp/) or after the dot
            try:
                code, text = s.data(b"Subject: x\r\n\r\nbody\r\n")
            except smtplib.SMTPDataError as e:
                code, text = e.smtp_code, e.smtp_error
        self.assertEqual(code // 100, 4, text)
        # each refusal also says why in the error log, at error level
        refusal = wait_for(lambda: [l for l in self.httpd.new_log_lines() if "[esmtp:error]" in l], 5)
        self.assertTrue(refusal, "the refusal left no error-level line in the error log")


# ---------------------------------------------------------------- vanishing clients

def _abort(sock):
    """Close with RST (SO_LINGER 0) instead of FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class VanishingClientTest(ServerTestCase):
    """Clients that disappear at every phase: nothing delivered (but after
    the final dot, where delivery must match the log), and the child's
    descriptors come back to their baseline."""

    mpm = "event"  # the sizing directives below are the event MPM's
    httpd_options = {"mpm_lines": ONE_CHILD}

    @classmethod
    def configure(cls, httpd):
        cls.vh = httpd.add_smtp("maildir", accept_domains=ANY, log_file="esmtp.log", log_level=1)

    PHASES = ("connect", "greeting", "ehlo", "mail", "rcpt", "data_cmd", "header", "body", "final_dot", "bdat")

    def vanish(self, phase, n, rst):
        msgid = "<vanish-%s-%d@client.example>" % (phase, n)
        msg = message(msgid)
        c = RawClient(self.vh.port, timeout=20)
        try:
            if phase == "connect":
                return msgid
            self.assertEqual(c.reply()[0], 220)
            if phase == "greeting":
                return msgid
            self.assertEqual(c.cmd("EHLO client.example")[0], 250)
            if phase == "ehlo":
                return msgid
            self.assertEqual(c.cmd("MAIL FROM:<a@client.example>")[0], 250)
            if phase == "mail":
                return msgid
            self.assertEqual(c.cmd("RCPT TO:<b@%s>" % self.vh.server_name)[0], 250)
            if phase == "rcpt":
                return msgid
            if phase == "bdat":
                c.send(b"BDAT %d LAST\r\n" % (len(msg) + 100) + msg[:len(msg) // 2])
                return msgid
            self.assertEqual(c.cmd("DATA")[0], 354)
            if phase == "data_cmd":
                return msgid
            if phase == "header":
                c.send(msg[:msg.index(b"Message-ID")])
            elif phase == "body":
                c.send(msg[:-40])
            elif phase == "final_dot":
                c.send(msg + b".\r\n")
            return msgid
        finally:
            if rst:
                _abort(c.sock)
            else:
                c.close()

    def child(self):
        children = children_of(self.httpd.proc.pid)
        self.assertEqual(len(children), 1, children)
        return children[0]

    def test_vanish_at_every_phase(self):
        # warm-up: a delivery and a vanished client, then the baseline
        smtplib_deliver(self, self.vh, "<warmup@client.example>")
        self.vanish("body", 0, False)
        pid = self.child()
        time.sleep(2.5)  # lingering closes are over
        base = fd_count(pid)
        final_dot = set()
        n = 0
        for rnd in range(12):
            for phase in self.PHASES:
                n += 1
                msgid = self.vanish(phase, rnd, rst=bool(n % 2))
                if phase == "final_dot":
                    final_dot.add(msgid)
        self.assertEqual(self.child(), pid, "the child changed")
        # descriptors come back (lingering close takes up to ~2 s per socket)
        counts = []

        def settled():
            counts.append(fd_count(pid))
            return counts[-1] is not None and counts[-1] <= base

        started = time.time()
        wait_for(settled, 15, 0.25)
        print("\n  %d sessions; fds of the child: baseline %d, peak while settling %d, after %.1fs %s"
              % (n, base, max(c or 0 for c in counts), time.time() - started, counts[-1]), end=" ")
        self.assertLessEqual(counts[-1], base + 2, "fd count of the child %d did not return to its baseline %d: %r"
                             % (pid, base, counts[-8:]))
        # every session has ended: its file in tmp/ (if any) is gone
        self.assertEqual(wait_for(lambda: not self.vh.maildir_files("tmp"), 10) or self.vh.maildir_files("tmp"),
                         True, "files left in tmp/")
        # nothing delivered but (perhaps) the messages whose final dot was sent
        delivered = [i for i in message_ids(self.vh) if i != "<warmup@client.example>"]
        self.assertEqual(len(delivered), len(set(delivered)), "duplicate deliveries: %r" % delivered)
        self.assertLessEqual(set(delivered), final_dot)
        self.assertEqual(self.vh.maildir_files("tmp"), [])
        # ... and exactly those the transaction log says were accepted
        time.sleep(0.2)
        file_qids = set()
        for path in self.vh.maildir_files():
            with open(path, "rb") as f:
                m = QID_RE.search(f.read())
            self.assertTrue(m, path)
            file_qids.add(m.group(1).decode())
        log_qids = set()
        for line in self.vh.log_lines():
            m = re.search(r" ([0-9A-Za-z]+) accepted from=", line)
            if m:
                log_qids.add(m.group(1))
        self.assertEqual(file_qids, log_qids)
        print("(%d of %d final-dot messages delivered)" % (len(delivered), len(final_dot)), end=" ")
        smtplib_deliver(self, self.vh, "<after-vanish@client.example>")


if __name__ == "__main__":
    unittest.main()
