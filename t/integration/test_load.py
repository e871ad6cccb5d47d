"""Load on the event MPM (issue 4): 1,000 concurrent connections each
deliver one message; the memory of the httpd child stays flat over 100,000
sessions (a leak test: the numbers are printed); a slowloris of 500
connections trickling bytes does not keep normal clients from being served.

Idle and slow sessions wait in the event MPM without holding a thread; the
MPM needs AsyncRequestWorkerFactor raised for that many connections, and
both httpd and this process need a higher RLIMIT_NOFILE."""

import errno
import os
import re
import resource
import selectors
import shutil
import smtplib
import socket
import subprocess
import threading
import time
import unittest

from harness import MODULESDIR, children_of, ServerTestCase, q, queue_id_of, wait_for

ANY = ["*"]
SMTP_SOURCE = shutil.which("smtp-source") or ("/usr/sbin/smtp-source" if os.path.exists("/usr/sbin/smtp-source")
                                              else None)
MSGID_RE = re.compile(rb"^Message-ID: (<[^>\r\n]*>)", re.M | re.I)

# Many connections per child: the event MPM caps a child at
# ThreadsPerChild + AsyncRequestWorkerFactor * idle workers connections.
MANY_CONNECTIONS = ["StartServers 2", "ServerLimit 2", "ThreadsPerChild 32", "ThreadLimit 32",
                    "MinSpareThreads 8", "MaxSpareThreads 64", "MaxRequestWorkers 64",
                    "AsyncRequestWorkerFactor 64", "ListenBacklog 2048"]
ONE_CHILD = ["StartServers 1", "ServerLimit 1", "ThreadsPerChild 128", "ThreadLimit 128",
             "MinSpareThreads 1", "MaxSpareThreads 128", "MaxRequestWorkers 128",
             "AsyncRequestWorkerFactor 8"]


def raise_nofile(want=8192):
    """Raise this process's soft RLIMIT_NOFILE (httpd, started by us,
    inherits it). Returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def memory_kb(pid):
    """(Pss, Rss) of a process in kB, from /proc/PID/smaps_rollup."""
    pss = rss = 0
    with open("/proc/%d/smaps_rollup" % pid) as f:
        for line in f:
            if line.startswith("Pss:"):
                pss = int(line.split()[1])
            elif line.startswith("Rss:"):
                rss = int(line.split()[1])
    return pss, rss


# ---------------------------------------------------------------- a many-connection client

class _Conn:
    __slots__ = ("sock", "script", "step", "inbuf", "outbuf", "done", "error", "greeted")

    def __init__(self, sock, script):
        self.sock = sock
        self.script = script  # [(bytes to send after the previous reply, expected code)]
        self.step = 0
        self.inbuf = b""
        self.outbuf = b""
        self.done = False
        self.error = None
        self.greeted = False


def _take_reply(buf):
    """(code, rest) for the first complete reply in buf, or (None, buf)."""
    pos = 0
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None, buf
        line = buf[pos:eol]
        pos = eol + 2
        if len(line) < 4 or line[3:4] != b"-":
            return int(line[:3]), buf[pos:]


def run_many(port, scripts, hold_after_greeting=True, timeout=120):
    """Drive one connection per script with a selector. With
    `hold_after_greeting`, nobody sends anything until every connection has
    its 220: then all of them are open at the same time. Returns the
    connections."""
    sel = selectors.DefaultSelector()
    conns = []
    for script in scripts:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        err = s.connect_ex(("127.0.0.1", port))
        if err not in (0, errno.EINPROGRESS):
            raise OSError(err, os.strerror(err))
        c = _Conn(s, script)
        conns.append(c)
        sel.register(s, selectors.EVENT_READ, c)
    greeted = 0
    released = not hold_after_greeting
    deadline = time.time() + timeout
    active = len(conns)
    try:
        while active and time.time() < deadline:
            for key, mask in sel.select(1.0):
                c = key.data
                if mask & selectors.EVENT_WRITE and c.outbuf:
                    try:
                        n = c.sock.send(c.outbuf)
                        c.outbuf = c.outbuf[n:]
                    except BlockingIOError:
                        pass
                    except OSError as e:
                        c.error, c.done = "send: %s" % e, True
                if not c.outbuf and not c.done:
                    sel.modify(c.sock, selectors.EVENT_READ, c)
                if not (mask & selectors.EVENT_READ) or c.done:
                    if c.done:
                        sel.unregister(c.sock)
                        c.sock.close()
                        active -= 1
                    continue
                try:
                    data = c.sock.recv(65536)
                except BlockingIOError:
                    continue
                except OSError as e:
                    data, c.error = b"", "recv: %s" % e
                if not data:
                    if not c.error and c.step < len(c.script):
                        c.error = "closed by the server at step %d" % c.step
                    c.done = True
                    sel.unregister(c.sock)
                    c.sock.close()
                    active -= 1
                    continue
                c.inbuf += data
                while not c.done:
                    code, c.inbuf = _take_reply(c.inbuf)
                    if code is None:
                        break
                    expected = c.script[c.step][1]
                    if code != expected:
                        c.error = "step %d: got %d, expected %d" % (c.step, code, expected)
                        c.done = True
                        break
                    c.step += 1
                    if c.step == 1 and not c.greeted:
                        c.greeted = True
                        greeted += 1
                        if not released:
                            if greeted == len(conns):
                                released = True
                                for other in conns:
                                    _queue_next(sel, other)
                            break
                    if c.step >= len(c.script):
                        c.done = True  # the server closes after 221
                        break
                    _queue_next(sel, c)
                if c.done:
                    sel.unregister(c.sock)
                    c.sock.close()
                    active -= 1
    finally:
        for c in conns:
            if not c.done:
                c.error = c.error or "timed out at step %d" % c.step
                try:
                    sel.unregister(c.sock)
                except (KeyError, ValueError):
                    pass
                c.sock.close()
        sel.close()
    return conns


def _queue_next(sel, c):
    if c.done or c.step >= len(c.script):
        return
    data = c.script[c.step][0]
    if data:
        c.outbuf += data
        sel.modify(c.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, c)


def delivery_script(rcpt, msgid):
    msg = (b"From: <a@client.example>\r\nSubject: load\r\nMessage-ID: " + msgid.encode() +
           b"\r\n\r\nbody\r\n.\r\n")
    return [(None, 220),
            (b"EHLO load.example\r\n", 250),
            (b"MAIL FROM:<a@client.example>\r\n", 250),
            (b"RCPT TO:<" + rcpt.encode() + b">\r\n", 250),
            (b"DATA\r\n", 354),
            (msg, 250),
            (b"QUIT\r\n", 221)]


# ---------------------------------------------------------------- tests

# mod_status, for QuietStop
STATUS_LINES = ["LoadModule status_module %s" % q(os.path.join(MODULESDIR, "mod_status.so")),
                "<Location /server-status>", "    SetHandler server-status", "    Require all granted",
                "</Location>"]


class QuietStop:
    """httpd 2.4's event MPM (2.4.71 here) crashes now and then when a
    child stops right after hundreds of connections were closed at once:
    the child's main thread in apr_os_sock_get while workers are in
    apr_allocator_destroy (AH00052 ... Segmentation fault). Stock httpd
    without mod_esmtp does it too (t/integration/event_stop_race.py: 1500
    HTTP keep-alive connections closed, then SIGTERM: 3 crashes in 3 runs;
    after ConnsTotal fell to 1: 1 in 5; after ConnsTotal and BusyWorkers
    stayed at 1 for a second: 0 in 8). The harness fails a test on any
    crash, so a class with many connections waits for that quiet (mod_status
    and an http port: STATUS_LINES, httpd.add_http()) before httpd is
    stopped, as a server's normal life does."""

    @classmethod
    def mpm_state(cls):
        """The event MPM's (ConnsTotal, BusyWorkers); the status request
        itself is one of each."""
        import urllib.request
        url = "http://127.0.0.1:%d/server-status?auto" % cls.httpd.http_port
        text = urllib.request.urlopen(url, timeout=10).read().decode("utf-8", "replace")
        conns = re.search(r"(?m)^ConnsTotal: (\d+)$", text)
        busy = re.search(r"(?m)^BusyWorkers: (\d+)$", text)
        return (int(conns.group(1)) if conns else None, int(busy.group(1)) if busy else None)

    @classmethod
    def wait_mpm_quiet(cls):
        """None once quiet for a second, else the state after 30 s."""
        quiet = []

        def settled():
            conns, busy = cls.mpm_state()
            quiet.append(conns is not None and busy is not None and conns <= 1 and busy <= 1)
            return len(quiet) >= 5 and all(quiet[-5:])

        return None if wait_for(settled, 30, 0.2) else cls.mpm_state()

    @classmethod
    def tearDownClass(cls):
        if cls.httpd is not None and cls.httpd.running() and cls.httpd.http_port:
            try:
                cls.wait_mpm_quiet()
            except OSError:
                pass  # no status page: stop all the same
        super().tearDownClass()


class ConcurrentConnectionsTest(QuietStop, ServerTestCase):
    """1,000 sessions open at once, each then delivering one message."""

    N = 1000
    mpm = "event"  # the sizing directives below are the event MPM's
    # Every worker may deliver: with the default share (half, as there is an
    # HTTP vhost) the sessions beyond it get 451 4.3.2 at the end of data
    # (test_bulkhead tests that).
    httpd_options = {"mpm_lines": MANY_CONNECTIONS, "log_level": "warn",
                     "main_extra": STATUS_LINES + ["ESMTPMaxWorkers 100%"]}

    @classmethod
    def setUpClass(cls):
        if raise_nofile(4 * cls.N + 1000) < 2 * cls.N + 200:
            raise unittest.SkipTest("RLIMIT_NOFILE too low for %d connections" % cls.N)
        super().setUpClass()

    @classmethod
    def configure(cls, httpd):
        cls.vh = httpd.add_smtp("maildir", accept_domains=ANY, server_name="load.test")
        httpd.add_http()  # QuietStop's status page

    def test_thousand_concurrent_deliveries(self):
        start = time.time()
        ids = ["<load-%d@client.example>" % i for i in range(self.N)]
        conns = run_many(self.vh.port, [delivery_script("b@load.test", i) for i in ids])
        elapsed = time.time() - start
        errors = [c.error for c in conns if c.error]
        print("\n  %d sessions in %.1fs, %d errors" % (self.N, elapsed, len(errors)), end=" ")
        self.assertEqual(errors, [], "%d of %d sessions failed, e.g. %r" % (len(errors), self.N, errors[:5]))
        self.assertTrue(all(c.greeted for c in conns))
        files = wait_for(lambda: len(self.vh.maildir_files()) >= self.N and self.vh.maildir_files(), 10)
        got = []
        for path in files:
            with open(path, "rb") as f:
                m = MSGID_RE.search(f.read())
            got.append(m.group(1).decode() if m else None)
        self.assertEqual(len(got), self.N)
        self.assertEqual(sorted(got), sorted(ids))
        self.assertEqual(self.vh.maildir_files("tmp"), [])


@unittest.skipUnless(SMTP_SOURCE, "smtp-source (package postfix) is not installed")
@unittest.skipIf("asan" in os.environ.get("ESMTP_TEST_LD_PRELOAD", "").lower(),
                 "under AddressSanitizer RSS/PSS measure ASan's quarantine; LeakSanitizer checks leaks instead")
class LeakTest(ServerTestCase):
    """PSS of the (single) httpd child after 5,000 sessions and again after
    100,000 more, driven by Postfix's smtp-source against the discard handler."""

    WARMUP = 5000
    SESSIONS = 100000
    MAX_GROWTH_KB = 16 * 1024
    mpm = "event"  # the sizing directives below are the event MPM's
    httpd_options = {"mpm_lines": ONE_CHILD, "log_level": "warn"}

    @classmethod
    def configure(cls, httpd):
        cls.vh = httpd.add_smtp("discard", accept_domains=ANY, server_name="leak.test",
                                log_file="esmtp.log", log_level=1)

    def smtp_source(self, count, timeout):
        cmd = [SMTP_SOURCE, "-s", "50", "-m", str(count), "-f", "a@client.example",
               "-t", "b@leak.test", "127.0.0.1:%d" % self.vh.port]
        try:
            p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
        except subprocess.TimeoutExpired:
            self.fail("%s did not finish within %ss" % (" ".join(cmd), timeout))
        self.assertEqual(p.returncode, 0, p.stdout.decode("utf-8", "replace")[-2000:])

    def accepted(self):
        n = 0
        try:
            with open(self.vh.log_path, "rb") as f:
                for line in f:
                    if b" accepted from=" in line:
                        n += 1
        except FileNotFoundError:
            pass
        return n

    def test_memory_flat_over_100000_sessions(self):
        raise_nofile()
        self.smtp_source(self.WARMUP, 60)
        children = children_of(self.httpd.proc.pid)
        self.assertEqual(len(children), 1, children)
        pid = children[0]
        time.sleep(0.5)
        pss0, rss0 = memory_kb(pid)
        start = time.time()
        self.smtp_source(self.SESSIONS, 180)
        elapsed = time.time() - start
        time.sleep(0.5)
        self.assertEqual(children_of(self.httpd.proc.pid), [pid], "the child was replaced: no comparison")
        pss1, rss1 = memory_kb(pid)
        print("\n  child %d after %d sessions: Pss %d kB, Rss %d kB; after %d more (%.1fs): "
              "Pss %d kB, Rss %d kB; growth Pss %+d kB"
              % (pid, self.WARMUP, pss0, rss0, self.SESSIONS, elapsed, pss1, rss1, pss1 - pss0), end=" ")
        self.assertEqual(wait_for(lambda: self.accepted() >= self.WARMUP + self.SESSIONS and self.accepted(), 5),
                         self.WARMUP + self.SESSIONS)
        self.assertLess(pss1 - pss0, self.MAX_GROWTH_KB, "the httpd child grew by %d kB" % (pss1 - pss0))


@unittest.skipIf("asan" in os.environ.get("ESMTP_TEST_LD_PRELOAD", "").lower(),
                 "a timing test: under AddressSanitizer the 500 slow connections are not all greeted within "
                 "its window on a 2-core machine; the plain run checks it")
class SlowlorisTest(QuietStop, ServerTestCase):
    """500 connections trickle a command line, one byte every 2-3 s; 10
    normal deliveries meanwhile are each served in under 2 s."""

    SLOW = 500
    mpm = "event"  # the sizing directives below are the event MPM's
    httpd_options = {"mpm_lines": MANY_CONNECTIONS, "log_level": "warn", "main_extra": STATUS_LINES}

    @classmethod
    def setUpClass(cls):
        if raise_nofile(2 * cls.SLOW + 1000) < cls.SLOW + 200:
            raise unittest.SkipTest("RLIMIT_NOFILE too low for %d connections" % cls.SLOW)
        super().setUpClass()

    @classmethod
    def configure(cls, httpd):
        cls.vh = httpd.add_smtp("maildir", accept_domains=ANY, server_name="slow.test")
        httpd.add_http()

    def test_slowloris(self):
        socks = []
        stop = threading.Event()
        greeted = set()
        closed = set()

        def trickle():
            line = b"NOOP " + b"s" * 400
            pos = {}
            i = 0
            while not stop.is_set():
                # one byte per connection per 2.5 s, spread over the interval
                for k, s in enumerate(socks):
                    if stop.is_set():
                        break
                    if k in closed:
                        continue
                    try:
                        data = s.recv(4096)
                        if data.startswith(b"220 "):
                            greeted.add(k)
                        elif not data:
                            closed.add(k)
                            continue
                    except BlockingIOError:
                        pass
                    except OSError:
                        closed.add(k)
                        continue
                    p = pos.get(k, 0)
                    try:
                        s.send(line[p:p + 1])
                        pos[k] = (p + 1) % len(line)
                    except BlockingIOError:
                        pass
                    except OSError:
                        closed.add(k)
                    i += 1
                    if i % 50 == 0:
                        stop.wait(2.5 * 50 / len(socks))

        try:
            for _ in range(self.SLOW):
                s = socket.create_connection(("127.0.0.1", self.vh.port), timeout=10)
                s.setblocking(False)
                socks.append(s)
            t = threading.Thread(target=trickle, daemon=True)
            t.start()
            times = []
            before = self.vh.maildir_files()
            for n in range(10):
                stop.wait(1.5)
                start = time.time()
                with smtplib.SMTP("127.0.0.1", self.vh.port, local_hostname="normal.example", timeout=20) as s:
                    s.ehlo()
                    s.mail("a@client.example")
                    s.rcpt("b@slow.test")
                    code, text = s.data(b"Subject: normal %d\r\n\r\nbody\r\n" % n)
                times.append(time.time() - start)
                self.assertEqual(code, 250, text)
            stop.set()
            t.join(10)
        finally:
            stop.set()
            for s in socks:
                s.close()
            busy = self.wait_mpm_quiet()
        self.assertIsNone(busy, "the MPM is not quiet 30 s after the clients closed (ConnsTotal, BusyWorkers)")
        print("\n  deliveries took %s s; slow connections greeted %d, closed by the server %d"
              % (" ".join("%.3f" % x for x in times), len(greeted), len(closed)), end=" ")
        self.assertEqual(len(greeted), self.SLOW, "not every slow connection was being served")
        self.assertLess(max(times), 2.0)
        self.assertEqual(len(set(self.vh.maildir_files()) - set(before)), 10)


if __name__ == "__main__":
    unittest.main()
