#!/usr/bin/python3
"""bench/peers/blackhole.py: a backend that accepts connections and never
answers, for bench/isolation (issue 20).

    blackhole.py --port PORT --mode lmtp|milter-optneg|milter-connect [--max-conns N]

lmtp            accepts and never greets (the LMTP client of mod_esmtp waits
                for the 220 until its timeout)
milter-optneg   accepts and never answers the milter's OPTNEG
milter-connect  answers OPTNEG (version 6, no actions, every step) and never
                answers what follows (the CONNECT command)

Everything the peer sends is read and thrown away (so its writes never
block); nothing is ever written except the one OPTNEG reply. At most
--max-conns connections are held (the oldest is closed beyond: memory and
descriptors stay bounded). Prints `listening PORT` once it listens and, on
SIGTERM or SIGINT, one JSON line with what it saw, then exits. Loopback only.
"""

import argparse
import asyncio
import json
import resource
import signal
import struct
import sys

# milter protocol 6: OPTNEG = 'O' + version, actions, protocol steps
SMFIC_OPTNEG = b"O"


def optneg_reply():
    body = SMFIC_OPTNEG + struct.pack(">III", 6, 0, 0)
    return struct.pack(">I", len(body)) + body


class Blackhole:
    def __init__(self, mode, max_conns):
        self.mode = mode
        self.max_conns = max_conns
        self.conns = []  # writers, oldest first
        self.accepted = 0
        self.peak = 0
        self.evicted = 0
        self.optneg_answered = 0

    async def serve(self, reader, writer):
        self.accepted += 1
        self.conns.append(writer)
        self.peak = max(self.peak, len(self.conns))
        while len(self.conns) > self.max_conns:
            self.conns.pop(0).close()
            self.evicted += 1
        answered = self.mode != "milter-connect"
        buf = b""
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                if answered:
                    continue  # swallow everything, answer nothing
                buf += data
                if len(buf) >= 4:
                    (length,) = struct.unpack(">I", buf[:4])
                    if len(buf) >= 4 + length and buf[4:5] == SMFIC_OPTNEG:
                        writer.write(optneg_reply())
                        self.optneg_answered += 1
                        answered = True
                        buf = b""
        except (ConnectionError, OSError):
            pass
        finally:
            if writer in self.conns:
                self.conns.remove(writer)
            writer.close()

    def summary(self):
        return {"mode": self.mode, "accepted": self.accepted, "open": len(self.conns), "peak_open": self.peak,
                "evicted": self.evicted, "optneg_answered": self.optneg_answered}


async def main_async(args):
    hole = Blackhole(args.mode, args.max_conns)
    server = await asyncio.start_server(hole.serve, "127.0.0.1", args.port, backlog=4096)
    print("listening %d" % args.port, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    for w in list(hole.conns):
        w.close()
    print(json.dumps(hole.summary()), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--mode", choices=("lmtp", "milter-optneg", "milter-connect"), required=True)
    ap.add_argument("--max-conns", type=int, default=5000)
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, args.max_conns + 100)) if hard != resource.RLIM_INFINITY else args.max_conns + 100
    if want > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    asyncio.run(main_async(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
