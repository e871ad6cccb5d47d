"""The handler guide stays true: the complete module of README's "Writing a
handler in another module" (with its own per-VirtualHost directive) is cut
out of README.md, built with the g++ command the README gives (through
mod_esmtp's pkg-config file, pointed at this tree), loaded next to mod_esmtp
and sent mail. The same text built with another C++ standard library ABI is
refused by `apache2 -t` with a message naming both builds (issue 25)."""

import os
import re
import shlex
import shutil
import smtplib
import subprocess
import tempfile
import unittest

from harness import MOD_ESMTP, TOP_BUILDDIR, TOP_SRCDIR, Httpd, q, wait_for

README = os.path.join(TOP_SRCDIR, "README.md")
OUR_ABI = "libstdc++/_GLIBCXX_USE_CXX11_ABI=1 (C++20)"


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
    """The README's g++ line."""
    for block in readme_blocks("sh"):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip().startswith("g++ ") and "mod_esmtp_hello.cpp" in line:
                return line.strip()
    raise AssertionError("README.md has no g++ command building mod_esmtp_hello.cpp")


def pkg_config_dir(work):
    """A directory with this build's mod_esmtp.pc, its includedir pointed at
    this tree's include/ (as `make install` would place the headers)."""
    with open(os.path.join(TOP_BUILDDIR, "mod_esmtp.pc"), encoding="utf-8") as f:
        pc = f.read()
    pc = re.sub(r"(?m)^includedir=.*$", "includedir=" + os.path.join(TOP_SRCDIR, "include"), pc)
    d = os.path.join(work, "pkgconfig")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "mod_esmtp.pc"), "w", encoding="utf-8") as f:
        f.write(pc)
    return d


def build(work, compiler=None, extra="", output="mod_esmtp_hello.so"):
    """Runs the README's command in `work` (with `compiler` instead of g++
    and `extra` flags); returns (exit status, stderr, module path)."""
    with open(os.path.join(work, "mod_esmtp_hello.cpp"), "w") as f:
        f.write(example_source())
    cmd = build_command()
    if compiler:
        cmd = compiler + cmd[len("g++"):]
    if extra:
        cmd = cmd.replace(" mod_esmtp_hello.cpp", " %s mod_esmtp_hello.cpp" % extra)
    cmd = cmd.replace("-o mod_esmtp_hello.so", "-o " + shlex.quote(output))
    env = dict(os.environ, PKG_CONFIG_PATH=pkg_config_dir(work))
    proc = subprocess.run(["sh", "-c", cmd], cwd=work, capture_output=True, text=True, timeout=300, env=env)
    return proc.returncode, cmd + "\n" + proc.stderr[-4000:], os.path.join(work, output)


def loading(module):
    return Httpd(test_handler=False, main_extra=["LoadModule esmtp_hello_module %s" % q(module)])


class TestHandlerGuide(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.work = tempfile.mkdtemp(prefix="esmtp-guide-")
        os.chmod(cls.work, 0o755)
        rc, err, cls.module = build(cls.work)
        if rc != 0:
            raise AssertionError("the README's example does not build:\n" + err)
        spool = os.path.join(cls.work, "spool")
        os.makedirs(spool)
        os.chmod(spool, 0o777)
        cls.mbox_org = os.path.join(spool, "example.org.mbox")
        cls.mbox_net = os.path.join(spool, "example.net.mbox")
        cls.httpd = loading(cls.module)
        # as the README's configuration: HelloMailbox after ESMTPHandler in
        # one VirtualHost, before it in the other
        cls.vh_org = cls.httpd.add_smtp(["hello", "example.org"], accept_domains=["*"],
                                        extra=["HelloMailbox %s" % q(cls.mbox_org)])
        cls.vh_net = cls.httpd.add_smtp(None, accept_domains=["*"],
                                        extra=["HelloMailbox %s" % q(cls.mbox_net), "ESMTPHandler hello example.net"])
        cls.httpd.start()

    @classmethod
    def tearDownClass(cls):
        cls.httpd.stop()
        cls.httpd.cleanup()
        shutil.rmtree(cls.work, ignore_errors=True)

    def tearDown(self):
        self.httpd.check_log()

    def send(self, vh, domain, subject):
        with smtplib.SMTP("127.0.0.1", vh.port, local_hostname="client.example", timeout=20) as s:
            s.ehlo()
            self.assertEqual(s.mail("a@client.example")[0], 250)
            code, text = s.rcpt("someone@elsewhere.example")
            self.assertEqual((code, text), (550, b"5.7.1 Relay access denied"))
            self.assertEqual(s.rcpt("bob@" + domain)[0], 250)
            code, text = s.data(b"Subject: " + subject + b"\r\n\r\nfrom the handler guide\r\n")
            self.assertEqual(code, 250, text)

    def test_delivers_to_its_domain(self):
        self.send(self.vh_org, "example.org", b"guide")
        content = wait_for(lambda: os.path.exists(self.mbox_org) and open(self.mbox_org, "rb").read(), 5)
        self.assertIn(b"Received: from client.example", content)
        self.assertIn(b"Subject: guide\r\n\r\nfrom the handler guide\r\n", content)

    def test_each_virtual_host_gets_its_own_directive(self):
        """HelloMailbox is read per VirtualHost, before or after ESMTPHandler."""
        self.send(self.vh_net, "example.net", b"net only")
        content = wait_for(lambda: os.path.exists(self.mbox_net) and open(self.mbox_net, "rb").read(), 5)
        self.assertIn(b"Subject: net only\r\n", content)
        if os.path.exists(self.mbox_org):
            with open(self.mbox_org, "rb") as f:
                self.assertNotIn(b"net only", f.read())

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
        bad = loading(self.module)
        try:
            bad.add_smtp(["hello", "example.org", "extra"], extra=["HelloMailbox %s" % q(self.mbox_org)])
            status, out = bad.config_test()
            self.assertEqual(status, 1, out)
            self.assertIn("hello: expects DOMAIN", out)
        finally:
            bad.cleanup()

    def test_missing_directive_is_refused(self):
        """for_server() refuses a VirtualHost without HelloMailbox."""
        bad = loading(self.module)
        try:
            bad.add_smtp(["hello", "example.org"])
            status, out = bad.config_test()
            self.assertEqual(status, 1, out)
            self.assertIn("ESMTPHandler hello for server smtp1.test", out)
            self.assertIn("hello: needs HelloMailbox FILE", out)
        finally:
            bad.cleanup()


class TestHandlerAbi(unittest.TestCase):
    """Issue 25: a handler built with another C++ standard library ABI is
    refused by `apache2 -t` with a message naming both builds, before any
    C++ object crosses (it used to crash with exit 139, or throw
    std::bad_alloc); the API version cannot be overridden with -D."""

    @classmethod
    def setUpClass(cls):
        cls.work = tempfile.mkdtemp(prefix="esmtp-abi-")
        os.chmod(cls.work, 0o755)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.work, ignore_errors=True)

    def refused(self, module, theirs):
        httpd = loading(module)
        try:
            httpd.add_smtp(["hello", "example.org"], extra=["HelloMailbox mail.mbox"])
            status, out = httpd.config_test()
            self.assertEqual(status, 1, "apache2 -t must fail with a message, not crash:\n" + out)
            self.assertIn("ESMTPHandler: handler 'hello' was built with %s, this mod_esmtp with %s" % (theirs, OUR_ABI),
                          out)
        finally:
            httpd.cleanup()

    def test_old_libstdcxx_abi(self):
        rc, err, module = build(self.work, extra="-D_GLIBCXX_USE_CXX11_ABI=0", output="old_abi.so")
        self.assertEqual(rc, 0, err)
        self.refused(module, "libstdc++/_GLIBCXX_USE_CXX11_ABI=0 (C++20)")

    def test_libcxx(self):
        probe = subprocess.run(["sh", "-c", "echo '#include <string>' | clang++ -stdlib=libc++ -x c++ -fsyntax-only -"],
                               capture_output=True)
        if shutil.which("clang++") is None or probe.returncode != 0:
            self.skipTest("clang++ with libc++ not installed (apt-get install clang libc++-dev)")
        rc, err, module = build(self.work, compiler="clang++ -stdlib=libc++", output="libcxx.so")
        self.assertEqual(rc, 0, err)
        self.refused(module, "libc++/_LIBCPP_ABI_VERSION=1 (C++20)")

    def test_api_version_is_not_a_setting(self):
        rc, err, _ = build(self.work, extra="-DESMTP_API_MAJOR=3", output="major3.so")
        self.assertNotEqual(rc, 0, err)
        self.assertIn("ESMTP_API_MAJOR/ESMTP_API_MINOR are defined by esmtp/version.hpp", err)


if __name__ == "__main__":
    unittest.main()
