"""A real MTA as the client: a private Postfix instance (its own
config_directory, queue_directory and data_directory under a temporary
directory, logging to a file, no listening service at all) relays a message
submitted with its sendmail(1) to mod_esmtp on 127.0.0.1 (relayhost). The
message must land in the Maildir byte-exact (8-bit body), Postfix must have
used EHLO, BODY=8BITMIME and PIPELINING, and Postfix is stopped whatever
happens."""

import os
import re
import shutil
import signal
import subprocess
import tempfile
import textwrap
import time
import unittest

from harness import ServerTestCase, queue_id_of, split_delivered, wait_for

SBIN_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])


def _which(name):
    return shutil.which(name, path=SBIN_PATH)


def _postfix_missing():
    """Why this host cannot run the test, or None."""
    missing = [n for n in ("postfix", "postconf", "sendmail", "postdrop") if not _which(n)]
    if missing:
        return "Postfix is not installed (missing %s)" % ", ".join(missing)
    try:
        import grp
        import pwd
        pwd.getpwnam("postfix")
        grp.getgrnam("postdrop")
    except KeyError:
        return "Postfix is not installed (no postfix user or postdrop group)"
    if os.geteuid() != 0:
        return "starting a Postfix master needs root"
    return None


SKIP_REASON = _postfix_missing()

SENDER = "sender@client.example"
BODY = (b"Hello from Postfix.\n"
        b"8-bit line: caf\xc3\xa9 \xe2\x82\xac \xc3\xbc\xc3\xb1\xc3\xaf\xc3\xa7\xc3\xb6d\xc3\xa9\n"
        b".a line that starts with a dot\n"
        b"\n"
        b"-- \n"
        b"the end\n")


class PrivatePostfix:
    """A Postfix instance that touches nothing of the system's: everything
    below `root`; `postfix -c DIR start/stop`."""

    MASTER_CF = textwrap.dedent("""\
        # service type  private unpriv  chroot  wakeup  maxproc command
        pickup    unix  n       -       n       1       1       pickup
        cleanup   unix  n       -       n       -       0       cleanup
        qmgr      unix  n       -       n       300     1       qmgr
        rewrite   unix  -       -       n       -       -       trivial-rewrite
        bounce    unix  -       -       n       -       0       bounce
        defer     unix  -       -       n       -       0       bounce
        trace     unix  -       -       n       -       0       bounce
        verify    unix  -       -       n       -       1       verify
        flush     unix  n       -       n       1000?   0       flush
        proxymap  unix  -       -       n       -       -       proxymap
        smtp      unix  -       -       n       -       -       smtp
        relay     unix  -       -       n       -       -       smtp
        showq     unix  n       -       n       -       -       showq
        error     unix  -       -       n       -       -       error
        retry     unix  -       -       n       -       -       error
        discard   unix  -       -       n       -       -       discard
        anvil     unix  -       -       n       -       1       anvil
        scache    unix  -       -       n       -       1       scache
        postlog   unix-dgram n  -       n       -       1       postlogd
        """)

    def __init__(self, relay_port):
        self.root = tempfile.mkdtemp(prefix="esmtp-it-postfix-")
        os.chmod(self.root, 0o755)  # postfix's daemons run as `postfix`
        self.config_dir = os.path.join(self.root, "etc")
        self.queue_dir = os.path.join(self.root, "spool")
        self.data_dir = os.path.join(self.root, "data")
        self.log_file = os.path.join(self.root, "postfix.log")
        for d in (self.config_dir, self.queue_dir, self.data_dir):
            os.makedirs(d)
        import pwd
        pw = pwd.getpwnam("postfix")
        os.chown(self.data_dir, pw.pw_uid, pw.pw_gid)
        main_cf = textwrap.dedent("""\
            compatibility_level = 3.6
            queue_directory = {queue}
            data_directory = {data}
            mail_owner = postfix
            setgid_group = postdrop
            myhostname = client.example
            mydomain = client.example
            myorigin = $myhostname
            mydestination =
            local_transport = error:local delivery is disabled
            relayhost = [127.0.0.1]:{port}
            mynetworks = 127.0.0.0/8
            inet_interfaces = loopback-only
            inet_protocols = ipv4
            smtp_tls_security_level = none
            smtpd_tls_security_level = none
            smtp_address_preference = ipv4
            maillog_file = {log}
            maillog_file_prefixes = {root}
            alias_maps =
            alias_database =
            biff = no
            # log the SMTP conversation with mod_esmtp (both directions, in wire order)
            debug_peer_list = 127.0.0.1
            debug_peer_level = 2
            """).format(queue=self.queue_dir, data=self.data_dir, port=relay_port, log=self.log_file,
                        root=self.root)
        with open(os.path.join(self.config_dir, "main.cf"), "w") as f:
            f.write(main_cf)
        with open(os.path.join(self.config_dir, "master.cf"), "w") as f:
            f.write(self.MASTER_CF)
        self.started = False

    def run(self, *args, stdin=None, timeout=60):
        p = subprocess.run(list(args), input=stdin, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=timeout, env=dict(os.environ, PATH=SBIN_PATH))
        return p.returncode, p.stdout.decode("utf-8", "replace")

    def start(self):
        # `check` validates main.cf/master.cf and creates the queue
        # directories with the right owners (postfix, postdrop).
        rc, out = self.run(_which("postfix"), "-c", self.config_dir, "check")
        if rc != 0:
            raise RuntimeError("postfix check failed (%d): %s\n%s" % (rc, out, self.log_text()))
        rc, out = self.run(_which("postfix"), "-c", self.config_dir, "start")
        if rc != 0:
            raise RuntimeError("postfix start failed (%d): %s\n%s" % (rc, out, self.log_text()))
        self.started = True
        if not wait_for(self.master_pid, 20):
            raise RuntimeError("postfix master did not start:\n" + self.log_text())

    def master_pid(self):
        try:
            with open(os.path.join(self.queue_dir, "pid", "master.pid")) as f:
                pid = int(f.read().split()[0])
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError, IndexError):
            return None

    def stop(self):
        """`postfix stop`, then make sure the master and its children are gone."""
        pid = self.master_pid()
        if self.started:
            try:
                self.run(_which("postfix"), "-c", self.config_dir, "stop", timeout=30)
            except (subprocess.TimeoutExpired, OSError):
                pass
        if pid and not wait_for(lambda: not _alive(pid), 15):
            try:
                os.killpg(pid, signal.SIGKILL)  # the master leads its process group
            except OSError:
                pass
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        self.started = False

    def log_text(self):
        try:
            with open(self.log_file, encoding="utf-8", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def cleanup(self, keep=False):
        self.stop()
        if keep:
            import sys
            sys.stderr.write("kept Postfix root %s\n" % self.root)
        else:
            shutil.rmtree(self.root, ignore_errors=True)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie is not alive
    try:
        with open("/proc/%d/status" % pid) as f:
            return "\nState:\tZ" not in f.read()
    except OSError:
        return False


class PostfixRelayCase(ServerTestCase):
    """A class whose private Postfix relays to its vhost `cls.vh`: started
    after httpd, `prepare_postfix()` may add to its configuration first;
    kept for inspection when a test failed."""

    postfix = None

    @classmethod
    def prepare_postfix(cls, postfix):
        pass

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        try:
            cls.postfix = PrivatePostfix(cls.vh.port)
            cls.prepare_postfix(cls.postfix)
            cls.postfix.start()
        except BaseException:
            if cls.postfix:
                cls.postfix.cleanup(keep=True)
            cls.httpd.cleanup(keep=True)
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            if cls.postfix:
                cls.postfix.cleanup(keep=cls._failed)
        finally:
            super().tearDownClass()


@unittest.skipIf(SKIP_REASON, SKIP_REASON or "")
class PostfixRelayTest(PostfixRelayCase):

    @classmethod
    def configure(cls, httpd):
        cls.vh = httpd.add_smtp("maildir", server_name="mx.postfix.test", log_file="esmtp.log", log_level=2)

    def test_relay_through_postfix(self):
        rcpt = "rcpt@" + self.vh.server_name
        message = (b"From: Sender <" + SENDER.encode() + b">\n"
                   b"To: <" + rcpt.encode() + b">\n"
                   b"Subject: relayed by Postfix\n"
                   b"MIME-Version: 1.0\n"
                   b"Content-Type: text/plain; charset=utf-8\n"
                   b"Content-Transfer-Encoding: 8bit\n"
                   b"\n" + BODY)
        before = self.vh.maildir_files()
        rc, out = self.postfix.run(_which("sendmail"), "-C", self.postfix.config_dir, "-B", "8BITMIME",
                                   "-f", SENDER, rcpt, stdin=message)
        self.assertEqual(rc, 0, out)

        files = wait_for(lambda: sorted(set(self.vh.maildir_files()) - set(before)), 60, 0.2)
        self.assertEqual(len(files), 1, "no delivery within 60 s; Postfix log:\n" + self.postfix.log_text())
        with open(files[0], "rb") as f:
            return_path, received, content = split_delivered(f.read())
        self.assertEqual(return_path, b"Return-Path: <" + SENDER.encode() + b">\r\n")
        self.assertRegex(received, r"^Received: from client\.example \(.*\[127\.0\.0\.1\]\)")
        self.assertRegex(received, r"\bby mx\.postfix\.test \(mod_esmtp\) with ESMTP id [0-9A-Z]+\b")
        self.assertIn("for <%s>" % rcpt, received)

        # header as Postfix wrote it (it adds its own trace and ids), body byte-exact
        head, sep, body = content.partition(b"\r\n\r\n")
        self.assertEqual(sep, b"\r\n\r\n")
        self.assertIn(b"\r\nSubject: relayed by Postfix", b"\r\n" + head)
        self.assertIn(b"Content-Transfer-Encoding: 8bit", head)  # not downgraded to quoted-printable
        self.assertEqual(body, BODY.replace(b"\n", b"\r\n"))

        # Postfix reports our queue id
        qid = re.search(r"with ESMTP id ([0-9A-Z]+)", received).group(1)
        log = wait_for(lambda: "status=sent" in self.postfix.log_text() and self.postfix.log_text(), 10)
        self.assertRegex(log, r"status=sent \(250 2\.0\.0 Ok: queued as %s\)" % qid)

        # what mod_esmtp saw (transaction log, level 2: every command)
        txlog = [l for l in self.vh.log_lines() if qid in l or "< " in l]
        commands = [l.split(" < ", 1)[1] for l in txlog if " < " in l]
        self.assertTrue(any(c.startswith("EHLO client.example") for c in commands), commands)
        self.assertFalse(any(c.upper().startswith("HELO") for c in commands), commands)
        mail = [c for c in commands if c.upper().startswith("MAIL FROM:")]
        self.assertEqual(len(mail), 1, commands)
        self.assertIn("<%s>" % SENDER, mail[0])
        self.assertIn("BODY=8BITMIME", mail[0])
        self.assertRegex(mail[0], r"\bSIZE=\d+")

        # PIPELINING, as Postfix saw the wire: RCPT and DATA went out before
        # the reply to MAIL came back
        peer = r"127\.0\.0\.1\[127\.0\.0\.1\]:%d" % self.vh.port
        conv = [m.group(1, 2) for m in re.finditer(r"(>|<) %s: (.*)" % peer, log)]
        sent = [i for i, (d, text) in enumerate(conv) if d == ">"]
        self.assertTrue(conv, "no SMTP conversation in the Postfix log:\n" + log)

        def first(direction, prefix):
            for i, (d, text) in enumerate(conv):
                if d == direction and text.upper().startswith(prefix):
                    return i
            self.fail("no %s %r in %r" % (direction, prefix, conv))

        self.assertLess(first(">", "RCPT TO:"), first("<", "250 2.1.0"), conv)
        self.assertLess(first(">", "DATA"), first("<", "250 2.1.5"), conv)
        self.assertTrue(sent)


if __name__ == "__main__":
    unittest.main()
