"""Implicit TLS (RFC 8314, port 465 style) through mod_ssl: a VirtualHost
with `SSLEngine on` speaks SMTP inside TLS, and the trace header says so
(`with ESMTPS`, RFC 3848)."""

import os
import shutil
import smtplib
import ssl
import subprocess
import unittest

from harness import MODULESDIR, ServerTestCase, q, split_delivered, wait_for

MOD_SSL = os.path.join(MODULESDIR, "mod_ssl.so")
MOD_SHMCB = os.path.join(MODULESDIR, "mod_socache_shmcb.so")
OPENSSL = shutil.which("openssl")


@unittest.skipUnless(os.path.exists(MOD_SSL) and OPENSSL, "mod_ssl or openssl missing")
class ImplicitTlsTest(ServerTestCase):

    @classmethod
    def configure(cls, httpd):
        # a self-signed certificate in the ServerRoot (never make-ssl-cert, which writes to /etc)
        cert = os.path.join(httpd.root, "conf", "cert.pem")
        key = os.path.join(httpd.root, "conf", "key.pem")
        subprocess.run([OPENSSL, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost", "-keyout", key, "-out", cert, "-days", "2"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
        httpd.main_extra += ["LoadModule socache_shmcb_module %s" % q(MOD_SHMCB),
                             "LoadModule ssl_module %s" % q(MOD_SSL),
                             "SSLSessionCache none",
                             "SSLRandomSeed startup builtin"]
        cls.tls = httpd.add_smtp("maildir", accept_domains=["*"], extra=[
            "SSLEngine on",
            "SSLCertificateFile %s" % q(cert),
            "SSLCertificateKeyFile %s" % q(key)])
        cls.plain = httpd.add_smtp("maildir", accept_domains=["*"])

    def deliver(self, smtp):
        with smtp:
            smtp.ehlo("tls.example")
            smtp.mail("a@client.example")
            smtp.rcpt("b@localhost")
            code, text = smtp.data(b"Subject: tls\r\n\r\nover TLS\r\n")
        self.assertEqual(code, 250, text)

    def received_of(self, vh):
        files = wait_for(vh.maildir_files, 5)
        self.assertEqual(len(files), 1)
        with open(files[0], "rb") as f:
            _, received, _ = split_delivered(f.read())
        return received

    def test_received_says_esmtps_over_implicit_tls(self):
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        smtp = smtplib.SMTP_SSL("127.0.0.1", self.tls.port, context=ctx, timeout=20)
        self.assertIsInstance(smtp.sock, ssl.SSLSocket)
        self.deliver(smtp)
        received = self.received_of(self.tls)
        self.assertIn(" with ESMTPS ", received)

    def test_plain_vhost_says_esmtp(self):
        self.deliver(smtplib.SMTP("127.0.0.1", self.plain.port, timeout=20))
        received = self.received_of(self.plain)
        self.assertIn(" with ESMTP ", received)
        self.assertNotIn("ESMTPS", received)


if __name__ == "__main__":
    unittest.main()
