"""The handler guide stays true: the complete module of README's "Writing a
handler in another module" is cut out of README.md, built with the g++
command the README gives, loaded next to mod_esmtp and sent mail."""

import os
import re
import shlex
import smtplib
import subprocess
import tempfile
import unittest

from harness import MOD_ESMTP, TOP_SRCDIR, Httpd, q, wait_for

README = os.path.join(TOP_SRCDIR, "README.md")


def readme_blocks(lang):
    with open(README, encoding="utf-8") as f:
        text = f.read()
    return re.findall(r"```%s\n(.*?)```" % lang, text, re.S)


def example_source():
    for block in readme_blocks("cpp"):
        if block.startswith("// mod_esmtp_hello.cpp"):
            return block
    raise AssertionError("README.md has no ```cpp block starting with // mod_esmtp_hello.cpp")


def build_command():
    """The README's g++ line, with `-I include` pointing at this tree."""
    for block in readme_blocks("sh"):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip().startswith("g++ ") and "mod_esmtp_hello.cpp" in line:
                return line.strip()
    raise AssertionError("README.md has no g++ command building mod_esmtp_hello.cpp")


class TestHandlerGuide(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.work = tempfile.mkdtemp(prefix="esmtp-guide-")
        os.chmod(cls.work, 0o755)
        with open(os.path.join(cls.work, "mod_esmtp_hello.cpp"), "w") as f:
            f.write(example_source())
        cmd = build_command().replace("-I include", "-I " + shlex.quote(os.path.join(TOP_SRCDIR, "include")))
        proc = subprocess.run(["sh", "-c", cmd], cwd=cls.work, capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            raise AssertionError("the README's example does not build:\n%s\n%s" % (cmd, proc.stderr[-4000:]))
        cls.module = os.path.join(cls.work, "mod_esmtp_hello.so")
        cls.mbox = os.path.join(cls.work, "spool", "example.org.mbox")
        os.makedirs(os.path.dirname(cls.mbox))
        os.chmod(os.path.dirname(cls.mbox), 0o777)
        cls.httpd = Httpd(test_handler=False,
                          main_extra=["LoadModule esmtp_hello_module %s" % q(cls.module)])
        cls.vh = cls.httpd.add_smtp(["hello", "example.org", cls.mbox], accept_domains=["*"])
        cls.httpd.start()

    @classmethod
    def tearDownClass(cls):
        cls.httpd.stop()
        cls.httpd.cleanup()
        subprocess.run(["rm", "-rf", cls.work])

    def tearDown(self):
        self.httpd.check_log()

    def test_delivers_to_its_domain(self):
        with smtplib.SMTP("127.0.0.1", self.vh.port, local_hostname="client.example", timeout=20) as s:
            s.ehlo()
            self.assertEqual(s.mail("a@client.example")[0], 250)
            code, text = s.rcpt("someone@elsewhere.example")
            self.assertEqual((code, text), (550, b"5.7.1 Relay access denied"))
            self.assertEqual(s.rcpt("bob@example.org")[0], 250)
            code, text = s.data(b"Subject: guide\r\n\r\nfrom the handler guide\r\n")
            self.assertEqual(code, 250, text)
        content = wait_for(lambda: os.path.exists(self.mbox) and open(self.mbox, "rb").read(), 5)
        self.assertIn(b"Received: from client.example", content)
        self.assertIn(b"Subject: guide\r\n\r\nfrom the handler guide\r\n", content)

    def test_readme_configuration_block(self):
        """The README's ```apache block that loads the example passes
        `apache2 -t` (the other blocks: test_docs_config)."""
        blocks = [b for b in readme_blocks("apache") if "esmtp_hello_module" in b]
        self.assertEqual(len(blocks), 1, "README.md has no ```apache block loading esmtp_hello_module")
        bad = Httpd(esmtp=False, test_handler=False)
        try:
            os.makedirs(os.path.join(bad.root, "var", "mail"))
            text = blocks[0].replace("modules/mod_esmtp.so", q(MOD_ESMTP))
            text = text.replace("modules/mod_esmtp_hello.so", q(self.module))
            text = text.replace(" /var/mail/", " " + os.path.join(bad.root, "var", "mail") + "/")
            bad.main_extra.append(text)
            status, out = bad.config_test()
            self.assertEqual(status, 0, out + "\n--- as tested:\n" + text)
        finally:
            bad.cleanup()

    def test_arguments_are_checked(self):
        bad = Httpd(test_handler=False, main_extra=["LoadModule esmtp_hello_module %s" % q(self.module)])
        try:
            bad.add_smtp(["hello", "example.org"])
            status, out = bad.config_test()
            self.assertNotEqual(status, 0)
            self.assertIn("hello: expects DOMAIN FILE", out)
        finally:
            bad.cleanup()


if __name__ == "__main__":
    unittest.main()
