"""Integration-test harness for mod_esmtp.

Generates a self-contained httpd.conf in a fresh temporary ServerRoot, loads
an MPM, a few stock modules, the freshly built mod_esmtp.so and the test
handler module, starts the real httpd (`apache2 -f CONF -DFOREGROUND`) on
free loopback ports, stops it by its pid, and checks the error log for lines
that should not be there.

Only the Python standard library is used (Debian's /usr/bin/python3).

Environment overrides:
    top_builddir / top_srcdir  the build and source trees (set by `make check`)
    HTTPD                      the httpd binary
    ESMTP_MODULE               path of mod_esmtp.so
    ESMTP_TEST_HANDLER_MODULE  path of mod_esmtp_test_handler.so
    ESMTP_TEST_MPM             event (default), worker or prefork
    ESMTP_KEEP=1               keep every temporary ServerRoot (else only
                               those of failed tests are kept)
    ESMTP_TEST_NO_PARKING=1    the module cannot park idle sessions
                               (configure --disable-parking, httpd < 2.4.63)
    ESMTP_TEST_LD_PRELOAD      LD_PRELOAD for httpd only (libasan for a module
                               built with -fsanitize=address: docs/sanitizers.md)
    ESMTP_TEST_ASAN_OPTIONS    ASAN_OPTIONS for httpd only
    ESMTP_TEST_UBSAN_OPTIONS   UBSAN_OPTIONS for httpd only
    ESMTP_TEST_OVER_STARTTLS=1 run the tests a second time over STARTTLS
                               (issue 9): every SMTP vhost without TLS of
                               its own gets `SSLEngine on` and
                               `ESMTPStartTLS On` with a self-signed
                               certificate, and RawClient and smtplib.SMTP
                               say EHLO and STARTTLS right after the
                               greeting and then show the test the greeting
                               as if the session had just begun (after the
                               handshake it has: RFC 3207 4.2)
"""

import os
import re
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))


# ---------------------------------------------------------------- locations

def _load_config():
    """The values configure wrote into t/integration/config.py."""
    candidates = []
    if os.environ.get("top_builddir"):
        candidates.append(os.path.join(os.environ["top_builddir"], "t", "integration", "config.py"))
    candidates.append(os.path.join(HERE, "config.py"))
    for path in candidates:
        if os.path.exists(path):
            ns = {}
            with open(path) as f:
                exec(compile(f.read(), path, "exec"), ns)
            return ns
    # Not configured: guess Debian's layout and a build tree next to us.
    top = os.path.dirname(os.path.dirname(HERE))
    return {
        "HTTPD": "/usr/sbin/apache2",
        "HTTPD_MODULESDIR": "/usr/lib/apache2/modules",
        "TOP_BUILDDIR": top,
        "TOP_SRCDIR": top,
    }


_CONFIG = _load_config()
HTTPD = os.environ.get("HTTPD") or _CONFIG["HTTPD"]
MODULESDIR = _CONFIG["HTTPD_MODULESDIR"]
TOP_BUILDDIR = os.environ.get("top_builddir") or _CONFIG["TOP_BUILDDIR"]
TOP_SRCDIR = os.environ.get("top_srcdir") or _CONFIG["TOP_SRCDIR"]
MOD_ESMTP = os.environ.get("ESMTP_MODULE") or os.path.join(TOP_BUILDDIR, ".libs", "mod_esmtp.so")
MOD_TEST_HANDLER = os.environ.get("ESMTP_TEST_HANDLER_MODULE") or os.path.join(
    TOP_BUILDDIR, "t", "handler", ".libs", "mod_esmtp_test_handler.so")
DEFAULT_MPM = os.environ.get("ESMTP_TEST_MPM", "event")
KEEP_ALWAYS = os.environ.get("ESMTP_KEEP") == "1"
# The module under test parks idle sessions with the event MPM (httpd >=
# 2.4.63); ESMTP_TEST_NO_PARKING=1 for a module built with
# --disable-parking (or against an older httpd), whose idle sessions each
# hold a thread.
PARKING = os.environ.get("ESMTP_TEST_NO_PARKING") != "1"
OVER_STARTTLS = os.environ.get("ESMTP_TEST_OVER_STARTTLS") == "1"


def _httpd_env():
    """The environment of every httpd we run: ours, plus the sanitizer
    settings meant for httpd alone (not for Python or the test clients)."""
    env = dict(os.environ)
    for var in ("LD_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS"):
        value = os.environ.get("ESMTP_TEST_" + var)
        if value:
            env[var] = value
    return env


HTTPD_ENV = _httpd_env()

IS_ROOT = os.geteuid() == 0
RUN_USER = "nobody"
RUN_GROUP = "nogroup"


def run_ids():
    """(uid, gid) the httpd children run as when started by root."""
    import grp
    import pwd
    return pwd.getpwnam(RUN_USER).pw_uid, grp.getgrnam(RUN_GROUP).gr_gid


# ---------------------------------------------------------------- ports

_ports_lock = threading.Lock()
_ports_given = set()


# run_integration_tests runs modules side by side: each module process gets
# its own range (ESMTP_TEST_PORTS=LOW-HIGH, below Linux's ephemeral ports),
# so that two processes never pick the same free port at the same moment.
_port_range = None
if os.environ.get("ESMTP_TEST_PORTS"):
    _lo, _hi = (int(x) for x in os.environ["ESMTP_TEST_PORTS"].split("-"))
    _port_range = iter(range(_lo, _hi))


def _bindable(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def free_port():
    """A loopback TCP port nobody listens on (never the same twice per run)."""
    with _ports_lock:
        if _port_range is not None:
            for port in _port_range:
                if port not in _ports_given and _bindable(port):
                    _ports_given.add(port)
                    return port
            raise RuntimeError("no free port left in ESMTP_TEST_PORTS=%s" % os.environ["ESMTP_TEST_PORTS"])
        for _ in range(100):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            finally:
                s.close()
            if port not in _ports_given:
                _ports_given.add(port)
                return port
    raise RuntimeError("no free port")


def listening_ports():
    """IPv4 ports in LISTEN state on this host (from /proc/net/tcp)."""
    ports = set()
    try:
        with open("/proc/net/tcp") as f:
            next(f)
            for line in f:
                fields = line.split()
                if fields[3] == "0A":  # TCP_LISTEN
                    ports.add(int(fields[1].split(":")[1], 16))
    except OSError:
        pass
    return ports


def _socket_inodes(pid):
    """The socket inodes open in process `pid` (empty when it is gone)."""
    out = set()
    try:
        names = os.listdir("/proc/%d/fd" % pid)
    except OSError:
        return out
    for fd in names:
        try:
            link = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        if link.startswith("socket:["):
            out.add(link[8:-1])
    return out


def _tcp_table():
    """(local port, state, inode) of every TCP socket of this host."""
    rows = []
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as f:
                next(f)
                for line in f:
                    cols = line.split()
                    rows.append((int(cols[1].rsplit(":", 1)[1], 16), cols[3], cols[9]))
        except (OSError, StopIteration):
            pass
    return rows


def served_connections(parent):
    """How many accepted connections httpd's processes (`parent` and its
    children) still hold: sockets on one of its listening ports that are not
    the listener itself."""
    pids = [parent] + children_of(parent)
    inodes = set()
    for pid in pids:
        inodes |= _socket_inodes(pid)
    table = _tcp_table()
    listening = {port for port, state, inode in table if state == "0A" and inode in inodes}
    return sum(1 for port, state, inode in table
               if inode in inodes and state != "0A" and port in listening)


def children_of(pid):
    """Pids whose parent is `pid` (httpd's children), sorted."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/status" % name) as f:
                for line in f:
                    if line.startswith("PPid:"):
                        if int(line.split()[1]) == pid:
                            out.append(int(name))
                        break
        except OSError:
            pass
    return sorted(out)


def self_signed_certificate(cert, key):
    """(cert, key): a self-signed certificate for localhost, made once."""
    if not os.path.exists(cert):
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
                        "-keyout", key, "-out", cert, "-days", "2"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
    return cert, key


def q(path):
    """Quote a value for httpd.conf."""
    return '"' + str(path).replace("\\", "\\\\").replace('"', '\\"') + '"'


# ---------------------------------------------------------------- error log

# Level of a 2.4 error-log line: "[core:error]", "[esmtp:crit]", "[:emerg]".
BAD_LEVEL_RE = re.compile(r"\[(?:[\w.-]*:)?(emerg|alert|crit|error)\]")
AH_RE = re.compile(r"\bAH\d{5}\b")
# Known harmless AH messages: the notices httpd always logs at start and stop
# (the numbers differ per MPM, so they are matched by code and text).
HARMLESS_RE = re.compile(
    r"\[[\w.-]*:notice\] .*\bAH\d{5}: (?:"
    r"Apache/\S+ .*configured -- resuming normal operations|"
    r"Command line: |"
    r"caught SIG(?:TERM|WINCH), shutting down|"
    r"SIGUSR1 received\.  Doing graceful restart|"
    r"SIGHUP received\.  Attempting to restart|"
    r"Graceful restart requested, doing restart)")
# Crashes and uncaught C++ exceptions reach the log through stderr.
FATAL_TEXT_RE = re.compile(
    r"terminate called|Segmentation fault|Aborted|double free|corrupted|AddressSanitizer|"
    r"LeakSanitizer|runtime error:|exit signal|what\(\):|pure virtual method called", re.I)


def unexpected_log_lines(lines, allow=()):
    """Lines of an error log that signal a problem. `allow` holds regexes
    (strings or compiled) for lines a test provokes on purpose."""
    allow = [re.compile(a) if isinstance(a, str) else a for a in allow]
    if OVER_STARTTLS:
        # mod_ssl's notes on the run's self-signed certificate (CA:TRUE, a
        # name other than the vhost's, `SSLSessionCache none`)
        allow.append(re.compile(r"AH01906|AH01909|AH01873"))
    bad = []
    for line in lines:
        if not line.strip():
            continue
        if any(a.search(line) for a in allow):
            continue
        if BAD_LEVEL_RE.search(line) or FATAL_TEXT_RE.search(line):
            bad.append(line)
            continue
        if AH_RE.search(line) and not HARMLESS_RE.search(line):
            bad.append(line)
    return bad


# ---------------------------------------------------------------- servers

class SmtpVhost:
    """One <VirtualHost> speaking SMTP on its own port."""

    def __init__(self, httpd, index, handler, hostname=None, server_name=None, log_file=None,
                 log_level=None, max_size=None, max_recipients=None, extra=(), port=None,
                 aliases=(), accept_domains=None, extensions=None, max_errors=None, timeouts=None,
                 address="127.0.0.1"):
        """`aliases`: ServerAlias names; `accept_domains`: ESMTPAcceptDomains
        (list of patterns); `extensions`: ESMTPExtensions (list, e.g.
        ["-CHUNKING"]); `max_errors`: ESMTPMaxErrors; `timeouts`:
        ESMTPTimeout as a dict {"command": 2, "data": 2}; `extra`: more
        lines inside the <VirtualHost>; `address`: the loopback address it
        listens on (two httpds on one port: 127.0.0.1 and 127.0.0.2)."""
        self.httpd = httpd
        self.address = address
        self.index = index
        self.port = port or free_port()
        self.server_name = server_name or "smtp%d.test" % index
        self.hostname = hostname  # ESMTPHostname (None: not set, ServerName is used)
        self.maildir = None
        self.events = None
        if handler == "maildir":
            self.maildir = os.path.join(httpd.root, "Maildir%d" % index)
            self.handler = ["maildir", self.maildir]
        elif handler == "test":
            self.events = os.path.join(httpd.root, "events%d.log" % index)
            self.handler = ["test", self.events]
        elif handler is None:
            self.handler = None
        elif isinstance(handler, str):
            self.handler = handler.split()
        else:
            self.handler = list(handler)
        self.log_file = log_file
        self.log_level = log_level
        self.max_size = max_size
        self.max_recipients = max_recipients
        self.aliases = list(aliases)
        self.accept_domains = list(accept_domains) if accept_domains is not None else None
        self.extensions = list(extensions) if extensions is not None else None
        self.max_errors = max_errors
        self.timeouts = dict(timeouts) if timeouts else None
        self.extra = list(extra)

    @property
    def name(self):
        """The name the server uses for itself (greeting, Received:)."""
        return self.hostname or self.server_name

    @property
    def log_path(self):
        """Absolute path of the transaction log (ESMTPLogFileName is relative to logs/)."""
        if not self.log_file or self.log_file.startswith("|"):
            return None
        if os.path.isabs(self.log_file):
            return self.log_file
        return os.path.join(self.httpd.root, "logs", self.log_file)

    def config(self):
        out = ["Listen %s:%d smtp" % (self.address, self.port),
               "<VirtualHost %s:%d>" % (self.address, self.port),
               "    ServerName %s" % self.server_name,
               "    ESMTPProtocol On"]
        if self.aliases:
            out.append("    ServerAlias %s" % " ".join(self.aliases))
        if self.handler:
            out.append("    ESMTPHandler " + " ".join(q(a) if ("/" in a or " " in a) else a
                                                     for a in self.handler))
        if self.hostname:
            out.append("    ESMTPHostname %s" % self.hostname)
        if self.max_size is not None:
            out.append("    ESMTPMaxMessageSize %d" % self.max_size)
        if self.max_recipients is not None:
            out.append("    ESMTPMaxRecipients %d" % self.max_recipients)
        if self.log_file:
            out.append("    ESMTPLogFileName %s" % q(self.log_file))
        if self.log_level is not None:
            out.append("    ESMTPLogLevel %d" % self.log_level)
        if self.accept_domains is not None:
            out.append("    ESMTPAcceptDomains %s" % " ".join(self.accept_domains))
        if self.extensions is not None:
            out.append("    ESMTPExtensions %s" % " ".join(self.extensions))
        if self.max_errors is not None:
            out.append("    ESMTPMaxErrors %d" % self.max_errors)
        if self.timeouts:
            out.append("    ESMTPTimeout %s" % " ".join("%s=%s" % kv for kv in sorted(self.timeouts.items())))
        out.extend("    " + line for line in self.extra)
        if OVER_STARTTLS and not any(w in line for line in self.extra for w in ("SSLEngine", "ESMTPStartTLS")):
            cert, key = self.httpd.over_starttls_cert()
            out += ["    SSLEngine on", "    SSLCertificateFile %s" % q(cert),
                    "    SSLCertificateKeyFile %s" % q(key), "    ESMTPStartTLS On"]
        out.append("</VirtualHost>")
        return "\n".join(out) + "\n"

    # --- what the handler produced

    def maildir_files(self, sub="new"):
        d = os.path.join(self.maildir, sub)
        if not os.path.isdir(d):
            return []
        return sorted(os.path.join(d, n) for n in os.listdir(d) if not n.startswith("."))

    def event_lines(self):
        try:
            with open(self.events, encoding="utf-8", errors="replace") as f:
                return f.read().splitlines()
        except FileNotFoundError:
            return []

    def log_lines(self):
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read().splitlines()
        except (FileNotFoundError, TypeError):
            return []


class Httpd:
    """An httpd with its own ServerRoot in a temporary directory."""

    def __init__(self, mpm=None, esmtp=True, test_handler=True, root=None, log_level="warn esmtp:info",
                 main_extra=(), prefix="esmtp-it-", mpm_lines=None):
        """`mpm_lines`: replaces the default MPM sizing directives
        (StartServers ... MaxRequestWorkers), e.g. for one child or for
        thousands of connections (AsyncRequestWorkerFactor)."""
        self.mpm = mpm or DEFAULT_MPM
        self.esmtp = esmtp
        self.test_handler = test_handler
        self.own_root = root is None
        self.root = root or tempfile.mkdtemp(prefix=prefix)
        self.root = os.path.abspath(self.root)
        self.log_level = log_level
        self.main_extra = list(main_extra)
        self.mpm_lines = list(mpm_lines) if mpm_lines is not None else None
        self.smtp = []
        self.http_port = None
        self.proc = None
        self.conf_path = os.path.join(self.root, "conf", "httpd.conf")
        self.error_log = os.path.join(self.root, "logs", "error_log")
        self.stderr_path = os.path.join(self.root, "logs", "httpd.stderr")
        self.pid_file = os.path.join(self.root, "run", "httpd.pid")
        self._log_offset = 0
        for d in ("conf", "logs", "run", "htdocs"):
            os.makedirs(os.path.join(self.root, d), exist_ok=True)

    # --- configuration

    def add_smtp(self, handler="maildir", **kw):
        vh = SmtpVhost(self, len(self.smtp) + 1, handler, **kw)
        self.smtp.append(vh)
        if vh.maildir:
            for sub in ("tmp", "new", "cur"):
                os.makedirs(os.path.join(vh.maildir, sub), exist_ok=True)
        return vh

    def add_http(self, index_content="hello from httpd\n", port=None):
        self.http_port = port or free_port()
        with open(os.path.join(self.root, "htdocs", "index.html"), "w") as f:
            f.write(index_content)
        return self.http_port

    def config_text(self):
        r = self.root
        m = MODULESDIR
        lines = [
            "# generated by t/integration/harness.py",
            "ServerRoot %s" % q(r),
            "ServerName localhost",
            "DefaultRuntimeDir %s" % q(os.path.join(r, "run")),
            "PidFile %s" % q(self.pid_file),
            "Mutex file:%s default" % os.path.join(r, "run"),
            "ErrorLog %s" % q(self.error_log),
            # Debian's envvars set it; the samples write their logs there
            "Define APACHE_LOG_DIR %s" % q(os.path.join(r, "logs")),
            "Timeout 30",
            "KeepAlive Off",
            "",
            "LoadModule mpm_%s_module %s" % (self.mpm, q(os.path.join(m, "mod_mpm_%s.so" % self.mpm))),
            "LoadModule authz_core_module %s" % q(os.path.join(m, "mod_authz_core.so")),
            "LoadModule dir_module %s" % q(os.path.join(m, "mod_dir.so")),
        ]
        if os.path.exists("/etc/mime.types"):
            lines += ["LoadModule mime_module %s" % q(os.path.join(m, "mod_mime.so")),
                      "TypesConfig /etc/mime.types"]
        if self.esmtp:
            lines.append("LoadModule esmtp_module %s" % q(MOD_ESMTP))
        if self.esmtp and self.test_handler:
            lines.append("LoadModule esmtp_test_handler_module %s" % q(MOD_TEST_HANDLER))
        log_level = self.log_level if self.esmtp else self.log_level.split()[0]
        lines.append("LogLevel %s" % log_level)
        lines.append("")
        if IS_ROOT:
            lines += ["User %s" % RUN_USER, "Group %s" % RUN_GROUP]
        if self.mpm_lines is not None:
            lines += self.mpm_lines
        elif self.mpm == "prefork":
            lines += ["StartServers 2", "MinSpareServers 2", "MaxSpareServers 10",
                      "ServerLimit 64", "MaxRequestWorkers 64"]
        else:
            lines += ["StartServers 2", "ServerLimit 4", "ThreadsPerChild 32",
                      "ThreadLimit 32", "MinSpareThreads 16", "MaxSpareThreads 128",
                      "MaxRequestWorkers 128"]
        lines += [
            "",
            "DocumentRoot %s" % q(os.path.join(r, "htdocs")),
            "DirectoryIndex index.html",
            "<Directory />",
            "    Require all denied",
            "</Directory>",
            "<Directory %s>" % q(os.path.join(r, "htdocs")),
            "    Require all granted",
            "</Directory>",
            "",
        ]
        lines += self.main_extra
        if OVER_STARTTLS and self.esmtp and not any("ssl_module" in line for line in self.main_extra):
            lines += ["LoadModule socache_shmcb_module %s" % q(os.path.join(m, "mod_socache_shmcb.so")),
                      "LoadModule ssl_module %s" % q(os.path.join(m, "mod_ssl.so")),
                      "SSLSessionCache none", "SSLRandomSeed startup builtin"]
        text = "\n".join(lines) + "\n"
        if self.http_port:
            text += ("Listen 127.0.0.1:%d http\n"
                     "<VirtualHost 127.0.0.1:%d>\n"
                     "    ServerName http.test\n"
                     "    DocumentRoot %s\n"
                     "</VirtualHost>\n") % (self.http_port, self.http_port, q(os.path.join(r, "htdocs")))
        for vh in self.smtp:
            text += "\n" + vh.config()
        return text

    def over_starttls_cert(self):
        """(cert, key) of a self-signed certificate in conf/, made once."""
        cert = os.path.join(self.root, "conf", "over-starttls-cert.pem")
        key = os.path.join(self.root, "conf", "over-starttls-key.pem")
        return self_signed_certificate(cert, key)

    def write_config(self):
        with open(self.conf_path, "w") as f:
            f.write(self.config_text())
        self._fix_ownership()
        return self.conf_path

    def _fix_ownership(self):
        """As root, httpd's children run as nobody: let them write the spool
        and the event files (logs are opened by the root parent)."""
        if not IS_ROOT:
            return
        uid, gid = run_ids()
        os.chmod(self.root, 0o755)
        os.chown(self.root, uid, gid)
        for dirpath, dirnames, filenames in os.walk(self.root):
            rel = os.path.relpath(dirpath, self.root)
            if rel.split(os.sep)[0] in ("conf", "logs", "run"):
                continue
            for n in dirnames + filenames:
                try:
                    os.chown(os.path.join(dirpath, n), uid, gid)
                except FileNotFoundError:
                    pass

    def config_test(self):
        """`httpd -t`: (exit status, combined output)."""
        self.write_config()
        p = subprocess.run([HTTPD, "-t", "-f", self.conf_path], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=60, env=HTTPD_ENV)
        return p.returncode, p.stdout.decode("utf-8", "replace")

    # --- running

    def ports(self):
        ports = [vh.port for vh in self.smtp]
        if self.http_port:
            ports.append(self.http_port)
        return ports

    def start(self, timeout=20, expect_failure=False):
        """Start httpd in the foreground (as our child, in its own process
        group). Returns once every port is listening and the server said
        "resuming normal operations". The SMTP ports are not probed with a
        connection: that would be a session in the logs and event files;
        the kernel queues clients until a child accepts."""
        if not self.esmtp or not self.test_handler:
            pass
        elif not os.path.exists(MOD_TEST_HANDLER):
            raise RuntimeError("test handler module not built: %s (run `make check` or "
                               "`make t/handler/mod_esmtp_test_handler.la`)" % MOD_TEST_HANDLER)
        if self.esmtp and not os.path.exists(MOD_ESMTP):
            raise RuntimeError("module not built: %s" % MOD_ESMTP)
        self.write_config()
        self._log_offset = self._log_size()
        stderr = open(self.stderr_path, "ab")
        try:
            self.proc = subprocess.Popen([HTTPD, "-f", self.conf_path, "-DFOREGROUND"],
                                         stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr,
                                         start_new_session=True, close_fds=True, env=HTTPD_ENV)
        finally:
            stderr.close()
        deadline = time.time() + timeout
        while time.time() < deadline:
            rc = self.proc.poll()
            if rc is not None:
                self.proc = None
                if expect_failure:
                    return rc
                raise RuntimeError("httpd exited with status %d at start-up:\n%s" % (rc, self.startup_output()))
            if (os.path.exists(self.pid_file) and set(self.ports()) <= listening_ports()
                    and "resuming normal operations" in self._read_log_text()):
                if self.http_port:
                    self._probe(self.http_port, deadline)
                if expect_failure:
                    self.stop()
                    raise RuntimeError("httpd started although a failure was expected")
                return 0
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("httpd did not come up within %ss:\n%s" % (timeout, self.startup_output()))

    def _probe(self, port, deadline):
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("port %d does not accept connections" % port)

    def startup_output(self):
        out = ""
        for path in (self.stderr_path, self.error_log):
            try:
                with open(path, encoding="utf-8", errors="replace") as f:
                    out += "--- %s\n%s" % (path, f.read()[-8000:])
            except FileNotFoundError:
                pass
        return out

    def restart(self, graceful=True, timeout=20):
        """SIGUSR1 (graceful) or SIGHUP to the parent; returns once httpd
        says "resuming normal operations" again."""
        before = self._read_log_text().count("resuming normal operations")
        os.kill(self.proc.pid, signal.SIGUSR1 if graceful else signal.SIGHUP)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("httpd exited on restart:\n" + self.startup_output())
            if self._read_log_text().count("resuming normal operations") > before:
                return
            time.sleep(0.05)
        raise RuntimeError("httpd did not restart within %ss" % timeout)

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=15):
        """SIGTERM the parent we started, wait, then SIGKILL its process group."""
        if self.proc is None:
            return
        pid = self.proc.pid
        if self.proc.poll() is None:
            # httpd 2.4's event and worker MPMs can crash at SIGTERM when a
            # worker is just finishing a connection: close_worker_sockets()
            # reads the socket of a pool the listener has freed (a child's
            # "exit signal Segmentation fault" in the log, without mod_esmtp
            # too: event_stop_race.py). Let the connections that are ending
            # end first; sessions a test keeps open cost at most the bound.
            wait_for(lambda: served_connections(pid) == 0, 1.5, 0.05)
            time.sleep(0.05)
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(10)
        # Children left behind (they share the process group we created).
        try:
            os.killpg(pid, 0)
            time.sleep(0.5)
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc = None

    def cleanup(self, keep=False):
        self.stop()
        if keep or KEEP_ALWAYS or not self.own_root:
            sys.stderr.write("kept ServerRoot %s\n" % self.root)
            return
        shutil.rmtree(self.root, ignore_errors=True)

    # --- error log

    def _log_size(self):
        try:
            return os.path.getsize(self.error_log)
        except FileNotFoundError:
            return 0

    def _read_log_text(self, offset=0):
        try:
            with open(self.error_log, "rb") as f:
                f.seek(offset)
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_lines(self):
        return self._read_log_text().splitlines()

    def new_log_lines(self):
        """Error-log lines written since the last call (and stderr, always whole)."""
        text = self._read_log_text(self._log_offset)
        self._log_offset += len(text.encode("utf-8", "replace"))
        return text.splitlines()

    def stderr_lines(self):
        try:
            with open(self.stderr_path, encoding="utf-8", errors="replace") as f:
                return f.read().splitlines()
        except FileNotFoundError:
            return []

    def check_log(self, allow=()):
        """Unexpected lines written since the last check."""
        return unexpected_log_lines(self.new_log_lines(), allow)


def stop_nodes(httpds, allow=(), cleanups=()):
    """Stops each httpd of a test with several, checks its error log
    (`allow`: regexes of lines provoked on purpose) and removes its
    ServerRoot (kept from the first unexpected line on); then calls each of
    `cleanups` (the peers the nodes shared) and raises AssertionError with
    the unexpected lines."""
    bad = []
    try:
        for h in httpds:
            h.stop()
            bad += h.check_log(allow)
            h.cleanup(keep=bool(bad))
    finally:
        for cleanup in cleanups:
            cleanup()
    if bad:
        raise AssertionError("unexpected error-log lines:\n" + "\n".join(bad))


# ---------------------------------------------------------------- test cases

class ServerTestCase(unittest.TestCase):
    """One httpd per test class (configure() adds the vhosts); after every
    test the new error-log lines are checked. `allowed_log` lists regexes of
    lines a class provokes on purpose."""

    mpm = None
    allowed_log = ()
    httpd = None
    # keyword arguments of Httpd() for this class (e.g. mpm_lines, main_extra)
    httpd_options = {}

    @classmethod
    def configure(cls, httpd):
        raise NotImplementedError

    @classmethod
    def setUpClass(cls):
        cls._failed = False
        cls.httpd = Httpd(mpm=cls.mpm, **cls.httpd_options)
        try:
            cls.configure(cls.httpd)
            cls.httpd.start()
        except BaseException:
            cls.httpd.cleanup(keep=True)
            raise

    @classmethod
    def tearDownClass(cls):
        httpd = cls.httpd
        httpd.stop()
        bad = httpd.check_log(cls.allowed_log)
        bad += unexpected_log_lines(httpd.stderr_lines(), cls.allowed_log)
        failed = cls._failed or bool(bad)
        if failed:
            sys.stderr.write("\n--- error log of %s (%s)\n%s\n" % (
                cls.__name__, httpd.error_log, "\n".join(httpd.log_lines()[-60:])))
        httpd.cleanup(keep=failed)
        if bad:
            raise AssertionError("unexpected error-log lines at shutdown:\n" + "\n".join(bad))

    def setUp(self):
        self.httpd.new_log_lines()  # forget what earlier tests left

    def tearDown(self):
        time.sleep(0.05)
        bad = self.httpd.check_log(self.allowed_log)
        outcome = getattr(self, "_outcome", None)
        if outcome is not None and not _outcome_ok(outcome):
            type(self)._failed = True
        if bad:
            type(self)._failed = True
            self.fail("unexpected error-log lines:\n" + "\n".join(bad))


def plaintext_only(reason):
    """Skip a test in the ESMTP_TEST_OVER_STARTTLS run: what it checks
    happens before STARTTLS (the greeting, a ClientHello on a plain port) or
    counts the EHLO and STARTTLS the run adds."""
    return unittest.skipIf(OVER_STARTTLS, "plaintext only: " + reason)


def _outcome_ok(outcome):
    # unittest's private _Outcome: `success` turns False when the test failed.
    return getattr(outcome, "success", True)


# ---------------------------------------------------------------- clients

class RawClient:
    """A line-oriented SMTP client on a plain socket, for what smtplib
    will not send (long lines, bare LF, half messages)."""

    def __init__(self, port, timeout=20):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""
        if OVER_STARTTLS:
            self._over_starttls()

    def _over_starttls(self):
        """EHLO, STARTTLS and the handshake, then the greeting is put back
        for the test to read. A session the server did not greet with 220,
        or that does not offer STARTTLS, is left as it is."""
        code, greeting = self.reply()
        if code == 220:
            code, lines = self.cmd("EHLO starttls.client.example")
            if code == 250 and any(l[4:].upper() == "STARTTLS" for l in lines):
                code, _ = self.cmd("STARTTLS")
                if code == 220:
                    assert self.buf == b"", self.buf
                    self.sock = _over_starttls_context().wrap_socket(self.sock)
        self.buf = "".join(l + "\r\n" for l in greeting).encode() + self.buf

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def line(self):
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed; buffered %r" % self.buf)
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line.decode("utf-8", "replace") + "\n"

    def reply(self):
        """One complete (possibly multi-line) reply: (code, [lines])."""
        lines = []
        while True:
            line = self.line()
            if not line.endswith("\r\n"):
                raise AssertionError("reply line without CRLF: %r" % line)
            line = line[:-2]
            lines.append(line)
            if len(line) < 4 or line[3] != "-":
                return int(line[:3]), lines

    def cmd(self, text):
        self.send(text + "\r\n")
        return self.reply()

    def rest(self, timeout=5):
        """Everything until the server closes (or `timeout`)."""
        self.sock.settimeout(timeout)
        data = self.buf
        self.buf = b""
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except socket.timeout:
            pass
        return data.decode("utf-8", "replace")

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _over_starttls_context():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


if OVER_STARTTLS:
    _plain_connect = smtplib.SMTP.connect

    def _connect_over_starttls(self, host="localhost", port=0, source_address=None):
        # smtplib.SMTP (not SMTP_SSL, not LMTP): upgrade at once; starttls()
        # forgets the EHLO, so the test's own EHLO comes next
        code, msg = _plain_connect(self, host, port, source_address)
        if code == 220 and type(self) is smtplib.SMTP:
            self.ehlo("starttls.client.example")
            if self.has_extn("starttls"):
                self.starttls(context=_over_starttls_context())
        return code, msg

    smtplib.SMTP.connect = _connect_over_starttls


QUEUED_RE = re.compile(r"queued as ([0-9A-Za-z]+)")


def queue_id_of(text):
    m = QUEUED_RE.search(text)
    if not m:
        raise AssertionError("no queue id in %r" % text)
    return m.group(1)


def split_delivered(content):
    """Split a delivered Maildir file into (return_path_line, received
    (unfolded, str), message bytes). Raises AssertionError when the file does
    not start with Return-Path and Received."""
    if not content.startswith(b"Return-Path: "):
        raise AssertionError("file does not start with Return-Path: %r" % content[:200])
    rp_end = content.index(b"\r\n") + 2
    return_path = content[:rp_end]
    rest = content[rp_end:]
    if not rest.startswith(b"Received: "):
        raise AssertionError("no Received: after Return-Path: %r" % rest[:200])
    pos = 0
    while True:
        eol = rest.index(b"\r\n", pos) + 2
        pos = eol
        if rest[pos:pos + 1] not in (b" ", b"\t"):
            break
    received = rest[:pos]
    unfolded = re.sub(rb"\r\n[ \t]+", b" ", received[:-2]).decode("utf-8", "replace")
    return return_path, unfolded, rest[pos:]


def wait_for(predicate, timeout=5.0, interval=0.05):
    """Poll until predicate() is true; returns its last value."""
    deadline = time.time() + timeout
    while True:
        value = predicate()
        if value or time.time() >= deadline:
            return value
        time.sleep(interval)
