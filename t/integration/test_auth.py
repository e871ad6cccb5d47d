"""SMTP AUTH and submission (issue 10): AUTH PLAIN and LOGIN checked by
httpd's own authn providers (an htpasswd file made by `htpasswd -bcB`, a
DBM file made by `htdbm`, chained through <AuthnProviderAlias>), driven by
real clients (swaks, Python's smtplib, msmtp, a private Postfix relaying
with smtp_sasl_auth_enable), every negative case of the issue, the
configuration check, and no password in any log at ESMTPLogLevel 3."""

import base64
import os
import shutil
import smtplib
import subprocess
import textwrap
import time
import unittest

import test_postfix
from harness import MODULESDIR, Httpd, RawClient, ServerTestCase, q, split_delivered, wait_for
from test_starttls import client_context, make_cert, ssl_main_lines, ssl_vhost_lines, tls_wrap

HTPASSWD = shutil.which("htpasswd")
HTDBM = shutil.which("htdbm")
SWAKS = shutil.which("swaks")
MSMTP = shutil.which("msmtp")
OPENSSL = shutil.which("openssl")
MOD_SSL = os.path.join(MODULESDIR, "mod_ssl.so")

# alice and bob are in the htpasswd file, dave only in the DBM file (the
# second provider of the chain).
USERS_FILE = {"alice@example.org": "Alice-Pw-7f3kQ", "bob": "Bob-Pw-x1Zr8"}
USERS_DBM = {"dave@example.org": "Dave-Pw-9q2zW"}
WRONG = "Wrong-Pw-4u8mT"
PASSWORDS = list(USERS_FILE.values()) + list(USERS_DBM.values()) + [WRONG]

AUTHN_MODULES = ["authn_core", "authn_file", "authn_dbm"]


def plain(user, password, authzid=""):
    return base64.b64encode(("%s\0%s\0%s" % (authzid, user, password)).encode()).decode()


def b64(s):
    return base64.b64encode(s.encode()).decode()


def secret_forms():
    """Every form a password could take in a log: plain, base64 alone, and
    the PLAIN message of each user."""
    forms = set()
    for pw in PASSWORDS:
        forms.add(pw)
        forms.add(b64(pw))
        for user in list(USERS_FILE) + list(USERS_DBM):
            forms.add(plain(user, pw))
    return forms


def authn_lines(conf_dir):
    """LoadModule lines, the two files, and the aliases over them."""
    pwfile = os.path.join(conf_dir, "users.htpasswd")
    dbmfile = os.path.join(conf_dir, "users.dbm")
    first = True
    for user, pw in USERS_FILE.items():
        subprocess.run([HTPASSWD, "-bB" + ("c" if first else ""), pwfile, user, pw], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
        first = False
    for user, pw in USERS_DBM.items():
        subprocess.run([HTDBM, "-bc", dbmfile, user, pw], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=30)
    # the children (nobody) read them
    for name in os.listdir(conf_dir):
        if name.startswith("users."):
            os.chmod(os.path.join(conf_dir, name), 0o644)
    lines = ["LoadModule %s_module %s" % (m, q(os.path.join(MODULESDIR, "mod_%s.so" % m))) for m in AUTHN_MODULES]
    lines += ["<AuthnProviderAlias file smtp-file>",
              "    AuthUserFile %s" % q(pwfile),
              "</AuthnProviderAlias>",
              "<AuthnProviderAlias dbm smtp-dbm>",
              "    AuthDBMUserFile %s" % q(dbmfile),
              "</AuthnProviderAlias>"]
    return lines


def msmtp_conf(directory, port, user, password, ca=None, starttls=True, auth="on"):
    """An msmtprc in `directory` for TLS (STARTTLS, or implicit when not
    `starttls`) and AUTH as `user` on 127.0.0.1:`port`; the certificate
    checked against `ca` when given. `auth`: on, plain, login..."""
    conf = os.path.join(directory, "msmtprc")
    with open(conf, "w") as f:
        f.write(textwrap.dedent("""\
            account default
            host 127.0.0.1
            port {port}
            domain client.example
            tls on
            tls_starttls {starttls}
            {check}
            auth {auth}
            user {user}
            password {pw}
            from {user}
            """).format(port=port, user=user, pw=password, starttls="on" if starttls else "off", auth=auth,
                        check="tls_trust_file " + ca if ca else "tls_certcheck off"))
    os.chmod(conf, 0o600)
    return conf


AUTH_LINES = ["ESMTPAuth PLAIN LOGIN", "ESMTPAuthProvider smtp-file smtp-dbm", "ESMTPAuthFailureDelay 0.1"]


def missing():
    for name, path in (("htpasswd", HTPASSWD), ("htdbm", HTDBM), ("openssl", OPENSSL)):
        if not path:
            return "%s missing (apache2-utils, openssl)" % name
    if not os.path.exists(MOD_SSL):
        return "mod_ssl missing"
    return None


@unittest.skipIf(missing(), missing())
class AuthTest(ServerTestCase):

    # the vhost with a bare "file" provider (no AuthUserFile): provoked on purpose
    allowed_log = (r"AH01619: AuthUserFile not specified", r"esmtp: AUTH user bob: authn provider file failed")

    @classmethod
    def configure(cls, httpd):
        conf = os.path.join(httpd.root, "conf")
        cert, key = make_cert(conf)
        httpd.main_extra += ssl_main_lines() + authn_lines(conf)
        # 587: STARTTLS Required, submission, sender must match the login
        cls.sub = httpd.add_smtp("maildir", server_name="submit.example.org", accept_domains=["example.org"],
                                 log_file="sub.log", log_level=3,
                                 extra=ssl_vhost_lines(cert, key, "Required") + AUTH_LINES + [
                                     "ESMTPSubmission On", "ESMTPSenderLoginMatch On"])
        # 465: implicit TLS, submission
        cls.smtps = httpd.add_smtp("maildir", server_name="smtps.example.org", accept_domains=["example.org"],
                                   log_file="smtps.log", log_level=3,
                                   extra=ssl_vhost_lines(cert, key) + AUTH_LINES + ["ESMTPSubmission On"])
        # an MX that also takes AUTH after STARTTLS (not required)
        cls.mx = httpd.add_smtp("maildir", server_name="mx.example.org", accept_domains=["example.org"],
                                log_file="mx.log", log_level=3,
                                extra=ssl_vhost_lines(cert, key, "On") + AUTH_LINES)
        # no TLS at all: AUTH only because ESMTPAuthRequireTLS Off (unsafe)
        cls.plain = httpd.add_smtp("maildir", server_name="plain.example.org", accept_domains=["example.org"],
                                   log_file="plain.log", log_level=3,
                                   extra=AUTH_LINES + ["ESMTPAuthRequireTLS Off"])
        # a provider without its configuration: every attempt is a backend error
        cls.broken = httpd.add_smtp("maildir", server_name="broken.example.org", accept_domains=["example.org"],
                                    extra=["ESMTPAuth PLAIN", "ESMTPAuthProvider file", "ESMTPAuthRequireTLS Off",
                                           "ESMTPMaxAuthFailures 1"])
        # ESMTPSenderLoginMatch with a map file
        senders = os.path.join(conf, "senders.map")
        with open(senders, "w") as f:
            f.write("# sender        logins\nsales@example.org  alice@example.org, bob\n@example.org alice@example.org\n")
        cls.mapped = httpd.add_smtp("maildir", server_name="mapped.example.org", accept_domains=["example.org"],
                                    extra=AUTH_LINES + ["ESMTPAuthRequireTLS Off",
                                                        "ESMTPSenderLoginMatch %s" % q(senders),
                                                        "ESMTPAuthProxyUsers bob"])
        # bcrypt cost 9, no failure delay: the time to a 535 is the provider's
        slow = os.path.join(conf, "users-slow.htpasswd")
        subprocess.run([HTPASSWD, "-bcB", "-C", "9", slow, "bob", USERS_FILE["bob"]], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
        os.chmod(slow, 0o644)
        httpd.main_extra += ["<AuthnProviderAlias file smtp-slow>", "    AuthUserFile %s" % q(slow),
                             "</AuthnProviderAlias>"]
        cls.timed = httpd.add_smtp("maildir", server_name="timed.example.org", accept_domains=["example.org"],
                                   extra=["ESMTPAuth PLAIN", "ESMTPAuthProvider smtp-slow", "ESMTPAuthRequireTLS Off",
                                          "ESMTPAuthFailureDelay 0", "ESMTPMaxAuthFailures 0"])
        # ESMTPClientAuthRate, loopback not exempt
        cls.rated = httpd.add_smtp("maildir", server_name="rated.example.org", accept_domains=["example.org"],
                                   extra=AUTH_LINES + ["ESMTPAuthRequireTLS Off", "ESMTPClientAuthRate 2/600",
                                                       "ESMTPClientLimitExceptions none"])

    # --- helpers

    def received_of(self, vh, count=1):
        files = wait_for(lambda: len(vh.maildir_files()) >= count and vh.maildir_files(), 10)
        self.assertTrue(files, "nothing delivered to %s" % vh.server_name)
        with open(files[-1], "rb") as f:
            _, received, _ = split_delivered(f.read())
        return received

    def clear(self, vh):
        for f in vh.maildir_files():
            os.unlink(f)

    def tls_client(self, vh):
        """A RawClient after EHLO, STARTTLS and EHLO again."""
        c = RawClient(vh.port)
        self.assertEqual(c.reply()[0], 220)
        c.cmd("EHLO client.example")
        self.assertEqual(c.cmd("STARTTLS")[0], 220)
        tls_wrap(c)
        code, lines = c.cmd("EHLO client.example")
        self.assertEqual(code, 250)
        return c, lines

    # --- real clients

    @unittest.skipUnless(SWAKS, "swaks missing")
    def test_swaks_plain_and_login_with_provider_chain(self):
        self.clear(self.sub)
        for mech, user, pw in (("PLAIN", "alice@example.org", USERS_FILE["alice@example.org"]),
                               ("LOGIN", "dave@example.org", USERS_DBM["dave@example.org"])):
            p = subprocess.run([SWAKS, "--server", "127.0.0.1:%d" % self.sub.port, "--tls", "--auth", mech,
                                "--auth-user", user, "--auth-password", pw, "--from", user,
                                "--to", "someone@elsewhere.example", "--ehlo", "client.example",
                                "--header", "Subject: swaks %s" % mech],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
            out = p.stdout.decode("utf-8", "replace")
            self.assertEqual(p.returncode, 0, out)
            self.assertIn("235 2.7.0 Authentication successful", out)
        received = self.received_of(self.sub, 2)
        self.assertIn(" with ESMTPSA ", received)
        log = "\n".join(self.sub.log_lines())
        self.assertIn("AUTH LOGIN user=dave@example.org: authenticated", log)
        self.assertIn("user=alice@example.org", log)

    def test_smtplib_starttls_login(self):
        with smtplib.SMTP("127.0.0.1", self.sub.port, timeout=30) as s:
            s.ehlo("client.example")
            self.assertFalse(s.has_extn("auth"))  # not before TLS
            s.starttls(context=client_context())
            s.ehlo("client.example")
            self.assertIn("PLAIN", s.esmtp_features["auth"].upper())
            code, _ = s.login("bob", USERS_FILE["bob"])
            self.assertEqual(code, 235)
            s.sendmail("bob@example.org", ["friend@elsewhere.example"], b"Subject: smtplib\r\n\r\nhi\r\n")

    def test_smtp_ssl_login(self):
        self.clear(self.smtps)
        with smtplib.SMTP_SSL("127.0.0.1", self.smtps.port, context=client_context(), timeout=30) as s:
            s.ehlo("client.example")
            code, _ = s.login("dave@example.org", USERS_DBM["dave@example.org"])
            self.assertEqual(code, 235)
            s.sendmail("dave@example.org", ["friend@elsewhere.example"], b"Subject: 465\r\n\r\nhi\r\n")
        self.assertIn(" with ESMTPSA ", self.received_of(self.smtps))

    @unittest.skipUnless(MSMTP, "msmtp missing")
    def test_msmtp(self):
        self.clear(self.sub)
        conf = msmtp_conf(self.httpd.root, self.sub.port, "alice@example.org", USERS_FILE["alice@example.org"])
        p = subprocess.run([MSMTP, "-C", conf, "friend@elsewhere.example"],
                           input=b"Subject: msmtp\r\nFrom: alice@example.org\r\n\r\nhello from msmtp\r\n",
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
        self.assertEqual(p.returncode, 0, p.stdout.decode("utf-8", "replace"))
        self.assertIn(" with ESMTPSA ", self.received_of(self.sub))

    def test_plaintext_auth_when_tls_not_required(self):
        self.clear(self.plain)
        with smtplib.SMTP("127.0.0.1", self.plain.port, timeout=30) as s:
            s.ehlo("client.example")
            self.assertTrue(s.has_extn("auth"))
            self.assertEqual(s.login("bob", USERS_FILE["bob"])[0], 235)
            s.sendmail("bob@example.org", ["friend@elsewhere.example"], b"Subject: plain\r\n\r\nhi\r\n")
        self.assertIn(" with ESMTPA ", self.received_of(self.plain))

    # --- negative cases

    def test_auth_before_tls(self):
        # STARTTLS On: AUTH not advertised, 538 when tried
        with RawClient(self.mx.port) as c:
            c.reply()
            code, lines = c.cmd("EHLO client.example")
            self.assertFalse([l for l in lines if "AUTH" in l], lines)
            code, lines = c.cmd("AUTH PLAIN " + plain("bob", USERS_FILE["bob"]))
            self.assertEqual(lines, ["538 5.7.11 Encryption required for requested authentication mechanism"])
        # STARTTLS Required: the 530 of the verb table comes first
        with RawClient(self.sub.port) as c:
            c.reply()
            c.cmd("EHLO client.example")
            self.assertEqual(c.cmd("AUTH LOGIN")[1], ["530 5.7.0 Must issue a STARTTLS command first"])

    def test_submission_needs_auth(self):
        c, lines = self.tls_client(self.sub)
        with c:
            self.assertIn("AUTH PLAIN LOGIN", [l[4:] for l in lines])
            self.assertEqual(c.cmd("MAIL FROM:<alice@example.org>")[1], ["530 5.7.0 Authentication required"])

    def test_relay_needs_auth(self):
        c, _ = self.tls_client(self.mx)
        with c:
            self.assertEqual(c.cmd("MAIL FROM:<x@client.example>")[0], 250)
            self.assertEqual(c.cmd("RCPT TO:<y@elsewhere.example>")[1], ["550 5.7.1 Relay access denied"])
            self.assertEqual(c.cmd("RCPT TO:<y@example.org>")[0], 250)
            c.cmd("RSET")
            self.assertEqual(c.cmd("AUTH PLAIN " + plain("bob", USERS_FILE["bob"]))[0], 235)
            self.assertEqual(c.cmd("MAIL FROM:<x@client.example> AUTH=<>")[0], 250)
            self.assertEqual(c.cmd("RCPT TO:<y@elsewhere.example>")[0], 250)
            self.assertEqual(c.cmd("AUTH LOGIN")[1], ["503 5.5.1 Error: MAIL transaction in progress"])
            c.cmd("RSET")
            self.assertEqual(c.cmd("AUTH LOGIN")[1], ["503 5.5.1 Error: already authenticated"])

    def test_sender_login_mismatch(self):
        c, _ = self.tls_client(self.sub)
        with c:
            self.assertEqual(c.cmd("AUTH PLAIN " + plain("alice@example.org", USERS_FILE["alice@example.org"]))[0],
                             235)
            self.assertEqual(c.cmd("MAIL FROM:<ceo@bank.example>")[1],
                             ["553 5.7.1 <ceo@bank.example>: Sender address rejected: not owned by user "
                              "alice@example.org"])
            self.assertEqual(c.cmd("MAIL FROM:<alice@example.org>")[0], 250)

    def test_sender_login_map(self):
        with RawClient(self.mapped.port) as c:
            c.reply()
            c.cmd("EHLO client.example")
            self.assertEqual(c.cmd("MAIL FROM:<sales@example.org>")[1],
                             ["553 5.7.1 <sales@example.org>: Sender address rejected: not logged in"])
            self.assertEqual(c.cmd("AUTH PLAIN " + plain("bob", USERS_FILE["bob"]))[0], 235)
            self.assertEqual(c.cmd("MAIL FROM:<sales@example.org>")[0], 250)
            c.cmd("RSET")
            self.assertEqual(c.cmd("MAIL FROM:<bob@example.org>")[1],
                             ["553 5.7.1 <bob@example.org>: Sender address rejected: not owned by user bob"])

    def test_proxy_user_acts_for_another(self):
        # ESMTPAuthProxyUsers bob: bob's password, then alice's identity
        # (and alice's senders in the map); alice may not act for bob
        as_alice = plain("bob", USERS_FILE["bob"], authzid="alice@example.org")
        as_bob = plain("alice@example.org", USERS_FILE["alice@example.org"], authzid="bob")
        with RawClient(self.mapped.port) as c:
            c.reply()
            c.cmd("EHLO client.example")
            self.assertEqual(c.cmd("AUTH PLAIN " + as_bob)[1], ["535 5.7.8 Error: authentication failed"])
            self.assertEqual(c.cmd("AUTH PLAIN " + as_alice)[0], 235)
            self.assertEqual(c.cmd("MAIL FROM:<alice@example.org>")[0], 250)
            c.cmd("RSET")
            self.assertEqual(c.cmd("MAIL FROM:<sales@example.org>")[0], 250)  # owned by alice too

    def test_wrong_password_unknown_user_and_limit(self):
        c, _ = self.tls_client(self.sub)
        with c:
            started = time.monotonic()
            self.assertEqual(c.cmd("AUTH PLAIN " + plain("alice@example.org", WRONG))[1],
                             ["535 5.7.8 Error: authentication failed"])
            # ESMTPAuthFailureDelay 0.1: the refusal is not immediate
            self.assertGreaterEqual(time.monotonic() - started, 0.09)
            self.assertEqual(c.cmd("AUTH LOGIN")[1], ["334 VXNlcm5hbWU6"])
            self.assertEqual(c.cmd(b64("nobody@example.org"))[1], ["334 UGFzc3dvcmQ6"])
            self.assertEqual(c.cmd(b64(WRONG))[1], ["535 5.7.8 Error: authentication failed"])
            # dave is in the DBM file only: the chain reaches it, the password is wrong
            self.assertEqual(c.cmd("AUTH PLAIN " + plain("dave@example.org", WRONG))[1],
                             ["421 4.7.0 submit.example.org Error: too many authentication failures"])
            self.assertEqual(c.rest(), "")
        log = "\n".join(self.sub.log_lines())
        self.assertIn("too many authentication failures (3)", log)

    def test_unknown_user_answered_as_slowly_as_wrong_password(self):
        def attempt(c, user):
            t0 = time.monotonic()
            self.assertEqual(c.cmd("AUTH PLAIN " + plain(user, WRONG))[0], 535)
            return time.monotonic() - t0
        with RawClient(self.timed.port) as c:
            c.reply()
            c.cmd("EHLO client.example")
            for _ in range(3):  # this process learns what a known user costs
                attempt(c, "bob")
            known, unknown = [], []
            for _ in range(8):
                known.append(attempt(c, "bob"))
                unknown.append(attempt(c, "nobody-here"))
        known.sort()
        unknown.sort()
        # medians: without equal work the unknown user was ~50 times faster
        self.assertGreater(unknown[4], known[4] * 0.5, (known, unknown))

    def test_provider_error_is_454_and_not_counted(self):
        with RawClient(self.broken.port) as c:
            c.reply()
            c.cmd("EHLO client.example")
            for _ in range(2):  # ESMTPMaxAuthFailures 1: a counted failure would close
                self.assertEqual(c.cmd("AUTH PLAIN " + plain("bob", USERS_FILE["bob"]))[1],
                                 ["454 4.7.0 Temporary authentication failure"])
            self.assertEqual(c.cmd("NOOP")[0], 250)
        lines = wait_for(lambda: [l for l in self.httpd.log_lines() if "authn provider file failed" in l], 5)
        self.assertTrue(lines)

    def test_client_auth_rate(self):
        with RawClient(self.rated.port) as c:
            c.reply()
            c.cmd("EHLO client.example")
            self.assertEqual(c.cmd("AUTH PLAIN " + plain("bob", WRONG))[0], 535)
        with RawClient(self.rated.port) as c:  # counted per client, across sessions
            c.reply()
            c.cmd("EHLO client.example")
            self.assertEqual(c.cmd("AUTH LOGIN")[0], 334)
            self.assertEqual(c.cmd("*")[0], 501)
            self.assertEqual(c.cmd("AUTH PLAIN " + plain("bob", USERS_FILE["bob"]))[1],
                             ["450 4.7.1 Error: too many AUTH commands from 127.0.0.1"])
            self.assertEqual(c.cmd("NOOP")[0], 250)

    def test_cancel_garbage_and_bad_plain(self):
        c, _ = self.tls_client(self.sub)
        with c:
            self.assertEqual(c.cmd("AUTH PLAIN")[1], ["334 "])
            self.assertEqual(c.cmd("*")[1], ["501 5.7.0 Authentication aborted"])
            self.assertEqual(c.cmd("AUTH PLAIN")[1], ["334 "])
            self.assertEqual(c.cmd("%%% not base64 %%%")[1], ["501 5.5.2 Cannot decode response"])
            self.assertEqual(c.cmd("AUTH PLAIN " + b64("no nul at all"))[1],
                             ["501 5.5.2 Invalid PLAIN response: [authzid] NUL user NUL password"])
            self.assertEqual(c.cmd("AUTH PLAIN " + plain("bob", USERS_FILE["bob"], authzid="alice@example.org"))[1],
                             ["535 5.7.8 Error: authentication failed"])
            self.assertEqual(c.cmd("AUTH LOGIN " + base64.b64encode(b"b\xe9la").decode())[1],
                             ["501 5.5.2 Invalid user name: UTF-8 without control characters, at most 255 octets"])
            self.assertEqual(c.cmd("AUTH CRAM-MD5")[1], ["504 5.5.4 Unsupported authentication mechanism"])
            self.assertEqual(c.cmd("AUTH PLAIN " + "A" * 600)[1], ["500 5.5.2 Line too long"])
            # none of these locked the client out: the right password still works
            self.assertEqual(c.cmd("AUTH PLAIN " + plain("bob", USERS_FILE["bob"]))[0], 235)

    # --- Postfix as a SASL client

    @unittest.skipIf(test_postfix.SKIP_REASON, test_postfix.SKIP_REASON or "")
    def test_postfix_relays_with_sasl(self):
        self.clear(self.sub)
        pf = test_postfix.PrivatePostfix(self.sub.port)
        ok = False
        try:
            # Postfix's TLS needs its tlsmgr service
            with open(os.path.join(pf.config_dir, "master.cf"), "a") as f:
                f.write("tlsmgr    unix  -       -       n       1000?   1       tlsmgr\n")
            with open(os.path.join(pf.config_dir, "main.cf"), "a") as f:
                f.write(textwrap.dedent("""\
                    smtp_sasl_auth_enable = yes
                    smtp_sasl_password_maps = static:alice@example.org:{pw}
                    smtp_sasl_security_options = noanonymous
                    smtp_sasl_tls_security_options = noanonymous
                    smtp_sasl_mechanism_filter = plain, login
                    smtp_tls_security_level = encrypt
                    """).format(pw=USERS_FILE["alice@example.org"]))
            pf.start()
            rc, out = pf.run(test_postfix._which("sendmail"), "-C", pf.config_dir, "-f", "alice@example.org",
                             "friend@elsewhere.example",
                             stdin=b"From: alice@example.org\nTo: friend@elsewhere.example\nSubject: via postfix\n"
                                   b"\nrelayed with SASL\n")
            self.assertEqual(rc, 0, out)
            files = wait_for(self.sub.maildir_files, 60)
            self.assertTrue(files, "no delivery within 60 s; Postfix log:\n" + pf.log_text())
            received = self.received_of(self.sub)
            self.assertIn(" with ESMTPSA ", received)
            self.assertIn("relayed with SASL", open(files[0], encoding="utf-8", errors="replace").read())
            ok = True
        finally:
            pf.cleanup(keep=not ok)

    # --- last: nothing logged the passwords

    def test_zz_no_password_in_any_log(self):
        # make sure every kind of exchange ran at least once in this class
        c, _ = self.tls_client(self.mx)
        with c:
            c.cmd("AUTH LOGIN")
            c.cmd(b64("bob"))
            c.cmd(b64(WRONG))
            # the server ends the exchange (501) while the client still sends its password
            self.assertEqual(c.cmd("AUTH LOGIN " + base64.b64encode(b"b\x01ob").decode())[0], 501)
            self.assertEqual(c.cmd(b64(USERS_FILE["bob"]))[0], 500)
            c.cmd("AUTH PLAIN")
            c.cmd(plain("bob", USERS_FILE["bob"]))
        time.sleep(0.2)
        logs = [self.httpd.error_log] + [vh.log_path for vh in (self.sub, self.smtps, self.mx, self.plain)]
        text = ""
        for path in logs:
            with open(path, encoding="utf-8", errors="replace") as f:
                text += f.read()
        self.assertIn("< AUTH PLAIN ********", text)
        self.assertIn("< ******** (SASL response)", text)
        self.assertIn("< ******** (line after an ended AUTH exchange)", text)
        for secret in secret_forms():
            self.assertNotIn(secret, text)


@unittest.skipIf(missing(), missing())
class SampleSubmissionConfigTest(ServerTestCase):
    """conf/esmtp-submission.conf (ports, certificate, user file and
    Maildir moved into the test's root) runs: AUTH on 587 after STARTTLS
    and on 465, submission and the sender/login match as configured."""

    @classmethod
    def configure(cls, httpd):
        import re
        from harness import TOP_SRCDIR, free_port
        conf = os.path.join(httpd.root, "conf")
        cert, key = make_cert(conf)
        # the LoadModule lines; the sample brings its own alias
        httpd.main_extra += ssl_main_lines() + [l for l in authn_lines(conf) if l.startswith("LoadModule")]
        with open(os.path.join(TOP_SRCDIR, "conf", "esmtp-submission.conf")) as f:
            sample = f.read()
        cls.p587, cls.p465 = free_port(), free_port()
        cls.maildir = os.path.join(httpd.root, "Outgoing")
        for sub in ("tmp", "new", "cur"):
            os.makedirs(os.path.join(cls.maildir, sub))
        sample = sample.replace("Listen 587 smtp", "Listen 127.0.0.1:%d smtp" % cls.p587)
        sample = sample.replace("Listen 465 smtp", "Listen 127.0.0.1:%d smtp" % cls.p465)
        sample = sample.replace("<VirtualHost *:587>", "<VirtualHost 127.0.0.1:%d>" % cls.p587)
        sample = sample.replace("<VirtualHost *:465>", "<VirtualHost 127.0.0.1:%d>" % cls.p465)
        sample = sample.replace("/etc/apache2/smtp-users", q(os.path.join(conf, "users.htpasswd")))
        sample = sample.replace("ESMTPAuthFailureDelay 1", "ESMTPAuthFailureDelay 0.1")
        sample = re.sub(r"(SSLCertificateFile\s+)\S+", lambda m: m.group(1) + q(cert), sample)
        sample = re.sub(r"(SSLCertificateKeyFile\s+)\S+", lambda m: m.group(1) + q(key), sample)
        sample = re.sub(r"(ESMTPHandler\s+maildir\s+)\S+", lambda m: m.group(1) + q(cls.maildir), sample)
        httpd.main_extra.append(sample)
        # the harness's ports list drives the start-up probe
        httpd.add_smtp("maildir", accept_domains=["*"])

    def test_sample_587_and_465(self):
        user, pw = "alice@example.org", USERS_FILE["alice@example.org"]
        with smtplib.SMTP("127.0.0.1", self.p587, timeout=30) as s:
            s.ehlo("client.example")
            code, text = s.mail(user)
            self.assertEqual(code, 530, text)  # STARTTLS Required comes first
            s.rset()
            s.starttls(context=client_context())
            s.ehlo("client.example")
            self.assertEqual(s.mail(user), (530, b"5.7.0 Authentication required"))
            s.rset()
            self.assertEqual(s.login(user, pw)[0], 235)
            self.assertEqual(s.mail("someone@else.example")[0], 553)
            s.rset()
            s.sendmail(user, ["friend@elsewhere.example"], b"Subject: 587\r\n\r\nhi\r\n")
        with smtplib.SMTP_SSL("127.0.0.1", self.p465, context=client_context(), timeout=30) as s:
            s.ehlo("client.example")
            self.assertEqual(s.login(user, pw)[0], 235)
            s.sendmail(user, ["friend@elsewhere.example"], b"Subject: 465\r\n\r\nhi\r\n")
        new = os.path.join(self.maildir, "new")
        files = wait_for(lambda: len(os.listdir(new)) == 2 and os.listdir(new), 10)
        self.assertTrue(files)
        for name in files:
            with open(os.path.join(new, name), "rb") as f:
                _, received, _ = split_delivered(f.read())
            self.assertIn(" with ESMTPSA ", received)


@unittest.skipIf(missing() or not os.path.exists(os.path.join(MODULESDIR, "mod_authn_socache.so")),
                 missing() or "mod_authn_socache missing")
class SocacheTest(ServerTestCase):
    """mod_authn_socache in front of a provider (the README's recipe for a
    slow backend): a user the file no longer has is still granted from the
    cache until AuthnCacheTimeout."""

    @classmethod
    def configure(cls, httpd):
        conf = os.path.join(httpd.root, "conf")
        cls.pwfile = os.path.join(conf, "users.htpasswd")
        httpd.main_extra += [l for l in authn_lines(conf) if l.startswith("LoadModule")] + [
            "LoadModule socache_shmcb_module %s" % q(os.path.join(MODULESDIR, "mod_socache_shmcb.so")),
            "LoadModule authn_socache_module %s" % q(os.path.join(MODULESDIR, "mod_authn_socache.so")),
            "AuthnCacheSOCache shmcb",
            "<AuthnProviderAlias socache smtp-cache>",
            "    AuthnCacheProvideFor file",
            "    AuthnCacheTimeout 300",
            "</AuthnProviderAlias>",
            "<AuthnProviderAlias file smtp-file>",
            "    AuthUserFile %s" % q(cls.pwfile),
            "    AuthnCacheProvideFor file",
            "    AuthnCacheTimeout 300",
            "</AuthnProviderAlias>"]
        cls.vh = httpd.add_smtp("discard", accept_domains=["example.org"], extra=[
            "ESMTPAuth PLAIN", "ESMTPAuthProvider smtp-cache smtp-file", "ESMTPAuthRequireTLS Off",
            "ESMTPAuthFailureDelay 0"])

    def login(self, user, pw):
        with smtplib.SMTP("127.0.0.1", self.vh.port, timeout=30) as s:
            s.ehlo("client.example")
            try:
                return s.login(user, pw)[0]
            except smtplib.SMTPAuthenticationError as e:
                return e.smtp_code

    def test_cached_after_the_file_forgets(self):
        user, pw = "bob", USERS_FILE["bob"]
        self.assertEqual(self.login(user, pw), 235)
        self.assertEqual(self.login("alice@example.org", WRONG), 535)
        # bob leaves the file: the cache still knows his password
        subprocess.run([HTPASSWD, "-D", self.pwfile, user], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=30)
        self.assertEqual(self.login(user, pw), 235)
        self.assertEqual(self.login(user, WRONG), 535)
        # the cache holds the hash the file gave, from the first lookup of
        # the user, even one with a wrong password
        subprocess.run([HTPASSWD, "-D", self.pwfile, "alice@example.org"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
        self.assertEqual(self.login("alice@example.org", USERS_FILE["alice@example.org"]), 235)
        # a user never looked up is not in the cache
        self.assertEqual(self.login("carol", "Carol-Pw-0"), 535)


class AuthConfigTest(unittest.TestCase):
    """`apache2 -t` names the directive when AUTH cannot work."""

    def check(self, auth_lines, aliases=True):
        httpd = Httpd()
        try:
            if aliases:
                httpd.main_extra += authn_lines(os.path.join(httpd.root, "conf"))
            httpd.add_smtp("maildir", accept_domains=["*"], extra=auth_lines)
            return httpd.config_test()
        finally:
            httpd.cleanup()

    @unittest.skipIf(missing(), missing())
    def test_good(self):
        rc, out = self.check(AUTH_LINES + ["ESMTPSubmission On", "ESMTPMaxAuthFailures 5"])
        self.assertEqual(rc, 0, out)

    @unittest.skipIf(missing(), missing())
    def test_unknown_provider(self):
        rc, out = self.check(["ESMTPAuth PLAIN", "ESMTPAuthProvider smtp-file no-such-users"])
        self.assertNotEqual(rc, 0)
        self.assertIn("ESMTPAuthProvider: unknown authn provider 'no-such-users'", out)

    @unittest.skipIf(missing(), missing())
    def test_warns_when_auth_can_never_be_offered(self):
        rc, out = self.check(AUTH_LINES)  # no SSLEngine, ESMTPAuthRequireTLS On (the default)
        self.assertEqual(rc, 0, out)
        self.assertIn("AUTH is never offered", out)

    def test_auth_without_provider(self):
        rc, out = self.check(["ESMTPAuth PLAIN LOGIN"], aliases=False)
        self.assertNotEqual(rc, 0)
        self.assertIn("needs ESMTPAuthProvider", out)

    def test_submission_without_auth(self):
        rc, out = self.check(["ESMTPSubmission On"], aliases=False)
        self.assertNotEqual(rc, 0)
        self.assertIn("ESMTPSubmission On", out)
        self.assertIn("needs ESMTPAuth", out)

    def test_bad_sender_map(self):
        httpd = Httpd()
        try:
            path = os.path.join(httpd.root, "conf", "senders.map")
            with open(path, "w") as f:
                f.write("ok@example.org bob\nlonely@example.org\n")
            httpd.add_smtp("maildir", accept_domains=["*"], extra=["ESMTPSenderLoginMatch %s" % q(path)])
            rc, out = httpd.config_test()
            self.assertNotEqual(rc, 0)
            self.assertIn("ESMTPSenderLoginMatch: %s: line 2: 'lonely@example.org' has no login" % path, out)
            httpd.smtp[0].extra = ["ESMTPSenderLoginMatch /nonexistent/senders.map"]
            rc, out = httpd.config_test()
            self.assertNotEqual(rc, 0)
            self.assertIn("ESMTPSenderLoginMatch: needs On, Off or a readable map file", out)
        finally:
            httpd.cleanup()

    def test_bad_values(self):
        for line, text in (("ESMTPAuth CRAM-MD5", "ESMTPAuth: unknown mechanism 'CRAM-MD5'"),
                           ("ESMTPMaxAuthFailures many", "ESMTPMaxAuthFailures"),
                           ("ESMTPAuthFailureDelay 99", "ESMTPAuthFailureDelay"),
                           ("ESMTPAuthProxyUsers " + "x" * 300, "ESMTPAuthProxyUsers: 'xxx")):
            rc, out = self.check([line], aliases=False)
            self.assertNotEqual(rc, 0, line)
            self.assertIn(text, out)


if __name__ == "__main__":
    unittest.main()
