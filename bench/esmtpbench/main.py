"""bench/run: mod_esmtp against Postfix's smtp-sink and smtpd (issue 5).

See bench/README.md. Everything runs on 127.0.0.1; every server is started
by this program with its own configuration under a temporary directory and
stopped by its pid at the end (also on errors and Ctrl-C)."""

import argparse
import datetime
import json
import math
import os
import platform
import re
import resource
import shutil
import socket
import subprocess
import sys
import threading
import time

from . import loads, procstat, report, servers
from .servers import PEER_CLASSES, ModEsmtp, PostfixSmtpd, SmtpSink, harness, which

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.dirname(HERE)
TOP = os.path.dirname(BENCH)

ALL_SERVERS = ["mod_esmtp", "smtp-sink", "postfix"]  # the default of --servers
# issue 13: the peers of bench/peers/ (Perl's Net::Server::Mail, Node's smtp-server)
KNOWN_SERVERS = ALL_SERVERS + list(servers.PEER_CLASSES)


def mode_http(server):
    """The server runs the http handler: its receiver counts the messages."""
    return getattr(server, "receiver", None) is not None


def log(msg):
    sys.stderr.write("[bench %s] %s\n" % (time.strftime("%H:%M:%S"), msg))
    sys.stderr.flush()


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              timeout=30).stdout.decode("utf-8", "replace").strip()
    except Exception as e:  # noqa: BLE001 (machine info is best effort)
        return "?(%s)" % e


def machine_info(workdir):
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            mem = "%.1f GB" % (int(f.readline().split()[1]) / 1024 / 1024)
    except OSError:
        pass
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "hostname": platform.node(),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory": mem,
        "kernel": platform.release(),
        "os": sh(". /etc/os-release 2>/dev/null && echo \"$PRETTY_NAME\""),
        "httpd": sh("%s -v | head -1" % harness.HTTPD),
        "postfix": sh("postconf -d mail_version 2>/dev/null"),
        "python": platform.python_version(),
        "mod_esmtp_module": harness.MOD_ESMTP,
        "mod_esmtp_git": sh("cd %s && git describe --always --dirty 2>/dev/null" % TOP),
        "workdir": workdir,
        "workdir_fs": sh("df -T %s | tail -1" % workdir),
        "rlimit_nofile": resource.getrlimit(resource.RLIMIT_NOFILE),
    }


def preflight(module, names=()):
    problems = []
    for name in names:
        if name in servers.PEER_CLASSES:
            why = servers.PEER_CLASSES[name].missing()
            if why:
                problems.append("%s: %s" % (name, why))
    if os.geteuid() != 0:
        problems.append("run as root: the private Postfix master and smtp-sink -u need it")
    for name in ("smtp-source", "smtp-sink", "postfix", "postconf"):
        if not which(name):
            problems.append("%s not found: install Postfix (bench/setup.sh)" % name)
    if not os.path.exists(harness.HTTPD):
        problems.append("%s not found: install apache2 (bench/setup.sh)" % harness.HTTPD)
    if not os.path.exists(module):
        problems.append("%s not built: run `make` in %s" % (module, TOP))
    return problems


def snapshot_module(workdir, path):
    """Copy mod_esmtp.so so that a rebuild of the tree during the run (make
    relinks .libs/mod_esmtp.so) cannot change or remove what is measured."""
    import hashlib
    import tempfile
    d = tempfile.mkdtemp(prefix="esmtp-bench-module-", dir=workdir)
    os.chmod(d, 0o755)
    dst = os.path.join(d, "mod_esmtp.so")
    shutil.copy2(path, dst)
    with open(dst, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    mtime = datetime.datetime.fromtimestamp(os.path.getmtime(path)).astimezone().isoformat(timespec="seconds")
    return d, dst, digest, mtime


def raise_nofile(need=0):
    """Soft limit up to the hard one; as root also the hard limit up to
    `need` (20,000 idle sessions need more descriptors than a default hard
    limit: httpd's children inherit the limit from here)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and need > hard and os.geteuid() == 0:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (need, need))
            return
        except (ValueError, OSError):
            pass
    if hard == resource.RLIM_INFINITY or hard > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 65536, hard))
        except (ValueError, OSError):
            pass


IDLE_PER_HOLDER = 10000


def probe_greetings(port, count, interval, out, timeout=10.0):
    """`count` new connections, one every `interval` seconds: the time from
    connect() to the end of the 220 greeting, in ms (issue 13: a new client
    is greeted promptly while thousands of sessions sit idle)."""
    for _ in range(count):
        t0 = time.monotonic()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
                buf = b""
                while not (buf.endswith(b"\r\n") and buf[3:4] == b" " or b"\r\n220 " in buf):
                    data = s.recv(4096)
                    if not data:
                        break
                    buf += data
                if buf.startswith(b"220"):
                    out.append((time.monotonic() - t0) * 1000.0)
                    s.sendall(b"QUIT\r\n")
        except OSError:
            pass
        time.sleep(interval)


class Bench:
    def __init__(self, args):
        self.args = args
        self.runs = []
        self.idle_runs = []
        self.commands = {}
        self.configs = {}
        self.notes = []
        self.started = []
        self.to_remove = []
        self.milter = None  # Opendkim with --milter opendkim

    # ------------------------------------------------------------ helpers

    def shape_params(self, shape):
        sessions, messages, length, reuse = loads.SHAPES[shape]
        if self.args.quick:
            messages = loads.QUICK_MESSAGES[shape]
        if self.args.messages_scale != 1.0:
            messages = max(sessions, int(messages * self.args.messages_scale))
        return sessions, messages, length, reuse

    def start(self, server):
        log("starting %s on 127.0.0.1:%d" % (server.label, server.port))
        server.start()
        self.started.append(server)
        return server

    def stop(self, server):
        log("stopping %s" % server.label)
        server.stop()
        if server not in self.to_remove:
            self.to_remove.append(server)
        if server in self.started:
            self.started.remove(server)
        for p in getattr(server, "log_problems", []):
            self.notes.append("%s: %s" % (server.label, p))

    def stop_all(self):
        for server in list(self.started):
            try:
                self.stop(server)
            except Exception as e:  # noqa: BLE001
                log("could not stop %s: %s" % (server.label, e))

    def warm_up(self, server):
        cmd = loads.smtp_source_cmd(server.port, 5, 50, 1024, True)
        server.prepare_run()
        res = loads.run_measured(cmd, 120)
        fin = server.finish_run(50 if server.durable or server.name == "postfix" or mode_http(server) else None,
                                 timeout=120)
        if res["rc"] != 0 or fin["problems"]:
            raise RuntimeError("warm-up against %s failed: rc=%s %s %s" % (
                server.label, res["rc"], res["stderr"][-2000:], fin["problems"][:5]))

    def wait_quiet(self):
        """Wait (at most --wait-quiet seconds) until the rest of the machine
        uses less than --quiet-pct of one core; returns the last level seen."""
        deadline = time.monotonic() + self.args.wait_quiet
        while True:
            b0 = procstat.system_busy_seconds()
            time.sleep(0.5)
            level = 100.0 * (procstat.system_busy_seconds() - b0) / 0.5
            if level < self.args.quiet_pct or time.monotonic() >= deadline:
                return level
            log("machine busy (%.0f%% of a core used by others): waiting" % level)

    def measure(self, server, mode, shape, rep, cmd, messages, length, pipelined=False):
        """One measured run of `cmd` against `server`."""
        server.prepare_run()
        background = self.wait_quiet() if self.args.wait_quiet > 0 else None
        roots = server.roots()
        cpu0 = procstat.cpu_seconds(roots)
        busy0 = procstat.system_busy_seconds()
        with procstat.MemorySampler(server.roots) as mem:
            res = loads.run_measured(cmd, self.args.run_timeout)
            cpu_accept = procstat.cpu_seconds(server.roots()) - cpu0
            fin = server.finish_run(messages if (server.durable or server.name == "postfix" or mode_http(server)) else None,
                                    timeout=self.args.run_timeout)
        cpu = procstat.cpu_seconds(server.roots()) - cpu0
        busy = procstat.system_busy_seconds() - busy0
        span = res["wall_s"] + fin["drain_s"]
        wall = res["wall_s"]
        done = messages
        client_cpu = res["cpu_s"]
        problems = list(fin["problems"])
        if pipelined:
            data = loads.parse_pipeload(res)
            if data is None or "fatal" in data:
                problems.append("pipeload: %s" % ((data or {}).get("fatal") or res["stderr"][-1000:]))
                done = 0
            else:
                wall = data["seconds"]
                done = data["messages"]
                client_cpu = data["client_cpu_s"]
                if data["errors"]:
                    problems.append("pipeload errors: %s" % data["errors"][:5])
                if done != messages:
                    problems.append("pipeload: %d of %d messages" % (done, messages))
        if res["rc"] != 0:
            problems.append("load generator exit %s%s: %s" % (res["rc"], " (killed: timeout)" if res["killed"] else "",
                                                            (res["stderr"] or res["stdout"])[-1000:].strip()))
        ok = not problems
        run = {
            "mode": mode, "shape": shape, "server": server.name, "label": server.label, "rep": rep,
            "command": " ".join(cmd), "rc": res["rc"], "ok": ok, "messages": done, "expected": messages,
            "payload_bytes": length, "wall_s": wall,
            "msgs_s": done / wall if wall > 0 and done else None,
            "mb_s": done * length / wall / 1e6 if wall > 0 and done else None,
            "cpu_s": cpu, "cpu_accept_s": cpu_accept,
            "cpu_us_msg": cpu / done * 1e6 if done else None,
            "cpu_accept_us_msg": cpu_accept / done * 1e6 if done else None,
            "peak_pss_mb": mem.peak_pss_kb / 1024.0, "peak_rss_mb": mem.peak_rss_kb / 1024.0,
            "start_pss_mb": (mem.first_pss_kb or 0) / 1024.0, "mem_samples": mem.samples,
            "client_cpu_s": client_cpu, "client_cpu_pct": 100.0 * client_cpu / wall if wall > 0 else None,
            "delivered": fin["delivered"], "drain_s": fin["drain_s"], "problems": problems[:20],
            # CPU used by anything else on the machine meanwhile (other processes, this
            # benchmark's sampler), % of one core: a noise indicator
            "background_before_pct": background,
            "other_cpu_pct": max(0.0, 100.0 * (busy - cpu - res["cpu_s"]) / span) if span > 0 else None,
        }
        self.runs.append(run)
        log("%-8s %-6s %-10s rep %d: %s msgs in %.2fs = %s msgs/s, %s MB/s, CPU %s us/msg, peak %.1f MB, "
            "load-gen CPU %.0f%%, other CPU %.0f%%%s%s" % (
                mode, shape, server.name, rep, done, wall, report.fmt(run["msgs_s"]), report.fmt(run["mb_s"], 1),
                report.fmt(run["cpu_us_msg"]), run["peak_pss_mb"], run["client_cpu_pct"] or 0,
                run["other_cpu_pct"] or 0,
                ", drained in %.2fs" % fin["drain_s"] if fin["drain_s"] > 0.05 else "",
                "" if ok else "  PROBLEMS: %s" % problems[:3]))
        return run

    # ------------------------------------------------------------ phases

    def make_servers(self, mode):
        wd = self.args.workdir
        servers = []
        milter = self.milter
        # mode relay: mod_esmtp's smtp handler and Postfix's smtp client relay to one smtp-sink
        relay_port = self.sink.port if mode == "relay" else None
        for name in self.args.servers:
            if mode == "http" and name != "mod_esmtp":
                continue  # the http handler has no counterpart among the other servers
            if name == "mod_esmtp":
                servers.append(ModEsmtp(wd, mode, log_level=self.args.esmtp_log_level,
                                        threads=self.args.threads, async_factor=self.args.async_factor,
                                        extra=list(self.args.esmtp_directive or ()) +
                                        list(milter.esmtp_lines() if milter else ()),
                                        main_extra=self.args.esmtp_main_directive,
                                        relay_port=relay_port))
            elif name == "smtp-sink" and mode == "discard" and not milter:
                servers.append(SmtpSink(wd))
            elif name == "postfix":
                servers.append(PostfixSmtpd(wd, mode, extra_main=milter.postfix_lines() if milter else (),
                                             flush_env=self.args.flush_env, relay_port=relay_port))
            elif name in PEER_CLASSES and not milter and mode != "relay":
                servers.append(PEER_CLASSES[name](wd, mode, flush_env=self.args.flush_env))
        if milter:
            for s in servers:
                s.label += " + opendkim"
        return servers

    def record_config(self, mode, server):
        key = "%s/%s" % (mode, server.name)
        self.configs[key] = server.describe()

    def run_mode(self, mode):
        self.sink = None
        if mode == "relay":
            self.sink = SmtpSink(self.args.workdir)
            self.sink.start()
        try:
            self._run_mode(mode)
        finally:
            if self.sink:
                self.sink.stop()
                if not self.args.keep:
                    self.sink.remove_files()

    def _run_mode(self, mode):
        servers = self.make_servers(mode)
        try:
            for s in servers:
                self.start(s)
                self.record_config(mode, s)
            for s in servers:
                self.warm_up(s)
            for shape in self.args.shapes:
                sessions, messages, length, reuse = self.shape_params(shape)
                self.commands[shape] = " ".join(loads.smtp_source_cmd(0, sessions, messages, length, reuse)).replace(
                    "127.0.0.1:0", "127.0.0.1:PORT")
                for rep in range(self.args.repeat):
                    for s in servers:
                        cmd = loads.smtp_source_cmd(s.port, sessions, messages, length, reuse)
                        self.measure(s, mode, shape, rep, cmd, messages, length)
            if self.args.pipelined:
                sessions, messages, length, _ = self.shape_params("b")
                for style in self.args.pipe_styles:
                    shape = "p-" + style
                    self.commands[shape] = " ".join(loads.pipeload_cmd(0, sessions, messages, length,
                                                                       self.args.pipe_procs, style)).replace(
                        "--port 0", "--port PORT")
                    # no BDAT in smtp-sink and the peers; Net::Server::Mail refuses DATA inside a
                    # pipelined group (550, the client stalls): Node's smtp-server takes p-data
                    targets = [s for s in servers if (style == "data" and s.name != "perl")
                               or s.name not in list(PEER_CLASSES) + ["smtp-sink"]]
                    for rep in range(self.args.repeat):
                        for s in targets:
                            cmd = loads.pipeload_cmd(s.port, sessions, messages, length, self.args.pipe_procs, style)
                            self.measure(s, mode, shape, rep, cmd, messages, length, pipelined=True)
        finally:
            for s in servers:
                if s in self.started:
                    self.stop(s)

    def run_tls(self, mode):
        """The STARTTLS shapes (tlsload.py) against mod_esmtp with
        ESMTPStartTLS On and Postfix smtpd with smtpd_tls_security_level =
        may, the same self-signed certificate (RSA 2048)."""
        cert_dir = tempfile_mkdtemp(self.args.workdir)
        self.to_remove_dirs = getattr(self, "to_remove_dirs", []) + [cert_dir]
        cert, key = os.path.join(cert_dir, "cert.pem"), os.path.join(cert_dir, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=mx.bench.test",
                        "-addext", "subjectAltName=DNS:mx.bench.test", "-addext", "basicConstraints=critical,CA:FALSE",
                        "-keyout", key, "-out", cert, "-days", "2"], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=60)
        os.chmod(cert_dir, 0o755)
        os.chmod(key, 0o644)  # httpd's children and Postfix's smtpd read it
        servers = []
        for name in self.args.servers:
            if mode == "http" and name != "mod_esmtp":
                continue  # the http handler has no counterpart among the other servers
            if name == "mod_esmtp":
                servers.append(ModEsmtp(self.args.workdir, mode, log_level=self.args.esmtp_log_level,
                                        threads=self.args.threads, async_factor=self.args.async_factor, tag="-tls",
                                        tls=(cert, key)))
            elif name == "postfix":
                servers.append(PostfixSmtpd(self.args.workdir, mode, tls=(cert, key)))
        try:
            for s in servers:
                self.start(s)
                self.record_config(mode + "-tls", s)
            for shape in self.args.tls_shapes:
                sessions, messages, length, reuse = loads.TLS_SHAPES[shape]
                if self.args.quick:
                    messages = loads.TLS_QUICK_MESSAGES[shape]
                if self.args.messages_scale != 1.0:
                    messages = max(sessions, int(messages * self.args.messages_scale))
                self.commands[shape] = " ".join(loads.tlsload_cmd(0, sessions, messages, length,
                                                                  self.args.pipe_procs, reuse)).replace(
                    "--port 0", "--port PORT")
                for rep in range(self.args.repeat):
                    for s in servers:
                        cmd = loads.tlsload_cmd(s.port, sessions, messages, length, self.args.pipe_procs, reuse)
                        self.measure(s, mode, shape, rep, cmd, messages, length, pipelined=True)
        finally:
            for s in servers:
                if s in self.started:
                    self.stop(s)
            shutil.rmtree(cert_dir, ignore_errors=True)

    def run_idle(self):
        """N idle sessions (after EHLO) held open while shape (b) runs, each
        N on a freshly started httpd (so memory kept from an earlier N does
        not hide growth)."""
        ns = [0] + [n for n in self.args.idle if n > 0]
        sessions, messages, length, reuse = self.shape_params("b")
        threads = self.args.threads
        nmax = max(ns)
        factor = max(self.args.async_factor, math.ceil(2.0 * (nmax + 200) / threads))
        self.commands["idle"] = "idle.py --port PORT --count N, then " + self.commands.get(
            "b", " ".join(loads.smtp_source_cmd(0, sessions, messages, length, reuse)))
        for rep in range(self.args.idle_repeat):
            for n in ns:
                server = ModEsmtp(self.args.workdir, "discard", log_level=self.args.esmtp_log_level, threads=threads,
                                  async_factor=factor, tag="-idle")
                holders = []
                try:
                    self.start(server)
                    if "idle/mod_esmtp" not in self.configs:
                        self.configs["idle/mod_esmtp"] = server.describe()
                    self.warm_up(server)
                    roots = server.roots
                    before = procstat.settle_memory_kb(roots, 0.5) / 1024.0
                    info = {"open": 0, "failed": 0, "seconds": 0.0}
                    # one holder per IDLE_PER_HOLDER sessions: a process may not
                    # hold more descriptors than its hard limit (20,000 here, and
                    # raising it needs CAP_SYS_RESOURCE)
                    parts = [n // math.ceil(n / IDLE_PER_HOLDER)] * math.ceil(n / IDLE_PER_HOLDER) if n else []
                    if parts:
                        parts[0] += n - sum(parts)
                    for count in parts:
                        holders.append(subprocess.Popen(
                            [sys.executable, os.path.join(HERE, "idle.py"), "--port", str(server.port),
                             "--count", str(count)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True,
                            start_new_session=True))
                    for holder, count in zip(holders, parts):
                        line = holder.stdout.readline()
                        got = json.loads(line) if line else {"open": 0, "failed": count, "failures": ["holder died"]}
                        info["open"] += got["open"]
                        info["failed"] += got["failed"]
                        info["seconds"] = max(info["seconds"], got.get("seconds") or 0.0)
                        if got.get("failed"):
                            self.notes.append("idle %d: %d sessions failed to open: %s" % (
                                n, got["failed"], got.get("failures", [])[:3]))
                    idle_mb = procstat.settle_memory_kb(roots, 1.0) / 1024.0
                    cmd = loads.smtp_source_cmd(server.port, sessions, messages, length, reuse)
                    greet_ms = []
                    prober = threading.Thread(target=probe_greetings, args=(server.port, 100, 0.01, greet_ms),
                                              daemon=True)
                    prober.start()
                    run = self.measure(server, "idle", "b+idle%d" % n, rep, cmd, messages, length)
                    prober.join(60)
                    self.runs.remove(run)
                    alive = 0
                    for holder in holders:
                        holder.stdin.write(b"check\n")
                        holder.stdin.flush()
                        line = holder.stdout.readline()
                        alive += json.loads(line)["alive"] if line else 0
                    rec = dict(run, idle=n, open=info["open"], alive=alive, pss_before_mb=before,
                               pss_idle_mb=idle_mb, idle_growth_mb=idle_mb - before,
                               growth_mb=max(run["peak_pss_mb"], idle_mb) - before,
                               open_seconds=info.get("seconds"), greet_ms=sorted(greet_ms))
                    if n and alive < n:
                        rec["problems"] = rec["problems"] + ["only %d of %d idle sessions answered NOOP after the run"
                                                             % (alive, n)]
                        rec["ok"] = False
                    self.idle_runs.append(rec)
                    log("idle %5d: open %d, alive after %d, PSS %.1f -> %.1f MB (peak %.1f), (b) %s msgs/s, "
                        "greeting median %s ms" % (n, info["open"], alive, before, idle_mb, run["peak_pss_mb"],
                                                  report.fmt(run["msgs_s"]),
                                                  report.fmt(report.median(greet_ms), 2)))
                finally:
                    for holder in holders:
                        try:
                            holder.stdin.write(b"quit\n")
                            holder.stdin.close()
                        except OSError:
                            pass
                    for holder in holders:
                        try:
                            holder.wait(30)
                        except subprocess.TimeoutExpired:
                            holder.kill()
                            holder.wait(10)
                    if server in self.started:
                        self.stop(server)

    # ------------------------------------------------------------ output

    def write(self, info, t_total):
        out = self.args.out
        os.makedirs(out, exist_ok=True)
        summary = report.summarize(self.runs)
        idle_md, idle_summary = report.idle_table(self.idle_runs) if self.idle_runs else ("", [])
        targets_md, targets = report.targets(summary, idle_summary, flush_delay_us=self.args.flush_delay)
        md = ["# mod_esmtp benchmark, %s" % info["date"], ""]
        md.append("Machine: %s, %s CPUs (%s), %s RAM, kernel %s; %s; Postfix %s; filesystem: `%s`." % (
            info["hostname"], info["nproc"], info["cpu"], info["memory"], info["kernel"], info["httpd"],
            info["postfix"], info["workdir_fs"]))
        md.append("mod_esmtp %s (%s, built %s, sha256 %s). Command: `%s`. %d repeats per (server, shape, mode), servers interleaved, "
                  "medians; total time %.0f s.%s" % (
                      info["mod_esmtp_git"], info["mod_esmtp_module"], info["mod_esmtp_mtime"],
                      info["mod_esmtp_sha256"][:12], info["argv"], self.args.repeat, t_total,
                      " QUICK MODE: tiny counts, smoke test only, figures are not meaningful." if self.args.quick
                      else ""))
        if self.milter:
            md.append("")
            md.append("Milter shape: one opendkim (`Mode s`, 2048-bit RSA, signing for %s) on 127.0.0.1:%d in front "
                      "of both servers (`ESMTPMilter` / `smtpd_milters`); every message is signed. The cost of the "
                      "milter round trips per message is the difference from a run without `--milter`." % (
                          servers.SENDER.split("@")[1], self.milter.port))
        if self.args.flush_env:
            md.append("")
            md.append("**Flush delay: %s µs added to every fsync, fdatasync and syncfs of every server** "
                      "(LD_PRELOAD=%s; Postfix daemons through import_environment; the peers through their environment, "
                      "the shim checked in /proc/PID/maps), as on a disk whose flush "
                      "takes that long." % (self.args.flush_delay, self.args.flush_env["LD_PRELOAD"]))
        md.append("")
        md.append("msgs/s and MB/s (payload, 10^6 bytes) are measured by the load generator's wall time; CPU is the "
                  "server's process tree (user+system) per message, including, for Postfix, the queue manager and "
                  "delivery until the queue is empty; peak MB is the largest sum of PSS of the server's processes, "
                  "sampled every 100 ms; load-gen CPU is the load generator's CPU time / wall time (near 100% of one "
                  "core per process = the load generator may be the bottleneck); other CPU is what the rest of the machine "
                  "used meanwhile (% of one core; other processes disturb the figures). × sink and × smtpd: the figure "
                  "divided by smtp-sink's / Postfix smtpd's in the same mode and shape. spread: (max−min)/median "
                  "of msgs/s.")
        for mode in ("discard", "durable", "http", "relay"):
            if any(s["mode"] == mode for s in summary.values()):
                md += ["", "## %s" % ("Discard (mod_esmtp `discard`, smtp-sink, Postfix `discard:` transport)"
                                      if mode == "discard" else
                                      "Relay (mod_esmtp `smtp` handler, Postfix `smtp:` transport, both to one "
                                      "smtp-sink; Postfix's messages counted when sent)" if mode == "relay" else
                                      "Durable (mod_esmtp `maildir`, Postfix `virtual` Maildir, the peers' Maildirs with "
                                      "an fsync of the file only; files counted)" if mode == "durable" else
                                      "HTTP (mod_esmtp `http` posting each message, signed, to bench/peers/"
                                      "http_receiver.py, a threaded Python receiver that checks the signature and "
                                      "drops the message; its CPU is not counted; messages counted by the receiver)"), ""]
                md.append(report.table(summary, mode, loads.SHAPE_TEXT))
        if idle_md:
            md += ["", "## Idle sessions (mod_esmtp `discard`, N sessions after EHLO held open while shape (b) runs; "
                   "a fresh httpd per N)", "", idle_md]
        md += ["", "## Targets (issues 5, 9, 13)", "", targets_md]
        md += ["", "## Commands", ""]
        for k in sorted(self.commands):
            md.append("- %s: `%s`" % (k, self.commands[k]))
        md.append("- servers: see configs/ beside this file (httpd.conf, main.cf, master.cf, the smtp-sink and peer "
                  "commands)")
        problems = [r for r in self.runs + self.idle_runs if not r["ok"]]
        if problems or self.notes:
            md += ["", "## Problems", ""]
            for r in problems:
                md.append("- %s %s %s rep %d: %s" % (r["mode"], r["shape"], r["server"], r["rep"],
                                                      "; ".join(str(p) for p in r["problems"][:3])))
            for n in self.notes:
                md.append("- %s" % n)
        text = "\n".join(md) + "\n"
        with open(os.path.join(out, "results.md"), "w") as f:
            f.write(text)
        with open(os.path.join(out, "results.json"), "w") as f:
            json.dump({"machine": info, "args": vars(self.args), "commands": self.commands,
                       "summary": [dict(v) for v in summary.values()], "idle_summary": idle_summary,
                       "targets": [{"target": a, "measured": b, "verdict": c} for a, b, c in targets],
                       "runs": self.runs, "idle_runs": self.idle_runs, "notes": self.notes}, f, indent=1,
                      default=str)
        try:  # the chart needs python3-matplotlib (bench/setup.sh installs it)
            from . import chart
            log("chart: %s" % chart.draw(out))
        except ImportError:
            log("chart: python3-matplotlib is not installed; bench/chart %s draws it later" % out)
        except Exception as e:  # a chart is no reason to lose the report
            log("chart failed: %s" % e)
        cdir = os.path.join(out, "configs")
        os.makedirs(cdir, exist_ok=True)
        for key, d in self.configs.items():
            base = key.replace("/", "-")
            for field, ext in (("config", "httpd.conf"), ("main.cf", "main.cf"), ("master.cf", "master.cf")):
                if field in d:
                    with open(os.path.join(cdir, "%s.%s" % (base, ext)), "w") as f:
                        f.write(d[field])
            if "command" in d:
                with open(os.path.join(cdir, "%s.command" % base), "w") as f:
                    f.write(d["command"] + "\n")
        return text


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="bench/run", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny counts, 1 repeat, idle N=50: a smoke test (< 1 min)")
    ap.add_argument("--shapes", default="a,b,c", help="smtp-source shapes (a,b,c)")
    ap.add_argument("--modes", default="discard,durable", help="delivery modes (discard,durable,http,relay; none: only "
                    "the idle benchmark; relay: mod_esmtp's smtp handler and Postfix relaying to one smtp-sink)")
    ap.add_argument("--servers", default=",".join(ALL_SERVERS), help="from mod_esmtp,smtp-sink,postfix,perl,node "
                    "(default mod_esmtp,smtp-sink,postfix; perl: Net::Server::Mail::ESMTP, node: smtp-server, "
                    "bench/peers/)")
    ap.add_argument("--repeat", type=int, default=None, help="runs per (server, shape, mode) (default 3, quick 1)")
    ap.add_argument("--messages-scale", type=float, default=1.0, help="multiply every message count (e.g. 0.5)")
    ap.add_argument("--no-pipelined", dest="pipelined", action="store_false", help="skip the pipelined load")
    ap.add_argument("--pipe-styles", default="data,bdat", help="pipelined styles: data (DATA+message in one write), "
                    "bdat (BDAT LAST, one write)")
    ap.add_argument("--pipe-procs", type=int, default=2, help="processes of the pipelined and TLS clients")
    ap.add_argument("--tls-shapes", default="a-tls,b-tls", help="STARTTLS shapes (a-tls,b-tls; none: skip), "
                    "mod_esmtp and Postfix smtpd only")
    ap.add_argument("--idle", default=None, help="idle-session counts (default 100,1000,5000; quick 50); "
                    "'none' skips the idle benchmark")
    ap.add_argument("--idle-repeat", type=int, default=None, help="repeats of the idle benchmark (default: --repeat)")
    ap.add_argument("--threads", type=int, default=25, help="httpd ThreadsPerChild (default 25)")
    ap.add_argument("--async-factor", type=float, default=4, help="httpd AsyncRequestWorkerFactor (default 4)")
    ap.add_argument("--esmtp-log-level", type=int, default=0, help="ESMTPLogLevel of mod_esmtp (default 0)")
    ap.add_argument("--esmtp-main-directive", action="append", default=[], metavar="LINE",
                    help="a line for mod_esmtp's httpd main server (repeatable), e.g. a LoadModule of "
                    "mod_socache_redis and 'ESMTPStateCache redis:127.0.0.1:6379'")
    ap.add_argument("--esmtp-directive", action="append", default=[], metavar="LINE",
                    help="a directive line for mod_esmtp's virtual host (repeatable), e.g. "
                    "'ESMTPClientLimitExceptions none'")
    ap.add_argument("--wait-quiet", type=float, default=None, help="before each run, wait up to this many seconds "
                    "until other processes use less than --quiet-pct of a core (default 5, quick 0; 0: do not wait)")
    ap.add_argument("--quiet-pct", type=float, default=20, help="see --wait-quiet (default 20)")
    ap.add_argument("--run-timeout", type=int, default=600, help="seconds before one run is killed")
    ap.add_argument("--workdir", default=tempfile_dir(), help="where servers keep spools/Maildirs (default $TMPDIR "
                    "or /tmp; same filesystem for all servers)")
    ap.add_argument("--out", default=None, help="results directory (default bench/results/YYYYmmdd-HHMMSS)")
    ap.add_argument("--module", default=None, help="mod_esmtp.so to measure (default: the build tree's "
                    ".libs/mod_esmtp.so; copied before the run)")
    ap.add_argument("--milter", default="none", choices=("none", "opendkim"),
                    help="put a milter in front of mod_esmtp and Postfix: opendkim signing (smtp-sink is skipped)")
    ap.add_argument("--keep", action="store_true", help="keep the servers' temporary directories")
    ap.add_argument("--flush-delay", type=int, default=0, metavar="US",
                    help="add US microseconds to every fsync/fdatasync/syncfs of every server (LD_PRELOAD of "
                    "bench/flushdelay.so, `make bench/flushdelay.so`; Postfix through import_environment); "
                    "e.g. 2000 for a disk whose flush takes 2 ms (default 0: off)")
    args = ap.parse_args(argv)
    args.shapes = [s for s in args.shapes.split(",") if s]
    for s in args.shapes:
        if s not in loads.SHAPES:
            ap.error("unknown shape %r (a, b, c)" % s)
    args.modes = [m for m in args.modes.split(",") if m and m != "none"]
    for m in args.modes:
        if m not in ("discard", "durable", "http", "relay"):
            ap.error("unknown mode %r" % m)
    args.servers = [s for s in args.servers.split(",") if s]
    for s in args.servers:
        if s not in KNOWN_SERVERS:
            ap.error("unknown server %r" % s)
    args.pipe_styles = [s for s in args.pipe_styles.split(",") if s]
    args.tls_shapes = [] if args.tls_shapes == "none" else [s for s in args.tls_shapes.split(",") if s]
    for s in args.tls_shapes:
        if s not in loads.TLS_SHAPES:
            ap.error("unknown TLS shape %r (a-tls, b-tls)" % s)
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    if args.wait_quiet is None:
        args.wait_quiet = 0 if args.quick else 5
    if args.idle is None:
        args.idle = "50" if args.quick else "100,1000,5000"
    args.idle = [] if args.idle == "none" else [int(n) for n in args.idle.split(",") if n]
    if args.idle_repeat is None:
        args.idle_repeat = args.repeat
    if args.out is None:
        args.out = os.path.join(BENCH, "results", time.strftime("%Y%m%d-%H%M%S") + ("-quick" if args.quick else ""))
    return args


def tempfile_mkdtemp(workdir):
    import tempfile
    return tempfile.mkdtemp(prefix="esmtp-bench-cert-", dir=workdir)
def flushdelay_lib():
    """bench/flushdelay.so of the build tree (or the source tree), absolute."""
    for d in (os.path.join(harness.TOP_BUILDDIR, "bench"), BENCH):
        p = os.path.join(d, "flushdelay.so")
        if os.path.exists(p):
            return os.path.abspath(p)
    return None


def tempfile_dir():
    import tempfile
    return tempfile.gettempdir()


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    problems = preflight(args.module or harness.MOD_ESMTP, args.servers)
    if problems:
        for p in problems:
            sys.stderr.write("bench/run: %s\n" % p)
        return 2
    raise_nofile(max(args.idle or [0]) * 2 + 4096)
    if args.flush_delay > 0:
        shim = flushdelay_lib()
        if not shim:
            sys.stderr.write("bench/run: --flush-delay needs bench/flushdelay.so: run `make bench/flushdelay.so`\n")
            return 2
        harness.HTTPD_ENV.update(LD_PRELOAD=shim, FLUSHDELAY_US=str(args.flush_delay))
        args.flush_env = {"LD_PRELOAD": shim, "FLUSHDELAY_US": str(args.flush_delay)}
    else:
        args.flush_env = {}
    module_dir, module, digest, mtime = snapshot_module(args.workdir, args.module or harness.MOD_ESMTP)
    source_module = args.module or harness.MOD_ESMTP
    harness.MOD_ESMTP = module
    info = machine_info(args.workdir)
    info.update(mod_esmtp_module=source_module, mod_esmtp_sha256=digest, mod_esmtp_mtime=mtime,
                mod_esmtp_copy=module)
    info["argv"] = " ".join(["bench/run"] + argv)
    info["flush_delay_us"] = args.flush_delay
    bench = Bench(args)
    t0 = time.monotonic()
    interrupted = False
    try:
        if args.milter == "opendkim":
            bench.milter = servers.Opendkim(args.workdir)
            bench.milter.start()
        for mode in args.modes:
            log("=== mode %s" % mode)
            bench.run_mode(mode)
            if args.tls_shapes and mode != "relay":
                log("=== mode %s, STARTTLS shapes %s" % (mode, ",".join(args.tls_shapes)))
                bench.run_tls(mode)
        if args.idle and "mod_esmtp" in args.servers:
            log("=== idle sessions %s" % args.idle)
            bench.run_idle()
    except KeyboardInterrupt:
        interrupted = True
        bench.notes.append("interrupted (Ctrl-C): partial results")
    except Exception as e:  # noqa: BLE001: report what we have
        import traceback
        traceback.print_exc()
        bench.notes.append("aborted: %s" % e)
        interrupted = True
    finally:
        bench.stop_all()
        if bench.milter:
            bench.milter.stop()
            shutil.rmtree(bench.milter.root, ignore_errors=True)
        shutil.rmtree(module_dir, ignore_errors=True)
    text = bench.write(info, time.monotonic() - t0)
    sys.stdout.write(text)
    sys.stdout.flush()
    log("results: %s" % os.path.join(args.out, "results.md"))
    if args.keep:
        for server in bench.to_remove:
            log("kept %s" % server.root)
    elif bench.to_remove:
        log("removing the servers' directories (Maildirs, spools; slow on a busy disk)")
        for server in bench.to_remove:
            server.remove_files()
    return 1 if interrupted else 0
