#!/usr/bin/python3
"""A pipelining SMTP load generator (smtp-source does not pipeline).

Each of --sessions connections does EHLO once (and checks that PIPELINING is
offered), then sends whole transactions, each in ONE write:

  --style data  MAIL FROM, RCPT TO, DATA, the message and "." in one write
                (the client does not wait for the 354: what an aggressive
                pipelining client or a spam cannon does; servers that have
                seen EHLO and offered PIPELINING handle it);
  --style bdat  MAIL FROM, RCPT TO, "BDAT <size> LAST" and the message in one
                write (CHUNKING, RFC 3030: strictly conforming pipelining).

and reads the replies (4 or 3) before the next transaction on that
connection. --messages are shared by all connections; connections are spread
over --procs processes (each a selectors loop) so that the client is not the
bottleneck. Prints one JSON line: messages, errors, seconds of the
transaction phase (after every connection has done EHLO), client CPU.
"""

import argparse
import json
import multiprocessing as mp
import os
import resource
import selectors
import socket
import sys
import time

TCP_QUICKACK = getattr(socket, "TCP_QUICKACK", 12)


def make_message(length, sender, rcpt):
    head = ("From: <%s>\r\nTo: <%s>\r\nSubject: pipelined benchmark\r\n"
            "Message-Id: <bench@client.test>\r\n\r\n" % (sender, rcpt)).encode()
    line = b"X" * 78 + b"\r\n"
    body = line * (length // len(line))
    rest = length - len(body)
    if rest >= 3:
        body += b"X" * (rest - 2) + b"\r\n"
    return head + body


class Conn:
    __slots__ = ("sock", "buf", "codes")

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.codes = []


def replies(conn):
    """Pull complete replies out of conn.buf; return their codes."""
    out = []
    buf = conn.buf
    start = 0
    while True:
        eol = buf.find(b"\r\n", start)
        if eol < 0:
            break
        line = buf[start:eol]
        start = eol + 2
        if len(line) < 4 or line[3:4] != b"-":
            out.append(line)
    conn.buf = buf[start:]
    return out


def read_reply(c):
    """One whole reply, blocking (connection set-up only)."""
    lines = []
    while True:
        while b"\r\n" not in c.buf:
            data = c.sock.recv(4096)
            if not data:
                raise SystemExit("connection closed during set-up: %r" % lines)
            c.buf += data
        line, _, c.buf = c.buf.partition(b"\r\n")
        lines.append(line)
        if len(line) < 4 or line[3:4] != b"-":
            return lines


def worker(port, sessions, messages, payload, style, helo, sender, rcpt, ready, go, result, quickack):
    sel = selectors.DefaultSelector()
    conns = []
    errors = []
    if style == "bdat":
        txn = (b"MAIL FROM:<%s>\r\nRCPT TO:<%s>\r\nBDAT %d LAST\r\n" % (sender.encode(), rcpt.encode(), len(payload))
               + payload)
        expect = (b"250", b"250", b"250")
    else:
        stuffed = payload  # no line starts with "."
        txn = b"MAIL FROM:<%s>\r\nRCPT TO:<%s>\r\nDATA\r\n" % (sender.encode(), rcpt.encode()) + stuffed + b".\r\n"
        expect = (b"250", b"250", b"354", b"250")
    # connect and EHLO (before the clock starts). Sockets stay blocking: a
    # recv happens only when select says readable, and a send can only wait
    # for the server to read (its replies are small and fit our buffer).
    for _ in range(sessions):
        s = socket.create_connection(("127.0.0.1", port), timeout=60)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c = Conn(s)
        greeting = read_reply(c)
        if not greeting[-1].startswith(b"220"):
            raise SystemExit("greeting: %r" % greeting)
        s.sendall(b"EHLO " + helo.encode() + b"\r\n")
        ehlo = read_reply(c)
        if not ehlo[-1].startswith(b"250"):
            raise SystemExit("EHLO: %r" % ehlo)
        keywords = [l[4:].strip().split(b" ")[0].upper() for l in ehlo]
        need = b"CHUNKING" if style == "bdat" else b"PIPELINING"
        if need not in keywords:
            raise SystemExit("server does not offer %s: %r" % (need.decode(), ehlo))
        s.settimeout(None)  # plain blocking calls from here on (no poll per call)
        conns.append(c)
    ready.set()
    go.wait()
    t0 = time.monotonic()
    left = messages
    done = 0
    active = 0
    nexp = len(expect)
    for c in conns:
        if left <= 0:
            break
        left -= 1
        c.codes = []
        c.sock.sendall(txn)
        sel.register(c.sock, selectors.EVENT_READ, c)
        active += 1
    while active:
        events = sel.select(120)
        if not events:
            errors.append("no reply within 120 s")
            break
        for key, _ in events:
            c = key.data
            data = c.sock.recv(65536)
            if quickack:
                # re-arm: ACK at once instead of delaying the ACK up to 40 ms
                c.sock.setsockopt(socket.IPPROTO_TCP, TCP_QUICKACK, 1)
            if not data:
                errors.append("connection closed by server")
                sel.unregister(c.sock)
                active -= 1
                continue
            c.buf += data
            for line in replies(c):
                n = len(c.codes)
                c.codes.append(line[:3])
                if n < nexp and line[:3] != expect[n] and len(errors) < 20:
                    errors.append(line.decode("utf-8", "replace"))
            if len(c.codes) >= nexp:
                done += 1
                c.codes = []
                if left > 0:
                    left -= 1
                    c.sock.sendall(txn)
                else:
                    sel.unregister(c.sock)
                    active -= 1
    t1 = time.monotonic()
    for c in conns:
        try:
            c.sock.settimeout(5)
            c.sock.sendall(b"QUIT\r\n")
            c.sock.close()
        except OSError:
            pass
    ru = resource.getrusage(resource.RUSAGE_SELF)
    result.put({"done": done, "errors": errors, "t0": t0, "t1": t1, "cpu": ru.ru_utime + ru.ru_stime})


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--length", type=int, default=4096)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--style", choices=("data", "bdat"), default="data")
    ap.add_argument("--from", dest="sender", default="sender@client.test")
    ap.add_argument("--to", dest="rcpt", default="rcpt@bench.test")
    ap.add_argument("--helo", default="client.test")
    ap.add_argument("--no-quickack", dest="quickack", action="store_false",
                    help="do not set TCP_QUICKACK after each read (see bench/README.md: delayed ACKs of a client "
                    "that sends the whole transaction at once meet Nagle in servers that write replies in "
                    "several small writes, a 40 ms stall per transaction)")
    args = ap.parse_args()
    payload = make_message(args.length, args.sender, args.rcpt)
    procs = max(1, min(args.procs, args.sessions))
    go = mp.Event()
    result = mp.Queue()
    workers = []
    readies = []
    for i in range(procs):
        sessions = args.sessions // procs + (1 if i < args.sessions % procs else 0)
        messages = args.messages // procs + (1 if i < args.messages % procs else 0)
        ready = mp.Event()
        p = mp.Process(target=worker, args=(args.port, sessions, messages, payload, args.style, args.helo,
                                            args.sender, args.rcpt, ready, go, result, args.quickack))
        p.start()
        workers.append(p)
        readies.append(ready)
    for r, p in zip(readies, workers):
        while not r.wait(0.5):
            if not p.is_alive():
                print(json.dumps({"fatal": "a worker failed during connect/EHLO (exit %s)" % p.exitcode}))
                for q in workers:
                    q.terminate()
                return 1
    t0 = time.monotonic()
    go.set()
    results = [result.get(timeout=3600) for _ in workers]
    for p in workers:
        p.join()
    t1 = max(r["t1"] for r in results)
    out = {"messages": sum(r["done"] for r in results),
           "errors": sum((r["errors"] for r in results), []),
           "seconds": t1 - t0,
           "client_cpu_s": sum(r["cpu"] for r in results),
           "message_bytes": len(payload), "style": args.style, "procs": procs, "quickack": args.quickack}
    print(json.dumps(out))
    return 0 if not out["errors"] and out["messages"] == args.messages else 1


if __name__ == "__main__":
    sys.exit(main())
