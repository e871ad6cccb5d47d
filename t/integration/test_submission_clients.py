"""Issue 22's client matrix: real SMTP client programs submit with TLS and
AUTH to a submission vhost whose `smtp` handler relays to a private Postfix
smarthost (STARTTLS, SASL through Dovecot, relaying only when authenticated)
that delivers with virtual(8) into a Maildir per recipient. Each client
submits on the STARTTLS port ("587") and on the implicit TLS port ("465"),
verifying our certificate against the test CA, with AUTH PLAIN or LOGIN;
the message must reach its own recipient's Maildir with the subject and
body it was sent with. Given another CA, each client refuses our
certificate and sends nothing (Postfix: it logs "Verified TLS"). Clients: Python's smtplib, swaks, msmtp, curl,
Postfix's smtp client, Perl's Net::SMTP, s-nail, Ruby's net/smtp, mutt and
a scripted `openssl s_client`; one that is not installed is skipped, naming
its Debian package."""

import os
import re
import select
import shutil
import smtplib
import ssl
import subprocess
import tempfile
import textwrap
import time
import unittest

import test_postfix
from harness import ServerTestCase, wait_for
from peers import PostfixSmarthost, dovecot_missing
from test_auth import USERS_FILE, authn_lines, b64, msmtp_conf, plain
from test_auth import missing as auth_missing
from test_relay import POSTFIX_PASSWORD, POSTFIX_USER, SMART_AUTH, SMART_NAME
from test_starttls import make_ca, ssl_main_lines, ssl_vhost_lines

USER = "alice@example.org"
PASSWORD = USERS_FILE[USER]
SUBMIT_NAME = "submit.example.org"
# what the clients send after the headers; dot-stuffing is each client's job
BODY = ["Hello Bob,", ".a line with a leading dot", "..two dots", "the end."]
# the modes each client is run in: (name, implicit TLS, SASL mechanism)
MODES = (("starttls", False, "PLAIN"), ("implicit", True, "LOGIN"))
CLIENTS = ("smtplib", "swaks", "msmtp", "curl", "postfix", "perl", "s-nail", "ruby", "mutt", "openssl")


def recipient(client, mode):
    """Each client and mode has a mailbox of its own at the smarthost."""
    return "%s-%s@example.com" % (client, mode)


def message(subject, rcpt, eol="\r\n"):
    head = ["From: Alice <%s>" % USER, "To: <%s>" % rcpt, "Subject: " + subject,
            "Date: Tue, 1 Dec 2026 12:00:00 +0000", "Message-ID: <%s@client.example>" % subject.replace(" ", ".")]
    return eol.join(head + [""] + BODY) + eol


def which(program, package):
    """None, or why the test skips: `package` is not installed."""
    return None if shutil.which(program) else "%s missing (Debian package %s)" % (program, package)


def runs(args, package):
    """None when `args` exit 0 (e.g. a library loads), or why the test skips."""
    try:
        ok = subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30).returncode == 0
    except OSError:
        ok = False
    return None if ok else "%s does not run (Debian package %s)" % (args[0], package)


NO_NET_SMTP = runs(["perl", "-MNet::SMTP", "-MIO::Socket::SSL", "-MAuthen::SASL", "-e1"],
                   "libio-socket-ssl-perl, libauthen-sasl-perl")
NO_RUBY_SMTP = runs(["ruby", "-rnet/smtp", "-e1"], "ruby")


def missing():
    return test_postfix.SKIP_REASON or dovecot_missing() or auth_missing()


# Net::SMTP (perl core) with IO::Socket::SSL and Authen::SASL, as `git send-email` uses it
NET_SMTP = textwrap.dedent("""\
    use strict;
    use warnings;
    use Authen::SASL;
    use Net::SMTP;
    my ($port, $implicit, $ca, $mech, $user, $pass, $rcpt) = @ARGV;
    my %tls = (SSL_ca_file => $ca, SSL_verify_mode => 1, SSL_verifycn_scheme => "smtp",
               SSL_verifycn_name => "127.0.0.1");
    my $s = Net::SMTP->new("127.0.0.1", Port => $port, Hello => "client.example", Timeout => 30,
                           SSL => $implicit, %tls) or die "connect: $@\\n";
    $implicit or $s->starttls(%tls) or die "STARTTLS: $IO::Socket::SSL::SSL_ERROR\\n";
    my $sasl = Authen::SASL->new(mechanism => $mech, callback => {user => $user, pass => $pass});
    $s->auth($sasl) or die "AUTH: " . $s->message;
    $s->mail($user) or die "MAIL: " . $s->message;
    $s->to($rcpt) or die "RCPT: " . $s->message;
    $s->data(do { local $/; <STDIN> }) or die "DATA: " . $s->message;
    $s->quit;
    """)

# Ruby's net/smtp (bundled with ruby 3.1)
RUBY_SMTP = textwrap.dedent("""\
    require "net/smtp"
    port, implicit, ca, mech, user, pass, rcpt = ARGV
    tls = implicit == "1"
    smtp = Net::SMTP.new("127.0.0.1", port.to_i, tls: tls, starttls: tls ? false : :always, tls_verify: true,
                         ssl_context_params: {ca_file: ca})
    smtp.start(helo: "client.example", user: user, secret: pass, authtype: mech.downcase.to_sym) do |s|
      s.send_message($stdin.read, user, rcpt)
    end
    """)


@unittest.skipIf(missing(), missing() or "")
class SubmissionClientsTest(ServerTestCase):
    """One httpd (the submission vhosts) and one Postfix for every client.
    The Postfix is also a client: what its sendmail(1) gets goes through a
    cleanup of its own whose header_checks send it (FILTER) to our ports
    with SASL and verified TLS, so nothing it receives back is sent again."""

    smarthost = None

    @classmethod
    def configure(cls, httpd):
        d = os.path.join(httpd.root, "conf")
        sh = cls.smarthost = PostfixSmarthost({POSTFIX_USER: POSTFIX_PASSWORD}, SMART_NAME,
                                              mailboxes=[recipient(c, m) for c in CLIENTS for m, _, _ in MODES])
        cls.addClassCleanup(lambda: sh.cleanup(keep=cls._failed))
        cred = os.path.join(d, "smarthost.secret")
        with open(cred, "w") as f:
            f.write("%s:%s\n" % (POSTFIX_USER, POSTFIX_PASSWORD))
        os.chmod(cred, 0o600)
        # the test CA signs our certificate: clients reach us as 127.0.0.1
        # (most), localhost, or with the name given apart
        cls.ca, cert, key = make_ca(d, "submit", names=("DNS:" + SUBMIT_NAME, "DNS:localhost", "IP:127.0.0.1"))
        relay = ["smtp", "127.0.0.1:%d" % sh.port, "servername=" + SMART_NAME, "ca=" + sh.cert, "auth=" + cred,
                 "timeout=10"]
        httpd.main_extra += ssl_main_lines() + authn_lines(d)
        lines = SMART_AUTH + ["ESMTPSubmission On"]
        cls.starttls = httpd.add_smtp(relay, server_name=SUBMIT_NAME, log_file="starttls.log", log_level=2,
                                      extra=ssl_vhost_lines(cert, key, "Required") + lines)
        cls.implicit = httpd.add_smtp(relay, server_name=SUBMIT_NAME, log_file="implicit.log", log_level=2,
                                      extra=ssl_vhost_lines(cert, key) + lines)
        cls.ports = {"starttls": cls.starttls.port, "implicit": cls.implicit.port}
        # a CA that did not sign it: each client must refuse our certificate
        cls.wrong_ca = make_ca(d, "other")[0]
        cls.postfix_client(sh)
        sh.start()

    @classmethod
    def postfix_client(cls, sh):
        pf = sh.postfix
        # its smtp(8) reads the CA as postfix: in Postfix's root (0755)
        ca = os.path.join(pf.root, "submit-ca.pem")
        shutil.copy(cls.ca, ca)
        os.chmod(ca, 0o644)
        checks = os.path.join(pf.config_dir, "submit.regexp")
        with open(checks, "w") as f:
            for mode, _, _ in MODES:
                f.write("/^Subject: via postfix %s$/ FILTER %s:[127.0.0.1]:%d\n" % (mode, mode, cls.ports[mode]))
        client = ("unix - - n - - smtp -o smtp_sasl_auth_enable=yes -o smtp_sasl_password_maps=static:%s:%s "
                  "-o smtp_sasl_security_options=noanonymous -o smtp_sasl_tls_security_options=noanonymous "
                  "-o smtp_tls_security_level=secure -o smtp_tls_CAfile=%s -o smtp_tls_secure_cert_match=%s "
                  "-o smtp_tls_loglevel=1 -o smtp_helo_name=client.example" % (USER, PASSWORD, ca, SUBMIT_NAME))
        sh.master_cf(["pickup unix n - n 60 1 pickup -o cleanup_service_name=submitcleanup",
                      "submitcleanup unix n - n - 0 cleanup -o header_checks=regexp:" + checks] +
                     ["%s %s -o smtp_sasl_mechanism_filter=%s%s" % (
                         mode, client, mech.lower(), " -o smtp_tls_wrappermode=yes" if implicit else "")
                      for mode, implicit, mech in MODES])

    # --- the checks

    def submit(self, client, run, untrusted=True):
        """Runs `run(port, implicit, mech, rcpt, subject, ca)` -> (ok,
        output) in each mode (a subtest each) and checks what the smarthost
        delivered; then, `untrusted`, with another CA: the client must
        refuse our certificate, and nothing is sent."""
        for mode, implicit, mech in MODES:
            with self.subTest(mode=mode, mech=mech):
                rcpt = recipient(client, mode)
                subject = "via %s %s" % (client, mode)
                before = len(self.smarthost.delivered(rcpt))
                ok, out = run(self.ports[mode], implicit, mech, rcpt, subject, self.ca)
                self.assertTrue(ok, out)
                self.arrived(rcpt, subject, before)
        if untrusted:
            with self.subTest(mode="untrusted CA"):
                rcpt = recipient(client, "starttls")
                before = len(self.submit_log())
                ok, out = run(self.ports["starttls"], False, "PLAIN", rcpt, "untrusted", self.wrong_ca)
                self.assertFalse(ok, out)
                self.assertRegex(out, r"(?i)certificat|verif|trust|issuer")
                # no transaction began (the starttls run above logged its own)
                self.assertEqual(self.submit_log()[before:], [])
                self.assertTrue(any(rcpt in l for l in self.submit_log()), self.submit_log())

    def submit_log(self):
        """The transactions in the STARTTLS vhost's log (level 2: every command)."""
        return [l for l in self.starttls.log_lines() if re.search(r"(?i)< (MAIL|RCPT) |smtp: relayed ", l)]

    def arrived(self, rcpt, subject, before):
        got = wait_for(lambda: self.smarthost.delivered(rcpt)[before:], 30)
        self.assertTrue(got, "nothing delivered to %s; Postfix log:\n%s" % (rcpt, self.smarthost.log_text()[-3000:]))
        self.assertEqual(len(got), 1, got)
        text = got[0].decode("utf-8", "replace")
        head, _, body = text.partition("\n\n")
        headers = re.findall(r"^([\w-]+): ?(.*(?:\n[ \t].*)*)", head, re.M)
        self.assertIn(("Delivered-To", rcpt), headers, head)
        self.assertIn(("Return-Path", "<%s>" % USER), headers, head)
        self.assertIn(("Subject", subject), headers, head)
        # our Received: TLS and AUTH (ESMTPSA) on the submission vhost
        self.assertRegex(head, r"by %s \(mod_esmtp\) with ESMTPSA id " % re.escape(SUBMIT_NAME))
        # the body as sent, dot-stuffing undone (swaks's template adds empty lines)
        self.assertEqual(body.rstrip("\n").split("\n"), BODY, text)

    def run_client(self, args, stdin=None, env=None, timeout=60):
        """(exited 0, the command line and what it printed)."""
        p = subprocess.run(args, input=stdin, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout,
                           env=env)
        return p.returncode == 0, "%s\n%s" % (" ".join(args), p.stdout.decode("utf-8", "replace"))

    def scratch(self, name, content):
        path = os.path.join(self.httpd.root, name)
        with open(path, "w" if isinstance(content, str) else "wb") as f:
            f.write(content)
        return path

    # --- the clients

    def test_smtplib(self):
        def run(port, implicit, mech, rcpt, subject, ca):
            ctx = ssl.create_default_context(cafile=ca)
            try:
                if implicit:
                    s = smtplib.SMTP_SSL("127.0.0.1", port, local_hostname="client.example", context=ctx, timeout=30)
                else:
                    s = smtplib.SMTP("127.0.0.1", port, local_hostname="client.example", timeout=30)
                    s.starttls(context=ctx)
                with s:
                    s.ehlo("client.example")
                    s.user, s.password = USER, PASSWORD
                    s.auth(mech, getattr(s, "auth_" + mech.lower()), initial_response_ok=mech == "PLAIN")
                    s.sendmail(USER, [rcpt], message(subject, rcpt).encode())
            except (OSError, smtplib.SMTPException) as e:
                return False, repr(e)
            return True, ""
        self.submit("smtplib", run)

    @unittest.skipIf(which("swaks", "swaks"), which("swaks", "swaks"))
    def test_swaks(self):
        def run(port, implicit, mech, rcpt, subject, ca):
            body = self.scratch("swaks.body", "\n".join(BODY) + "\n")
            return self.run_client(["swaks", "--server", "127.0.0.1:%d" % port, "--tlsc" if implicit else "--tls",
                             "--tls-verify", "--tls-ca-path", ca, "--auth", mech, "--auth-user", USER,
                             "--auth-password", PASSWORD, "--from", USER, "--to", rcpt, "--ehlo", "client.example",
                             "--header", "Subject: " + subject, "--body", "@" + body])
        self.submit("swaks", run)

    @unittest.skipIf(which("msmtp", "msmtp"), which("msmtp", "msmtp"))
    def test_msmtp(self):
        def run(port, implicit, mech, rcpt, subject, ca):
            conf = msmtp_conf(self.httpd.root, port, USER, PASSWORD, ca=ca, starttls=not implicit,
                              auth=mech.lower())
            return self.run_client(["msmtp", "-C", conf, rcpt], stdin=message(subject, rcpt, "\n").encode())
        self.submit("msmtp", run)

    @unittest.skipIf(which("curl", "curl"), which("curl", "curl"))
    def test_curl(self):
        def run(port, implicit, mech, rcpt, subject, ca):
            eml = self.scratch("curl.eml", message(subject, rcpt))
            return self.run_client(["curl", "-sS", "--max-time", "30", "--ssl-reqd", "--cacert", ca,
                             "%s://127.0.0.1:%d/client.example" % ("smtps" if implicit else "smtp", port),
                             "--user", "%s:%s" % (USER, PASSWORD), "--login-options", "AUTH=" + mech,
                             "--mail-from", USER, "--mail-rcpt", rcpt, "--upload-file", eml])
        self.submit("curl", run)

    def test_postfix(self):
        """Postfix's smtp(8) with smtp_sasl_auth_enable and TLS level
        secure (the certificate verified, its name matched)."""
        pf = self.smarthost.postfix

        def run(port, implicit, mech, rcpt, subject, ca):
            rc, out = pf.run(test_postfix._which("sendmail"), "-C", pf.config_dir, "-f", USER, "-i", rcpt,
                             stdin=message(subject, rcpt, "\n").encode())
            # "Verified": the chain and the name (smtp_tls_secure_cert_match) checked
            verified = r"Verified TLS connection established to 127\.0\.0\.1\[127\.0\.0\.1\]:%d" % port
            ok = rc == 0 and bool(wait_for(lambda: re.search(verified, pf.log_text()), 30))
            return ok, out + pf.log_text()[-3000:]
        # (a message it cannot send stays in its queue, retried: no untrusted run)
        self.submit("postfix", run, untrusted=False)

    @unittest.skipIf(NO_NET_SMTP, NO_NET_SMTP)
    def test_perl_net_smtp(self):
        script = self.scratch("net_smtp.pl", NET_SMTP)

        def run(port, implicit, mech, rcpt, subject, ca):
            return self.run_client(["perl", script, str(port), "1" if implicit else "0", ca, mech, USER, PASSWORD,
                             rcpt], stdin=message(subject, rcpt, "\n").encode())
        self.submit("perl", run)

    @unittest.skipIf(which("s-nail", "s-nail"), which("s-nail", "s-nail"))
    def test_s_nail(self):
        home = tempfile.mkdtemp(prefix="s-nail-", dir=self.httpd.root)

        def run(port, implicit, mech, rcpt, subject, ca):
            url = "%s://%s:%s@127.0.0.1:%d" % ("smtps" if implicit else "smtp", USER.replace("@", "%40"), PASSWORD,
                                               port)
            # -#: batch mode; -:/ no rc files; DEAD: where an unsent message goes
            args = ["s-nail", "-#", "-:/", "-Sv15-compat", "-Smta=" + url, "-Ssmtp-auth=" + mech.lower(),
                    "-Stls-ca-file=" + ca, "-Stls-ca-no-defaults", "-Stls-verify=strict",
                    "-Shostname=client.example", "-Sfrom=" + USER, "-Ssendwait", "-SDEAD=%s/dead.letter" % home,
                    "-s", subject, rcpt]
            if not implicit:
                args.insert(3, "-Ssmtp-use-starttls")
            return self.run_client(args, stdin=("\n".join(BODY) + "\n").encode(), env=dict(os.environ, HOME=home))
        self.submit("s-nail", run)

    @unittest.skipIf(NO_RUBY_SMTP, NO_RUBY_SMTP)
    def test_ruby_net_smtp(self):
        script = self.scratch("net_smtp.rb", RUBY_SMTP)

        def run(port, implicit, mech, rcpt, subject, ca):
            return self.run_client(["ruby", script, str(port), "1" if implicit else "0", ca, mech, USER, PASSWORD,
                             rcpt], stdin=message(subject, rcpt).encode())
        self.submit("ruby", run)

    @unittest.skipIf(which("mutt", "mutt"), which("mutt", "mutt"))
    def test_mutt(self):
        home = tempfile.mkdtemp(prefix="mutt-", dir=self.httpd.root)

        def run(port, implicit, mech, rcpt, subject, ca):
            rc = self.scratch("muttrc", textwrap.dedent("""\
                set smtp_url="{scheme}://alice%40example.org@127.0.0.1:{port}/"
                set smtp_pass="{pw}"
                set smtp_authenticators="{mech}"
                set ssl_starttls=yes
                set ssl_force_tls=yes
                set ssl_ca_certificates_file="{ca}"
                set certificate_file="{home}/certificates"
                set from="{user}"
                set use_envelope_from=yes
                set hostname="client.example"
                set record=""
                set charset="utf-8"
                """).format(scheme="smtps" if implicit else "smtp", port=port, pw=PASSWORD, mech=mech.lower(),
                            ca=ca, home=home, user=USER))
            return self.run_client(["mutt", "-n", "-F", rc, "-s", subject, "--", rcpt],
                            stdin=("\n".join(BODY) + "\n").encode(), env=dict(os.environ, HOME=home))
        self.submit("mutt", run)

    def test_openssl_s_client(self):
        """`openssl s_client` driven line by line: STARTTLS (or TLS from the
        first byte), the certificate and host name verified, AUTH typed."""
        def run(port, implicit, mech, rcpt, subject, ca):
            args = ["openssl", "s_client", "-connect", "127.0.0.1:%d" % port, "-CAfile", ca,
                    "-verify_return_error", "-verify_hostname", SUBMIT_NAME, "-quiet", "-nocommands", "-crlf"]
            if not implicit:
                args += ["-starttls", "smtp", "-name", "client.example"]
            try:
                with SClient(args) as c:
                    if implicit:
                        self.assertEqual(c.reply()[0], 220)
                    self.assertEqual(c.cmd("EHLO client.example")[0], 250)
                    if mech == "PLAIN":
                        self.assertEqual(c.cmd("AUTH PLAIN " + plain(USER, PASSWORD))[0], 235)
                    else:
                        self.assertEqual(c.cmd("AUTH LOGIN")[0], 334)
                        self.assertEqual(c.cmd(b64(USER))[0], 334)
                        self.assertEqual(c.cmd(b64(PASSWORD))[0], 235)
                    self.assertEqual(c.cmd("MAIL FROM:<%s>" % USER)[0], 250)
                    self.assertEqual(c.cmd("RCPT TO:<%s>" % rcpt)[0], 250)
                    self.assertEqual(c.cmd("DATA")[0], 354)
                    # the dot-stuffing is ours to do
                    stuffed = re.sub(r"(?m)^\.", "..", message(subject, rcpt, "\n"))
                    code, lines = c.cmd(stuffed + ".")
                    self.assertEqual(code, 250, lines)
                    self.assertEqual(c.cmd("QUIT")[0], 221)
            except (OSError, EOFError) as e:  # s_client ended: its stderr says why
                return False, str(e)
            return True, ""
        self.submit("openssl", run)


class SClient:
    """An `openssl s_client` child: lines written to its stdin (-crlf makes
    them CRLF), the server's replies read from its stdout."""

    def __init__(self, args, timeout=30):
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.timeout = timeout
        self.buf = b""

    def line(self):
        deadline = time.monotonic() + self.timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.proc.stdout], [], [], left)[0]:
                raise TimeoutError("no reply from s_client; buffered %r" % self.buf)
            chunk = os.read(self.proc.stdout.fileno(), 4096)
            if not chunk:
                raise EOFError("s_client ended: %s" % self.proc.stderr.read().decode("utf-8", "replace"))
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line.rstrip(b"\r").decode("utf-8", "replace")

    def reply(self):
        lines = [self.line()]
        while lines[-1][3:4] == "-":
            lines.append(self.line())
        return int(lines[-1][:3]), lines

    def cmd(self, text):
        self.proc.stdin.write(text.encode() + b"\n")
        self.proc.stdin.flush()
        return self.reply()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.proc.stdout.close()
        self.proc.stderr.close()


if __name__ == "__main__":
    unittest.main()
