"""Certificates that renew themselves (issue 14): mod_md obtains the SMTP
vhosts' certificate from an ACME server and mod_ssl serves it for STARTTLS,
implicit TLS and the HTTPS vhost that publishes the MTA-STS policy
(RFC 8461); a renewal takes effect at a graceful restart without losing an
open transaction.

The ACME server is pebble (Let's Encrypt's test CA, Debian package pebble)
on loopback, with a real http-01 validation: pebble-challtestsrv (same
package) is pebble's DNS server and answers 127.0.0.1 for every name, so
pebble fetches http://mail.example.org:PORT/.well-known/acme-challenge/...
from this httpd, where mod_md answers it (MDPortMap maps port 80 to PORT).

The configuration is conf/esmtp-md.conf as shipped (ports and paths
moved). The steps run in order (test_1 ... test_6) on one httpd: the fallback
state before the first certificate, the certificate after the graceful
restart, delivery over STARTTLS and implicit TLS, the MTA-STS policy, and
a forced renewal."""

import json
import os
import re
import shutil
import smtplib
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

from harness import (KEEP_ALWAYS, MODULESDIR, TOP_SRCDIR, Httpd, free_port, listening_ports, q, split_delivered,
                     unexpected_log_lines, wait_for)

MOD_SSL = os.path.join(MODULESDIR, "mod_ssl.so")
MOD_SHMCB = os.path.join(MODULESDIR, "mod_socache_shmcb.so")
MOD_MD = os.path.join(MODULESDIR, "mod_md.so")
OPENSSL = shutil.which("openssl")
PEBBLE = shutil.which("pebble")
CHALLTESTSRV = shutil.which("pebble-challtestsrv")
SWAKS = shutil.which("swaks")
CURL = shutil.which("curl")

DOMAIN = "example.org"  # the sample's (pebble-challtestsrv resolves every name to 127.0.0.1)
MX = "mail." + DOMAIN
MTA_STS = "mta-sts." + DOMAIN
POLICY = "version: STSv1\r\nmode: enforce\r\nmx: %s\r\nmax_age: 604800\r\n" % MX

# mod_md and mod_ssl messages this test provokes: the fallback certificate
# (AH10085: "will respond with '503 Service Unavailable' for now"), mod_ssl's
# session-cache hint (AH01873), the certificate being ready (AH10059), the
# event MPM's own restart race (AH03092, as in test_restart.py) and
# mod_esmtp's notice about the fallback.
ALLOWED_LOG = (r"AH10085|AH01873|AH10059|AH03092|has no TLS certificate yet",)


def run(args, timeout=60, **kw):
    return subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout, **kw)


def must_replace(text, old, new):
    if old not in text:
        raise AssertionError("conf/esmtp-md.conf no longer has %r" % old)
    return text.replace(old, new)


class Vhost:
    """An SMTP port of the sample, all delivering into one Maildir."""

    def __init__(self, port, maildir):
        self.port = port
        self.maildir = maildir

    def maildir_files(self):
        d = os.path.join(self.maildir, "new")
        return sorted(os.path.join(d, n) for n in os.listdir(d) if not n.startswith("."))


class Pebble:
    """pebble and pebble-challtestsrv on loopback, in a temporary directory,
    stopped by pid."""

    def __init__(self, http_port, tls_port):
        self.dir = tempfile.mkdtemp(prefix="esmtp-pebble-")
        # mod_md's watchdog runs in a child (nobody when started as root)
        # and reads MDCACertificateFile from here
        os.chmod(self.dir, 0o755)
        self.acme_port, self.mgmt_port, self.dns_port, self.chall_mgmt_port = (free_port() for _ in range(4))
        self.cert = os.path.join(self.dir, "pebble.pem")
        key = os.path.join(self.dir, "pebble.key")
        # pebble's own listener certificate (trusted by mod_md through
        # MDCACertificateFile); the CA it issues from is generated at start.
        run([OPENSSL, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=pebble",
             "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", key, "-out", self.cert,
             "-days", "2"], check=True)
        self.config = os.path.join(self.dir, "pebble.json")
        with open(self.config, "w") as f:
            json.dump({"pebble": {
                "listenAddress": "127.0.0.1:%d" % self.acme_port,
                "managementListenAddress": "127.0.0.1:%d" % self.mgmt_port,
                "certificate": self.cert, "privateKey": key,
                # where pebble validates http-01 and tls-alpn-01: this httpd
                "httpPort": http_port, "tlsPort": tls_port,
                "ocspResponderURL": "", "externalAccountBindingRequired": False}}, f)
        self.procs = []
        self.root = None

    @property
    def directory_url(self):
        return "https://127.0.0.1:%d/dir" % self.acme_port

    def _spawn(self, name, args, env):
        log = open(os.path.join(self.dir, name + ".log"), "wb")
        try:
            p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                 start_new_session=True, close_fds=True, env=env, cwd=self.dir)
        finally:
            log.close()
        self.procs.append(p)
        return p

    def log(self, name="pebble", tail=4000):
        try:
            with open(os.path.join(self.dir, name + ".log"), encoding="utf-8", errors="replace") as f:
                text = f.read()
                return text[-tail:] if tail else text
        except FileNotFoundError:
            return ""

    def start(self, timeout=30):
        """Starts both and fetches pebble's root; raises when they do not come up."""
        env = dict(os.environ)
        # No artificial sleeps before validation, no nonces rejected on purpose
        # (5 % by default: mod_md retries, but only after 24 s and more).
        env.update(PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT="0", PEBBLE_AUTHZREUSE="0")
        self._spawn("challtestsrv", [CHALLTESTSRV, "-dns01", "127.0.0.1:%d" % self.dns_port,
                                     "-management", "127.0.0.1:%d" % self.chall_mgmt_port,
                                     "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "",
                                     "-http01", "", "-https01", "", "-tlsalpn01", ""], env)
        self._spawn("pebble", [PEBBLE, "-config", self.config, "-strict=false",
                               "-dnsserver", "127.0.0.1:%d" % self.dns_port], env)
        want = {self.acme_port, self.mgmt_port, self.chall_mgmt_port}
        deadline = time.time() + timeout
        while time.time() < deadline:
            for p in self.procs:
                if p.poll() is not None:
                    raise RuntimeError("pebble or pebble-challtestsrv exited with %s:\n%s\n%s" % (
                        p.returncode, self.log("challtestsrv"), self.log()))
            if want <= listening_ports():
                break
            time.sleep(0.1)
        else:
            raise RuntimeError("pebble did not listen within %ss:\n%s" % (timeout, self.log()))
        # The CA's root is made at every start: fetch it from the management port.
        ctx = ssl.create_default_context(cafile=self.cert)
        ctx.check_hostname = False
        with urllib.request.urlopen("https://127.0.0.1:%d/roots/0" % self.mgmt_port, context=ctx,
                                    timeout=20) as r:
            pem = r.read()
        self.root = os.path.join(self.dir, "root.pem")
        with open(self.root, "wb") as f:
            f.write(pem)

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(10)
        self.procs = []

    def cleanup(self, keep=False):
        self.stop()
        if keep or KEEP_ALWAYS:
            sys.stderr.write("kept pebble directory %s\n" % self.dir)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)


def parse_sts_policy(text):
    """An MTA-STS policy as RFC 8461 section 3.2 defines it: key/value lines
    (`*WSP ":" *WSP`, LF or CRLF), `version: STSv1` present, `mode` one of
    enforce/testing/none, `max_age` at most 31557600 (1*10DIGIT), one or
    more `mx` (a host name, `*.` allowed in front) unless mode is none;
    other keys are extensions. Only the first of a repeated key counts,
    except mx. Raises ValueError."""
    fields, mx = {}, []
    for line in re.split(r"\r?\n", text):
        if line == "":
            continue
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9_.-]{0,31})[ \t]*:[ \t]*([\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?)"
                         r"[ \t]*", line)
        if not m:
            raise ValueError("not a policy field: %r" % line)
        key, value = m.group(1), m.group(2)
        if key == "mx":
            if not re.fullmatch(r"(\*\.)?([A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z0-9-]+", value):
                raise ValueError("bad mx pattern %r" % value)
            mx.append(value.lower())
        else:
            fields.setdefault(key, value)
    if fields.get("version") != "STSv1":
        raise ValueError("no version: STSv1")
    if fields.get("mode") not in ("enforce", "testing", "none"):
        raise ValueError("bad mode %r" % fields.get("mode"))
    if not re.fullmatch(r"[0-9]{1,10}", fields.get("max_age", "")) or int(fields["max_age"]) > 31557600:
        raise ValueError("bad max_age %r" % fields.get("max_age"))
    if fields["mode"] != "none" and not mx:
        raise ValueError("no mx")
    return {"mode": fields["mode"], "max_age": int(fields["max_age"]), "mx": mx}


def mx_matches(pattern, host):
    """RFC 8461 4.1: a `*.` pattern matches exactly one left-most label."""
    host = host.lower()
    if pattern.startswith("*."):
        return "." in host and host.split(".", 1)[1] == pattern[2:]
    return host == pattern


class ParsePolicyTest(unittest.TestCase):
    """The parser the MTA-STS test relies on refuses what RFC 8461 refuses."""

    def test_parser(self):
        p = parse_sts_policy(POLICY)
        self.assertEqual(p, {"mode": "enforce", "max_age": 604800, "mx": [MX]})
        self.assertEqual(parse_sts_policy("version:STSv1\nmode : testing\nmx: a.example\nmx: *.b.example\n"
                                          "max_age: 86400\nfoo: bar\n")["mx"], ["a.example", "*.b.example"])
        for bad in ("mode: enforce\nmx: a.example\nmax_age: 1\n",
                    "version: STSv2\nmode: enforce\nmx: a.example\nmax_age: 1\n",
                    "version: STSv1\nmode: strict\nmx: a.example\nmax_age: 1\n",
                    "version: STSv1\nmode: enforce\nmax_age: 1\n",
                    "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 31557601\n",
                    "version: STSv1\nmode: enforce\nmx: a.*.example\nmax_age: 1\n",
                    "<html>\n"):
            with self.assertRaises(ValueError, msg=bad):
                parse_sts_policy(bad)
        self.assertTrue(mx_matches("*.example.org", MX))
        self.assertFalse(mx_matches("*.org", MX))
        self.assertTrue(mx_matches(MX, MX.upper()))


def s_client(args, stdin=b"QUIT\r\n"):
    """openssl s_client: (exit status, output)."""
    p = subprocess.run([OPENSSL, "s_client"] + args, input=stdin, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=60)
    return p.returncode, p.stdout.decode("utf-8", "replace")


def peer_certificate(out):
    """(serial, issuer) of the certificate an s_client output shows."""
    m = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", out, re.S)
    if not m:
        raise AssertionError("no certificate in:\n" + out)
    p = subprocess.run([OPENSSL, "x509", "-noout", "-serial", "-issuer", "-nameopt", "oneline"],
                       input=m.group(0).encode(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    text = p.stdout.decode()
    return re.search(r"serial=(\S+)", text).group(1), re.search(r"issuer=\s*(.*)", text).group(1)


@unittest.skipUnless(os.path.exists(MOD_SSL) and os.path.exists(MOD_MD) and OPENSSL,
                     "mod_ssl, mod_md or openssl missing")
@unittest.skipUnless(PEBBLE and CHALLTESTSRV, "pebble missing (Debian package pebble, in quickstart.sh's PACKAGES)")
class MdTestBase(unittest.TestCase):
    """One httpd, one managed domain (mail.example.org and
    mta-sts.example.org): the MX with STARTTLS, submission with implicit TLS
    and with STARTTLS Required, the HTTPS vhost of the MTA-STS policy, and
    the HTTP vhost mod_md answers http-01 challenges on."""

    @classmethod
    def adapt(cls, sample):
        """Changes a test class makes to the sample (none here)."""
        return sample

    @classmethod
    def setUpClass(cls):
        cls._failed = False
        # The ports are chosen before pebble starts and bound by httpd a
        # few seconds later: another program may take one meanwhile. Then
        # everything starts again on new ports.
        for attempt in range(3):
            cls.http_port, cls.https_port = free_port(), free_port()
            cls.pebble = Pebble(cls.http_port, cls.https_port)
            cls.httpd = None
            try:
                cls.pebble.start()
                cls.httpd = Httpd(log_level="warn esmtp:info md:notice", prefix="esmtp-md-")
                cls.configure(cls.httpd)
                cls.httpd.start()
                return
            except BaseException as e:
                retry = attempt < 2 and "address already in use" in str(e).lower()
                cls.pebble.cleanup(keep=not retry)
                if cls.httpd:
                    cls.httpd.cleanup(keep=not retry)
                if not retry:
                    raise

    @classmethod
    def configure(cls, httpd):
        """conf/esmtp-md.conf as shipped, with its ports, paths and the CA
        moved to the test's: what is tested is the sample."""
        r = httpd.root
        cls.policy_root = os.path.join(r, "mta-sts")
        os.makedirs(os.path.join(cls.policy_root, ".well-known"))
        with open(os.path.join(cls.policy_root, ".well-known", "mta-sts.txt"), "w", newline="") as f:
            f.write(POLICY)
        maildir = os.path.join(r, "Maildir")
        for sub in ("tmp", "new", "cur"):
            os.makedirs(os.path.join(maildir, sub))
        cls.mx, cls.smtps, cls.submission = (Vhost(free_port(), maildir) for _ in range(3))
        with open(os.path.join(TOP_SRCDIR, "conf", "esmtp-md.conf")) as f:
            sample = f.read()
        ports = {"25": cls.mx.port, "465": cls.smtps.port, "587": cls.submission.port,
                 "80": cls.http_port, "443": cls.https_port}
        for old, new in ports.items():
            sample = must_replace(sample, "<VirtualHost *:%s>" % old, "<VirtualHost 127.0.0.1:%d>" % new)
            if old in ("25", "465", "587"):
                sample = must_replace(sample, "Listen %s smtp" % old, "Listen 127.0.0.1:%d smtp" % new)
        sample = must_replace(sample, "#Listen 80\n", "Listen 127.0.0.1:%d http\n" % cls.http_port)
        sample = must_replace(sample, "#Listen 443 https", "Listen 127.0.0.1:%d https" % cls.https_port)
        sample = must_replace(sample, "/var/www/mta-sts", cls.policy_root)
        sample = must_replace(sample, "/var/lib/esmtp/Maildir", q(maildir))
        # the CA is pebble; mod_md's store in the ServerRoot; pebble
        # validates "port 80" (http-01) and "port 443" (tls-alpn-01) on ours
        sample = must_replace(sample, "    MDomain ", "\n".join([
            "    MDStoreDir %s" % q(os.path.join(r, "md")),
            "    MDCertificateAuthority %s" % cls.pebble.directory_url,
            "    MDCACertificateFile %s" % q(cls.pebble.cert),
            "    MDPortMap http:%d https:%d" % (cls.http_port, cls.https_port),
            "    MDomain "]))
        sample = cls.adapt(sample)
        cls.store = os.path.join(r, "md")
        httpd.main_extra += [
            "LoadModule socache_shmcb_module %s" % q(MOD_SHMCB),
            "LoadModule ssl_module %s" % q(MOD_SSL),
            "LoadModule md_module %s" % q(MOD_MD),
            "SSLSessionCache none",
            "SSLRandomSeed startup builtin",
            sample]
        cls.sample = sample

    @classmethod
    def tearDownClass(cls):
        httpd = cls.httpd
        httpd.stop()
        bad = httpd.check_log(ALLOWED_LOG) + unexpected_log_lines(httpd.stderr_lines(), ALLOWED_LOG)
        failed = cls._failed or bool(bad)
        if failed:
            sys.stderr.write("\n--- error log (%s)\n%s\n--- pebble\n%s\n" % (
                httpd.error_log, "\n".join(httpd.log_lines()[-60:]), cls.pebble.log()))
        httpd.cleanup(keep=failed)
        cls.pebble.cleanup(keep=failed)
        if bad:
            raise AssertionError("unexpected error-log lines:\n" + "\n".join(bad))

    def setUp(self):
        self.httpd.new_log_lines()

    def tearDown(self):
        outcome = getattr(self, "_outcome", None)
        if outcome is not None and not getattr(outcome, "success", True):
            type(self)._failed = True
        bad = self.httpd.check_log(ALLOWED_LOG)
        if bad:
            type(self)._failed = True
            self.fail("unexpected error-log lines:\n" + "\n".join(bad))

    # ---- helpers

    def count_log(self, text):
        return self.httpd._read_log_text().count(text)

    def wait_certificate(self, before, timeout=90):
        """Waits for mod_md's AH10059 ("has been setup and changes will be
        activated on next (graceful) server restart") number before+1, then
        for its watchdog to have finished the job (job.json in the staging
        area says so): a child that exits at a graceful restart while
        mod_md's watchdog is still busy may crash inside mod_md or OpenSSL
        (icing/mod_md#293, "the order in which watchdog tasks and server
        shut down is not coordinated"), which is not what this test is
        about."""
        ok = wait_for(lambda: self.count_log("AH10059") > before, timeout, 0.2)
        self.assertTrue(ok, "mod_md got no certificate within %ss:\n%s\n--- pebble\n%s" % (
            timeout, "\n".join(self.httpd.log_lines()[-30:]), self.pebble.log()))
        job = os.path.join(self.store, "staging", MX, "job.json")

        def done():
            try:
                with open(job) as f:
                    j = json.load(f)
            except (OSError, ValueError):
                return False
            return j.get("finished") and j.get("notified-renewed")
        self.assertTrue(wait_for(done, 30, 0.1), "mod_md's job did not finish: %s" % job)
        time.sleep(1)  # the watchdog saves the job and goes back to sleep

    def verifying_context(self):
        return ssl.create_default_context(cafile=self.pebble.root)

    def starttls_certificate(self):
        """openssl s_client -starttls smtp on the MX: (serial, issuer)."""
        rc, out = s_client(["-starttls", "smtp", "-connect", "127.0.0.1:%d" % self.mx.port,
                            "-servername", MX, "-CAfile", self.pebble.root, "-verify_hostname", MX,
                            "-verify_return_error"])
        self.assertEqual(rc, 0, out)
        self.assertIn("Verify return code: 0 (ok)", out)
        return peer_certificate(out)

    def implicit_certificate(self):
        # the handshake only (a QUIT before the greeting would be refused
        # as a synchronization error); smtplib speaks SMTP on it below
        rc, out = s_client(["-connect", "127.0.0.1:%d" % self.smtps.port, "-servername", MX,
                            "-CAfile", self.pebble.root, "-verify_hostname", MX, "-verify_return_error"],
                           stdin=b"")
        self.assertEqual(rc, 0, out)
        self.assertIn("Verify return code: 0 (ok)", out)
        return peer_certificate(out)

    def received_of_new(self, before):
        """Received: of the one message delivered since `before` (a set of
        the Maildir's files; all ports share one Maildir)."""
        new = wait_for(lambda: set(self.mx.maildir_files()) - before, 10)
        self.assertEqual(len(new), 1, new)
        with open(new.pop(), "rb") as f:
            return split_delivered(f.read())[1]

    def restart_with(self, extra_lines):
        """Rewrites httpd.conf (the sample with `extra_lines` before its
        MDomain) and restarts gracefully."""
        text = self.sample.replace("    MDomain ", "".join("    %s\n" % l for l in extra_lines) + "    MDomain ", 1)
        self.httpd.main_extra[-1] = text
        self.httpd.write_config()
        self.httpd.restart(graceful=True, timeout=60)



class ManagedDomainTest(MdTestBase):
    """The sample as shipped: http-01 validation, then the steps in order."""

    # ---- the steps, in order

    def test_1_fallback_no_starttls_plaintext_mail(self):
        """Before the first certificate mod_ssl serves mod_md's self-signed
        fallback: STARTTLS is neither advertised nor accepted (454), plain
        mail goes on; submission with STARTTLS Required answers 454 (try
        later); the HTTPS vhost answers 503 as mod_ssl does."""
        before = set(self.mx.maildir_files())
        with smtplib.SMTP("127.0.0.1", self.mx.port, timeout=30) as s:
            code, text = s.ehlo("fallback.example")
            self.assertEqual(code, 250)
            self.assertFalse(s.has_extn("starttls"), text)
            self.assertEqual(s.docmd("STARTTLS")[0], 454)
            s.mail("a@client.example")
            s.rcpt("b@" + DOMAIN)
            code, text = s.data(b"Subject: before the certificate\r\n\r\nplain\r\n")
            self.assertEqual(code, 250, text)
        self.assertIn(" with ESMTP ", self.received_of_new(before))
        self.assertIn("has no TLS certificate yet", "\n".join(self.httpd.log_lines()))
        with smtplib.SMTP("127.0.0.1", self.submission.port, timeout=30) as s:
            code, text = s.ehlo("fallback.example")
            self.assertFalse(s.has_extn("starttls"), text)
            code, text = s.docmd("MAIL", "FROM:<a@client.example>")
            self.assertEqual((code, text), (454, b"4.7.0 TLS not available due to temporary reason"))
        # implicit TLS has no plaintext to fall back on: the fallback
        # certificate is served (and fails verification)
        rc, out = s_client(["-connect", "127.0.0.1:%d" % self.smtps.port, "-servername", MX])
        self.assertIn("Apache Managed Domain Fallback", out)
        if CURL:
            p = run([CURL, "-sk", "-o", "/dev/null", "-w", "%{http_code}", "--resolve",
                     "%s:%d:127.0.0.1" % (MTA_STS, self.https_port),
                     "https://%s:%d/.well-known/mta-sts.txt" % (MTA_STS, self.https_port)])
            self.assertEqual(p.stdout.decode(), "503")

    def test_2_certificate_after_graceful_restart(self):
        """mod_md gets the certificate from pebble (a real http-01 challenge
        answered by this httpd); after the graceful restart openssl
        s_client -starttls smtp sees it, issued by pebble, verified with
        pebble's root for mail.example.org."""
        self.wait_certificate(0)
        self.httpd.restart(graceful=True, timeout=60)
        serial, issuer = self.starttls_certificate()
        self.assertIn("Pebble Intermediate CA", issuer)
        type(self).serial = serial
        with smtplib.SMTP("127.0.0.1", self.mx.port, timeout=30) as s:
            s.ehlo("after.example")
            self.assertTrue(s.has_extn("starttls"))

    @unittest.skipUnless(SWAKS, "swaks missing")
    def test_3_swaks_starttls_verified(self):
        before = set(self.mx.maildir_files())
        p = run([SWAKS, "--server", "127.0.0.1", "--port", str(self.mx.port), "--tls", "--tls-verify",
                 "--tls-ca-path", self.pebble.root, "--tls-sni", MX, "--helo", "swaks.example",
                 "--from", "a@client.example", "--to", "b@" + DOMAIN, "--timeout", "30"])
        out = p.stdout.decode("utf-8", "replace")
        self.assertEqual(p.returncode, 0, out)
        self.assertIn("TLS started", out)
        self.assertIn(" with ESMTPS ", self.received_of_new(before))

    def test_3b_submission_starttls_required(self):
        """Port 587 (ESMTPStartTLS Required) with the managed certificate:
        530 before STARTTLS, delivery after it (verified for the name)."""
        before = set(self.mx.maildir_files())
        with smtplib.SMTP("127.0.0.1", self.submission.port, timeout=30) as s:
            s.ehlo("submit.example")
            self.assertEqual(s.docmd("MAIL", "FROM:<a@client.example>")[0], 530)
            s._host = MX  # the name smtplib's starttls() verifies
            s.starttls(context=self.verifying_context())
            s.ehlo("submit.example")
            s.sendmail("a@client.example", ["b@" + DOMAIN], b"Subject: submission\r\n\r\n587\r\n")
        self.assertIn(" with ESMTPS ", self.received_of_new(before))

    def test_4_implicit_tls_same_certificate(self):
        serial, issuer = self.implicit_certificate()
        self.assertEqual(serial, self.serial)
        self.assertIn("Pebble Intermediate CA", issuer)
        ctx = self.verifying_context()
        before = set(self.mx.maildir_files())
        with self.smtps_session(ctx) as s:
            s.ehlo("submit.example")
            s.mail("a@client.example")
            s.rcpt("b@" + DOMAIN)
            code, text = s.data(b"Subject: implicit\r\n\r\nover TLS\r\n")
            self.assertEqual(code, 250, text)
        self.assertIn(" with ESMTPS ", self.received_of_new(before))

    def smtps_session(self, ctx):
        """smtplib over implicit TLS to 127.0.0.1, verifying the name MX."""
        class Smtps(smtplib.SMTP_SSL):
            def _get_socket(inner, host, port, timeout):
                sock = socket.create_connection(("127.0.0.1", port), timeout)
                return ctx.wrap_socket(sock, server_hostname=MX)
        return Smtps(MX, self.smtps.port, context=ctx, timeout=30)

    @unittest.skipUnless(CURL, "curl missing")
    def test_5_mta_sts_policy(self):
        """https://mta-sts.example.org/.well-known/mta-sts.txt from the same
        httpd with the managed certificate (curl verifies it with pebble's
        root), 200, text/plain, a policy as RFC 8461 section 3.2 says whose
        mx names the MX vhost."""
        url = "https://%s:%d/.well-known/mta-sts.txt" % (MTA_STS, self.https_port)
        p = run([CURL, "-sS", "--proto", "=https", "--max-redirs", "0", "--cacert", self.pebble.root,
                 "--resolve", "%s:%d:127.0.0.1" % (MTA_STS, self.https_port),
                 "-D", "-", url])
        out = p.stdout.decode("utf-8", "replace")
        self.assertEqual(p.returncode, 0, out)
        head, _, body = out.replace("\r\n", "\n").partition("\n\n")
        self.assertRegex(head, r"^HTTP/\S+ 200")
        self.assertRegex(head.lower(), r"\ncontent-type: text/plain")
        policy = parse_sts_policy(body)
        self.assertEqual(policy["mode"], "enforce")
        self.assertTrue(any(mx_matches(m, MX) for m in policy["mx"]), policy)

    def test_6_renewal_without_losing_a_transaction(self):
        """A forced renewal (MDRenewWindow longer than the certificate's
        life: mod_md renews at once), then the graceful restart that
        activates it while a transaction over STARTTLS is open: the
        transaction completes, an idle TLS session gets 421 4.3.2, new
        sessions get the new certificate (another serial, still pebble's)."""
        before = self.count_log("AH10059")
        self.restart_with(["MDRenewWindow 3650d"])
        self.wait_certificate(before)
        ctx = self.verifying_context()
        before = set(self.mx.maildir_files())
        busy = smtplib.SMTP("127.0.0.1", self.mx.port, timeout=60)
        idle = smtplib.SMTP("127.0.0.1", self.mx.port, timeout=60)
        try:
            for s in (busy, idle):
                s.ehlo("renewal.example")
                s._host = MX  # the name smtplib's starttls() verifies
                s.starttls(context=ctx)
                s.ehlo("renewal.example")
            self.assertEqual(int(busy.sock.getpeercert()["serialNumber"], 16), int(self.serial, 16))
            busy.mail("a@client.example")
            busy.rcpt("b@" + DOMAIN)
            # activates the staged certificate; without the window again,
            # renewals go back to their normal pace
            self.restart_with([])
            code, text = busy.data(b"Subject: across the renewal\r\n\r\nstill here\r\n")
            self.assertEqual(code, 250, text)
            busy.quit()
            # the idle session is told to go away, over TLS
            code, text = idle.getreply()
            self.assertEqual(code, 421, text)
            self.assertIn(b"4.3.2", text)
        finally:
            for s in (busy, idle):
                try:
                    s.close()
                except OSError:
                    pass
        self.assertIn(" with ESMTPS ", self.received_of_new(before))
        new_serial, issuer = self.starttls_certificate()
        self.assertNotEqual(int(new_serial, 16), int(self.serial, 16), "the renewed certificate is not served")
        self.assertIn("Pebble Intermediate CA", issuer)
        self.assertEqual(self.implicit_certificate()[0], new_serial)


class TlsAlpn01Test(MdTestBase):
    """The tls-alpn-01 challenge instead of http-01: no port 80
    (`MDPortMap http:-`), `MDCAChallenges tls-alpn-01`, and `Protocols
    http/1.1 acme-tls/1` in the port-443 vhost, as mod_md documents. pebble
    validates over TLS on the MTA-STS vhost's port; the SMTP vhosts get the
    certificate the same way."""

    @classmethod
    def adapt(cls, sample):
        sample = must_replace(sample, "    MDPortMap http:%d https:%d" % (cls.http_port, cls.https_port),
                              "    MDPortMap http:- https:%d\n    MDCAChallenges tls-alpn-01" % cls.https_port)
        return must_replace(sample, "        ServerName %s\n        SSLEngine on\n" % MTA_STS,
                            "        ServerName %s\n        SSLEngine on\n        Protocols http/1.1 acme-tls/1\n"
                            % MTA_STS)

    def test_certificate_through_tls_alpn_01(self):
        self.wait_certificate(0)
        # mod_md's record of the job: both names validated by tls-alpn-01
        with open(os.path.join(self.store, "staging", MX, "job.json")) as f:
            job = f.read()
        for name in (MX, MTA_STS):
            self.assertIn("message-challenge-setup:tls-alpn-01:" + name, job)
        self.assertNotIn("http-01", job)
        self.assertNotIn("validate w/ HTTP", self.pebble.log(tail=None))
        self.httpd.restart(graceful=True, timeout=60)
        serial, issuer = self.starttls_certificate()
        self.assertIn("Pebble Intermediate CA", issuer)
        self.assertEqual(self.implicit_certificate()[0], serial)


if __name__ == "__main__":
    unittest.main()
