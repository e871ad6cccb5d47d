"""Milters (`ESMTPMilter`) in a real httpd against real filters: opendkim
signing (the signature verifies with python3-dkim, which also proves the
header-leading-space handling), a filter of our own written with
python3-milter (Debian's binding of the real libmilter) exercising every
reply and modification, and filters that are down, close mid-message,
answer garbage or stall, each with every default_action."""

import json
import os
import re
import shutil
import signal
import smtplib
import socket
import struct
import subprocess
import threading
import time
import unittest

from harness import IS_ROOT, MODULESDIR, RUN_USER, Httpd, RawClient, ServerTestCase, free_port, wait_for
from test_lmtp import LMTP, LmtpController, RecordingLmtpHandler

MOD_SSL = os.path.join(MODULESDIR, "mod_ssl.so")

PY = "/usr/bin/python3"
HERE = os.path.dirname(os.path.abspath(__file__))
OPENDKIM = shutil.which("opendkim") or "/usr/sbin/opendkim"
GENKEY = shutil.which("opendkim-genkey") or "/usr/sbin/opendkim-genkey"


def have_module(name):
    return subprocess.run([PY, "-c", "import " + name], capture_output=True).returncode == 0


try:
    import dkim  # python3-dkim
except ImportError:
    dkim = None


def wait_port(port, timeout=15):
    def up():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            return False
    if not wait_for(up, timeout):
        raise AssertionError("nothing listens on port %d" % port)


def stop(proc):
    if proc and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def delivered(vh, before):
    files = wait_for(lambda: len(vh.maildir_files()) > before and vh.maildir_files(), 10)
    if not files:
        raise AssertionError("nothing delivered to %s" % vh.maildir)
    with open(files[-1], "rb") as f:
        return f.read()


# ---------------------------------------------------------------- opendkim

def start_opendkim(d, domain, selector, mode, canonicalization):
    """opendkim -f on a free port with a new key for `selector`._domainkey.`domain`
    in directory `d`: (port, process, its output file, the DNS TXT record)."""
    os.makedirs(d)
    subprocess.run([GENKEY, "-b", "2048", "-d", domain, "-s", selector, "-D", d], check=True)
    port = free_port()
    conf = os.path.join(d, "opendkim.conf")
    with open(conf, "w") as f:
        f.write("Syslog no\nBackground no\nMode %s\nDomain %s\nSelector %s\n"
                "KeyFile %s/%s.private\nSocket inet:%d@127.0.0.1\nPidFile %s/opendkim.pid\n"
                "InternalHosts 127.0.0.1\nRequireSafeKeys no\nCanonicalization %s\n"
                % (mode, domain, selector, d, selector, port, d, canonicalization))
    with open(os.path.join(d, selector + ".txt")) as f:
        txt = "".join(re.findall(r'"([^"]*)"', f.read())).encode()
    log = open(os.path.join(d, "opendkim.out"), "w")
    proc = subprocess.Popen([OPENDKIM, "-f", "-x", conf], stdout=log, stderr=subprocess.STDOUT)
    return port, proc, log, txt


MESSAGE = (b"From: Alice <alice@example.test>\r\n"
           b"To: Bob <bob@smtp1.test>\r\n"
           b"Subject:  two spaces after the colon\r\n"
           b"X-No-Space:value without a space\r\n"
           b"X-Folded: first part\r\n"
           b"\tsecond part\r\n"
           b"Date: Tue, 1 Dec 2026 12:00:00 +0000\r\n"
           b"Message-ID: <dkim-test@example.test>\r\n"
           b"\r\n"
           b"Hello Bob,\r\n"
           b"\r\n"
           b"a signed message.\r\n")


@unittest.skipUnless(os.path.exists(OPENDKIM) and dkim is not None, "opendkim or python3-dkim missing")
class OpendkimTest(ServerTestCase):
    @classmethod
    def configure(cls, httpd):
        cls.dkim_port, cls.proc, cls.log, cls.dns_txt = start_opendkim(
            os.path.join(httpd.root, "dkim"), "example.test", "test", "sv", "simple/simple")
        # stopped even when setUpClass fails (then tearDownClass does not run)
        cls.addClassCleanup(stop, cls.proc)
        wait_port(cls.dkim_port)
        cls.vh = httpd.add_smtp("maildir", accept_domains=["*"], log_file="dkim.log", log_level=3,
                                extra=["ESMTPMilter inet:127.0.0.1:%d" % cls.dkim_port])

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            stop(getattr(cls, "proc", None))
            cls.log.close()

    def verify(self, content):
        def dnsfunc(name, timeout=5):
            self.assertEqual(name, b"test._domainkey.example.test.")
            return self.dns_txt
        return dkim.verify(content, dnsfunc=dnsfunc)

    def test_signature_verifies(self):
        before = len(self.vh.maildir_files())
        with smtplib.SMTP("127.0.0.1", self.vh.port, timeout=60) as s:
            s.sendmail("alice@example.test", ["bob@smtp1.test"], MESSAGE)
        content = delivered(self.vh, before)
        self.assertIn(b"\r\nDKIM-Signature: ", content)
        self.assertTrue(self.verify(content), content[:1500])
        # the message itself is untouched: only the signature was added
        self.assertTrue(content.endswith(MESSAGE[MESSAGE.index(b"From:"):][-60:]))
        self.assertIn(b"Subject:  two spaces after the colon\r\n", content)
        self.assertIn(b"X-No-Space:value without a space\r\n", content)
        # and a changed message no longer verifies (the check can fail)
        self.assertFalse(self.verify(content.replace(b"a signed message", b"a forged message")))

    def test_verdicts_logged(self):
        before = len(self.vh.maildir_files())
        with smtplib.SMTP("127.0.0.1", self.vh.port, timeout=60) as s:
            s.sendmail("alice@example.test", ["bob@smtp1.test"], MESSAGE)
        delivered(self.vh, before)
        lines = wait_for(lambda: [l for l in self.vh.log_lines() if "verdict" in l], 5)
        self.assertTrue(lines)
        self.assertTrue(any("milter inet:127.0.0.1:%d: verdict" % self.dkim_port in l for l in lines))
        self.assertTrue(any("milter inet:127.0.0.1:%d: EOB" % self.dkim_port in l for l in self.vh.log_lines()))
        # opendkim asks for the header values as they are (SMFIP_HDR_LEADSPC)
        steps = [int(m.group(1), 16) for l in self.vh.log_lines()
                 for m in [re.search(r"negotiated actions 0x[0-9a-f]+ steps (0x[0-9a-f]+)", l)] if m]
        self.assertTrue(steps)
        self.assertTrue(steps[-1] & 0x100000, hex(steps[-1]))


# ---------------------------------------------------------------- python3-milter

@unittest.skipUnless(have_module("Milter"), "python3-milter missing")
class PyMilterTest(ServerTestCase):
    @classmethod
    def configure(cls, httpd):
        cls.port = free_port()
        cls.report = os.path.join(httpd.root, "filter-report.jsonl")
        cls.out = open(os.environ.get("MILTER_FILTER_OUT", os.path.join(httpd.root, "filter.out")), "w")
        cls.proc = subprocess.Popen([PY, os.path.join(HERE, "milter_filter.py"),
                                     "inet:%d@127.0.0.1" % cls.port, cls.report],
                                    stdout=cls.out, stderr=subprocess.STDOUT)
        # stopped even when setUpClass fails (then tearDownClass does not run)
        cls.addClassCleanup(stop, cls.proc)
        wait_port(cls.port)
        m = "ESMTPMilter inet:127.0.0.1:%d content_timeout=3" % cls.port
        cls.vh = httpd.add_smtp("maildir", accept_domains=["*"], log_file="py.log", log_level=1, extra=[m])
        cls.tvh = httpd.add_smtp("test", accept_domains=["*"], extra=[m])
        # a front end (nginx, Postfix) names the real client with XCLIENT
        cls.xvh = httpd.add_smtp("maildir", accept_domains=["*"], extra=[m, "ESMTPXClientHosts 127.0.0.1"])
        cls.lvh = None
        if LMTP is not None:
            # the lmtp handler behind the filter, with a real LMTP server
            cls.lmtp_store = RecordingLmtpHandler()
            cls.lmtp_server = LmtpController(cls.lmtp_store, hostname="127.0.0.1", port=free_port(),
                                             server_hostname="lmtp.test")
            cls.lmtp_server.start()
            cls.addClassCleanup(cls.lmtp_server.stop)
            cls.lvh = httpd.add_smtp(["lmtp", "127.0.0.1:%d" % cls.lmtp_server.port], accept_domains=["*"],
                                     log_file="pylmtp.log", log_level=3, extra=[m])
        cls.tls = None
        if os.path.exists(MOD_SSL) and shutil.which("openssl"):
            cert = os.path.join(httpd.root, "conf", "cert.pem")
            key = os.path.join(httpd.root, "conf", "key.pem")
            subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
                            "-keyout", key, "-out", cert, "-days", "2"],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
            httpd.main_extra += ["LoadModule socache_shmcb_module %s" % os.path.join(MODULESDIR, "mod_socache_shmcb.so"),
                                 "LoadModule ssl_module %s" % MOD_SSL, "SSLSessionCache none",
                                 "SSLRandomSeed startup builtin"]
            cls.tls = httpd.add_smtp("maildir", accept_domains=["*"], extra=[
                m, "SSLEngine on", "SSLCertificateFile %s" % cert, "SSLCertificateKeyFile %s" % key])

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            stop(getattr(cls, "proc", None))
            cls.out.close()

    def reports(self):
        try:
            with open(self.report) as f:
                return [json.loads(l) for l in f]
        except FileNotFoundError:
            return []

    def send(self, vh, subject, rcpts=("bob@smtp.test",), body=b"body line\r\n", extra=b""):
        msg = b"From: a@example.net\r\nSubject: " + subject.encode() + b"\r\n" + extra + b"\r\n" + body
        with smtplib.SMTP("127.0.0.1", vh.port, timeout=60) as s:
            s.ehlo("client.example")
            s.mail("sender@example.net")
            for r in rcpts:
                s.rcpt(r)
            return s.data(msg)

    def test_rcpt_replies(self):
        with RawClient(self.vh.port) as c:
            c.reply()
            c.cmd("EHLO client.example")
            self.assertEqual(c.cmd("MAIL FROM:<a@example.net>")[0], 250)
            self.assertEqual(c.cmd("RCPT TO:<reject@smtp.test>"), (550, ["550 5.7.1 Command rejected"]))
            self.assertEqual(c.cmd("RCPT TO:<tempfail@smtp.test>"),
                             (451, ["451 4.7.1 Service unavailable - try again later"]))
            self.assertEqual(c.cmd("RCPT TO:<multiline@smtp.test>"),
                             (550, ["550-5.7.1 first line of three", "550-5.7.1 second line",
                                    "550 5.7.1 third line"]))
            self.assertEqual(c.cmd("RCPT TO:<bob@smtp.test>")[0], 250)  # only the refused ones are refused
            self.assertEqual(c.cmd("QUIT")[0], 221)

    def test_macros_and_header_values(self):
        code, text = self.send(self.vh, "report", extra=b"X-Folded: one\r\n\ttwo\r\nX-Tight:tight\r\n")
        self.assertEqual(code, 250, text)
        r = self.reports()[-1]
        m = r["macros"]
        self.assertEqual(m["{client_addr}"], "127.0.0.1")
        self.assertEqual(m["j"], self.vh.name)
        self.assertEqual(m["{mail_addr}"], "sender@example.net")
        self.assertEqual(m["{rcpt_addr}"], "bob@smtp.test")
        self.assertEqual(m["{daemon_name}"], "mod_esmtp")
        self.assertIn(m["i"], text.decode())  # the queue id
        self.assertEqual(r["helo"], "client.example")
        # libmilter without HDR_LEADSPC: values without the space after the colon
        self.assertIn(["Subject", "report"], r["headers"])
        self.assertIn(["X-Tight", "tight"], r["headers"])
        self.assertIn(["X-Folded", "one\n\ttwo"], r["headers"])
        self.assertEqual(r["body"], "body line\r\n")

    def test_xclient_client_reaches_the_filter(self):
        # the filter hears of the client XCLIENT names, not of the front end
        before = len(self.xvh.maildir_files())
        with RawClient(self.xvh.port) as c:
            self.assertEqual(c.reply()[0], 220)
            self.assertEqual(c.cmd("EHLO front.example")[0], 250)
            self.assertEqual(c.cmd("XCLIENT ADDR=192.0.2.1 NAME=client.example.net")[0], 220)
            self.assertEqual(c.cmd("EHLO client.example")[0], 250)
            self.assertEqual(c.cmd("MAIL FROM:<sender@example.net>")[0], 250)
            self.assertEqual(c.cmd("RCPT TO:<bob@smtp.test>")[0], 250)
            self.assertEqual(c.cmd("DATA")[0], 354)
            code, lines = c.cmd("Subject: report xclient\r\n\r\nbody\r\n.")
            self.assertEqual(code, 250, lines)
        delivered(self.xvh, before)
        r = [x for x in self.reports() if x["subject"] == "report xclient"][-1]
        self.assertEqual(r["macros"]["{client_addr}"], "192.0.2.1")
        self.assertEqual(r["macros"]["{client_name}"], "client.example.net")
        self.assertEqual(r["helo"], "client.example")

    def test_tls_macros(self):
        if self.tls is None:
            self.skipTest("mod_ssl or openssl missing")
        import ssl
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        with smtplib.SMTP_SSL("127.0.0.1", self.tls.port, context=ctx, timeout=60) as s:
            s.ehlo("tls.example")
            s.mail("sender@example.net")
            s.rcpt("bob@smtp.test")
            code, text = s.data(b"From: a@example.net\r\nSubject: report\r\n\r\nover TLS\r\n")
            version, cipher = s.sock.version(), s.sock.cipher()[0]
        self.assertEqual(code, 250, text)
        m = self.reports()[-1]["macros"]
        self.assertEqual(m.get("{tls_version}"), version)
        self.assertEqual(m.get("{cipher}"), cipher)
        # and none without TLS
        self.send(self.vh, "report")
        self.assertNotIn("{tls_version}", self.reports()[-1]["macros"])

    def test_every_modification(self):
        before = len(self.vh.maildir_files())
        code, text = self.send(self.vh, "modify", rcpts=("modify@smtp.test", "keep@smtp.test"),
                               extra=b"X-Remove-Me: gone\r\nX-Keep: kept\r\n")
        self.assertEqual(code, 250, text)
        content = delivered(self.vh, before)
        head, _, body = content.partition(b"\r\n\r\n")
        self.assertEqual(body, b"replaced body\r\nsecond line\r\n")
        self.assertIn(b"\r\nX-Milter-Added: added value", head)
        self.assertIn(b"\r\nSubject: modify: changed by the filter", head)
        self.assertNotIn(b"X-Remove-Me", head)
        self.assertIn(b"X-Keep: kept", head)
        self.assertIn(b"X-Quarantine: suspicious content", head)
        # inserted at index 0: first after the trace fields the handler adds
        fields = [l for l in head.split(b"\r\n") if l and l[:1] not in b" \t"]
        names = [f.split(b":")[0] for f in fields]
        self.assertEqual(names[:2], [b"Return-Path", b"Received"])
        self.assertIn(b"X-Milter-Inserted", names[2:4])
        self.assertTrue(content.startswith(b"Return-Path: <newsender@example.net>\r\n"), content[:80])
        log = "\n".join(self.vh.log_lines())
        self.assertIn("quarantine: suspicious content", log)

    def test_envelope_changes_reach_the_handler(self):
        code, text = self.send(self.tvh, "modify", rcpts=("modify@smtp.test", "keep@smtp.test"))
        self.assertEqual(code, 250, text)
        events = wait_for(lambda: [e for e in self.tvh.event_lines() if e.startswith(("ENVELOPE", "QUARANTINE"))], 5)
        self.assertIn("ENVELOPE <newsender@example.net> BODY=8BITMIME <keep@smtp.test><added@smtp.test>"
                      "<addedpar@smtp.test> NOTIFY=NEVER", events)
        self.assertIn("QUARANTINE suspicious content", events)

    @unittest.skipIf(LMTP is None, "python3-aiosmtpd is not installed")
    def test_envelope_changes_reach_the_lmtp_server(self):
        # the lmtp handler sent MAIL and RCPT at RCPT time; the filter then
        # changed the sender, added two recipients and deleted one
        code, text = self.send(self.lvh, "modify", rcpts=("modify@smtp.test", "keep@smtp.test"))
        self.assertEqual(code, 250, text)
        got = wait_for(lambda: self.lmtp_store.find("keep@smtp.test"), 5)
        self.assertEqual(len(got), 1, got)
        self.assertEqual(got[0]["mail_from"], "newsender@example.net")
        self.assertEqual(got[0]["rcpt_tos"], ["keep@smtp.test", "added@smtp.test", "addedpar@smtp.test"])
        self.assertIn(b"replaced body", got[0]["content"])
        self.assertEqual(self.lmtp_store.find("modify@smtp.test"), [])
        # unchanged envelopes go as they were sent at RCPT time
        code, text = self.send(self.lvh, "plain", rcpts=("other@smtp.test",))
        self.assertEqual(code, 250, text)
        got = wait_for(lambda: self.lmtp_store.find("other@smtp.test"), 5)
        self.assertEqual([(m["mail_from"], m["rcpt_tos"]) for m in got],
                         [("sender@example.net", ["other@smtp.test"])])

    def test_discard(self):
        before = len(self.vh.maildir_files())
        code, text = self.send(self.vh, "discard")
        self.assertEqual(code, 250, text)
        time.sleep(0.3)
        self.assertEqual(len(self.vh.maildir_files()), before)
        self.assertTrue(wait_for(lambda: any("discarded by" in l for l in self.vh.log_lines()), 5))
        # DISCARD at RCPT discards the whole message too
        code, text = self.send(self.vh, "plain", rcpts=("discard@smtp.test", "bob@smtp.test"))
        self.assertEqual(code, 250, text)
        time.sleep(0.3)
        self.assertEqual(len(self.vh.maildir_files()), before)

    def test_reject_at_end_of_message(self):
        code, text = self.send(self.vh, "eomreject")
        self.assertEqual((code, text), (554, b"5.7.1 rejected at end of message by the filter"))

    def test_accept_ends_filtering(self):
        n = len(self.reports())
        before = len(self.vh.maildir_files())
        code, text = self.send(self.vh, "eomreject", rcpts=("accept@smtp.test",))
        self.assertEqual(code, 250, text)  # ACCEPT at RCPT: the filter no longer sees the message
        delivered(self.vh, before)
        self.assertEqual(len(self.reports()), n)

    def test_progress_keeps_a_slow_filter_alive(self):
        # 5 s of work with PROGRESS every second against content_timeout=3
        before = len(self.vh.maildir_files())
        t0 = time.time()
        code, text = self.send(self.vh, "slow")
        self.assertEqual(code, 250, text)
        self.assertGreater(time.time() - t0, 4.5)
        delivered(self.vh, before)

    def test_skip(self):
        body = b"".join(b"line %05d of a long body\r\n" % i for i in range(8000))  # several chunks
        before = len(self.vh.maildir_files())
        code, text = self.send(self.vh, "skip", body=body)
        self.assertEqual(code, 250, text)
        r = self.reports()[-1]
        self.assertEqual(r["body_calls"], 1)  # SKIP: no more body chunks
        self.assertTrue(delivered(self.vh, before).endswith(body))


# ---------------------------------------------------------------- rspamd

RSPAMD = shutil.which("rspamd") or "/usr/bin/rspamd"
GTUBE = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


@unittest.skipUnless(os.path.exists(RSPAMD) and os.path.exists("/etc/rspamd/rspamd.conf"), "rspamd missing")
class RspamdTest(ServerTestCase):
    """rspamd's proxy worker in milter mode (Debian's rspamd, its stock
    configuration with every writable path and every listener moved to the
    test's directory and loopback ports, DNS pointed at a closed port; no
    redis, no network): GTUBE is rejected, a plain message delivered."""

    @classmethod
    def configure(cls, httpd):
        d = os.path.join(httpd.root, "rspamd")
        local = os.path.join(d, "local")
        for sub in ("override.d", "local.d", "db", "run", "log"):
            os.makedirs(os.path.join(local if sub.endswith(".d") else d, sub))
        cls.port = free_port()
        normal, controller = free_port(), free_port()
        files = {
            "override.d/worker-proxy.inc": 'milter = yes;\ntimeout = 120s;\nbind_socket = "127.0.0.1:%d";\n'
                                           'self_scan = yes;\ncount = 1;\n'
                                           'upstream "local" { default = yes; hosts = "127.0.0.1:%d"; }\n'
                                           % (cls.port, normal),
            "override.d/worker-normal.inc": 'bind_socket = "127.0.0.1:%d";\ncount = 1;\n' % normal,
            "override.d/worker-controller.inc": 'bind_socket = "127.0.0.1:%d";\ncount = 1;\n' % controller,
            "override.d/logging.inc": 'type = "file";\nfilename = "%s/log/rspamd.log";\nlevel = "notice";\n' % d,
            "local.d/options.inc": 'dns { nameserver = ["127.0.0.1:1"]; timeout = 0.1s; retransmits = 0; }\n',
        }
        for name, text in files.items():
            with open(os.path.join(local, name), "w") as f:
                f.write(text)
        cmd = [RSPAMD, "-f", "-c", "/etc/rspamd/rspamd.conf", "--var", "LOCAL_CONFDIR=" + local,
               "--var", "DBDIR=" + os.path.join(d, "db"), "--var", "RUNDIR=" + os.path.join(d, "run"),
               "--var", "LOGDIR=" + os.path.join(d, "log")]
        if IS_ROOT:
            cmd[2:2] = ["-i", "-u", "root", "-g", "root"]
        cls.out = open(os.path.join(d, "rspamd.out"), "w")
        cls.proc = subprocess.Popen(cmd, stdout=cls.out, stderr=subprocess.STDOUT, start_new_session=True)
        # stopped even when setUpClass fails (then tearDownClass does not run)
        cls.addClassCleanup(stop, cls.proc)
        wait_port(cls.port, timeout=90)  # rspamd compiles its rules at start: seconds on a busy machine
        cls.vh = httpd.add_smtp("maildir", accept_domains=["*"],
                                extra=["ESMTPMilter inet:127.0.0.1:%d content_timeout=60" % cls.port])

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            stop(getattr(cls, "proc", None))
            cls.out.close()

    def send(self, body):
        with smtplib.SMTP("127.0.0.1", self.vh.port, timeout=90) as s:
            s.ehlo("client.example")
            s.mail("alice@example.net")
            s.rcpt("bob@smtp.test")
            return s.data(b"From: alice@example.net\r\nTo: bob@smtp.test\r\nSubject: rspamd\r\n"
                          b"Date: Tue, 1 Dec 2026 12:00:00 +0000\r\nMessage-ID: <rspamd-%d@example.net>\r\n\r\n"
                          % int(time.time() * 1000) + body)

    def test_gtube_rejected_ham_delivered(self):
        code, text = self.send(b"This is the GTUBE test string:\r\n" + GTUBE + b"\r\n")
        # rspamd's reject action, as its REPLYCODE says it
        self.assertEqual((code, text), (554, b"5.7.1 Gtube pattern"))
        self.assertEqual(self.vh.maildir_files(), [])
        before = len(self.vh.maildir_files())
        code, text = self.send(b"Hello Bob, a plain message.\r\n")
        self.assertEqual(code, 250, text)
        delivered(self.vh, before)


# ---------------------------------------------------------------- filters that fail

class BadFilter(threading.Thread):
    """Negotiates, then misbehaves at one command: "close" at the first body
    chunk, "garbage" at MAIL, "stall" at RCPT (answers nothing), "stall-eob"
    at end of body; "bigheader" adds a header of almost 1 MiB at end of body,
    "manyheaders" 2,000 headers. "noaccept": listens with a full backlog and
    never accepts, so that a connect() hangs (the kernel drops the SYN)."""

    def __init__(self, mode):
        super().__init__(daemon=True)
        self.mode = mode
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(0 if mode == "noaccept" else 16)
        self.port = self.sock.getsockname()[1]
        self.stopping = False
        self.fillers = []
        if mode == "noaccept":
            # the accept queue (backlog 0 holds one) is full: later SYNs are dropped
            for _ in range(3):
                c = socket.socket()
                c.setblocking(False)
                c.connect_ex(("127.0.0.1", self.port))
                self.fillers.append(c)

    def run(self):
        if self.mode == "noaccept":
            return
        self.sock.settimeout(0.2)
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self.serve, args=(c,), daemon=True).start()

    def serve(self, c):
        buf = b""
        try:
            while True:
                data = c.recv(65536)
                if not data:
                    return
                buf += data
                while len(buf) >= 4:
                    n = struct.unpack(">I", buf[:4])[0]
                    if len(buf) < 4 + n:
                        break
                    cmd = buf[4:5]
                    buf = buf[4 + n:]
                    if cmd == b"O":
                        # SMFIF_ADDHDRS (0x01) for the modes that add headers
                        c.sendall(struct.pack(">IcIII", 13, b"O", 6, 1 if "header" in self.mode else 0, 0))
                    elif cmd == b"E" and "header" in self.mode:
                        big = self.mode == "bigheader"
                        h = [b"X-Big\0" + b"x" * (1024 * 1024 - 100) + b"\0"] if big else \
                            [b"X-Many\0%d\0" % i for i in range(2000)]
                        c.sendall(b"".join(struct.pack(">Ic", len(p) + 1, b"h") + p for p in h) +
                                  struct.pack(">Ic", 1, b"c"))
                    elif cmd in (b"D", b"A"):
                        pass
                    elif cmd == b"Q":
                        return
                    elif self.mode == "close" and cmd == b"B":
                        return
                    elif self.mode == "garbage" and cmd == b"M":
                        c.sendall(b"\x7f\xff\xff\xffgarbage")
                    elif (self.mode == "stall" and cmd == b"R") or (self.mode == "stall-eob" and cmd == b"E"):
                        time.sleep(30)
                        return
                    else:
                        c.sendall(struct.pack(">Ic", 1, b"c"))
        except OSError:
            pass
        finally:
            c.close()

    def stop(self):
        self.stopping = True
        self.join(5)
        self.sock.close()
        for c in self.fillers:
            c.close()


ACTIONS = ("accept", "reject", "tempfail")


class FailingMilterTest(ServerTestCase):
    allowed_log = (r"\[esmtp:error\].*milter inet:127\.0\.0\.1:\d+: ",)

    @classmethod
    def configure(cls, httpd):
        cls.filters = {m: BadFilter(m) for m in ("close", "garbage", "stall", "stall-eob", "noaccept", "bigheader",
                                                 "manyheaders")}
        for f in cls.filters.values():
            f.start()
        down = free_port()
        cls.vhs = {}
        for mode in ("down", "close", "garbage", "stall", "stall-eob", "noaccept", "bigheader", "manyheaders"):
            port = down if mode == "down" else cls.filters[mode].port
            for act in ACTIONS:
                cls.vhs[mode, act] = httpd.add_smtp(
                    "maildir", accept_domains=["*"],
                    extra=["ESMTPMilter inet:127.0.0.1:%d command_timeout=2 content_timeout=2 "
                           "connect_timeout=2 default_action=%s" % (port, act)])

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            for f in getattr(cls, "filters", {}).values():
                f.stop()

    def transaction(self, vh):
        """Replies: greeting, MAIL, RCPT, end of data (None after a refusal)."""
        out = {}
        with RawClient(vh.port, timeout=30) as c:
            out["greeting"] = c.reply()[0]
            if out["greeting"] != 220:
                return out
            c.cmd("EHLO client.example")
            out["mail"] = c.cmd("MAIL FROM:<a@example.net>")[0]
            if out["mail"] != 250:
                return out
            out["rcpt"] = c.cmd("RCPT TO:<b@smtp.test>")[0]
            if out["rcpt"] != 250:
                return out
            self.assertEqual(c.cmd("DATA")[0], 354)
            c.send(b"Subject: x\r\n\r\nbody\r\n.\r\n")
            out["eom"] = c.reply()[0]
            c.cmd("QUIT")
        return out

    def check(self, mode, stage):
        for act in ACTIONS:
            vh = self.vhs[mode, act]
            before = len(vh.maildir_files())
            t0 = time.time()
            out = self.transaction(vh)
            self.assertLess(time.time() - t0, 20)
            if act == "accept":
                self.assertEqual(out.get("eom"), 250, (mode, act, out))
                delivered(vh, before)
            else:
                # a greeting is 220, 554 or 421 (RFC 5321 4.3.2)
                want = {"reject": 554 if stage == "greeting" else 550,
                        "tempfail": 421 if stage == "greeting" else 451}[act]
                self.assertEqual(out.get(stage), want, (mode, act, out))
                self.assertEqual(len(vh.maildir_files()), before)

    def test_not_listening(self):
        self.check("down", "greeting")

    def test_garbage(self):
        self.check("garbage", "mail")

    def test_stall_past_timeout(self):
        self.check("stall", "rcpt")

    def test_close_mid_message(self):
        self.check("close", "eom")

    def test_stall_past_content_timeout(self):
        self.check("stall-eob", "eom")

    def test_what_a_filter_adds_is_bounded(self):
        # as a failed filter: with default_action=accept delivered without its headers
        for mode, why in (("bigheader", "header X-Big of 1048481 octets (at most 102400)"),
                          ("manyheaders", "more than 1000 header fields added")):
            self.check(mode, "eom")
            self.assertTrue(any(why in l for l in self.httpd.log_lines()), why)
            vh = self.vhs[mode, "accept"]
            with open(sorted(vh.maildir_files(), key=os.path.getmtime)[-1], "rb") as f:
                head = f.read().partition(b"\r\n\r\n")[0]
            self.assertNotIn(b"X-Big", head)
            self.assertNotIn(b"X-Many", head)

    def test_connect_timeout(self):
        self.check("noaccept", "greeting")
        port = self.filters["noaccept"].port
        self.assertTrue(any("milter inet:127.0.0.1:%d: CONNECT: cannot connect: connect timed out" % port in l
                            for l in self.httpd.log_lines()))


class MilterConfigTest(unittest.TestCase):
    def test_bad_directives_fail_config_test(self):
        for line, words in (("ESMTPMilter", "needs a socket"),
                            ("ESMTPMilter 127.0.0.1:8891", "expected inet:"),
                            ("ESMTPMilter inet:127.0.0.1:0", "port"),
                            ("ESMTPMilter inet:[::1]:8891", "inet6:"),
                            ("ESMTPMilter unix:relative.sock", "absolute"),
                            ("ESMTPMilter inet:127.0.0.1:8891 default_action=maybe", "default_action"),
                            ("ESMTPMilter inet:127.0.0.1:8891 command_timeout=0", "command_timeout"),
                            ("ESMTPMilter inet:127.0.0.1:8891 colour=blue", "unknown option")):
            with self.subTest(line=line):
                httpd = Httpd()
                try:
                    httpd.add_smtp("discard", extra=[line])
                    rc, out = httpd.config_test()
                    self.assertNotEqual(rc, 0, "accepted %r:\n%s" % (line, out))
                    self.assertIn("ESMTPMilter: ", out)
                    self.assertIn(words, out)
                finally:
                    httpd.cleanup()

    def test_good_directives_pass(self):
        httpd = Httpd()
        try:
            httpd.add_smtp("discard", extra=[
                "ESMTPMilter inet:127.0.0.1:8891",
                "ESMTPMilter inet6:[::1]:8892 connect_timeout=5 command_timeout=10 content_timeout=60 "
                "default_action=accept",
                "ESMTPMilter unix:/run/milter.sock default_action=reject",
                "ESMTPMilterSpoolDir spool"])
            rc, out = httpd.config_test()
            self.assertEqual(rc, 0, out)
        finally:
            httpd.cleanup()


class MilterInheritanceTest(ServerTestCase):
    """The main server's ESMTPMilter list is inherited by a virtual host that
    sets none, and replaced by one that sets its own; ESMTPMilterSpoolDir is
    where the message waits (and nothing is left there)."""

    allowed_log = (r"\[esmtp:error\].*milter inet:127\.0\.0\.1:\d+: ",
                   r"\[esmtp:error\].*milter: cannot create a spool file in ")

    @classmethod
    def configure(cls, httpd):
        cls.down = free_port()
        cls.filter = BadFilter("none")
        cls.filter.start()
        httpd.main_extra = list(httpd.main_extra) + [
            "ESMTPMilter inet:127.0.0.1:%d default_action=reject connect_timeout=2" % cls.down]
        cls.inherits = httpd.add_smtp("maildir", accept_domains=["*"])
        cls.spool = os.path.join(httpd.root, "spool")
        os.makedirs(cls.spool)
        if IS_ROOT:
            shutil.chown(cls.spool, RUN_USER)
        cls.own = httpd.add_smtp("maildir", accept_domains=["*"], extra=[
            "ESMTPMilter inet:127.0.0.1:%d" % cls.filter.port, "ESMTPMilterSpoolDir %s" % cls.spool])
        cls.nospool = httpd.add_smtp("maildir", accept_domains=["*"], extra=[
            "ESMTPMilter inet:127.0.0.1:%d" % cls.filter.port,
            "ESMTPMilterSpoolDir %s" % os.path.join(httpd.root, "no-such-dir")])

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            cls.filter.stop()

    def test_inherited(self):
        with RawClient(self.inherits.port) as c:
            self.assertEqual(c.reply(), (554, ["554 Access denied"]))  # greetings carry no enhanced code

    def test_own_list_and_spool(self):
        body = b"".join(b"line %06d of a body bigger than a socket buffer\r\n" % i for i in range(5000))
        before = len(self.own.maildir_files())
        with smtplib.SMTP("127.0.0.1", self.own.port, timeout=30) as s:
            s.sendmail("a@example.net", ["b@smtp.test"], b"Subject: spooled\r\n\r\n" + body)
        self.assertTrue(delivered(self.own, before).endswith(body))
        self.assertEqual(os.listdir(self.spool), [])

    def test_unusable_spool_dir(self):
        with smtplib.SMTP("127.0.0.1", self.nospool.port, timeout=30) as s:
            s.ehlo()
            s.mail("a@example.net")
            s.rcpt("b@smtp.test")
            code, text = s.data(b"Subject: nowhere\r\n\r\nbody\r\n")
        self.assertEqual(code, 451, text)
        self.assertTrue(text.startswith(b"4.3.0 "), text)
        self.assertEqual(self.nospool.maildir_files(), [])


if __name__ == "__main__":
    unittest.main()
