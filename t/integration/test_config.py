"""Configuration errors are caught when httpd reads its configuration
(`apache2 -t`) or at start-up, with messages that name the directive; the
sample configuration in conf/ is valid."""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

from harness import IS_ROOT, TOP_BUILDDIR, TOP_SRCDIR, Httpd, MOD_ESMTP, free_port, q

MOD_OLD_API_HANDLER = os.path.join(TOP_BUILDDIR, "t", "handler", ".libs", "mod_esmtp_old_api_handler.so")


def api_version():
    """"MAJOR.MINOR" of the headers this mod_esmtp is built with."""
    with open(os.path.join(TOP_SRCDIR, "include", "esmtp", "version.hpp")) as f:
        text = f.read()
    major = re.search(r"^#define ESMTP_API_MAJOR (\d+)$", text, re.M).group(1)
    minor = re.search(r"^#define ESMTP_API_MINOR (\d+)$", text, re.M).group(1)
    return "%s.%s" % (major, minor)


class ConfigTest(unittest.TestCase):

    def setUp(self):
        self.httpd = Httpd()
        self.keep = False

    def tearDown(self):
        outcome = getattr(self, "_outcome", None)
        self.httpd.cleanup(keep=outcome is not None and not getattr(outcome, "success", True))

    def config_test(self):
        return self.httpd.config_test()

    def assertConfigFails(self, *needles):
        rc, out = self.config_test()
        self.assertNotEqual(rc, 0, "apache2 -t accepted the configuration:\n" + out)
        for n in needles:
            self.assertIn(n, out)
        return out

    def test_valid_configuration(self):
        self.httpd.add_smtp("maildir", log_file="esmtp.log", log_level=3, max_size=5000, max_recipients=3,
                            hostname="mx.example.org")
        self.httpd.add_smtp("discard", log_file="|/bin/cat >/dev/null", log_level=0)
        self.httpd.add_smtp("test")
        rc, out = self.config_test()
        self.assertEqual(rc, 0, out)
        self.assertIn("Syntax OK", out)

    def test_unknown_handler(self):
        self.httpd.add_smtp("nosuch")
        out = self.assertConfigFails("ESMTPHandler")
        self.assertIn("nosuch", out)

    def test_unknown_handler_lists_registered_names(self):
        """The message lists the handlers actually registered (built-in ones
        and the test module's), not a fixed list."""
        self.httpd.add_smtp("nosuch")
        out = self.assertConfigFails("ESMTPHandler: unknown handler 'nosuch'")
        registered = re.search(r"registered: ([^;)]*)", out)
        self.assertTrue(registered, out)
        self.assertEqual(sorted(registered.group(1).split(", ")), ["discard", "http", "lmtp", "maildir", "pipe", "smtp", "test", "test22"])

    def test_handler_built_against_another_api_major(self):
        """A handler module built against API 1 is named as such, not as
        an unknown handler."""
        if not os.path.exists(MOD_OLD_API_HANDLER):
            self.skipTest("%s not built (make check builds it)" % MOD_OLD_API_HANDLER)
        self.httpd.main_extra.append("LoadModule esmtp_old_api_handler_module %s" % q(MOD_OLD_API_HANDLER))
        self.httpd.add_smtp("oldapi")
        out = self.assertConfigFails("ESMTPHandler: handler 'oldapi' was built against mod_esmtp API 1, "
                                     "this mod_esmtp has API %s; rebuild it" % api_version())
        self.assertNotIn("unknown handler", out)

    def test_handler_built_against_a_newer_api_minor(self):
        """Issue 20: a handler built against a newer minor may call methods
        this mod_esmtp does not have; `apache2 -t` refuses it (the test
        module registers "future" under API 2.99)."""
        self.httpd.add_smtp(["future", os.path.join(self.httpd.root, "events.log")])
        out = self.assertConfigFails("ESMTPHandler: handler 'future' was built against mod_esmtp API 2.99, "
                                     "this mod_esmtp has API %s and lacks what the handler may call" % api_version())
        self.assertNotIn("unknown handler", out)

    def test_handler_refusing_its_server(self):
        """HandlerFactory::for_server() refuses a server: `apache2 -t` fails
        with its message, the handler, the server and where it is."""
        self.httpd.add_smtp("test", extra=["TestHandlerTag refuse"])
        out = self.assertConfigFails("ESMTPHandler test for server smtp1.test (%s:" % self.httpd.conf_path,
                                     "TestHandlerTag refuse: refused on purpose")
        self.assertNotIn("Syntax OK", out)

    def test_maildir_without_directory(self):
        self.httpd.add_smtp(["maildir"])
        self.assertConfigFails("ESMTPHandler")

    def test_test_handler_without_event_file(self):
        self.httpd.add_smtp(["test"])
        self.assertConfigFails("ESMTPHandler", "event file")

    def test_test_handler_in_missing_directory(self):
        self.httpd.add_smtp(["test", "/nonexistent/dir/events.log"])
        self.assertConfigFails("ESMTPHandler", "/nonexistent/dir")

    def test_bad_values(self):
        for directive in ("ESMTPLogLevel 7", "ESMTPLogLevel x", "ESMTPMaxMessageSize abc",
                          "ESMTPMaxMessageSize -5", "ESMTPMaxRecipients 0", "ESMTPMaxRecipients many",
                          "ESMTPProtocol maybe", "ESMTPPregreet 61", "ESMTPPregreet soon",
                          "ESMTPPregreet 2 wait=3", "ESMTPPregreet Off teaser=On", "ESMTPPregreet",
                          "ESMTPDNSBL zen..example", "ESMTPDNSBL zen.example*0", "ESMTPDNSBL zen.example=127.0.0",
                          "ESMTPDNSBLThreshold 0", "ESMTPDNSBLThreshold 3 reject=mail",
                          "ESMTPDNSBLThreshold 3 timeout=0.01", "ESMTPDNSServer dns.example",
                          "ESMTPDNSServer 127.0.0.1:99999", "ESMTPDNSServer [::1", "ESMTPGreylist maybe",
                          "ESMTPGreylist On delay=0", "ESMTPGreylist On delay=600 retry=300",
                          "ESMTPGreylist On colour=grey", "ESMTPStateCache shmcb", "ESMTPPregreet 2 remember=0"):
            with self.subTest(directive=directive):
                httpd = Httpd()
                try:
                    httpd.add_smtp("discard", extra=[directive])
                    rc, out = httpd.config_test()
                    self.assertNotEqual(rc, 0, "accepted %r:\n%s" % (directive, out))
                    self.assertIn(directive.split()[0], out)
                finally:
                    httpd.cleanup()

    def test_greylist_needs_a_state_cache_provider(self):
        """ESMTPGreylist keeps its state in ESMTPStateCache: a provider
        that is not loaded fails `apache2 -t`, naming the directive."""
        self.httpd.main_extra.append("ESMTPStateCache nosuch:127.0.0.1:1")
        self.httpd.add_smtp("discard", extra=["ESMTPGreylist On"])
        self.assertConfigFails("ESMTPStateCache: no mod_socache provider 'nosuch'", "ESMTPGreylist")

    def test_protocol_on_without_handler_fails_start(self):
        self.httpd.add_smtp(None)
        rc = self.httpd.start(expect_failure=True)
        self.assertNotEqual(rc, 0)
        out = "\n".join(self.httpd.stderr_lines() + self.httpd.log_lines())
        self.assertIn("ESMTPHandler", out)

    def test_sample_configuration(self):
        """conf/esmtp.conf, with its Maildir moved into the temporary root."""
        with open(os.path.join(TOP_SRCDIR, "conf", "esmtp.conf")) as f:
            sample = f.read()
        maildir = os.path.join(self.httpd.root, "Maildir")
        sample = re.sub(r"(ESMTPHandler\s+maildir\s+)\S+", lambda m: m.group(1) + '"%s"' % maildir, sample)
        sample = re.sub(r"(ESMTPLogFileName\s+)\S+", r"\1esmtp.log", sample)
        self.httpd.main_extra.append(sample)
        rc, out = self.config_test()
        self.assertEqual(rc, 0, out)

    def test_debian_load_file(self):
        with open(os.path.join(TOP_SRCDIR, "conf", "debian", "esmtp.load")) as f:
            load = f.read()
        self.assertRegex(load, r"(?m)^LoadModule esmtp_module /usr/lib/apache2/modules/mod_esmtp\.so$")


@unittest.skipUnless(IS_ROOT and shutil.which("runuser"), "needs root (httpd's children then run as another user)")
class QuickStartDirectoryTest(unittest.TestCase):
    """Issue 8 (#18): a tree cloned into a directory httpd's User cannot
    enter (/root, mode 700) and run by root: the quick-start server's
    Maildir must still be writable by the children's user (it was
    BUILDDIR/run/Maildir, and every message got 451)."""

    def test_maildir_reachable_by_the_children(self):
        home = tempfile.mkdtemp(prefix="esmtp-qs-home-")  # root-owned, like /root
        self.addCleanup(shutil.rmtree, home, True)
        os.chmod(home, 0o700)
        tree = os.path.join(home, "mod_esmtp")
        os.makedirs(os.path.join(tree, ".libs"))
        shutil.copy(MOD_ESMTP, os.path.join(tree, ".libs", "mod_esmtp.so"))
        env = dict(os.environ, top_builddir=tree, top_srcdir=tree)
        p = subprocess.run([sys.executable, os.path.join(TOP_SRCDIR, "t", "integration", "run_server.py"),
                            "--port", "2", "--config-only"], env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=60)
        out = p.stdout.decode("utf-8", "replace")
        self.assertEqual(p.returncode, 0, out)
        conf = out.strip().splitlines()[-1]
        with open(conf) as f:
            text = f.read()
        root = re.search(r'(?m)^ServerRoot "([^"]+)"', text).group(1)
        self.addCleanup(shutil.rmtree, root, True)
        user = re.search(r"(?m)^User (\S+)", text).group(1)
        maildir = re.search(r'ESMTPHandler maildir "([^"]+)"', text).group(1)
        for sub in ("tmp", "new"):
            r = subprocess.run(["runuser", "-u", user, "--", "test", "-w", os.path.join(maildir, sub)])
            self.assertEqual(r.returncode, 0, "%s cannot write %s/%s (ServerRoot %s)" % (user, maildir, sub, root))


class PreflightTest(unittest.TestCase):
    """Issue 24: `apache2 -t` (and every start) catches what the start or the
    first delivery would fail on: a transaction log that cannot be opened
    (it used to pass -t and then take the whole httpd down at the graceful
    restart), a Maildir the children's User cannot write (each delivery
    answered 451), and warns about an SMTP server on a Listen with httpd's
    accept filter (clients got no greeting)."""

    def setUp(self):
        self.httpd = Httpd()
        self.addCleanup(self.httpd.cleanup)

    def config_fails(self, *needles):
        rc, out = self.httpd.config_test()
        self.assertNotEqual(rc, 0, "apache2 -t accepted the configuration:\n" + out)
        for n in needles:
            self.assertIn(n, out)
        return out

    def test_log_directory_missing(self):
        missing = os.path.join(self.httpd.root, "no-such-dir", "esmtp.log")
        self.httpd.add_smtp("discard", log_file=missing, log_level=1)
        self.config_fails("ESMTPLogFileName", missing, "does not exist")
        self.assertFalse(os.path.exists(os.path.dirname(missing)))

    def test_relative_log_under_a_missing_logs_directory(self):
        """Debian's sample case: `esmtp.log` is ServerRoot/logs/esmtp.log."""
        self.httpd.add_smtp("discard", log_file="sub/esmtp.log", log_level=1)
        self.config_fails("ESMTPLogFileName sub/esmtp.log", os.path.join(self.httpd.root, "logs", "sub", "esmtp.log"))

    def test_log_file_is_a_directory(self):
        d = os.path.join(self.httpd.root, "logs", "adir")
        os.makedirs(d)
        self.httpd.add_smtp("discard", log_file=d, log_level=1)
        self.config_fails("ESMTPLogFileName", d, "is a directory")

    def test_log_off_is_not_checked(self):
        self.httpd.add_smtp("discard", log_file=os.path.join(self.httpd.root, "nowhere", "x.log"), log_level=0)
        rc, out = self.httpd.config_test()
        self.assertEqual(rc, 0, out)

    def test_log_file_created_0640(self):
        vh = self.httpd.add_smtp("discard", log_file="esmtp.log", log_level=1)
        self.httpd.start()
        self.httpd.stop()
        self.assertEqual(os.stat(vh.log_path).st_mode & 0o777, 0o640)

    @unittest.skipUnless(IS_ROOT, "needs root (the children run as another user)")
    def test_maildir_the_user_cannot_create(self):
        locked = os.path.join(self.httpd.root, "conf", "locked")  # conf/ stays root's
        os.makedirs(locked)
        os.chmod(locked, 0o755)
        maildir = os.path.join(locked, "Maildir")
        self.httpd.add_smtp(["maildir", maildir])
        self.config_fails("ESMTPHandler maildir", "User nobody", maildir)
        self.assertFalse(os.path.exists(maildir))

    @unittest.skipUnless(IS_ROOT, "needs root (the children run as another user)")
    def test_maildir_the_user_cannot_write(self):
        vh = self.httpd.add_smtp("maildir")
        os.chmod(os.path.join(vh.maildir, "tmp"), 0o555)  # its owner (the children's user) cannot write
        self.config_fails("ESMTPHandler maildir", "cannot write in %s/tmp" % vh.maildir)
        # and a failed check fails the start too
        rc = self.httpd.start(expect_failure=True)
        self.assertNotEqual(rc, 0)

    def test_writable_maildir_passes(self):
        vh = self.httpd.add_smtp("maildir")
        rc, out = self.httpd.config_test()
        self.assertEqual(rc, 0, out)
        self.assertNotIn("cannot work", out)

    def listen_config(self, listen, extra=()):
        self.port = free_port()
        self.httpd.main_extra += list(extra) + [
            listen % {"port": self.port},
            "<VirtualHost 127.0.0.1:%d>" % self.port,
            "    ServerName plain.test",
            "    ESMTPProtocol On",
            "    ESMTPHandler discard",
            "</VirtualHost>"]

    def test_listen_without_smtp_warns(self):
        self.listen_config("Listen 127.0.0.1:%(port)d")
        rc, out = self.httpd.config_test()
        self.assertEqual(rc, 0, out)
        self.assertIn("ESMTPProtocol On for server plain.test", out)
        self.assertIn('"Listen 127.0.0.1:%d smtp"' % self.port, out)
        self.assertIn('"AcceptFilter http none"', out)
        # and at start (before the error log is open: on httpd's stderr)
        self.httpd.start()
        self.httpd.stop()
        self.assertTrue([l for l in self.httpd.stderr_lines() if "ESMTPProtocol On for server plain.test" in l],
                        self.httpd.startup_output())

    def test_listen_smtp_is_quiet(self):
        self.listen_config("Listen 127.0.0.1:%(port)d smtp")
        rc, out = self.httpd.config_test()
        self.assertEqual(rc, 0, out)
        self.assertNotIn("accept filter", out)

    def test_acceptfilter_none_is_quiet(self):
        self.listen_config("Listen 127.0.0.1:%(port)d", extra=["AcceptFilter http none"])
        rc, out = self.httpd.config_test()
        self.assertEqual(rc, 0, out)
        self.assertNotIn("accept filter", out)


if __name__ == "__main__":
    unittest.main()
