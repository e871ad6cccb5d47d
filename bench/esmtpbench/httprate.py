#!/usr/bin/python3
"""A steady HTTP request rate and its latencies, for bench/isolation (issue 20).

    httprate.py --port P [--path /index.html] [--rate 50] [--duration 20] [--timeout 10]

Open loop: request i is due at start + i/rate whatever happened to the
earlier ones (a stalled server does not slow the client down, so stalls are
not hidden: "coordinated omission"). Each request is a new connection (as a
visitor's first request), `GET PATH HTTP/1.1` with `Connection: close`, read
to the end; its latency runs from the moment it was due to the last byte, so
a late start of the client counts against the server too (the client's own
lateness is reported as `late_ms_max`). A request fails when the status is
not 200, the connection fails, or it takes longer than --timeout.

Prints one JSON line: requests, ok, failed (with reasons), the latencies of
the successful ones in ms (sorted), p50/p90/p99/max over every request (a
failed one ranked slowest; null where the percentile is a failure) and
ok_p50... over the successful ones.
"""

import argparse
import asyncio
import json
import math
import sys
import time


def percentile(sorted_values, p):
    """Nearest-rank percentile of an ascending list (None if empty)."""
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1, math.ceil(p / 100.0 * len(sorted_values)) - 1))
    return sorted_values[k]


def summarize(latencies, failed=0):
    """p50/p90/p99/max over every request, a failed one ranked slowest
    (None where a percentile falls on a failure: slower than --timeout or
    no page at all), and ok_* over the successful ones only."""
    ok = sorted(latencies)
    every = ok + [None] * failed
    out = {"p50": percentile(every, 50), "p90": percentile(every, 90), "p99": percentile(every, 99),
           "max": every[-1] if every else None}
    out.update(ok_p50=percentile(ok, 50), ok_p90=percentile(ok, 90), ok_p99=percentile(ok, 99),
               ok_max=ok[-1] if ok else None)
    return out


async def one(args, due, out):
    late = time.monotonic() - due
    out["late_ms_max"] = max(out["late_ms_max"], late * 1000.0)
    request = ("GET %s HTTP/1.1\r\nHost: http.test\r\nUser-Agent: isolation-bench\r\nConnection: close\r\n\r\n"
               % args.path).encode()
    try:
        async def fetch():
            reader, writer = await asyncio.open_connection("127.0.0.1", args.port)
            try:
                writer.write(request)
                return await reader.read()  # to EOF (Connection: close)
            finally:
                writer.close()

        data = await asyncio.wait_for(fetch(), args.timeout)
    except asyncio.TimeoutError:
        out["failed"]["timeout"] = out["failed"].get("timeout", 0) + 1
        return
    except OSError as e:
        key = e.__class__.__name__
        out["failed"][key] = out["failed"].get(key, 0) + 1
        return
    done = time.monotonic()
    if not data.startswith(b"HTTP/1.1 200 "):
        key = "status " + data[9:12].decode("ascii", "replace") if data else "empty reply"
        out["failed"][key] = out["failed"].get(key, 0) + 1
        return
    out["latencies"].append((done - due) * 1000.0)


async def run(args):
    out = {"latencies": [], "failed": {}, "late_ms_max": 0.0}
    total = int(args.rate * args.duration)
    start = time.monotonic() + 0.1
    tasks = []
    for i in range(total):
        due = start + i / args.rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(args, due, out)))
    await asyncio.gather(*tasks)
    lat = sorted(out["latencies"])
    failed = sum(out["failed"].values())
    result = {"requests": total, "ok": len(lat), "failed": failed, "failures": out["failed"], "rate": args.rate,
              "duration_s": args.duration, "timeout_s": args.timeout, "late_ms_max": out["late_ms_max"],
              **summarize(lat, failed),
              "latencies_ms": [round(v, 3) for v in lat]}
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--path", default="/index.html")
    ap.add_argument("--rate", type=float, default=50.0, help="requests per second (default 50)")
    ap.add_argument("--duration", type=float, default=20.0, help="seconds (default 20)")
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds before a request counts as failed")
    args = ap.parse_args()
    print(json.dumps(asyncio.run(run(args))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
