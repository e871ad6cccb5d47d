"""bench/isolation (issue 20) in its short form: not its timings (a shared
2-core machine makes them noise) but that each SMTP load reaches the state
the benchmark claims to measure — every client at its abusive step, the
silent backends holding a connection per session — and that so few
sessions leave the web page served and MaxRequestWorkers unreached."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

from harness import DEFAULT_MPM, OVER_STARTTLS, TOP_SRCDIR

ISOLATION = os.path.join(TOP_SRCDIR, "bench", "isolation")
COUNT = 10


@unittest.skipIf(DEFAULT_MPM != "event" or OVER_STARTTLS,
                 "bench/isolation always runs its own event-MPM httpd: once per suite is enough")
@unittest.skipUnless(os.path.exists(ISOLATION), "bench/ is not in this tree")
class IsolationSmokeTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.out = tempfile.mkdtemp(prefix="esmtp-it-isolation-")
        cls.proc = subprocess.run([sys.executable, ISOLATION, "--short", "--count", str(COUNT), "--duration", "2",
                                   "--settle", "0.5", "--wait-state", "120", "--out", cls.out], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, timeout=600)
        try:
            with open(os.path.join(cls.out, "results.json")) as f:
                cls.rows = {r["row"]: r for r in json.load(f)["rows"]}
        except (OSError, ValueError):
            cls.rows = {}

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.out, ignore_errors=True)

    def row(self, name):
        self.assertIn(name, self.rows, self.proc.stderr[-3000:])
        r = self.rows[name]
        self.assertEqual(r["problems"], [], r)
        if name != "idle":  # the run waited for the state before measuring (bounded by --wait-state)
            self.assertTrue(r["state_wait"]["complete"], r["state_wait"])
        return r

    def test_run_succeeds_with_every_row(self):
        self.assertEqual(self.proc.returncode, 0, self.proc.stderr[-3000:])
        self.assertEqual(sorted(self.rows), ["auth", "idle", "lmtp", "milter", "proxy", "tls"])

    def test_page_served_and_workers_left(self):
        for name in ("idle", "auth", "lmtp", "milter", "proxy", "tls"):
            r = self.row(name)
            self.assertEqual(r["http"]["ok"], r["http"]["requests"], (name, r["http"]["failures"]))
            self.assertGreater(r["http"]["requests"], 0)
            self.assertEqual(r["ah00484"], 0, name)

    def test_auth_clients_get_refused_passwords(self):
        smtp = self.row("auth")["smtp"]
        self.assertGreaterEqual(smtp["steps"], COUNT)
        self.assertGreaterEqual(smtp["replies"].get("535", 0), COUNT, smtp)

    def test_silent_lmtp_server_holds_every_session(self):
        r = self.row("lmtp")
        self.assertEqual(r["smtp"]["peak_waiting"], COUNT, r["smtp"])
        self.assertEqual(r["backend"]["peak_open"], COUNT, r["backend"])

    def test_silent_milter_holds_every_session(self):
        r = self.row("milter")
        self.assertEqual(r["smtp"]["peak_waiting"], COUNT, r["smtp"])
        self.assertEqual(r["backend"]["peak_open"], COUNT, r["backend"])
        self.assertEqual(r["backend"]["optneg_answered"], 0)

    def test_untrusted_proxy_peers_are_refused(self):
        smtp = self.row("proxy")["smtp"]
        self.assertGreaterEqual(smtp["replies"].get("421", 0), COUNT, smtp)
        self.assertEqual(set(smtp["replies"]), {"421"}, smtp)

    def test_half_client_hellos_stay_open(self):
        smtp = self.row("tls")["smtp"]
        self.assertEqual(smtp["peak_waiting"], COUNT, smtp)
        self.assertGreaterEqual(smtp["steps"], COUNT, smtp)


if __name__ == "__main__":
    unittest.main()
