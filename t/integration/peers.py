"""Real peers for the integration tests, each private to the test: a HAProxy
(`haproxy -f CFG -db`), a Dovecot LMTP server (`dovecot -F -c CONF`), a
Postfix smarthost with Dovecot SASL, dnsmasq, Redis and memcached, configured in a
temporary directory, on loopback only, stopped by pid."""

import os
import shutil
import signal
import smtplib
import socket
import subprocess
import tempfile
import textwrap
import time

from harness import MODULESDIR, free_port, q, wait_for
from test_postfix import PrivatePostfix
from test_starttls import make_cert

SBIN_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
HAPROXY = shutil.which("haproxy", path=SBIN_PATH)
DOVECOT = shutil.which("dovecot", path=SBIN_PATH)


def _listening(host, port):
    try:
        socket.create_connection((host, port), timeout=1).close()
        return True
    except OSError:
        return False


def _stop(proc, timeout=10):
    if proc and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


class HAProxy:
    """mode tcp. `frontends`: [(listen_port, [(host, port), ...], server_options)],
    e.g. (p, [("127.0.0.1", 2525)], "send-proxy-v2"). A stats socket
    answers server_state()."""

    def __init__(self, frontends, extra_defaults=()):
        self.root = tempfile.mkdtemp(prefix="esmtp-it-haproxy-")
        self.cfg = os.path.join(self.root, "haproxy.cfg")
        self.stats = os.path.join(self.root, "stats.sock")
        lines = ["global", "    maxconn 500", "    stats socket %s level admin" % self.stats,
                 "defaults", "    mode tcp", "    timeout connect 5s", "    timeout client 60s",
                 "    timeout server 60s"] + ["    " + e for e in extra_defaults]
        for i, (listen, servers, options) in enumerate(frontends):
            lines += ["frontend f%d" % i, "    bind 127.0.0.1:%d" % listen, "    default_backend b%d" % i,
                      "backend b%d" % i]
            for k, (host, port) in enumerate(servers):
                lines.append("    server s%d %s:%d %s" % (k + 1, host, port, options))
        with open(self.cfg, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.log = open(os.path.join(self.root, "haproxy.out"), "w+")
        self.proc = subprocess.Popen([HAPROXY, "-f", self.cfg, "-db"], stdout=self.log, stderr=subprocess.STDOUT)
        ports = [p for p, _, _ in frontends]
        if not wait_for(lambda: all(_listening("127.0.0.1", p) for p in ports) or self.proc.poll() is not None,
                        15) or self.proc.poll() is not None:
            out = self.output()
            self.stop()
            raise RuntimeError("haproxy did not start:\n" + out)

    def output(self):
        self.log.seek(0)
        return self.log.read()

    def command(self, cmd):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(5)
        s.connect(self.stats)
        s.sendall(cmd.encode() + b"\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        s.close()
        return data.decode("utf-8", "replace")

    def server_status(self, backend, server):
        """"UP", "DOWN", "MAINT"... from `show stat`."""
        out = self.command("show stat")
        header = None
        for line in out.splitlines():
            if line.startswith("# "):
                header = line[2:].split(",")
                continue
            fields = line.split(",")
            if header and len(fields) > 1 and fields[0] == backend and fields[1] == server:
                return fields[header.index("status")]
        return None

    def stop(self):
        _stop(self.proc)
        self.proc = None
        if not self.log.closed:
            self.log.close()
        shutil.rmtree(self.root, ignore_errors=True)


class Dovecot:
    """Dovecot LMTP on 127.0.0.1:`port`: a static passdb and a passwd-file
    userdb; `users` get a writable home (mail as nobody/nogroup), `broken`
    users a home they cannot write (their delivery fails with 451, so that
    per-recipient results differ). Mail: maildir:~/Maildir."""

    def __init__(self, users=("alice", "bob"), broken=("dave",)):
        import grp
        import pwd
        uid, gid = pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid
        self.root = tempfile.mkdtemp(prefix="esmtp-it-dovecot-")
        os.chmod(self.root, 0o755)
        self.port = free_port()
        self.log_path = os.path.join(self.root, "dovecot.log")
        home = os.path.join(self.root, "home")
        os.makedirs(home)
        with open(os.path.join(self.root, "users"), "w") as f:
            for u in list(users) + list(broken):
                d = os.path.join(home, u)
                os.makedirs(d)
                if u in users:
                    os.chown(d, uid, gid)
                f.write("%s::%d:%d::%s::\n" % (u, uid, gid, d))
        self.home = home
        conf = textwrap.dedent("""\
            protocols = lmtp
            base_dir = {root}/run
            state_dir = {root}/state
            log_path = {log}
            ssl = no
            listen = 127.0.0.1
            mail_location = maildir:~/Maildir
            auth_username_format = %Ln
            passdb {{
              driver = static
              args = nopassword=y
            }}
            userdb {{
              driver = passwd-file
              args = {root}/users
            }}
            service lmtp {{
              inet_listener lmtp {{
                address = 127.0.0.1
                port = {port}
              }}
            }}
            """).format(root=self.root, log=self.log_path, port=self.port)
        self.conf = os.path.join(self.root, "dovecot.conf")
        with open(self.conf, "w") as f:
            f.write(conf)
        self.out = open(os.path.join(self.root, "dovecot.out"), "w+")
        self.proc = subprocess.Popen([DOVECOT, "-F", "-c", self.conf], stdout=self.out, stderr=subprocess.STDOUT)
        if not wait_for(lambda: _listening("127.0.0.1", self.port) or self.proc.poll() is not None, 20) \
                or self.proc.poll() is not None:
            out = self.log_text()
            self.stop()
            raise RuntimeError("dovecot did not start:\n" + out)

    def log_text(self):
        text = ""
        for p in (self.log_path, self.out.name):
            try:
                with open(p, encoding="utf-8", errors="replace") as f:
                    text += f.read()
            except FileNotFoundError:
                pass
        return text

    def messages(self, user):
        """The contents of `user`'s stored messages (new/ and cur/)."""
        out = []
        for sub in ("new", "cur"):
            d = os.path.join(self.home, user, "Maildir", sub)
            if os.path.isdir(d):
                for n in sorted(os.listdir(d)):
                    with open(os.path.join(d, n), "rb") as f:
                        out.append(f.read())
        return out

    def stop(self):
        _stop(self.proc)
        self.proc = None
        # the master stops its services; make sure none is left on our port
        wait_for(lambda: not _listening("127.0.0.1", self.port), 10)
        if not self.out.closed:
            self.out.close()

    def cleanup(self, keep=False):
        self.stop()
        if keep:
            import sys
            sys.stderr.write("kept Dovecot root %s\n" % self.root)
        else:
            shutil.rmtree(self.root, ignore_errors=True)


class DovecotSasl(Dovecot):
    """Dovecot as nothing but a SASL server for Postfix (smtpd_sasl_type =
    dovecot): no protocol, a passwd-file of plaintext passwords, the auth
    socket at `self.socket` (mode 0666: smtpd runs as postfix)."""

    def __init__(self, users):
        self.root = tempfile.mkdtemp(prefix="esmtp-it-sasl-")
        os.chmod(self.root, 0o755)
        self.log_path = os.path.join(self.root, "dovecot.log")
        self.socket = os.path.join(self.root, "sasl-auth")
        with open(os.path.join(self.root, "passwd"), "w") as f:
            for user, password in users.items():
                f.write("%s:{PLAIN}%s::::::\n" % (user, password))
        conf = textwrap.dedent("""\
            protocols = none
            base_dir = {root}/run
            state_dir = {root}/state
            log_path = {log}
            ssl = no
            auth_mechanisms = plain login
            passdb {{
              driver = passwd-file
              args = {root}/passwd
            }}
            userdb {{
              driver = static
              args = uid=nobody gid=nogroup home=/nonexistent
            }}
            service auth {{
              unix_listener {sock} {{
                mode = 0666
              }}
            }}
            """).format(root=self.root, log=self.log_path, sock=self.socket)
        self.conf = os.path.join(self.root, "dovecot.conf")
        with open(self.conf, "w") as f:
            f.write(conf)
        self.out = open(os.path.join(self.root, "dovecot.out"), "w+")
        self.proc = subprocess.Popen([DOVECOT, "-F", "-c", self.conf], stdout=self.out, stderr=subprocess.STDOUT)
        if not wait_for(lambda: os.path.exists(self.socket) or self.proc.poll() is not None, 20) \
                or self.proc.poll() is not None:
            out = self.log_text()
            self.stop()
            raise RuntimeError("dovecot did not start:\n" + out)

    def stop(self):
        if self.proc:
            _stop(self.proc)
            self.proc = None
        if not self.out.closed:
            self.out.close()


class PostfixSmarthost:
    """A private Postfix (test_postfix.PrivatePostfix) as a smarthost: smtpd
    on 127.0.0.1:`port` with STARTTLS (smtpd_tls_auth_only; its certificate
    `cert` names `name`) and SASL AUTH through a DovecotSasl of `users`,
    relaying only for a client that logged in (mynetworks does not hold
    127.0.0.1); refused@example.com is refused with 550. What it accepts is
    held (static:HOLD; postcat shows it) or, when `mailboxes` lists
    addresses of example.com, delivered to them by virtual(8), a Maildir
    each (`delivered(address)`). main_cf() and master_cf() add to its
    configuration before start()."""

    def __init__(self, users, name, mailboxes=()):
        self.postfix = None
        self.sasl = DovecotSasl(users)
        try:
            self._configure(name, mailboxes)
        except BaseException:
            self.cleanup(keep=True)
            raise

    def _configure(self, name, mailboxes):
        self.port = free_port()
        # its relayhost (mail to other domains) is a port nobody listens on
        self.postfix = pf = PrivatePostfix(free_port())
        # in Postfix's root (0755): smtpd and tlsmgr read them as postfix
        self.cert, key = make_cert(pf.root, cn=name, names=(name, ), prefix="smtpd-")
        os.chmod(key, 0o644)
        final = "check_recipient_access static:HOLD"
        settings = []
        if mailboxes:
            import grp
            import pwd
            uid, gid = pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid
            self.mail = os.path.join(pf.root, "mail")
            os.makedirs(self.mail)
            os.chown(self.mail, uid, gid)  # virtual(8) makes the Maildirs as nobody
            # (virtual(8) takes no regexp with $1: a table of them all)
            maps = os.path.join(pf.config_dir, "mailboxes")
            with open(maps, "w") as f:
                f.writelines("%s example.com/%s/\n" % (a, a.split("@")[0]) for a in mailboxes)
            # example.com stays a remote domain (relayed only after AUTH),
            # its transport is virtual(8)
            settings = ["transport_maps = inline:{example.com=virtual:}", "virtual_mailbox_domains =",
                        "virtual_mailbox_base = " + self.mail, "virtual_mailbox_maps = texthash:" + maps,
                        "virtual_uid_maps = static:%d" % uid, "virtual_gid_maps = static:%d" % gid]
            final = "permit"
        self.main_cf([
            "myhostname = " + name,
            "mynetworks = 192.0.2.1/32",
            "smtpd_tls_security_level = may",
            "smtpd_tls_cert_file = " + self.cert,
            "smtpd_tls_key_file = " + key,
            "smtpd_tls_auth_only = yes",
            "smtpd_tls_loglevel = 1",
            "smtpd_sasl_auth_enable = yes",
            "smtpd_sasl_type = dovecot",
            "smtpd_sasl_path = " + self.sasl.socket,
            "smtpd_relay_restrictions = permit_sasl_authenticated, reject_unauth_destination",
            "smtpd_recipient_restrictions = check_recipient_access inline:{{refused@example.com=550 5.1.1 "
            "User unknown}}, " + final,
            "debug_peer_list ="] + settings)
        self.master_cf(["127.0.0.1:%d inet n - n - - smtpd" % self.port, "tlsmgr unix - - n 1000? 1 tlsmgr"] +
                       (["virtual unix - n n - - virtual"] if mailboxes else []))

    def main_cf(self, settings):
        """Sets "key = value" lines in main.cf in place: a key given twice
        makes every Postfix process warn at start, and postlogd, warning to
        its own datagram socket while the others fill it, can block for good."""
        path = os.path.join(self.postfix.config_dir, "main.cf")
        with open(path) as f:
            lines = f.read().splitlines()
        for setting in settings:
            key = setting.split("=", 1)[0].strip()
            lines = [l for l in lines if l.split("=", 1)[0].strip() != key]
            lines.append(setting)
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")

    def master_cf(self, lines):
        """Adds services to master.cf; one named like an existing one replaces it."""
        path = os.path.join(self.postfix.config_dir, "master.cf")
        with open(path) as f:
            old = f.read().splitlines()
        names = {l.split()[0] for l in lines}
        # a service's -o lines follow it indented: drop them with it
        kept, drop = [], False
        for l in old:
            if l and not l[0].isspace():
                drop = l.split()[0] in names
            if not drop:
                kept.append(l)
        with open(path, "w") as f:
            f.write("\n".join(kept + list(lines)) + "\n")

    def start(self):
        self.postfix.start()
        # (a first smtpd that fails makes the master wait a minute before the next)
        if not wait_for(self.greets, 90):
            raise RuntimeError("postfix smtpd does not greet:\n" + self.postfix.log_text())

    def greets(self):
        """smtpd greets and offers STARTTLS (tlsmgr is up)."""
        try:
            with smtplib.SMTP("127.0.0.1", self.port, timeout=5) as s:
                s.ehlo("probe.example")
                return s.has_extn("starttls")
        except (OSError, smtplib.SMTPException):
            return False

    def log_text(self):
        return self.postfix.log_text()

    def delivered(self, address):
        """The messages virtual(8) stored for `address`."""
        local = address.split("@")[0]
        out = []
        for sub in ("new", "cur"):
            d = os.path.join(self.mail, "example.com", local, sub)
            if os.path.isdir(d):
                for n in sorted(os.listdir(d)):
                    with open(os.path.join(d, n), "rb") as f:
                        out.append(f.read())
        return out

    def cleanup(self, keep=False):
        if self.postfix:
            self.postfix.cleanup(keep=keep)
        self.sasl.cleanup(keep=keep)


def dovecot_missing():
    if not DOVECOT:
        return "dovecot is not installed (dovecot-core, dovecot-lmtpd)"
    if not os.path.exists("/usr/lib/dovecot/lmtp"):
        return "dovecot-lmtpd is not installed"
    if os.geteuid() != 0:
        return "running dovecot needs root"
    return None


DNSMASQ = shutil.which("dnsmasq", path=SBIN_PATH)


class Dnsmasq:
    """A DNS server on 127.0.0.1:`port` (UDP and TCP) answering only from
    `records` {name: [IPv4, ...]}; any other name under `local` domains is
    NXDOMAIN. Debian's dnsmasq-base; no upstream, no hosts file."""

    def __init__(self, records, local=("test",)):
        self.port = free_port()
        args = [DNSMASQ, "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
                "--listen-address=127.0.0.1", "--bind-interfaces", "--port=%d" % self.port, "--pid-file=",
                "--log-facility=-", "--local-ttl=300"]
        if os.geteuid() == 0:
            args.append("--user=root")
        args += ["--local=/%s/" % d for d in local]
        for name, addrs in records.items():
            args += ["--host-record=%s,%s" % (name, a) for a in addrs]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not wait_for(lambda: self.proc.poll() is not None or _listening("127.0.0.1", self.port), 10):
            self.stop()
            raise RuntimeError("dnsmasq did not start on port %d" % self.port)
        if self.proc.poll() is not None:
            raise RuntimeError("dnsmasq exited with status %d" % self.proc.returncode)

    def stop(self):
        _stop(self.proc)


class _CacheServer:
    """A server for ESMTPStateCache, a child process on 127.0.0.1:`port`
    (a free one unless given), in memory only, stopped by pid; start()
    after stop() serves the same port again (empty). Subclasses name the
    program, its Debian package and its mod_socache provider."""

    PROGRAM = None  # its path, None when not installed
    PACKAGE = None  # the Debian package that has it
    PROVIDER = None  # mod_socache's name: ESMTPStateCache PROVIDER:HOST:PORT
    # the provider module's own error-log lines (its AH numbers, its name)
    LOG_PATTERN = None
    NOT_FOUND = None  # the reply to a GET of a missing key

    def __init__(self, port=None):
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="esmtp-it-%s-" % self.PROVIDER)
        self.proc = None
        self.start()

    @classmethod
    def missing(cls):
        """Why the tests on this cache cannot run, or None."""
        if not cls.PROGRAM:
            return "%s is not installed (Debian package %s)" % (cls.PACKAGE, cls.PACKAGE)
        if not os.path.exists(os.path.join(MODULESDIR, "mod_socache_%s.so" % cls.PROVIDER)):
            return "mod_socache_%s is missing" % cls.PROVIDER
        return None

    @classmethod
    def module(cls):
        """The LoadModule line of its mod_socache provider."""
        return "LoadModule socache_%s_module %s" % (
            cls.PROVIDER, q(os.path.join(MODULESDIR, "mod_socache_%s.so" % cls.PROVIDER)))

    def spec(self):
        """ESMTPStateCache's first argument for this server."""
        return "%s:127.0.0.1:%d" % (self.PROVIDER, self.port)

    def command(self):
        raise NotImplementedError

    def start(self):
        self.proc = subprocess.Popen(self.command(), cwd=self.dir, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        if not wait_for(lambda: self.proc.poll() is not None or _listening("127.0.0.1", self.port), 10) or \
                self.proc.poll() is not None:
            self.stop()
            raise RuntimeError("%s did not start on port %d" % (os.path.basename(self.PROGRAM), self.port))

    def stop(self):
        _stop(self.proc)

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def get(self, key):
        """The value ESMTPStateCache stores under `key`, or None. Both
        providers name it after the cache's namespace and the key in hex."""
        name = ("mod_esmtp-state:" + key.encode().hex()).encode()
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(self.get_request(name))
            data = b""
            while True:
                done, value = self.get_reply(data)
                if done:
                    return None if value is None else value.decode()
                chunk = s.recv(65536)
                if not chunk:
                    return None
                data += chunk

    def set(self, key, value, ttl):
        """Stores `value` under ESMTPStateCache's `key` for `ttl` seconds
        (as a node would)."""
        name = ("mod_esmtp-state:" + key.encode().hex()).encode()
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(self.set_request(name, value.encode(), ttl))
            data = b""
            while b"\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        if data not in (b"+OK\r\n", b"STORED\r\n"):
            raise RuntimeError("%s did not store %s: %r" % (self.PROVIDER, key, data))

    def get_request(self, name):
        raise NotImplementedError

    def set_request(self, name, value, ttl):
        raise NotImplementedError

    def get_reply(self, data):
        """(complete, value or None) for the octets read so far."""
        if data.startswith(self.NOT_FOUND):
            return True, None
        head, sep, rest = data.partition(b"\r\n")
        n = self.value_length(head) if sep else None
        if n is not None and len(rest) >= n + 2:
            return True, rest[:n]
        return False, None

    def value_length(self, head):
        """The length a reply's first line announces, or None."""
        raise NotImplementedError


REDIS_SERVER = shutil.which("redis-server", path=SBIN_PATH)


class Redis(_CacheServer):
    """A redis-server, no dump, no append-only file."""

    PROGRAM = REDIS_SERVER
    PACKAGE = "redis-server"
    PROVIDER = "redis"
    LOG_PATTERN = r"AH0347\d|AH0348\d|AH0349\d|socache_redis|apr_redis"
    NOT_FOUND = b"$-1\r\n"

    def command(self):
        return [self.PROGRAM, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--daemonize", "no", "--dir", self.dir, "--logfile", ""]

    def get_request(self, name):
        return b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(name), name)

    def set_request(self, name, value, ttl):
        ttl = str(ttl).encode()
        return b"*5\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n$2\r\nEX\r\n$%d\r\n%s\r\n" % (
            len(name), name, len(value), value, len(ttl), ttl)

    def value_length(self, head):
        return int(head[1:]) if head.startswith(b"$") else None


MEMCACHED = shutil.which("memcached", path=SBIN_PATH)


class Memcached(_CacheServer):
    """A memcached on TCP only (`-U 0`), its default item size (1 MiB)."""

    PROGRAM = MEMCACHED
    PACKAGE = "memcached"
    PROVIDER = "memcache"
    # mod_socache_memcache (AH00785-AH00793: "scache_mc: ...") and apr_memcache
    LOG_PATTERN = r"AH0078[5-9]|AH0079[0-3]|scache_mc|apr_memcache"
    NOT_FOUND = b"END\r\n"

    def command(self):
        cmd = [self.PROGRAM, "-l", "127.0.0.1", "-p", str(self.port), "-U", "0"]
        # memcached refuses to run as root without -u
        return cmd + ["-u", "root"] if os.geteuid() == 0 else cmd

    def get_request(self, name):
        return b"get %s\r\n" % name

    def set_request(self, name, value, ttl):
        return b"set %s 0 %d %d\r\n%s\r\n" % (name, ttl, len(value), value)

    def value_length(self, head):
        return int(head.split()[3]) if head.startswith(b"VALUE ") else None


def on_cache_server(mixin, cache):
    """A TestCase of `mixin` with its CACHE `cache` (Redis, Memcached), named
    after both (TwoNodes, Memcached: TwoNodesMemcacheTest), skipped when
    the server or its provider module is missing."""
    import unittest
    name = "%s%sTest" % (mixin.__name__, cache.PROVIDER.capitalize())
    cls = type(name, (mixin, unittest.TestCase), {"CACHE": cache, "__qualname__": name, "__module__": mixin.__module__})
    missing = cache.missing()
    return unittest.skipIf(missing, missing or "")(cls)
