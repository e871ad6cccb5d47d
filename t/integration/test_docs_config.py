"""Every configuration an operator may copy stays valid: each ```apache
block of README.md and docs/*.md and each sample in conf/ passes
`apache2 -t` (issue 24: a comment after a directive's arguments is an
argument in httpd, and two README snippets failed that way).

Placeholders are substituted (certificates, the Maildir, user files, the
example delivery command and ${APACHE_LOG_DIR} point into the temporary
ServerRoot); everything else is checked as written. A block that is more than one directive and does not
load mod_esmtp itself must also pass without mod_esmtp (the state after
`apt purge`): it is wrapped in <IfModule esmtp_module>.

The README's handler-module block (esmtp_hello_module) needs that module
built: test_guide checks it."""

import glob
import os
import re
import subprocess
import unittest

from harness import MODULESDIR, TOP_SRCDIR, Httpd, q

BLOCK_RE = re.compile(r"^```apache\n(.*?)^```", re.S | re.M)
LOADMODULE_RE = re.compile(r"(?m)^\s*LoadModule\s+(\S+)\s+(\S+)\s*$")
# Loaded for every block: what the README's snippets and the samples need.
STOCK_MODULES = ["socache_shmcb", "ssl", "md", "authn_core", "authn_file", "authn_socache", "dbd", "authn_dbd",
                 "authz_host", "status", "proxy", "proxy_http"]


def doc_blocks():
    """(where, text) of every ```apache block of README.md and docs/*.md."""
    out = []
    for path in [os.path.join(TOP_SRCDIR, "README.md")] + sorted(glob.glob(os.path.join(TOP_SRCDIR, "docs", "*.md"))):
        with open(path, encoding="utf-8") as f:
            text = f.read()
        for m in BLOCK_RE.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            out.append(("%s:%d" % (os.path.relpath(path, TOP_SRCDIR), line), m.group(1)))
    return out


def samples():
    out = []
    for path in sorted(glob.glob(os.path.join(TOP_SRCDIR, "conf", "*.conf")) +
                       glob.glob(os.path.join(TOP_SRCDIR, "conf", "debian", "*.conf"))):
        with open(path, encoding="utf-8") as f:
            out.append((os.path.relpath(path, TOP_SRCDIR), f.read()))
    return out


class ConfigUnderTest:
    """A temporary ServerRoot with the stock modules, a certificate and the
    files the snippets name."""

    def __init__(self, esmtp):
        main = ["LoadModule %s_module %s" % (m, q(os.path.join(MODULESDIR, "mod_%s.so" % m)))
                for m in STOCK_MODULES]
        # the blocks are written for Debian's default MPM (event)
        self.httpd = Httpd(mpm="event", esmtp=esmtp, test_handler=False, main_extra=main, prefix="esmtp-docs-")
        r = self.httpd.root
        # ${APACHE_LOG_DIR} is the harness's logs/
        self.httpd.main_extra += ["MDStoreDir %s" % q(os.path.join(r, "md")),
                                  "SSLSessionCache none"]
        for d in ("var/mail", "var/lib", "var/www/mta-sts", "etc/apache2"):
            os.makedirs(os.path.join(r, d), exist_ok=True)
        for name in ("smtp-users", "smtp-senders"):
            open(os.path.join(r, "etc", "apache2", name), "w").close()
        # the http handler's secret (read when the configuration is)
        with open(os.path.join(r, "etc", "apache2", "esmtp-http.secret"), "w") as f:
            f.write("a-documentation-secret-of-32-chars\n")
        # the smtp handler reads its credentials when the configuration is read
        with open(os.path.join(r, "etc", "apache2", "smarthost.secret"), "w") as f:
            f.write("user:password\n")
        # the README's example delivery command
        os.makedirs(os.path.join(r, "usr", "local", "bin"))
        with open(os.path.join(r, "usr", "local", "bin", "deliver"), "w") as f:
            f.write("#!/bin/sh\ncat >/dev/null\n")
        os.chmod(os.path.join(r, "usr", "local", "bin", "deliver"), 0o755)
        self.cert, self.key = self.httpd.over_starttls_cert()

    def substitute(self, text):
        r = self.httpd.root

        def loadmodule(m):
            name, path = m.group(1), m.group(2)
            if name == "esmtp_module" or name[:-len("_module")] in STOCK_MODULES:
                return "# (loaded by the test) " + m.group(0).strip()
            return "LoadModule %s %s" % (name, q(os.path.join(MODULESDIR, os.path.basename(path))))

        text = LOADMODULE_RE.sub(loadmodule, text)
        text = re.sub(r"(?m)^(\s*SSLCertificateFile)\s+\S+", lambda m: m.group(1) + " " + q(self.cert), text)
        text = re.sub(r"(?m)^(\s*SSLCertificateKeyFile)\s+\S+", lambda m: m.group(1) + " " + q(self.key), text)
        for prefix in ("/var/mail/", "/var/lib/", "/var/www/", "/etc/apache2/", "/var/log/", "/usr/local/bin/"):
            text = text.replace(" " + prefix, " " + r + prefix)
            text = text.replace("=" + prefix, "=" + r + prefix)  # a handler's option: secret=/etc/...
        return text

    def check(self, text):
        self.httpd.main_extra.append(self.substitute(text))
        return self.httpd.config_test()

    def cleanup(self):
        self.httpd.cleanup()


class DocumentedConfigurationTest(unittest.TestCase):

    def run_block(self, where, text, esmtp):
        conf = ConfigUnderTest(esmtp)
        try:
            rc, out = conf.check(text)
            self.assertEqual(rc, 0, "%s fails `apache2 -t`%s:\n%s\n--- as tested:\n%s" % (
                where, "" if esmtp else " without mod_esmtp (wrap it in <IfModule esmtp_module>)", out,
                conf.substitute(text)))
            # the listener check (a Listen with httpd's accept filter) stays quiet
            self.assertNotIn("accept filter", out, where)
        finally:
            conf.cleanup()

    def blocks_to_check(self):
        blocks = [b for b in doc_blocks() if "esmtp_hello_module" not in b[1]]
        self.assertGreaterEqual(len(blocks), 10, "README.md lost its ```apache blocks?")
        return blocks

    def test_readme_and_docs_blocks(self):
        for where, text in self.blocks_to_check():
            with self.subTest(where=where):
                self.run_block(where, text, esmtp=True)

    def test_readme_and_docs_blocks_without_the_module(self):
        """After `apt purge` a leftover site file must not break httpd."""
        for where, text in self.blocks_to_check():
            directives = [l for l in text.splitlines() if l.strip() and not l.strip().startswith("#")]
            if len(directives) <= 1 or re.search(r"(?m)^\s*LoadModule\s+esmtp_module", text):
                continue  # one line to put in a virtual host; or loads the module itself
            with self.subTest(where=where):
                self.run_block(where, text, esmtp=False)

    def test_samples(self):
        found = samples()
        self.assertGreaterEqual(len(found), 5)
        for where, text in found:
            for esmtp in (True, False):
                with self.subTest(where=where, esmtp=esmtp):
                    self.run_block(where, text, esmtp)

    def test_no_comment_after_arguments(self):
        """httpd has no end-of-line comments: "Directive arg  # note" passes
        "#" and "note" as arguments (some directives ignore extra ones)."""
        for where, text in doc_blocks() + samples():
            for n, line in enumerate(text.splitlines()):
                s = line.strip()
                if s and not s.startswith("#"):
                    self.assertNotRegex(s, r"\s#", "%s, line %d of the block: %s" % (where, n + 1, s))

    def test_the_check_sees_a_failure(self):
        """The test itself: a broken block fails."""
        conf = ConfigUnderTest(True)
        try:
            rc, out = conf.check("<IfModule esmtp_module>\n    ESMTPMaxRecipients 50  # fifty\n</IfModule>\n")
            self.assertNotEqual(rc, 0, out)
        finally:
            conf.cleanup()


if __name__ == "__main__":
    unittest.main()
