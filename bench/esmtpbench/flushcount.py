"""bench/flushcount: fsync/fdatasync calls per delivered message of the
maildir handler at 1, 20 and 100 concurrent sessions (issue 13).

A figure that does not depend on the disk: how many flushes a message costs.
The handler counts its own flushes (file fdatasyncs, directory fsyncs) per
httpd child and writes the totals with every `stored PATH` record of the
transaction log at ESMTPLogLevel 3; this program runs shape (b) (smtp-source
with -d, 4 KB messages) against a fresh durable mod_esmtp per session count
and divides, per child, the growth of the counters between its first and its
last record by the messages stored in between (so that the start-up checks
and the directory creation of the first delivery are not counted).

Log level 3 writes every handler event to the transaction log: the msgs/s it
prints are slower than bench/run's and only there to show the load ran."""

import argparse
import os
import re
import sys
import tempfile
import time

from . import loads
from .servers import ModEsmtp, harness

RECORD = re.compile(r"stored \S+ \(flushes of process (\d+): messages (\d+) files (\d+) directories (\d+)\)")

# sessions: messages (normal, --short)
COUNTS = {1: (1000, 200), 20: (10000, 2000), 100: (20000, 4000)}


def parse_counters(path):
    """{pid: [(messages, files, directories), ...]} from the transaction log."""
    out = {}
    with open(path, errors="replace") as f:
        for line in f:
            m = RECORD.search(line)
            if m:
                out.setdefault(int(m.group(1)), []).append(tuple(int(x) for x in m.groups()[1:]))
    return out


def per_message(counters):
    """(messages, file flushes, directory flushes) stored between each
    child's first and last record, summed over the children."""
    msgs = files = dirs = 0
    for recs in counters.values():
        recs = sorted(recs)
        first, last = recs[0], recs[-1]
        msgs += last[0] - first[0]
        files += last[1] - first[1]
        dirs += last[2] - first[2]
    return msgs, files, dirs


def run_one(args, sessions, messages):
    server = ModEsmtp(args.workdir, "durable", log_level=3, threads=args.threads, log_file="flush.log",
                      tag="-flush")
    log_path = server.vh.log_path
    try:
        server.start()
        try:
            server.prepare_run()
            cmd = loads.smtp_source_cmd(server.port, sessions, messages, 4096, True)
            res = loads.run_measured(cmd, args.run_timeout)
            fin = server.finish_run(messages)
        finally:
            server.stop()
        problems = list(fin["problems"]) + list(server.log_problems)
        if res["rc"] != 0:
            problems.append("smtp-source exit %s: %s" % (res["rc"], res["stderr"][-500:]))
        # the records are written by the children before each reply: complete now
        counters = parse_counters(log_path)
        msgs, files, dirs = per_message(counters)
    finally:
        if not args.keep:
            server.remove_files()
    return {"sessions": sessions, "messages": messages, "wall_s": res["wall_s"],
            "msgs_s": messages / res["wall_s"] if res["wall_s"] > 0 else None, "children": len(counters),
            "counted": msgs, "file_flushes": files, "dir_flushes": dirs,
            "per_message": (files + dirs) / msgs if msgs else None, "problems": problems}


def main(argv=None):
    ap = argparse.ArgumentParser(prog="bench/flushcount", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", default="1,20,100", help="concurrent sessions, one run each (default 1,20,100)")
    ap.add_argument("--short", action="store_true", help="fewer messages (200/2000/4000): seconds per run")
    ap.add_argument("--messages", type=int, default=None, help="messages per run (default: by session count)")
    ap.add_argument("--threads", type=int, default=25, help="httpd ThreadsPerChild (default 25)")
    ap.add_argument("--preload", default=None, help="LD_PRELOAD for httpd, e.g. bench/flushdelay.so (see README)")
    ap.add_argument("--run-timeout", type=int, default=600)
    ap.add_argument("--workdir", default=tempfile.gettempdir())
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args(argv)
    if args.preload:
        harness.HTTPD_ENV["LD_PRELOAD"] = os.path.abspath(args.preload)
    rows = []
    for n in [int(x) for x in args.sessions.split(",") if x]:
        messages = args.messages or COUNTS.get(n, (100 * n, 20 * n))[1 if args.short else 0]
        messages = max(messages, n)
        sys.stderr.write("flushcount: %d sessions, %d messages\n" % (n, messages))
        rows.append(run_one(args, n, messages))
    print("| sessions | messages | children | file flushes/msg | directory flushes/msg | flushes/msg | msgs/s (log level 3) | problems |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    ok = True
    for r in rows:
        c = r["counted"] or 1
        print("| %d | %d | %d | %.3f | %.3f | %s | %.0f | %s |" % (
            r["sessions"], r["messages"], r["children"], r["file_flushes"] / c, r["dir_flushes"] / c,
            "%.3f" % r["per_message"] if r["per_message"] is not None else "-", r["msgs_s"] or 0,
            "; ".join(r["problems"][:3]) or "none"))
        ok = ok and not r["problems"]
    return 0 if ok else 1
