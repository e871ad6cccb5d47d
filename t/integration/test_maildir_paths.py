"""Per-recipient Maildir paths (`ESMTPHandler maildir DIR/%d/%u/Maildir`) in a
live server: hostile recipient addresses never leave the fixed prefix, every
accepted recipient gets exactly one copy, recipients that map to the same
directory share one, and a template with an unknown placeholder fails
`apache2 -t`."""

import os
import re
import shutil
import signal
import subprocess
import time
import unittest

from harness import Httpd, RawClient, ServerTestCase, children_of, queue_id_of, split_delivered, wait_for

MESSAGE = (b"From: alice@client.example\r\n"
           b"Subject: per-recipient maildir\r\n"
           b"\r\n"
           b"Hello.\r\n"
           b"..a stuffed dot line\r\n")
UNSTUFFED = MESSAGE.replace(b"\r\n..a", b"\r\n.a")

# recipient as sent -> directory below mail/ (relative), per the encoding
# rules: lowercase ASCII, everything outside [a-z0-9._+-] and a leading dot
# as =XX, quotes of a quoted local part dropped and escapes undone.
HOSTILE = [
    ('"../../x"@localhost', "localhost/=2E.=2F..=2Fx/Maildir"),
    ('"a/b"@localhost', "localhost/a=2Fb/Maildir"),
    ('".hidden"@localhost', "localhost/=2Ehidden/Maildir"),
    ('".."@localhost', "localhost/=2E./Maildir"),
    ('"\\/etc"@localhost', "localhost/=2Fetc/Maildir"),
    ("user@[127.0.0.1]", "=5B127.0.0.1=5D/user/Maildir"),
    ("UPPER@Example.ORG", "example.org/upper/Maildir"),
    ("upper@example.org", "example.org/upper/Maildir"),  # same directory: one copy
    ('"x y"@localhost', "localhost/x=20y/Maildir"),
    ("a%b@localhost", "localhost/a=25b/Maildir"),
    ("postmaster", "%HOST%/postmaster/Maildir"),  # no domain: the server's hostname
]

UTF8 = [
    ("j\u00f6rg@localhost", "localhost/j=C3=B6rg/Maildir"),
    ("\u7528\u6237@Localhost", "localhost/=E7=94=A8=E6=88=B7/Maildir"),
]


def tree_files(root):
    out = []
    for dirpath, _, filenames in os.walk(root):
        out.extend(os.path.join(dirpath, n) for n in filenames)
    return sorted(out)


class MaildirPathsTest(ServerTestCase):

    @classmethod
    def configure(cls, httpd):
        cls.mail = os.path.join(httpd.root, "mail")
        os.makedirs(cls.mail)  # owned by the children's user (harness chowns the ServerRoot)
        cls.vh = httpd.add_smtp(["maildir", os.path.join(cls.mail, "%d", "%u", "Maildir")],
                                hostname="mx.paths.test", accept_domains=["*"], log_file="esmtp.log",
                                log_level=3)
        # create=no: only mailboxes that exist (alice's, made here; the
        # harness gives the tree to the children's user at start)
        cls.known = os.path.join(httpd.root, "known")
        os.makedirs(os.path.join(cls.known, "localhost", "alice", "Maildir"))
        cls.existing = httpd.add_smtp(["maildir", os.path.join(cls.known, "%d", "%u", "Maildir"), "create=no"],
                                      hostname="mx.known.test", accept_domains=["*"])

    def outside_mail(self):
        """Files of the ServerRoot outside mail/, logs/, conf/ and run/."""
        root = self.httpd.root
        return [f for f in tree_files(root)
                if os.path.relpath(f, root).split(os.sep)[0] not in ("mail", "logs", "conf", "run")]

    def transaction(self, c, recipients, mail_params=""):
        code, lines = c.cmd("MAIL FROM:<alice@client.example>" + mail_params)
        self.assertEqual(code, 250, lines)
        for r in recipients:
            code, lines = c.cmd("RCPT TO:<%s>" % r)
            self.assertEqual(code, 250, "%s: %r" % (r, lines))
        self.assertEqual(c.cmd("DATA")[0], 354)
        c.send(MESSAGE + b".\r\n")
        code, lines = c.reply()
        self.assertEqual(code, 250, lines)
        return queue_id_of(lines[0])

    def check_delivered(self, expected, qid):
        """Every file below mail/ is new/ of an expected directory, one per directory."""
        files = wait_for(lambda: [f for f in tree_files(self.mail) if qid in os.path.basename(f)], 5)
        by_dir = {}
        for f in files:
            rel = os.path.relpath(os.path.realpath(f), os.path.realpath(self.mail))
            self.assertFalse(rel.startswith(".."), "%s is outside %s" % (f, self.mail))
            d, sub, name = rel.rsplit(os.sep, 2)
            self.assertEqual(sub, "new", "file left in %s" % rel)
            self.assertNotIn(d, by_dir, "two files in %s" % d)
            by_dir[d] = f
            with open(f, "rb") as fh:
                _, received, body = split_delivered(fh.read())
            self.assertEqual(body, UNSTUFFED)
            self.assertIn(qid, received)
        self.assertEqual(sorted(by_dir), sorted(set(expected)))

    def test_hostile_recipients(self):
        before_outside = self.outside_mail()
        with RawClient(self.vh.port) as c:
            self.assertEqual(c.reply()[0], 220)
            self.assertEqual(c.cmd("EHLO client.example")[0], 250)
            qid = self.transaction(c, [r for r, _ in HOSTILE])
            self.assertEqual(c.cmd("QUIT")[0], 221)
        expected = [d.replace("%HOST%", self.vh.name) for _, d in HOSTILE]
        self.check_delivered(expected, qid)
        # nothing was created outside mail/ (e.g. ServerRoot/x from "../../x")
        self.assertEqual(self.outside_mail(), before_outside)
        for p in ("x", os.path.join("mail", "x"), os.path.join("mail", "localhost", "x")):
            self.assertFalse(os.path.exists(os.path.join(self.httpd.root, p)), p)
        # no file anywhere in tmp/
        self.assertEqual([f for f in tree_files(self.mail)
                          if os.path.relpath(f, self.mail).split(os.sep)[-2] != "new"], [])

    def test_utf8_recipients(self):
        with RawClient(self.vh.port) as c:
            self.assertEqual(c.reply()[0], 220)
            code, lines = c.cmd("EHLO client.example")
            if not any(l[4:].upper() == "SMTPUTF8" for l in lines):
                self.skipTest("server does not advertise SMTPUTF8 yet")
            qid = self.transaction(c, [r for r, _ in UTF8], " SMTPUTF8")
        self.check_delivered([d for _, d in UTF8], qid)

    def test_same_directory_one_copy(self):
        with RawClient(self.vh.port) as c:
            self.assertEqual(c.reply()[0], 220)
            self.assertEqual(c.cmd("EHLO client.example")[0], 250)
            qid = self.transaction(c, ["Bob@Dup.Example", "bob@dup.example", "BOB@DUP.EXAMPLE"])
        self.check_delivered(["dup.example/bob/Maildir"], qid)

    def test_directories_private(self):
        with RawClient(self.vh.port) as c:
            self.assertEqual(c.reply()[0], 220)
            self.assertEqual(c.cmd("EHLO client.example")[0], 250)
            self.transaction(c, ["carol@perm.example"])
        for rel in ("perm.example", "perm.example/carol", "perm.example/carol/Maildir",
                    "perm.example/carol/Maildir/new", "perm.example/carol/Maildir/cur"):
            mode = os.stat(os.path.join(self.mail, rel)).st_mode & 0o777
            self.assertEqual(mode, 0o700, rel)


    # --- issue 8 defect 12

    def test_create_no_only_existing_mailboxes(self):
        """`maildir DIR create=no`: RCPT to a mailbox that does not exist gets
        550 5.1.1 and no directory is made; an existing one is delivered to."""
        before = sorted(os.listdir(self.known))
        with RawClient(self.existing.port) as c:
            self.assertEqual(c.reply()[0], 220)
            self.assertEqual(c.cmd("EHLO client.example")[0], 250)
            self.assertEqual(c.cmd("MAIL FROM:<a@client.example>")[0], 250)
            for r in ("nobody@localhost", "bob@elsewhere.example", "\"../alice\"@localhost"):
                self.assertEqual(c.cmd("RCPT TO:<%s>" % r), (550, ["550 5.1.1 No such user here"]), r)
            self.assertEqual(c.cmd("RCPT TO:<Alice@localhost>")[0], 250)
            self.assertEqual(c.cmd("DATA")[0], 354)
            c.send(MESSAGE + b".\r\n")
            code, lines = c.reply()
            self.assertEqual(code, 250, lines)
            self.assertEqual(c.cmd("QUIT")[0], 221)
        self.assertEqual(sorted(os.listdir(self.known)), before)
        self.assertEqual(os.listdir(os.path.join(self.known, "localhost")), ["alice"])
        new = os.path.join(self.known, "localhost", "alice", "Maildir", "new")
        self.assertEqual(len(wait_for(lambda: os.listdir(new), 5)), 1)

    def test_new_directories_fsynced(self):
        """Every directory made for a new mailbox, and its parent, is
        fsynced before the 250 (seen with strace on httpd's children)."""
        if not shutil.which("strace"):
            self.skipTest("strace is not installed")
        pids = children_of(self.httpd.proc.pid)
        self.assertTrue(pids)
        trace = os.path.join(self.httpd.root, "logs", "strace.out")
        cmd = ["strace", "-f", "-qq", "-y", "-e", "trace=mkdir,mkdirat,fsync,fdatasync", "-o", trace]
        for p in pids:
            cmd += ["-p", str(p)]
        st = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(1.0)  # strace attaches to every thread
            with RawClient(self.vh.port) as c:
                self.assertEqual(c.reply()[0], 220)
                self.assertEqual(c.cmd("EHLO client.example")[0], 250)
                qid = self.transaction(c, ["dave@fsync.example"])
                self.assertEqual(c.cmd("QUIT")[0], 221)
            time.sleep(0.3)
        finally:
            os.kill(st.pid, signal.SIGINT)
            st.wait(10)
        self.assertTrue(qid)
        with open(trace) as f:
            calls = f.read().splitlines()
        created, synced = [], []
        for line in calls:
            m = re.search(r'mkdir(?:at)?\((?:AT_FDCWD[^,]*, )?"([^"]+)", 0700\) = 0', line)
            if m:
                created.append(m.group(1))
                synced = []  # fsyncs that count come after the last mkdir
                continue
            m = re.search(r'fsync\(\d+<([^>]+)>\) = 0', line)
            if m:
                synced.append(m.group(1))
        box = os.path.join(self.mail, "fsync.example", "dave", "Maildir")
        self.assertEqual(created, [os.path.join(self.mail, "fsync.example"),
                                   os.path.join(self.mail, "fsync.example", "dave"), box,
                                   os.path.join(box, "tmp"), os.path.join(box, "new"), os.path.join(box, "cur")],
                         "\n".join(calls))
        for d in created:
            self.assertIn(d, synced, "created directory not fsynced:\n" + "\n".join(calls))
            self.assertIn(os.path.dirname(d), synced, "parent of a created directory not fsynced:\n"
                          + "\n".join(calls))


class MaildirTemplateConfigTest(unittest.TestCase):
    """`apache2 -t` checks the template."""

    def check(self, template):
        httpd = Httpd()
        try:
            httpd.add_smtp(["maildir", os.path.join(httpd.root, template)], accept_domains=["*"])
            return httpd.config_test()
        finally:
            httpd.cleanup()

    def test_unknown_placeholder(self):
        rc, out = self.check("mail/%x/Maildir")
        self.assertNotEqual(rc, 0, out)
        self.assertIn("ESMTPHandler maildir:", out)
        self.assertIn("%x", out)

    def test_dotdot_after_placeholder(self):
        rc, out = self.check("mail/%u/../other")
        self.assertNotEqual(rc, 0, out)
        self.assertIn("ESMTPHandler maildir:", out)

    def test_valid_template(self):
        rc, out = self.check("mail/100%%/%d/%u/Maildir")
        self.assertEqual(rc, 0, out)

    def check_args(self, *args):
        httpd = Httpd()
        try:
            # with create=no, apache2 -t wants the directory above the
            # mailboxes to exist (the children's User must reach it)
            os.makedirs(os.path.join(httpd.root, args[0].split("%")[0]), exist_ok=True)
            httpd.add_smtp(["maildir"] + [os.path.join(httpd.root, args[0])] + list(args[1:]), accept_domains=["*"])
            return httpd.config_test()
        finally:
            httpd.cleanup()

    def test_create_option(self):
        for value in ("create=no", "create=yes"):
            rc, out = self.check_args("mail/%d/%u", value)
            self.assertEqual(rc, 0, out)
        for bad in ("create=maybe", "create=", "creat=no"):
            rc, out = self.check_args("mail/%d/%u", bad)
            self.assertNotEqual(rc, 0, out)
            self.assertIn("ESMTPHandler maildir:", out)
            self.assertIn(bad, out)


if __name__ == "__main__":
    unittest.main()
