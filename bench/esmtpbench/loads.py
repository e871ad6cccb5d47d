"""Load generators, each run as a child process whose wall time (and CPU,
from wait4's rusage) is measured: Postfix's smtp-source, and the pipelined
client of this benchmark (pipeload.py)."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

from .servers import HELO, RCPT, SENDER, which

HERE = os.path.dirname(os.path.abspath(__file__))

# name: (sessions, messages, payload length, connection reuse)
SHAPES = {
    "a": (20, 5000, 4096, False),
    "b": (20, 20000, 4096, True),
    "c": (4, 200, 1048576, True),
}
QUICK_MESSAGES = {"a": 200, "b": 400, "c": 8}
# STARTTLS shapes (tlsload.py): one message per connection (a handshake
# each), and connection reuse
TLS_SHAPES = {
    "a-tls": (20, 2000, 4096, False),
    "b-tls": (20, 20000, 4096, True),
}
TLS_QUICK_MESSAGES = {"a-tls": 100, "b-tls": 400}
SHAPE_TEXT = {
    "a": "one message per connection",
    "b": "connection reuse",
    "c": "large messages (1 MiB)",
    "p-data": "pipelined: MAIL+RCPT+DATA+message in one write",
    "p-bdat": "pipelined: MAIL+RCPT+BDAT LAST+message in one write",
    "a-tls": "STARTTLS, one message per connection",
    "b-tls": "STARTTLS, connection reuse",
}


def smtp_source_cmd(port, sessions, messages, length, reuse):
    cmd = [which("smtp-source"), "-s", str(sessions), "-m", str(messages), "-l", str(length)]
    if reuse:
        cmd.append("-d")
    cmd += ["-f", SENDER, "-t", RCPT, "-M", HELO, "127.0.0.1:%d" % port]
    return cmd


def run_measured(cmd, timeout, stdin_data=None):
    """Run `cmd`; returns dict(rc, wall_s, cpu_s, stdout, stderr). Killed
    (its process group) after `timeout` seconds."""
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE if stdin_data is not None else subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, close_fds=True)
    killed = []

    def kill():
        killed.append(True)
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except OSError:
            pass

    timer = threading.Timer(timeout, kill)
    timer.start()
    out = {}

    def reader(name, stream):
        out[name] = stream.read()

    threads = [threading.Thread(target=reader, args=("stdout", p.stdout)),
               threading.Thread(target=reader, args=("stderr", p.stderr))]
    for t in threads:
        t.start()
    if stdin_data is not None:
        try:
            p.stdin.write(stdin_data)
            p.stdin.close()
        except OSError:
            pass
    try:
        _pid, status, ru = os.wait4(p.pid, 0)
    finally:
        timer.cancel()
    wall = time.monotonic() - t0
    rc = os.waitstatus_to_exitcode(status)
    p.returncode = rc
    for t in threads:
        t.join(10)
    return {"rc": rc, "wall_s": wall, "cpu_s": ru.ru_utime + ru.ru_stime, "killed": bool(killed),
            "stdout": out.get("stdout", b"").decode("utf-8", "replace"),
            "stderr": out.get("stderr", b"").decode("utf-8", "replace")}


def pipeload_cmd(port, sessions, messages, length, procs, style):
    return [sys.executable, os.path.join(HERE, "pipeload.py"), "--port", str(port), "--sessions", str(sessions),
            "--messages", str(messages), "--length", str(length), "--procs", str(procs), "--style", style,
            "--from", SENDER, "--to", RCPT, "--helo", HELO]


def parse_pipeload(result):
    """The JSON line pipeload.py prints; its own timing of the transaction
    phase replaces the process wall time."""
    try:
        data = json.loads(result["stdout"].strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None
    return data


def tlsload_cmd(port, sessions, messages, length, procs, reuse):
    cmd = [sys.executable, os.path.join(HERE, "tlsload.py"), "--port", str(port), "--sessions", str(sessions),
           "--messages", str(messages), "--length", str(length), "--procs", str(procs),
           "--from", SENDER, "--to", RCPT, "--helo", HELO]
    if reuse:
        cmd.append("--reuse")
    return cmd
