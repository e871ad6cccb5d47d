#!/usr/bin/python3
"""A STARTTLS SMTP load generator (smtp-source has no TLS).

--sessions lock-step clients (threads, spread over --procs processes; the
ssl module releases the GIL during handshakes and records) each: connect,
EHLO, STARTTLS, handshake, EHLO, then transactions (MAIL, RCPT, DATA, the
message, ".", each waiting for its reply). Without --reuse every message
gets its own connection and handshake, then QUIT (shape a-tls); with it a
connection carries transactions until the messages are used up (b-tls).
--messages are shared by all clients. Prints one JSON line: messages,
errors, seconds, client CPU (all processes).
"""

import argparse
import json
import multiprocessing as mp
import resource
import socket
import ssl
import sys
import threading
import time


def make_message(length, sender, rcpt):
    head = ("From: <%s>\r\nTo: <%s>\r\nSubject: TLS benchmark\r\nMessage-Id: <bench@client.test>\r\n\r\n"
            % (sender, rcpt)).encode()
    line = b"X" * 78 + b"\r\n"
    body = line * (length // len(line))
    rest = length - len(body)
    if rest >= 3:
        body += b"X" * (rest - 2) + b"\r\n"
    return head + body + b".\r\n"


class Client:
    def __init__(self, args, ctx):
        self.args = args
        self.ctx = ctx
        self.sock = None
        self.buf = b""

    def reply(self):
        while True:
            start = 0
            i = self.buf.find(b"\r\n")
            while i >= 0:
                line = self.buf[start:i]
                if len(line) < 4 or line[3:4] != b"-":
                    code = int(line[:3])
                    self.buf = self.buf[i + 2:]
                    return code
                start = i + 2
                i = self.buf.find(b"\r\n", start)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed")
            self.buf += chunk

    def cmd(self, line, expect):
        self.sock.sendall(line)
        code = self.reply()
        if code != expect:
            raise RuntimeError("%r: %d" % (line[:20], code))

    def connect(self):
        a = self.args
        self.buf = b""
        self.sock = socket.create_connection(("127.0.0.1", a.port), timeout=60)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.reply() != 220:
            raise RuntimeError("greeting")
        self.cmd(b"EHLO %s\r\n" % a.helo.encode(), 250)
        self.cmd(b"STARTTLS\r\n", 220)
        self.sock = self.ctx.wrap_socket(self.sock, server_hostname=None)
        self.cmd(b"EHLO %s\r\n" % a.helo.encode(), 250)

    def quit(self):
        try:
            self.cmd(b"QUIT\r\n", 221)
        finally:
            self.sock.close()
            self.sock = None


def worker(args, counter, lock, results, nthreads):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    msg = make_message(args.length, args.sender, args.rcpt)
    mail = b"MAIL FROM:<%s>\r\n" % args.sender.encode()
    rcpt = b"RCPT TO:<%s>\r\n" % args.rcpt.encode()
    done = [0]
    errors = []

    def take():
        with lock:
            if counter.value <= 0:
                return False
            counter.value -= 1
            return True

    def run():
        c = Client(args, ctx)
        while take():
            try:
                if c.sock is None:
                    c.connect()
                c.cmd(mail, 250)
                c.cmd(rcpt, 250)
                c.cmd(b"DATA\r\n", 354)
                c.cmd(msg, 250)
                done[0] += 1
                if not args.reuse:
                    c.quit()
            except Exception as e:  # noqa: BLE001
                errors.append(repr(e)[:200])
                if c.sock is not None:
                    c.sock.close()
                    c.sock = None
        if c.sock is not None:
            c.quit()

    threads = [threading.Thread(target=run) for _ in range(nthreads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    results.put({"messages": done[0], "errors": errors[:10]})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--messages", type=int, default=1000)
    ap.add_argument("--length", type=int, default=4096)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--reuse", action="store_true")
    ap.add_argument("--from", dest="sender", default="sender@client.test")
    ap.add_argument("--to", dest="rcpt", default="rcpt@bench.test")
    ap.add_argument("--helo", default="client.test")
    args = ap.parse_args()
    counter = mp.Value("l", args.messages, lock=False)
    lock = mp.Lock()
    results = mp.Queue()
    procs = []
    per = [args.sessions // args.procs + (1 if i < args.sessions % args.procs else 0) for i in range(args.procs)]
    t0 = time.monotonic()
    for n in per:
        if n:
            p = mp.Process(target=worker, args=(args, counter, lock, results, n))
            p.start()
            procs.append(p)
    out = [results.get() for _ in procs]
    for p in procs:
        p.join()
    seconds = time.monotonic() - t0
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(json.dumps({"messages": sum(o["messages"] for o in out),
                      "errors": [e for o in out for e in o["errors"]][:10], "seconds": seconds,
                      "client_cpu_s": ru.ru_utime + ru.ru_stime}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
