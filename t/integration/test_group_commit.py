"""Group commit of the maildir handler (issue 13) in a live server: several
sessions delivering at once into one Maildir share the fsyncs of new/.
Every message that got its 250 is a file in new/, nothing is left in tmp/,
each file was fdatasynced once, and the child's flush counters (written with
every `stored` record at ESMTPLogLevel 3) show fewer fsyncs of new/ than
messages. The order of the operations per message is checked by the unit
tests (t/unit/test_maildir.cpp, testGroupCommit*)."""

import os
import re
import smtplib
import threading

from harness import ServerTestCase

ONE_CHILD = ["StartServers 1", "ServerLimit 1", "ThreadsPerChild 16", "ThreadLimit 16",
             "MinSpareThreads 1", "MaxSpareThreads 16", "MaxRequestWorkers 16"]
RECORD = re.compile(r"stored (\S+) \(flushes of process (\d+): messages (\d+) files (\d+) directories (\d+)\)")
SESSIONS = 8
PER_SESSION = 6


class GroupCommitTest(ServerTestCase):
    httpd_options = {"mpm_lines": ONE_CHILD}

    @classmethod
    def configure(cls, httpd):
        cls.vh = httpd.add_smtp("maildir", hostname="mx.group.test", accept_domains=["group.test"],
                                log_file="esmtp.log", log_level=3)

    def test_concurrent_deliveries_share_flushes(self):
        new = os.path.join(self.vh.maildir, "new")
        before = set(os.listdir(new))
        accepted, errors = [], []
        lock = threading.Lock()
        start = threading.Barrier(SESSIONS)

        def session(n):
            try:
                with smtplib.SMTP("127.0.0.1", self.vh.port, timeout=60) as s:
                    s.ehlo("client%d.example" % n)
                    start.wait(30)
                    for i in range(PER_SESSION):
                        msg = "Subject: group %d/%d\r\n\r\nbody %d %d\r\n" % (n, i, n, i)
                        s.sendmail("a@client.example", ["rcpt@group.test"], msg)
                        with lock:
                            accepted.append((n, i))
            except Exception as e:  # noqa: BLE001: reported below
                with lock:
                    errors.append("session %d: %r" % (n, e))

        threads = [threading.Thread(target=session, args=(n,)) for n in range(SESSIONS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        self.assertEqual(errors, [])
        self.assertEqual(len(accepted), SESSIONS * PER_SESSION)
        files = set(os.listdir(new)) - before
        self.assertEqual(len(files), SESSIONS * PER_SESSION)
        self.assertEqual(os.listdir(os.path.join(self.vh.maildir, "tmp")), [])

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
