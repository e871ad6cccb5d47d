#!/usr/bin/python3
"""httpd's event MPM crashing at stop after mass closes, without mod_esmtp.

Starts stock httpd (event MPM, mod_status, HTTP keep-alive; the harness's
private ServerRoot on a loopback port), opens N keep-alive connections with
one request each, closes them all at once, then stops httpd (SIGTERM) at
once, or, with "quiet", after mod_status has shown ConnsTotal and
BusyWorkers at 1 (the status request) for a second. Counts the rounds whose
error log has "exit signal" (AH00052 ... Segmentation fault).

    t/integration/event_stop_race.py [N [ROUNDS [now|quiet]]]

httpd 2.4.71 (Debian) on 2 cores, N=1500: "now" 3 crashes in 3 rounds,
"quiet" 0 in 8 (after ConnsTotal alone fell to 1: 1 in 5). README, "Tests".
"""
import os
import re
import resource
import socket
import sys
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import MODULESDIR, Httpd, q, wait_for  # noqa: E402

MPM = ["StartServers 2", "ServerLimit 2", "ThreadsPerChild 32", "ThreadLimit 32", "MinSpareThreads 8",
       "MaxSpareThreads 64", "MaxRequestWorkers 64", "AsyncRequestWorkerFactor 64", "ListenBacklog 2048"]


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1500
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    quiet_first = len(sys.argv) > 3 and sys.argv[3] == "quiet"
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 1000), hard))
    crashes = 0
    for r in range(rounds):
        h = Httpd(esmtp=False, mpm_lines=MPM, prefix="event-stop-race-", main_extra=[
            "LoadModule status_module %s" % q(os.path.join(MODULESDIR, "mod_status.so")),
            "KeepAlive On", "KeepAliveTimeout 60", "MaxKeepAliveRequests 0",
            "<Location /server-status>", "    SetHandler server-status", "    Require all granted",
            "</Location>"])
        port = h.add_http()
        try:
            h.start()
            socks = []
            for _ in range(n):
                s = socket.create_connection(("127.0.0.1", port), timeout=10)
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                socks.append(s)
            for s in socks:
                s.recv(4096)
            for s in socks:
                s.close()
            if quiet_first:
                seen = []

                def settled():
                    text = urllib.request.urlopen("http://127.0.0.1:%d/server-status?auto" % port,
                                                  timeout=10).read().decode()
                    conns = int(re.search(r"ConnsTotal: (\d+)", text).group(1))
                    busy = int(re.search(r"BusyWorkers: (\d+)", text).group(1))
                    seen.append(conns <= 1 and busy <= 1)
                    return len(seen) >= 5 and all(seen[-5:])

                wait_for(settled, 30, 0.2)
            h.stop()
            bad = [l for l in h.log_lines() if "exit signal" in l]
            crashes += bool(bad)
            print("round %d: %s" % (r + 1, bad[0] if bad else "clean"), flush=True)
        finally:
            h.cleanup()
    print("%d connections, stop %s: %d of %d rounds crashed" % (
        n, "after a quiet second" if quiet_first else "at once", crashes, rounds))


if __name__ == "__main__":
    main()
