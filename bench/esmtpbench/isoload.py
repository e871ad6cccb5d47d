#!/usr/bin/python3
"""The SMTP loads of bench/isolation (issue 20): --count clients that each
repeat one abusive session against --port until told to stop.

    isoload.py --port P --kind auth|lmtp|milter|proxy|tls --count N
               [--connect-rate R] [--sources K] [--source-base 127.0.1.1]

kinds (each client, in a loop):
  auth    greeting, EHLO, then `AUTH PLAIN` with a wrong password until the
          server closes (ESMTPMaxAuthFailures), then a new connection
  lmtp    greeting, EHLO, MAIL, RCPT (the lmtp handler opens its backend at
          the first RCPT: against a silent LMTP server this is the step that
          waits), then QUIT and a new connection
  milter  waits for the greeting (milters are asked at CONNECT: against a
          silent milter this is the step that waits), QUIT, a new connection
  proxy   connects to an ESMTPProxyProtocol port whose trusted list does not
          hold us, reads the refusal and the end of the stream, keeps the
          connection open --hold seconds more (the server may linger,
          reading, until the peer closes), then a new connection
  tls     sends the first half of a TLS ClientHello to an implicit-TLS port
          and nothing more, waits until the server closes

"the step" is the command whose reply shows what the server did with the
abuse; its reply codes are counted (`replies`), as is a close instead of a
reply (`closed`; for tls, whose step has no reply, every close) and a close
before the step was reached (`closed_early`, e.g. after a 421 greeting,
whose code is counted too). New connections are paced by --connect-rate (all clients
together) so that a server that refuses quickly is not turned into a
connection flood; a client whose connection is closed reconnects through
the same pacing. --sources K spreads the clients over K loopback source
addresses from --source-base (1: all from that one address).

Prints one JSON line when every client has made its first connection
attempt ("ramped"); then `status` on stdin prints the counts so far, and
`stop` (or EOF) closes everything and prints the final JSON line with the
counts: connections,
connect failures, steps sent, replies by code, closed, and `waiting` (steps
still without a reply when stopped) with its peak over the run.
"""

import argparse
import asyncio
import base64
import ipaddress
import json
import resource
import ssl
import sys
import time

HELO = "isolation.client.test"
SENDER = "sender@client.test"
RCPT = "rcpt@bench.test"


def raise_nofile(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, need)) if hard != resource.RLIM_INFINITY else max(soft, need)
    if want > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def half_client_hello():
    """The first half of the ClientHello Python's ssl module would send."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="mx.bench.test")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    hello = outgoing.read()
    return hello[:len(hello) // 2]


class Pacer:
    """New connections at most `rate` per second, all clients together."""

    def __init__(self, rate):
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.next = time.monotonic()
        self.lock = asyncio.Lock()

    async def wait(self):
        async with self.lock:
            now = time.monotonic()
            if self.next > now:
                await asyncio.sleep(self.next - now)
            self.next = max(self.next, now) + self.interval


class Closed(Exception):
    pass


class StepClosed(Exception):
    """The server closed the connection instead of answering the step."""


class Stats:
    def __init__(self):
        self.connects = 0
        self.connect_failed = 0
        self.first_attempts = 0
        self.steps = 0
        self.replies = {}
        self.closed = 0
        self.closed_early = 0
        self.waiting = 0
        self.peak_waiting = 0
        self.errors = {}

    def reply(self, code):
        self.replies[code] = self.replies.get(code, 0) + 1

    def error(self, what):
        self.errors[what] = self.errors.get(what, 0) + 1

    def enter_step(self):
        self.steps += 1
        self.waiting += 1
        self.peak_waiting = max(self.peak_waiting, self.waiting)

    def leave_step(self):
        self.waiting -= 1

    def summary(self):
        classes = {"2xx": 0, "3xx": 0, "4xx": 0, "5xx": 0}
        for code, n in self.replies.items():
            key = "%sxx" % code[0]
            if key in classes:
                classes[key] += n
        return {"connects": self.connects, "connect_failed": self.connect_failed, "steps": self.steps,
                "replies": dict(sorted(self.replies.items())), "classes": classes, "closed": self.closed,
                "closed_early": self.closed_early, "waiting": self.waiting, "peak_waiting": self.peak_waiting,
                "errors": self.errors}


class Session:
    def __init__(self, reader, writer):
        self.reader = reader
        self.writer = writer

    async def reply(self):
        """The code of the next (possibly multi-line) reply; Closed on EOF."""
        while True:
            line = await self.reader.readline()
            if not line.endswith(b"\n"):
                raise Closed()
            if line[3:4] != b"-":
                return line[:3].decode("ascii", "replace")

    async def cmd(self, text):
        self.writer.write(text.encode() + b"\r\n")
        return await self.reply()

    async def until_closed(self):
        while await self.reader.read(65536):
            pass


class Load:
    def __init__(self, args):
        self.args = args
        self.stats = Stats()
        self.pacer = Pacer(args.connect_rate)
        base = ipaddress.IPv4Address(args.source_base)
        self.sources = [str(base + i) for i in range(max(1, args.sources))]
        self.hello = half_client_hello() if args.kind == "tls" else b""
        self.auth = base64.b64encode(b"\0alice@bench.test\0not-the-password").decode()

    async def step(self, coro):
        """Await the reply to the abusive step, counted as waiting meanwhile."""
        self.stats.enter_step()
        try:
            code = await coro
        except (Closed, ConnectionError):
            raise StepClosed() from None
        finally:
            self.stats.leave_step()
        self.stats.reply(code)
        return code

    async def one_session(self, s):
        kind = self.args.kind
        if kind == "proxy":
            await self.step(s.reply())
            # a hostile peer does not close when told: the server lingers
            # (reads) until it gives up
            await s.until_closed()
            await asyncio.sleep(self.args.hold)
            return
        if kind == "tls":
            s.writer.write(self.hello)
            self.stats.enter_step()
            try:
                await s.until_closed()
            except ConnectionError:
                pass
            finally:
                self.stats.leave_step()
            raise StepClosed()
        if kind == "milter":
            if await self.step(s.reply()) == "220":
                s.writer.write(b"QUIT\r\n")
                await s.reply()
            return
        greeting = await s.reply()
        if greeting != "220":
            self.stats.reply(greeting)
            return
        if await s.cmd("EHLO " + HELO) != "250":
            return
        if kind == "auth":
            while True:
                s.writer.write(b"AUTH PLAIN " + self.auth.encode() + b"\r\n")
                code = await self.step(s.reply())
                if code != "535":
                    return
        elif kind == "lmtp":
            if await s.cmd("MAIL FROM:<%s>" % SENDER) != "250":
                return
            s.writer.write(b"RCPT TO:<" + RCPT.encode() + b">\r\n")
            await self.step(s.reply())
            s.writer.write(b"QUIT\r\n")
            await s.reply()

    async def client(self, index):
        source = self.sources[index % len(self.sources)]
        first = True
        while True:
            await self.pacer.wait()
            if first:
                self.stats.first_attempts += 1
                first = False
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", self.args.port, local_addr=(source, 0)),
                    self.args.connect_timeout)
            except (OSError, asyncio.TimeoutError) as e:
                self.stats.connect_failed += 1
                self.stats.error("connect: %s" % (e.__class__.__name__))
                await asyncio.sleep(1.0)
                continue
            self.stats.connects += 1
            try:
                await self.one_session(Session(reader, writer))
            except StepClosed:
                self.stats.closed += 1
            except Closed:
                self.stats.closed_early += 1
            except (ConnectionError, OSError) as e:
                self.stats.closed_early += 1
                self.stats.error(e.__class__.__name__)
            finally:
                writer.close()

    async def run(self):
        loop = asyncio.get_running_loop()
        tasks = [asyncio.create_task(self.client(i)) for i in range(self.args.count)]
        t0 = time.monotonic()
        while self.stats.first_attempts < self.args.count:
            await asyncio.sleep(0.05)
        # the last client's connect may still be in progress: give it a moment
        await asyncio.sleep(min(1.0, self.args.connect_timeout))
        print(json.dumps({"ramped": True, "seconds": time.monotonic() - t0, **self.stats.summary()}), flush=True)
        while True:
            line = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
            if line != "status":
                break  # stop, or EOF
            print(json.dumps(self.stats.summary()), flush=True)
        final = self.stats.summary()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        final["seconds"] = time.monotonic() - t0
        print(json.dumps(final), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--kind", choices=("auth", "lmtp", "milter", "proxy", "tls"), required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--connect-rate", type=float, default=200.0, help="new connections per second (default 200)")
    ap.add_argument("--connect-timeout", type=float, default=10.0)
    ap.add_argument("--hold", type=float, default=3.0, help="proxy: seconds to keep a refused connection open "
                    "after the server's end of stream (default 3)")
    ap.add_argument("--sources", type=int, default=1, help="loopback source addresses (default 1)")
    ap.add_argument("--source-base", default="127.0.1.1")
    args = ap.parse_args()
    raise_nofile(args.count + 200)
    asyncio.run(Load(args).run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
