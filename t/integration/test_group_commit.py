"""Group commit of the maildir handler (issue 13) in a live server: several
sessions delivering at once into one Maildir share the fsyncs of new/.
Every message that got its 250 is a file in new/, nothing is left in tmp/,
each file was fdatasynced once, and the child's flush counters (written with
every `stored` record at ESMTPLogLevel 3) show fewer fsyncs of new/ than
messages. With strace on the child, the real system calls of every message
come in the order that makes its 250 safe: fdatasync of its file, its
rename into new/, an fsync of new/ that started after the rename returned
and returned before the 250 was written (the unit tests check the same
through the handler's hook: t/unit/test_maildir.cpp, testGroupCommit*)."""

import os
import re
import shutil
import signal
import smtplib
import subprocess
import threading
import time

from harness import ServerTestCase, children_of

ONE_CHILD = ["StartServers 1", "ServerLimit 1", "ThreadsPerChild 16", "ThreadLimit 16",
             "MinSpareThreads 1", "MaxSpareThreads 16", "MaxRequestWorkers 16"]
RECORD = re.compile(r"stored (\S+) \(flushes of process (\d+): messages (\d+) files (\d+) directories (\d+)\)")
SESSIONS = 8
PER_SESSION = 6


class GroupCommitTest(ServerTestCase):
    # threads of one child share a flush: the event MPM's sizing below
    mpm = "event"
    httpd_options = {"mpm_lines": ONE_CHILD}

    @classmethod
    def configure(cls, httpd):
        cls.vh = httpd.add_smtp("maildir", hostname="mx.group.test", accept_domains=["group.test"],
                                log_file="esmtp.log", log_level=3)

    def deliver_concurrently(self, sessions, per_session):
        """`sessions` smtplib clients at once, `per_session` messages each;
        returns the queue ids of the 250s and the new files in new/."""
        new = os.path.join(self.vh.maildir, "new")
        before = set(os.listdir(new))
        accepted, errors = [], []
        lock = threading.Lock()
        start = threading.Barrier(sessions)

        def session(n):
            try:
                with smtplib.SMTP("127.0.0.1", self.vh.port, timeout=60) as s:
                    s.ehlo("client%d.example" % n)
                    start.wait(30)
                    for i in range(per_session):
                        msg = "Subject: group %d/%d\r\n\r\nbody %d %d\r\n" % (n, i, n, i)
                        s.mail("a@client.example")
                        s.rcpt("rcpt@group.test")
                        code, text = s.data(msg)
                        self.assertEqual(code, 250, text)
                        qid = re.search(rb"queued as ([0-9A-Za-z]+)", text).group(1).decode()
                        with lock:
                            accepted.append(qid)
            except Exception as e:  # noqa: BLE001: reported below
                with lock:
                    errors.append("session %d: %r" % (n, e))

        threads = [threading.Thread(target=session, args=(n,)) for n in range(sessions)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        self.assertEqual(errors, [])
        self.assertEqual(len(accepted), sessions * per_session)
        files = set(os.listdir(new)) - before
        self.assertEqual(len(files), sessions * per_session)
        self.assertEqual(os.listdir(os.path.join(self.vh.maildir, "tmp")), [])
        for q in accepted:
            self.assertEqual(len([f for f in files if ".%s." % q in f]), 1, q)
        return accepted, files

    def test_concurrent_deliveries_share_flushes(self):
        _, files = self.deliver_concurrently(SESSIONS, PER_SESSION)

        with open(self.vh.log_path, errors="replace") as f:
            records = [RECORD.search(line) for line in f]
        records = [m for m in records if m]
        stored = {os.path.basename(m.group(1)) for m in records}
        self.assertTrue(files <= stored, "stored records missing for %s" % sorted(files - stored)[:3])
        last = {}
        for m in records:
            pid, msgs, file_syncs, dir_syncs = (int(x) for x in m.groups()[1:])
            if msgs >= last.get(pid, (0, 0, 0))[0]:
                last[pid] = (msgs, file_syncs, dir_syncs)
        self.assertEqual(len(last), 1, last)  # one child
        msgs, file_syncs, dir_syncs = next(iter(last.values()))
        self.assertGreaterEqual(msgs, SESSIONS * PER_SESSION)
        self.assertEqual(file_syncs, msgs)  # one fdatasync per file
        self.assertGreaterEqual(dir_syncs, 1)
        self.assertLess(dir_syncs, msgs, "no fsync of new/ was shared: %d for %d messages" % (dir_syncs, msgs))

    def test_syscall_order_per_message(self):
        """strace -f on the child while 6 sessions deliver 4 messages each."""
        if not shutil.which("strace"):
            self.skipTest("strace is not installed")
        pids = children_of(self.httpd.proc.pid)
        self.assertTrue(pids)
        trace = os.path.join(self.httpd.root, "logs", "strace-group.out")
        cmd = ["strace", "-f", "-qq", "-y", "-s", "120", "-o", trace,
               "-e", "trace=fdatasync,fsync,rename,renameat,renameat2,write,writev,sendmsg"]
        for p in pids:
            cmd += ["-p", str(p)]
        st = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(1.0)  # strace attaches to every thread
            accepted, _ = self.deliver_concurrently(6, 4)
            time.sleep(0.3)
        finally:
            os.kill(st.pid, signal.SIGINT)
            st.wait(10)
        with open(trace) as f:
            lines = f.read().splitlines()
        new = os.path.realpath(os.path.join(self.vh.maildir, "new"))
        tmp = os.path.realpath(os.path.join(self.vh.maildir, "tmp"))
        # a call printed whole on one line starts and ends there (strace saw
        # no other event between its entry and exit); an <unfinished ...>
        # one ends at the line of its resumption
        pending = {}  # tid -> (name, arg text, line) of an unfinished call
        flushes = []  # (start line, end line) of each successful fsync of new/
        synced, renamed, replied = {}, {}, {}
        for i, line in enumerate(lines):
            m = re.match(r"(\d+) +(.*)$", line)
            if not m:
                continue
            tid, rest = m.groups()
            if rest.endswith("<unfinished ...>"):
                call = re.match(r"(\w+)\((.*)", rest)
                pending[tid] = (call.group(1), call.group(2), i)
                continue
            r = re.match(r"<\.\.\. (\w+) resumed>(.*)", rest)
            if r:
                name, args, start = pending.pop(tid, (r.group(1), "", i))
                text = args + r.group(2)
                result = r.group(2)
            else:
                call = re.match(r"(\w+)\((.*)", rest)
                if not call:
                    continue
                name, text, start = call.group(1), call.group(2), i
                result = text
            ok = re.search(r"\) += 0\s*$", result) is not None or name in ("write", "writev", "sendmsg")
            if name == "fsync" and "<%s>" % new in text and ok:
                flushes.append((start, i))
            elif name == "fdatasync" and ok:
                f = re.search(r"<%s/([^>]+)>" % re.escape(tmp), text)
                if f:
                    synced.setdefault(f.group(1), i)
            elif name.startswith("rename") and ok:
                f = re.search(r'"%s/([^"]+)", (?:AT_FDCWD[^,]*, )?"%s/\1"' % (re.escape(tmp), re.escape(new)), text)
                if f:
                    renamed[f.group(1)] = i
            elif name in ("write", "writev", "sendmsg"):
                q = re.search(r"250 2\.0\.0 Ok: queued as ([0-9A-Za-z]+)", text)
                if q:
                    replied.setdefault(q.group(1), start)  # where the write started
        self.assertEqual(len(accepted), 24)
        for qid in accepted:
            names = [n for n in renamed if ".%s." % qid in n]
            self.assertEqual(len(names), 1, "rename of %s not traced" % qid)
            name = names[0]
            self.assertIn(name, synced, "no fdatasync of tmp/%s" % name)
            self.assertIn(qid, replied, "no 250 written for %s" % qid)
            self.assertLess(synced[name], renamed[name], "fdatasync after the rename: %s" % name)
            r, w = renamed[name], replied[qid]
            self.assertLess(r, w, "250 before the rename: %s" % name)
            covering = [(s, e) for s, e in flushes if r < s and e < w]
            self.assertTrue(covering, "no fsync of new/ started after the rename of %s and ended before its 250"
                            % name)
