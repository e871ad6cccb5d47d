#!/usr/bin/python3
"""Holds N idle SMTP sessions open (connected, greeted, after EHLO).

    idle.py --port P --count N [--window 200] [--helo NAME]

Prints one JSON line once every session has had its EHLO reply (or failed),
then reads commands on stdin, one per line:
  check   send NOOP on every session still open, print how many answered 250
  quit    close every session and exit (EOF on stdin does the same)
"""

import argparse
import json
import resource
import selectors
import socket
import sys
import time


def raise_nofile(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and need > hard:
        try:  # as root the hard limit can grow too (up to fs.nr_open)
            resource.setrlimit(resource.RLIMIT_NOFILE, (need, need))
            return need
        except (ValueError, OSError):
            pass
    want = min(hard, max(soft, need)) if hard != resource.RLIM_INFINITY else max(soft, need)
    if want > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def open_sessions(port, count, window, helo, timeout=120):
    sel = selectors.DefaultSelector()
    idle = []
    failures = []
    pending = 0
    started = 0
    deadline = time.monotonic() + timeout

    class S:
        __slots__ = ("sock", "buf", "state")

    def start_one():
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        o = S()
        o.sock, o.buf, o.state = s, b"", "greet"
        sel.register(s, selectors.EVENT_READ, o)

    while (started < count or pending) and time.monotonic() < deadline:
        while started < count and pending < window:
            try:
                start_one()
            except OSError as e:
                failures.append("connect: %s" % e)
                started += 1
                continue
            started += 1
            pending += 1
        for key, _ in sel.select(1):
            o = key.data
            try:
                data = o.sock.recv(4096)
            except OSError as e:
                data = b""
                failures.append(str(e))
            if not data:
                sel.unregister(o.sock)
                o.sock.close()
                pending -= 1
                if len(failures) < 1000:
                    failures.append("closed in state %s: %r" % (o.state, o.buf[-200:]))
                continue
            o.buf += data
            while b"\r\n" in o.buf:
                line, _, o.buf = o.buf.partition(b"\r\n")
                if line[3:4] == b"-":
                    continue
                if o.state == "greet" and line.startswith(b"220"):
                    o.state = "ehlo"
                    o.sock.send(b"EHLO " + helo.encode() + b"\r\n")
                elif o.state == "ehlo" and line.startswith(b"250"):
                    o.state = "idle"
                    sel.unregister(o.sock)
                    idle.append(o.sock)
                    pending -= 1
                else:
                    failures.append("unexpected in state %s: %r" % (o.state, line))
                    sel.unregister(o.sock)
                    o.sock.close()
                    pending -= 1
                    break
                if o.state == "idle":
                    break
    for key in list(sel.get_map().values()):
        failures.append("timeout in state %s" % key.data.state)
        key.data.sock.close()
    return idle, failures


def check(socks, timeout=60):
    """NOOP on every session; the number that answered 250."""
    sel = selectors.DefaultSelector()
    ok = 0
    for s in socks:
        try:
            s.send(b"NOOP\r\n")
            sel.register(s, selectors.EVENT_READ, [b""])
        except OSError:
            pass
    deadline = time.monotonic() + timeout
    while sel.get_map() and time.monotonic() < deadline:
        for key, _ in sel.select(1):
            try:
                data = key.fileobj.recv(4096)
            except OSError:
                data = b""
            key.data[0] += data
            if not data or b"\r\n" in key.data[0]:
                if key.data[0].startswith(b"250"):
                    ok += 1
                sel.unregister(key.fileobj)
    return ok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--window", type=int, default=200)
    ap.add_argument("--helo", default="idle.client.test")
    args = ap.parse_args()
    nofile = raise_nofile(args.count + 100)
    t0 = time.monotonic()
    socks, failures = open_sessions(args.port, args.count, args.window, args.helo)
    print(json.dumps({"open": len(socks), "failed": len(failures), "failures": failures[:10], "nofile": nofile,
                      "seconds": time.monotonic() - t0}), flush=True)
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "check":
            print(json.dumps({"alive": check(socks)}), flush=True)
        elif cmd == "quit":
            break
    for s in socks:
        try:
            s.close()
        except OSError:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
