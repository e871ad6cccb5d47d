"""The Debian package (debian/): `dpkg-buildpackage -us -uc -b` in a copy of
the tree, `dpkg -i` of libapache2-mod-esmtp and -dev, then what an
administrator does: `a2enmod esmtp`, `apache2ctl -t`, each shipped sample
enabled in turn as a site (`a2ensite`, `apache2ctl -t`) and run with a
delivery by swaks through the installed module (a private httpd with the
sample's ports moved to loopback ports: the system apache2 service is
never started), the -dev package's pkg-config file compiling a handler;
finally `dpkg --purge` leaves the machine as it was.

Runs only as root (CI's throwaway machine) and skips with the reason
otherwise, or when the package is already installed or a system apache2
runs. The maintainer scripts' `invoke-rc.d` is replaced by a stub (first on
PATH) that records the request: the package asks for a restart of apache2
as Debian's module packages do, and the test checks that it asked."""

import glob
import os
import re
import shutil
import smtplib
import subprocess
import tempfile
import unittest

from harness import IS_ROOT, MODULESDIR, TOP_SRCDIR, Httpd, free_port, q, self_signed_certificate, wait_for

PACKAGES = ["libapache2-mod-esmtp", "libapache2-mod-esmtp-dev"]
LOAD = "/etc/apache2/mods-available/esmtp.load"
ENABLED = "/etc/apache2/mods-enabled/esmtp.load"
SO = "/usr/lib/apache2/modules/mod_esmtp.so"
EXAMPLES = "/usr/share/doc/libapache2-mod-esmtp/examples"
EXAMPLE = EXAMPLES + "/esmtp.conf"
SAMPLES = ["esmtp.conf", "esmtp-tls.conf", "esmtp-submission.conf", "esmtp-md.conf"]
SPOOL = "/var/lib/esmtp"
# the modules each sample needs besides mod_esmtp (a2enmod NAME)
SAMPLE_MODULES = {"esmtp.conf": [], "esmtp-tls.conf": ["ssl"], "esmtp-submission.conf": ["ssl"],
                  "esmtp-md.conf": ["ssl", "md"]}


def installed(pkg):
    p = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg], stdout=subprocess.PIPE,
                       stderr=subprocess.DEVNULL)
    return b"install ok installed" in p.stdout or b"config-files" in p.stdout


def system_apache_running():
    for pidfile in ("/run/apache2/apache2.pid", "/var/run/apache2/apache2.pid"):
        try:
            with open(pidfile) as f:
                os.kill(int(f.read().strip()), 0)
            return True
        except (OSError, ValueError):
            pass
    return False


def skip_reason():
    if os.environ.get("ESMTP_MODULE"):
        return "another module is under test (ESMTP_MODULE, the sanitizer run): the package is tested once, in make check"
    if not IS_ROOT:
        return "the package test installs a .deb: run as root on a throwaway machine (CI does)"
    for tool in ("dpkg-buildpackage", "dh", "dh_apache2", "dpkg", "a2enmod", "apache2ctl"):
        if not shutil.which(tool):
            return "%s not found (apt-get install debhelper apache2-dev apache2)" % tool
    if not os.path.isdir(os.path.join(TOP_SRCDIR, "debian")):
        return "no debian/ in %s" % TOP_SRCDIR
    for pkg in PACKAGES:
        if installed(pkg):
            return "%s is already installed on this machine: not touching it" % pkg
    if system_apache_running():
        return "a system apache2 is running: the package's maintainer scripts would restart it"
    return None


def run(cmd, timeout=120, env=None, cwd=None):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout, env=env, cwd=cwd)
    return p.returncode, p.stdout.decode("utf-8", "replace")


def copy_tree(src, dst):
    """The tracked and untracked files that .gitignore does not name (as
    .ci/run copies the tree): no build products."""
    p = subprocess.run(["git", "-C", src, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    if p.returncode != 0:
        # not a git checkout (.ci/run's copy): leave the build products out;
        # dpkg-buildpackage's `dh clean` runs `make distclean` for the rest
        shutil.copytree(src, dst, symlinks=True, ignore=shutil.ignore_patterns(
            "*.o", "*.lo", "*.la", ".libs", ".deps", "build-asan", "obj", "*.log", "*.trs", "__pycache__",
            "run_unit_tests", "fuzz_command", "fuzz_address", "fuzz_data"))
        return
    for rel in p.stdout.decode().split("\0"):
        if not rel or not os.path.lexists(os.path.join(src, rel)):
            continue
        os.makedirs(os.path.join(dst, os.path.dirname(rel)), exist_ok=True)
        shutil.copy2(os.path.join(src, rel), os.path.join(dst, rel), follow_symlinks=False)


@unittest.skipIf(skip_reason(), skip_reason())
class PackageTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.work = tempfile.mkdtemp(prefix="esmtp-pkg-")
        os.chmod(cls.work, 0o755)
        src = os.path.join(cls.work, "mod-esmtp")
        copy_tree(TOP_SRCDIR, src)
        env = dict(os.environ, DEB_BUILD_OPTIONS="nocheck parallel=%d" % (os.cpu_count() or 2))
        rc, out = run(["dpkg-buildpackage", "-us", "-uc", "-b"], timeout=900, env=env, cwd=src)
        if rc != 0:
            raise AssertionError("dpkg-buildpackage failed:\n" + out[-4000:])
        cls.debs = {pkg: glob.glob(os.path.join(cls.work, "%s_*.deb" % pkg)) for pkg in PACKAGES}
        # the maintainer scripts' service actions are recorded, never run
        cls.stubs = os.path.join(cls.work, "stubs")
        cls.rc_log = os.path.join(cls.work, "invoke-rc.d.log")
        os.makedirs(cls.stubs)
        for name in ("invoke-rc.d", "deb-systemd-invoke"):
            path = os.path.join(cls.stubs, name)
            with open(path, "w") as f:
                f.write("#!/bin/sh\necho \"%s $*\" >> %s\nexit 0\n" % (name, cls.rc_log))
            os.chmod(path, 0o755)
        cls.env = dict(os.environ, PATH=cls.stubs + ":" + os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"))

    @classmethod
    def tearDownClass(cls):
        # whatever happened: leave the machine as it was
        for pkg in reversed(PACKAGES):
            if installed(pkg):
                run(["dpkg", "--purge", pkg], env=cls.env)
        shutil.rmtree(cls.work, ignore_errors=True)

    def test_install_enable_deliver_purge(self):
        for pkg in PACKAGES:
            self.assertEqual(len(self.debs[pkg]), 1, self.debs)
        rc, out = run(["dpkg", "-i"] + [self.debs[p][0] for p in PACKAGES], env=self.env)
        self.assertEqual(rc, 0, out)
        self.assertTrue(os.path.exists(SO))
        self.assertTrue(os.path.exists(LOAD))
        # dh_apache2's postinst enabled it and asked for an apache2 restart
        self.assertTrue(os.path.islink(ENABLED), out)
        with open(self.rc_log) as f:
            self.assertIn("invoke-rc.d apache2 restart", f.read())

        # the administrator's commands
        rc, out = run(["a2dismod", "-q", "esmtp"], env=self.env)
        self.assertEqual(rc, 0, out)
        self.assertFalse(os.path.lexists(ENABLED))
        rc, out = run(["a2enmod", "esmtp"], env=self.env)
        self.assertEqual(rc, 0, out)
        self.assertTrue(os.path.islink(ENABLED))
        rc, out = run(["a2query", "-m", "esmtp"])
        self.assertEqual(rc, 0, out)
        rc, out = run(["apache2ctl", "-t"], env=self.env)
        self.assertEqual(rc, 0, out)
        self.assertIn("Syntax OK", out)

        # the shipped sample, in a private configuration
        httpd = Httpd(esmtp=False, test_handler=False, prefix="esmtp-pkg-it-",
                      main_extra=["Include %s" % ENABLED, "Include /etc/apache2/mods-available/esmtp.conf"])
        try:
            example = EXAMPLE
            if not os.path.exists(example) and os.path.exists(example + ".gz"):
                example = os.path.join(httpd.root, "conf", "esmtp-example.conf")
                run(["sh", "-c", "gunzip -c %s.gz > %s" % (EXAMPLE, example)])
            self.assertTrue(os.path.exists(example), "no example configuration shipped")
            sample = Httpd(esmtp=False, test_handler=False, prefix="esmtp-pkg-t-",
                           main_extra=["Include %s" % ENABLED, "Include %s" % example,
                                       # the spool the package made belongs to www-data
                                       "User www-data", "Group www-data"])
            try:
                rc, out = sample.config_test()
                self.assertEqual(rc, 0, out)
            finally:
                sample.cleanup()

            # a delivery through the installed module
            vh = httpd.add_smtp("maildir", accept_domains=["localhost"])
            httpd.start()
            with smtplib.SMTP("127.0.0.1", vh.port, local_hostname="client.example", timeout=20) as s:
                s.ehlo()
                s.mail("a@client.example")
                s.rcpt("b@localhost")
                code, text = s.data(b"Subject: from the package\r\n\r\nbody\r\n")
            self.assertEqual(code, 250, text)
            files = wait_for(lambda: vh.maildir_files(), 5)
            self.assertEqual(len(files), 1)
            with open(files[0], "rb") as f:
                self.assertIn(b"Subject: from the package", f.read())
            httpd.stop()
            # mod_ssl's notes on the test's self-signed certificate
            self.assertEqual(httpd.check_log(allow=(r"AH01906|AH01909|AH01873",)), [])
        finally:
            httpd.stop()
            httpd.cleanup()

        self.check_package_files()
        for name in SAMPLES:
            with self.subTest(sample=name):
                self.check_sample(name)

        # the -dev package: a handler translation unit compiles with pkg-config's flags
        rc, cflags = run(["pkg-config", "--cflags", "mod_esmtp"])
        self.assertEqual(rc, 0, cflags)
        tu = os.path.join(self.work, "handler.cpp")
        with open(tu, "w") as f:
            f.write("#include <esmtp/apache.hpp>\n#include <esmtp/handler.hpp>\n"
                    "struct H : esmtp::Handler {};\nint main() { H h; (void)h; }\n")
        rc, out = run(["sh", "-c", "g++ -fsyntax-only %s %s" % (cflags.strip(), tu)])
        self.assertEqual(rc, 0, out)

        # purge: nothing of the package is left
        rc, out = run(["dpkg", "--purge", "libapache2-mod-esmtp-dev", "libapache2-mod-esmtp"], env=self.env)
        self.assertEqual(rc, 0, out)
        for path in (SO, LOAD, ENABLED, "/etc/apache2/mods-available/esmtp.conf", "/usr/include/esmtp"):
            self.assertFalse(os.path.lexists(path), path)
        for pkg in PACKAGES:
            self.assertFalse(installed(pkg), pkg)
        # the deliveries were removed: the empty spool goes with the package
        self.assertFalse(os.path.lexists(SPOOL))
        self.assertFalse(os.path.lexists("/var/log/apache2/esmtp.log"))

    def check_package_files(self):
        import grp
        import pwd
        st = os.stat(os.path.join(SPOOL, "Maildir", "new"))
        self.assertEqual(pwd.getpwuid(st.st_uid).pw_name, "www-data")
        for f in ("esmtp.log", "esmtp-submission.log"):
            st = os.stat(os.path.join("/var/log/apache2", f))
            self.assertEqual((st.st_uid, grp.getgrgid(st.st_gid).gr_name, st.st_mode & 0o777), (0, "adm", 0o640), f)
        for name in SAMPLES:
            self.assertTrue(os.path.exists(os.path.join(EXAMPLES, name)) or
                            os.path.exists(os.path.join(EXAMPLES, name + ".gz")), name)

    def sample_text(self, name):
        path = os.path.join(EXAMPLES, name)
        if os.path.exists(path):
            with open(path) as f:
                return f.read()
        return subprocess.run(["gunzip", "-c", path + ".gz"], stdout=subprocess.PIPE, check=True).stdout.decode()

    def certificate(self):
        return self_signed_certificate(os.path.join(self.work, "cert.pem"), os.path.join(self.work, "key.pem"))

    def users_file(self):
        path = os.path.join(self.work, "smtp-users")
        if not os.path.exists(path):
            subprocess.run(["htpasswd", "-bcB", path, "alice@example.org", "secret-pw"], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            os.chmod(path, 0o644)
        return path

    def placeholders(self, text):
        """What an administrator fills in: the certificate, the user file."""
        cert, key = self.certificate()
        text = re.sub(r"(SSLCertificateFile\s+)\S+", lambda m: m.group(1) + q(cert), text)
        text = re.sub(r"(SSLCertificateKeyFile\s+)\S+", lambda m: m.group(1) + q(key), text)
        return text.replace("/etc/apache2/smtp-users", self.users_file())

    def check_sample(self, name):
        text = self.sample_text(name)
        # 1. enabled as a site of the system configuration: apache2ctl -t
        mods_enabled = "/etc/apache2/mods-enabled"
        links_before = set(os.listdir(mods_enabled))
        for mod in SAMPLE_MODULES[name]:
            rc, out = run(["a2enmod", "-q", mod], env=self.env)
            self.assertEqual(rc, 0, out)
        site = "/etc/apache2/sites-available/esmtp-pkgtest.conf"
        try:
            with open(site, "w") as f:
                f.write(self.placeholders(text))
            rc, out = run(["a2ensite", "-q", "esmtp-pkgtest"], env=self.env)
            self.assertEqual(rc, 0, out)
            rc, out = run(["apache2ctl", "-t"], env=self.env)
            self.assertEqual(rc, 0, "%s as a site:\n%s" % (name, out))
            self.assertIn("Syntax OK", out)
        finally:
            run(["a2dissite", "-q", "esmtp-pkgtest"], env=self.env)
            if os.path.exists(site):
                os.unlink(site)
            # a2enmod ssl also enables socache_shmcb: remove exactly the new links
            for link in set(os.listdir(mods_enabled)) - links_before:
                os.unlink(os.path.join(mods_enabled, link))
        if name == "esmtp-md.conf":
            return  # its certificates come from an ACME CA: test_md runs it against pebble
        # 2. a delivery with swaks, the sample's ports moved to loopback ports
        ports = {}
        for port in re.findall(r"(?m)^\s*Listen 127\.0\.0\.1:(\d+) smtp", text):
            ports[port] = free_port()
            text = text.replace("127.0.0.1:%s" % port, "127.0.0.1:%d" % ports[port])
        for port in re.findall(r"(?m)^\s*Listen (\d+) smtp", text):
            ports[port] = free_port()
            text = text.replace("Listen %s smtp" % port, "Listen 127.0.0.1:%d smtp" % ports[port])
            text = text.replace("<VirtualHost *:%s>" % port, "<VirtualHost 127.0.0.1:%d>" % ports[port])
        self.assertTrue(ports, name)
        main = ["Include %s" % ENABLED, "Include /etc/apache2/mods-available/esmtp.conf",
                "User www-data", "Group www-data"]
        if SAMPLE_MODULES[name]:
            main += ["LoadModule socache_shmcb_module %s" % q(os.path.join(MODULESDIR, "mod_socache_shmcb.so")),
                     "LoadModule ssl_module %s" % q(os.path.join(MODULESDIR, "mod_ssl.so")),
                     "LoadModule authn_core_module %s" % q(os.path.join(MODULESDIR, "mod_authn_core.so")),
                     "LoadModule authn_file_module %s" % q(os.path.join(MODULESDIR, "mod_authn_file.so"))]
        httpd = Httpd(esmtp=False, test_handler=False, prefix="esmtp-pkg-%s-" % name.split(".")[0],
                      main_extra=main + [self.placeholders(text)])
        try:
            httpd.start()
            if name == "esmtp-submission.conf":
                port, folder = ports["587"], "Outgoing"
                swaks = ["--tls", "--auth", "PLAIN", "--auth-user", "alice@example.org",
                         "--auth-password", "secret-pw", "--from", "alice@example.org",
                         "--to", "someone@elsewhere.example"]
            else:
                port, folder = list(ports.values())[0], "Maildir"
                domain = "mx.example.org" if name == "esmtp-tls.conf" else "example.org"
                swaks = (["--tls"] if name == "esmtp-tls.conf" else []) + [
                    "--from", "a@client.example", "--to", "b@" + domain]
            new_dir = os.path.join(SPOOL, folder, "new")
            before = set(os.listdir(new_dir)) if os.path.isdir(new_dir) else set()
            rc, out = run(["swaks", "--server", "127.0.0.1:%d" % port, "--helo", "client.example",
                           "--header", "Subject: package sample %s" % name] + swaks, timeout=60)
            self.assertEqual(rc, 0, "swaks through %s:\n%s" % (name, out))
            arrived = wait_for(lambda: set(os.listdir(new_dir)) - before, 5)
            self.assertTrue(arrived, "nothing in %s after swaks:\n%s" % (new_dir, out))
            for f in arrived:
                with open(os.path.join(new_dir, f), "rb") as fh:
                    self.assertIn(("Subject: package sample %s" % name).encode(), fh.read())
                os.unlink(os.path.join(new_dir, f))
            httpd.stop()
            # mod_ssl's notes on the test's self-signed certificate
            self.assertEqual(httpd.check_log(allow=(r"AH01906|AH01909|AH01873",)), [])
        finally:
            httpd.stop()
            httpd.cleanup()


if __name__ == "__main__":
    unittest.main()
