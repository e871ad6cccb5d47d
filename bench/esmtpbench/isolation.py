"""bench/isolation: does SMTP abuse slow down the web sites of the same
httpd? (issue 20; bench/README.md, "Isolation").

One httpd (event MPM, Debian's default MPM limits unless --mpm says
otherwise, the module's defaults plus --extra-conf/--vhost-conf) serves a
static page on an HTTP virtual host and SMTP on one virtual host per load.
Each row starts a fresh httpd with that same configuration, starts the load
(bench/esmtpbench/isoload.py) and, where the load needs one, its silent
backend (bench/peers/blackhole.py), waits until every client has connected,
then measures the page's latency at a steady request rate
(bench/esmtpbench/httprate.py) while the load goes on, sampling mod_status
once a second. Afterwards it counts what the SMTP clients got and greps
httpd's error log for AH00484 (MaxRequestWorkers reached).

Everything is on 127.0.0.1; every process is started here and stopped by
its pid (also on errors and Ctrl-C)."""

import argparse
import datetime
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

from . import procstat
from .main import log, machine_info, raise_nofile, snapshot_module
from .servers import _BenchHttpd, harness

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.dirname(HERE)
PEERS = os.path.join(BENCH, "peers")

# Debian's /etc/apache2/apache2.conf and mods-available/mpm_event.conf
# (AsyncRequestWorkerFactor and ServerLimit are not set there: httpd's
# defaults 2 and 16 apply).
DEBIAN_MPM = [
    "Timeout 300",
    "KeepAlive On",
    "MaxKeepAliveRequests 100",
    "KeepAliveTimeout 5",
    "StartServers 2",
    "MinSpareThreads 25",
    "MaxSpareThreads 75",
    "ThreadLimit 64",
    "ThreadsPerChild 25",
    "MaxRequestWorkers 150",
    "MaxConnectionsPerChild 0",
]

# row: (load description, default count, backend mode of blackhole.py)
ROWS = {
    "idle": ("none", 0, None),
    "auth": ("connections spraying wrong AUTH PLAIN passwords", 1000, None),
    "lmtp": ("sessions whose LMTP server accepts and never answers", 1000, "lmtp"),
    "milter": ("sessions whose milter never answers", 1000, "milter-optneg"),
    "proxy": ("untrusted PROXY peers", 500, None),
    "tls": ("connections to an implicit-TLS port sending half a ClientHello, from one address", 500, None),
}
ROW_ORDER = ["idle", "auth", "lmtp", "milter", "proxy", "tls"]

AUTH_USER, AUTH_PASSWORD = "alice@bench.test", "the-password"
PAGE = "<!DOCTYPE html>\n<html><head><title>isolation</title></head><body>\n%s</body></html>\n" % (
    "<p>%s</p>\n" % ("The web site that shares its httpd with an SMTP server. " * 4) * 16)


class IsolationHttpd(_BenchHttpd):
    """_BenchHttpd that also takes KeepAlive from the benchmark's lines
    (harness.Httpd writes `KeepAlive Off`; Debian's default is On)."""

    MPM_DIRECTIVES = _BenchHttpd.MPM_DIRECTIVES + ("KeepAlive", "MaxKeepAliveRequests", "KeepAliveTimeout",
                                                   "MaxConnectionsPerChild")


def merge_mpm(lines, overrides):
    """DEBIAN_MPM with each --mpm line replacing the directive of its name."""
    out = list(lines)
    for o in overrides:
        name = o.split()[0].lower()
        out = [l for l in out if l.split()[0].lower() != name] + [o]
    return out


class Setup:
    """What every row's httpd shares: ports, certificate, password file, config."""

    def __init__(self, args, run_dir):
        self.args = args
        self.run_dir = run_dir
        self.http_port = harness.free_port()
        self.backend_ports = {"lmtp": harness.free_port(), "milter": harness.free_port()}
        self.cert = os.path.join(run_dir, "cert.pem")
        self.key = os.path.join(run_dir, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=mx.bench.test",
                        "-addext", "subjectAltName=DNS:mx.bench.test", "-addext",
                        "basicConstraints=critical,CA:FALSE", "-keyout", self.key, "-out", self.cert, "-days", "2"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
        self.htpasswd = os.path.join(run_dir, "smtp-users")
        # bcrypt, as the README's `htpasswd -cB` (each refused password costs a hash)
        subprocess.run(["htpasswd", "-bcB", self.htpasswd, AUTH_USER, AUTH_PASSWORD], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
        for p in (self.cert, self.key, self.htpasswd):
            os.chmod(p, 0o644)
        os.chmod(run_dir, 0o755)
        self.mpm_lines = merge_mpm(DEBIAN_MPM, args.mpm)
        self.smtp_ports = {}

    def make_httpd(self, tag):
        m = harness.MODULESDIR
        root = tempfile.mkdtemp(prefix="esmtp-isolation-%s-" % tag, dir=self.args.workdir)
        mods = [("status_module", "mod_status.so"), ("authn_core_module", "mod_authn_core.so"),
                ("authn_file_module", "mod_authn_file.so"), ("socache_shmcb_module", "mod_socache_shmcb.so"),
                ("ssl_module", "mod_ssl.so")]
        main_extra = ["LoadModule %s %s" % (name, harness.q(os.path.join(m, so))) for name, so in mods]
        main_extra += [
            "SSLSessionCache shmcb:%s(512000)" % os.path.join(root, "run", "ssl_scache"),
            "SSLRandomSeed startup builtin",
            "<AuthnProviderAlias file smtp-users>",
            "    AuthUserFile %s" % harness.q(self.htpasswd),
            "</AuthnProviderAlias>",
            "<Location /server-status>",
            "    SetHandler server-status",
            "    Require all granted",
            "</Location>",
            "# --extra-conf",
        ] + list(self.args.extra_conf)
        httpd = IsolationHttpd(self.mpm_lines, mpm="event", esmtp=True, test_handler=False, log_level="warn",
                               root=root, main_extra=main_extra)
        httpd.add_http(index_content=PAGE, port=self.http_port)
        common = dict(server_name="mx.bench.test", accept_domains=["bench.test"])
        vconf = list(self.args.vhost_conf)
        vhosts = {
            "auth": httpd.add_smtp("discard", extra=["ESMTPAuth PLAIN LOGIN", "ESMTPAuthProvider smtp-users",
                                                     "ESMTPAuthRequireTLS Off"] + vconf,
                                   port=self.smtp_ports.get("auth"), **common),
            "lmtp": httpd.add_smtp("lmtp 127.0.0.1:%d" % self.backend_ports["lmtp"], extra=vconf,
                                   port=self.smtp_ports.get("lmtp"), **common),
            "milter": httpd.add_smtp("discard", extra=["ESMTPMilter inet:127.0.0.1:%d" % self.backend_ports["milter"]]
                                     + vconf, port=self.smtp_ports.get("milter"), **common),
            # 192.0.2.1 (TEST-NET-1) is the only trusted balancer: we are not it
            "proxy": httpd.add_smtp("discard", extra=["ESMTPProxyProtocol v1", "ESMTPProxyTrusted 192.0.2.1"] + vconf,
                                    port=self.smtp_ports.get("proxy"), **common),
            # implicit TLS: SSLEngine on without ESMTPStartTLS
            "tls": httpd.add_smtp("discard", extra=["SSLEngine on", "SSLCertificateFile %s" % harness.q(self.cert),
                                                    "SSLCertificateKeyFile %s" % harness.q(self.key)] + vconf,
                                  port=self.smtp_ports.get("tls"), **common),
        }
        # the same ports in every row's httpd
        self.smtp_ports = {k: v.port for k, v in vhosts.items()}
        return httpd, vhosts


class Sampler:
    """GET /server-status?auto once a second in a thread: BusyWorkers and the
    module's ESMTP* keys (whatever this build has, e.g. a bulkhead's)."""

    def __init__(self, port, interval=1.0):
        self.url = "http://127.0.0.1:%d/server-status?auto" % port
        self.interval = interval
        self.samples = []
        self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                with urllib.request.urlopen(self.url, timeout=5) as r:
                    text = r.read().decode("utf-8", "replace")
                d = {}
                for line in text.splitlines():
                    k, _, v = line.partition(": ")
                    if k in ("BusyWorkers", "IdleWorkers", "ConnsTotal", "Processes") or k.startswith("ESMTP"):
                        try:
                            d[k] = float(v) if "." in v else int(v)
                        except ValueError:
                            d[k] = v
                self.samples.append(d)
            except OSError:
                self.failed += 1
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(10)

    def summary(self):
        def peak(key):
            vals = [s[key] for s in self.samples if isinstance(s.get(key), (int, float))]
            return max(vals) if vals else None

        keys = sorted({k for s in self.samples for k in s})
        return {"samples": len(self.samples), "failed": self.failed,
                "peak": {k: peak(k) for k in keys}, "last": self.samples[-1] if self.samples else {}}


def held_workers(parent_pid):
    """Worker threads of httpd's children that are not idle, from /proc: an
    idle event-MPM worker waits on its queue's condition variable (wchan
    futex_*); one held by a backend, a sleep or a handshake waits elsewhere
    (poll, nanosleep...). Each child also has its main thread and the
    listener, which are not workers. Works when every worker is held and
    mod_status cannot answer."""
    total = 0
    for child in harness.children_of(parent_pid):
        try:
            tids = os.listdir("/proc/%d/task" % child)
        except OSError:
            continue
        idle = 0
        for tid in tids:
            try:
                with open("/proc/%d/task/%s/wchan" % (child, tid)) as f:
                    idle += f.read().startswith("futex")
            except OSError:
                pass
        total += max(0, len(tids) - 2 - idle)
    return total


class WorkerSampler(threading.Thread):
    """held_workers() every `interval` seconds: peak and mean."""

    def __init__(self, parent_pid, interval=0.5):
        super().__init__(daemon=True)
        self.parent_pid = parent_pid
        self.interval = interval
        self.values = []
        self.halt = threading.Event()

    def run(self):
        while not self.halt.is_set():
            self.values.append(held_workers(self.parent_pid))
            self.halt.wait(self.interval)

    def summary(self):
        v = self.values
        return {"samples": len(v), "peak": max(v) if v else None, "mean": sum(v) / len(v) if v else None}


class Proc:
    """A helper process of ours (load, backend, probe) with JSON lines on stdout."""

    def __init__(self, cmd, stdin=True):
        self.cmd = cmd
        self.p = subprocess.Popen(cmd, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                                  close_fds=True, text=True)
        self.err = []
        self._t = threading.Thread(target=lambda: self.err.extend(self.p.stderr), daemon=True)
        self._t.start()

    def line(self, timeout):
        """The next stdout line (None on EOF or timeout)."""
        out = []
        t = threading.Thread(target=lambda: out.append(self.p.stdout.readline()), daemon=True)
        t.start()
        t.join(timeout)
        return out[0] if out and out[0] else None

    def json_line(self, timeout):
        line = self.line(timeout)
        try:
            return json.loads(line) if line else None
        except ValueError:
            return None

    def stop(self, sig=signal.SIGTERM, timeout=10):
        if self.p.poll() is None:
            try:
                os.killpg(self.p.pid, sig)
            except OSError:
                pass
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.p.pid, signal.SIGKILL)
                self.p.wait(10)


def start_backend(mode, port, count):
    proc = Proc([sys.executable, os.path.join(PEERS, "blackhole.py"), "--port", str(port), "--mode", mode,
                 "--max-conns", str(max(2000, 2 * count))], stdin=False)
    line = proc.line(20)
    if not line or not line.startswith("listening"):
        proc.stop()
        raise RuntimeError("blackhole.py did not start: %s %s" % (line, "".join(proc.err)[-1000:]))
    return proc


AH_RE = re.compile(r"\b(AH\d{5})\b")
# the notices of every start and stop (command line, resuming normal operations, SIGTERM)
START_STOP_CODES = {"AH00094", "AH00489", "AH00491"}


def scan_error_log(path):
    """AH codes and esmtp messages of the error log, counted."""
    codes, esmtp, fatal = {}, {}, []
    try:
        with open(path, errors="replace") as f:
            for line in f:
                for code in AH_RE.findall(line):
                    if code not in START_STOP_CODES:
                        codes[code] = codes.get(code, 0) + 1
                m = re.search(r"\[esmtp:(\w+)\](.*)", line)
                if m:
                    # one key per kind of message: the [pid] [client] prefixes, numbers, addresses out
                    text = re.sub(r"^(\s*\[[^\]]*\])*\s*(esmtp: )?", "", m.group(2))
                    text = re.sub(r"\d+", "N", text)[:120]
                    key = "%s: %s" % (m.group(1), text)
                    esmtp[key] = esmtp.get(key, 0) + 1
                if harness.FATAL_TEXT_RE.search(line):
                    fatal.append(line.strip())
    except FileNotFoundError:
        pass
    top = dict(sorted(esmtp.items(), key=lambda kv: -kv[1])[:8])
    return codes, top, fatal[:10]


def reached_state(row, count, load, backend):
    """Whether the load did what it is meant to: (ok, text). ok needs the
    abuse to have reached the server (replies to the step, connections held
    by the black hole, half ClientHellos sent); how many clients got that far
    at once is in the text: under the landed code a full server keeps the
    others in its listen queue, which is the point of the measurement, not a
    failure of the load (test_bench_isolation.py asserts every client with
    a small count)."""
    if row == "idle":
        return True, "-"
    if not load:
        return False, "no result from the load"
    replies = sum(load["replies"].values())
    at_once = "at most %d of %d clients at the step at once" % (load["peak_waiting"], count)
    if row in ("auth", "proxy"):
        return replies > 0, "%d steps sent, %d replies, %s" % (load["steps"], replies, at_once)
    if row in ("lmtp", "milter"):
        held = (backend or {}).get("peak_open", 0)
        return load["steps"] > 0 and held > 0, "%d steps sent, %s, the black hole held at most %d connections" % (
            load["steps"], at_once, held)
    if row == "tls":
        return load["steps"] > 0, "%d half ClientHellos sent, %s" % (load["steps"], at_once)
    return False, "?"


def state_complete(row, count, st):
    """Every client of the load is at its step (waiting for the reply, or
    holding its half ClientHello), or, where the reply comes at once (auth:
    after the failure delay; proxy), as many replies as clients came back."""
    if row in ("auth", "proxy"):
        return sum(st["replies"].values()) >= count
    return st["waiting"] >= count


def wait_state(load, row, count, limit):
    """Poll the load (`status`) until state_complete() or `limit` seconds:
    {"complete": bool, "seconds": waited}."""
    t0 = time.monotonic()
    while True:
        load.p.stdin.write("status\n")
        load.p.stdin.flush()
        st = load.json_line(10)
        done = st is not None and state_complete(row, count, st)
        if done or time.monotonic() - t0 >= limit:
            log("%s: %s after %.1fs" % (row, "every client at its step" if done else "state not complete",
                                         time.monotonic() - t0))
            return {"complete": done, "seconds": time.monotonic() - t0}
        time.sleep(0.2)


def run_row(args, setup, row, idle_p99):
    desc, default_count, backend_mode = ROWS[row]
    if row == "milter":
        backend_mode = "milter-" + args.milter_stage
    count = args.count if args.count is not None else default_count
    httpd, vhosts = setup.make_httpd(row)
    result = {"row": row, "load": desc, "count": count if row != "idle" else 0, "problems": []}
    backend = load = None
    try:
        if backend_mode:
            backend = start_backend(backend_mode, setup.backend_ports[row], count)
        httpd.start(timeout=30)
        result["config"] = httpd.config_text()
        # warm-up: the page is served
        warm = Proc([sys.executable, os.path.join(HERE, "httprate.py"), "--port", str(setup.http_port),
                     "--rate", "20", "--duration", "0.5"], stdin=False)
        w = warm.json_line(30)
        warm.stop()
        if not w or w["ok"] != w["requests"]:
            raise RuntimeError("warm-up requests failed: %s" % (w and w["failures"]))
        ramp = None
        if row != "idle":
            # the TLS row comes from one address; the others from one address per 4 clients
            sources = 1 if row == "tls" else max(1, min(250, (count + 3) // 4))
            load = Proc([sys.executable, os.path.join(HERE, "isoload.py"), "--port", str(vhosts[row].port),
                         "--kind", row, "--count", str(count), "--connect-rate", str(args.connect_rate),
                         "--sources", str(sources), "--source-base", "127.0.3.1" if row == "tls" else "127.0.1.1"])
            ramp = load.json_line(count / args.connect_rate + 60)
            if ramp is None:
                raise RuntimeError("the %s load did not ramp up: %s" % (row, "".join(load.err)[-1000:]))
            log("%s: %d clients made their first connection attempt in %.1fs (%d connected, %d failed); "
                "settling %gs" % (
                row, count, ramp["seconds"], ramp["connects"], ramp["connect_failed"], args.settle))
            if args.wait_state > 0:
                result["state_wait"] = wait_state(load, row, count, args.wait_state)
            time.sleep(args.settle)
        roots = [httpd.proc.pid]
        load_roots = [load.p.pid] if load else []
        cpu0, busy0, t0 = procstat.cpu_seconds(roots), procstat.system_busy_seconds(), time.monotonic()
        load_cpu0 = procstat.cpu_seconds(load_roots)
        workers = WorkerSampler(httpd.proc.pid)
        workers.start()
        with Sampler(setup.http_port) as sampler:
            probe = Proc([sys.executable, os.path.join(HERE, "httprate.py"), "--port", str(setup.http_port),
                          "--rate", str(args.rate), "--duration", str(args.duration), "--timeout",
                          str(args.http_timeout)], stdin=False)
            http = probe.json_line(args.duration + args.http_timeout + 60)
            probe.stop()
        workers.halt.set()
        workers.join(10)
        wall = time.monotonic() - t0
        cpu = procstat.cpu_seconds(roots) - cpu0
        load_cpu = procstat.cpu_seconds(load_roots) - load_cpu0
        busy = procstat.system_busy_seconds() - busy0
        if http is None:
            raise RuntimeError("the HTTP probe gave no result: %s" % "".join(probe.err)[-1000:])
        final = None
        if load:
            load.p.stdin.write("stop\n")
            load.p.stdin.flush()
            final = load.json_line(60)
            load.stop()
        bsum = None
        if backend:
            backend.stop()
            bsum = backend.json_line(5)
        result.update(http=http, ramp=ramp, smtp=final, backend=bsum, status=sampler.summary(),
                      workers=workers.summary(),
                      httpd_cpu_pct=100.0 * cpu / wall, load_cpu_pct=100.0 * load_cpu / wall,
                      machine_cpu_pct=100.0 * busy / wall)
    except Exception as e:  # noqa: BLE001: a failed row is reported, the others still run
        result["problems"].append("row failed: %s" % e)
        log("%s: FAILED: %s" % (row, e))
    finally:
        for p in (load, backend):
            if p:
                p.stop(signal.SIGKILL)
        httpd.stop()
        codes, esmtp, fatal = scan_error_log(httpd.error_log)
        result.update(ah_codes=codes, ah00484=codes.get("AH00484", 0), esmtp_log=esmtp)
        result["problems"] += ["error log: %s" % l for l in fatal]
        result["problems"] += ["httpd stderr: %s" % l for l in harness.unexpected_log_lines(httpd.stderr_lines())]
        if args.keep:
            log("kept %s" % httpd.root)
        else:
            shutil.rmtree(httpd.root, ignore_errors=True)
    ok, text = reached_state(row, count, result.get("smtp"), result.get("backend"))
    result["reached"], result["reached_text"] = ok, text
    if not ok:
        result["problems"].append("the load did not reach its state: %s" % text)
    http = result.get("http")
    if http:
        ratio = http["p99"] / idle_p99 if idle_p99 and http["p99"] is not None else None
        result["p99_x_idle"] = ratio
        clean = result["ah00484"] == 0 and http["failed"] == 0
        if row == "idle":
            result["target_met"] = clean
        elif idle_p99:  # without an idle row in the run there is nothing to compare with
            result["target_met"] = clean and ratio is not None and ratio <= 2.0
        log("%s: HTTP p50 %s p90 %s p99 %s max %s ms, %d failed%s; AH00484 x%d; workers held at most %s; %s" % (
            row, *(fmt_ms(http[k], http["timeout_s"]) for k in ("p50", "p90", "p99", "max")), http["failed"],
            ", p99 %.2fx idle" % ratio if ratio else "", result["ah00484"], result["workers"]["peak"], text))
    return result


# ------------------------------------------------------------------ report

def fmt_ms(v, timeout=None):
    """A latency; None is a failed request (`> timeout`)."""
    if v is None:
        return "> %s s" % "{:g}".format(timeout) if timeout else "–"
    return "%.1f" % v if v < 100 else "{:,.0f}".format(v)


def smtp_text(r):
    s = r.get("smtp")
    if not s:
        return "–"
    c = s["classes"]
    codes = ", ".join("%s×%s" % (k, "{:,}".format(v)) for k, v in s["replies"].items())
    parts = ["2xx {:,}".format(c["2xx"]), "4xx {:,}".format(c["4xx"]), "5xx {:,}".format(c["5xx"]),
             "closed {:,}".format(s["closed"])]
    text = " / ".join(parts)
    if codes:
        text += " (%s)" % codes
    text += "; no reply yet at the end: {:,}".format(s["waiting"])
    if s["connect_failed"]:
        text += "; connections failed: {:,}".format(s["connect_failed"])
    return text


def table(results, max_workers):
    out = ["| row | SMTP load | HTTP p50 / p90 / p99 / max (ms) | HTTP failed | p99 × idle | workers held, peak "
           "(of %s) | AH00484 | what the SMTP clients got: replies to the abusive step 2xx / 4xx / 5xx / closed "
           "(codes) | target |" % max_workers,
           "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | --- |"]
    for r in results:
        h = r.get("http") or {}
        load = "%s %s" % ("{:,}".format(r["count"]), r["load"]) if r["row"] != "idle" else "none"
        peak = (r.get("workers") or {}).get("peak")
        peak = "–" if peak is None else str(peak)
        target = "–" if "target_met" not in r else ("met" if r["target_met"] else "**missed**")
        out.append("| %s | %s | %s / %s / %s / %s | %s | %s | %s | %s | %s | %s |" % (
            r["row"], load, *(fmt_ms(h.get(k), h.get("timeout_s")) for k in ("p50", "p90", "p99", "max")),
            "{:,} of {:,}".format(h["failed"], h["requests"]) if h else "–",
            "%.2f×" % r["p99_x_idle"] if r.get("p99_x_idle") else ("∞" if h and h.get("p99") is None else "–"),
            peak,
            "{:,}".format(r["ah00484"]), smtp_text(r) if r["row"] != "idle" else "–", target))
    return "\n".join(out)


def write_report(args, info, results, setup, t_total):
    out = args.out
    os.makedirs(out, exist_ok=True)
    mpm = "; ".join("`%s`" % l for l in setup.mpm_lines)
    max_workers = next((l.split()[1] for l in setup.mpm_lines if l.split()[0] == "MaxRequestWorkers"), "?")
    md = ["# mod_esmtp isolation benchmark (issue 20), %s" % info["date"], ""]
    md.append("Machine: %s, %s CPUs (%s), %s RAM, kernel %s; %s. mod_esmtp %s (%s, sha256 %s). Command: `%s`; "
              "total time %.0f s.%s" % (
                  info["hostname"], info["nproc"], info["cpu"], info["memory"], info["kernel"], info["httpd"],
                  info["mod_esmtp_git"], info["mod_esmtp_module"], info["mod_esmtp_sha256"][:12], info["argv"],
                  t_total, " SHORT RUN: small counts, smoke test only; the figures mean nothing." if args.short
                  else ""))
    md.append("")
    md.append("One httpd, event MPM: %s; everything else the module's defaults%s%s. An HTTP virtual host serves "
              "a static page (%d bytes); %g req/s, each a new connection (`Connection: close`), open loop for %g s "
              "per row, starting %g s after every client of the load made its first connection attempt; "
              "latency from the moment a request "
              "was due to its last byte; a request failed if it took over %g s or was not a 200, and counts in "
              "the percentiles as the slowest (`> %s s` where a percentile falls on one). The SMTP loads "
              "open at most %g connections per second (all clients together). A fresh httpd per row, same "
              "configuration. Workers held: the peak of the worker threads of httpd's children not waiting idle "
              "(from /proc, every 0.5 s: an idle event worker waits on a futex; one held by a backend, a sleep or "
              "a handshake waits in poll or nanosleep); mod_status `BusyWorkers` is in the per-row notes when it "
              "answered. **Shared 2-core machine: other sessions' builds and tests ran "
              "meanwhile (see the CPU of the machine in the per-row notes); latencies are noisy, compare within "
              "one run.**" % (
                  mpm, "; in the main server: %s" % "; ".join("`%s`" % l for l in args.extra_conf)
                  if args.extra_conf else "",
                  "; in each SMTP virtual host: %s" % "; ".join("`%s`" % l for l in args.vhost_conf)
                  if args.vhost_conf else "", len(PAGE), args.rate, args.duration, args.settle,
                  args.http_timeout, "{:g}".format(args.http_timeout), args.connect_rate))
    md.append("")
    md.append("SMTP virtual hosts (each `ESMTPAcceptDomains bench.test`): auth: `ESMTPHandler discard`, "
              "`ESMTPAuth PLAIN LOGIN` checked against an htpasswd file (bcrypt), **`ESMTPAuthRequireTLS Off`** "
              "(plaintext AUTH, so that the row measures the AUTH path, not TLS); lmtp: `ESMTPHandler lmtp` to "
              "`bench/peers/blackhole.py --mode lmtp` (accepts, never greets); milter: `ESMTPMilter` to "
              "`blackhole.py --mode milter-%s` (accepts, never answers %s); proxy: `ESMTPProxyProtocol v1`, "
              "`ESMTPProxyTrusted 192.0.2.1` (the load comes from 127.0.1.x: untrusted); tls: `SSLEngine on` "
              "without `ESMTPStartTLS` (implicit TLS), the load from the one address 127.0.3.1. The other loads "
              "come from one loopback address per 4 clients (the module's default `ESMTPClientLimitExceptions` "
              "exempts 127.0.0.0/8 from the per-client limits anyway)." % (
                  args.milter_stage, "OPTNEG" if args.milter_stage == "optneg" else "after OPTNEG"))
    md += ["", "Target (issue 20): p99 within 2× of idle, no AH00484, no failed HTTP request.", ""]
    md.append(table(results, max_workers))
    md += ["", "## Per row", ""]
    for r in results:
        md.append("- **%s**: load reached its state: %s (%s)" % (r["row"], "yes" if r.get("reached") else "NO",
                                                                  r.get("reached_text")))
        if r.get("ramp"):
            md.append("  - ramp-up %.1f s, connection failures %d; SMTP client totals: %s" % (
                r["ramp"]["seconds"], (r.get("smtp") or r["ramp"])["connect_failed"],
                json.dumps({k: (r.get("smtp") or {}).get(k) for k in
                            ("connects", "steps", "closed_early", "peak_waiting", "errors")})))
        if r.get("state_wait"):
            md.append("  - --wait-state: %s after %.1f s" % (
                "every client at its step" if r["state_wait"]["complete"] else "NOT every client at its step",
                r["state_wait"]["seconds"]))
        if r.get("backend"):
            md.append("  - backend: %s" % json.dumps(r["backend"]))
        st = r.get("status") or {}
        peaks = {k: v for k, v in st.get("peak", {}).items() if (k.startswith("ESMTP") or k == "BusyWorkers") and v}
        if peaks or st.get("failed"):
            md.append("  - mod_status peaks (sampled every second%s): %s" % (
                ", unanswered %d of %d times" % (st["failed"], st["failed"] + st["samples"]) if st.get("failed")
                else "", ", ".join("%s %s" % kv for kv in sorted(peaks.items())) or "none"))
        w = r.get("workers") or {}
        if w.get("samples"):
            md.append("  - workers held (from /proc): peak %s, mean %.1f over %d samples" % (
                w["peak"], w["mean"], w["samples"]))
        if "httpd_cpu_pct" in r:
            md.append("  - CPU during the measurement (%% of one core; 200%% = both): httpd %.0f%%, "
                      "SMTP load generator "
                      "%.0f%%, whole machine %.0f%%" % (r["httpd_cpu_pct"], r["load_cpu_pct"], r["machine_cpu_pct"]))
        codes = {k: v for k, v in r.get("ah_codes", {}).items()}
        if codes:
            md.append("  - error log AH codes: %s" % ", ".join("%s×%d" % kv for kv in sorted(codes.items())))
        for k, v in (r.get("esmtp_log") or {}).items():
            md.append("  - error log ×%d: `%s`" % (v, k))
        for p in r["problems"]:
            md.append("  - PROBLEM: %s" % p)
    md += ["", "Files: results.json (every figure, every latency), configs/httpd.conf (the configuration of "
           "every row)."]
    text = "\n".join(md) + "\n"
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(text)
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump({"machine": info, "args": vars(args), "mpm": setup.mpm_lines,
                   "rows": [{k: v for k, v in r.items() if k != "config"} for r in results]}, f, indent=1, default=str)
    cdir = os.path.join(out, "configs")
    os.makedirs(cdir, exist_ok=True)
    config = next((r["config"] for r in results if r.get("config")), None)
    if config:
        with open(os.path.join(cdir, "httpd.conf"), "w") as f:
            f.write(config)
    return text


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="bench/isolation", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default=",".join(ROW_ORDER), help="rows to run, in order (default %s; idle first: "
                    "the others' p99 is compared with it)" % ",".join(ROW_ORDER))
    ap.add_argument("--count", type=int, default=None, help="clients of every load (default: 1000 for auth, lmtp "
                    "and milter, 500 for proxy and tls, as in issue 20)")
    ap.add_argument("--duration", type=float, default=20.0, help="seconds of HTTP measurement per row (default 20)")
    ap.add_argument("--settle", type=float, default=3.0, help="seconds between the load's ramp-up and the "
                    "measurement (default 3)")
    ap.add_argument("--rate", type=float, default=50.0, help="HTTP requests per second (default 50)")
    ap.add_argument("--http-timeout", type=float, default=10.0, help="an HTTP request slower than this fails "
                    "(default 10 s)")
    ap.add_argument("--connect-rate", type=float, default=200.0, help="new SMTP connections per second of a load, "
                    "all clients together (default 200)")
    ap.add_argument("--wait-state", type=float, default=0, metavar="S",
                    help="after the ramp-up, wait up to S seconds until every client is at its step (or, for auth "
                    "and proxy, as many replies as clients came back) before settling (default 0: do not wait; "
                    "under a full server most clients never get there)")
    ap.add_argument("--short", action="store_true", help="smoke test: --count 20 --duration 3 --settle 1, "
                    "unless given")
    ap.add_argument("--milter-stage", choices=("optneg", "connect"), default="optneg",
                    help="where the silent milter stops answering: at OPTNEG (default) or after it, at CONNECT")
    ap.add_argument("--mpm", action="append", default=[], metavar="LINE",
                    help="an MPM/core directive replacing Debian's of the same name (repeatable), e.g. "
                    "'MaxRequestWorkers 400' or 'AsyncRequestWorkerFactor 8'")
    ap.add_argument("--extra-conf", action="append", default=[], metavar="LINE",
                    help="a directive for the main server config (repeatable; ESMTP directives there are "
                    "inherited by every SMTP virtual host), e.g. the cap on the workers SMTP holds (issue 20) or "
                    "'ESMTPAuthFailureDelay 0'")
    ap.add_argument("--vhost-conf", action="append", default=[], metavar="LINE",
                    help="a directive for each SMTP virtual host (repeatable), e.g. 'ESMTPTimeout tls=10'")
    ap.add_argument("--module", default=None, help="mod_esmtp.so to measure (default: the build tree's; copied "
                    "before the run)")
    ap.add_argument("--workdir", default=tempfile.gettempdir())
    ap.add_argument("--out", default=None, help="results directory (default bench/results/YYYYmmdd-HHMMSS-isolation)")
    ap.add_argument("--keep", action="store_true", help="keep each row's ServerRoot")
    args = ap.parse_args(argv)
    args.rows = [r for r in args.rows.split(",") if r]
    for r in args.rows:
        if r not in ROWS:
            ap.error("unknown row %r (%s)" % (r, ",".join(ROW_ORDER)))
    if args.short:
        args.count = 20 if args.count is None else args.count
        if "--duration" not in " ".join(argv):
            args.duration = 3.0
        if "--settle" not in " ".join(argv):
            args.settle = 1.0
    if args.out is None:
        args.out = os.path.join(BENCH, "results", time.strftime("%Y%m%d-%H%M%S") + "-isolation" +
                                ("-short" if args.short else ""))
    return args


def preflight(module):
    problems = []
    if not os.path.exists(harness.HTTPD):
        problems.append("%s not found: install apache2" % harness.HTTPD)
    if not os.path.exists(module):
        problems.append("%s not built: run `make`" % module)
    for tool in ("openssl", "htpasswd"):
        if not shutil.which(tool):
            problems.append("%s not found (openssl, apache2-utils)" % tool)
    for so in ("mod_status.so", "mod_ssl.so", "mod_authn_file.so"):
        if not os.path.exists(os.path.join(harness.MODULESDIR, so)):
            problems.append("%s missing in %s" % (so, harness.MODULESDIR))
    return problems


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    problems = preflight(args.module or harness.MOD_ESMTP)
    if problems:
        for p in problems:
            sys.stderr.write("bench/isolation: %s\n" % p)
        return 2
    counts = [args.count if args.count is not None else ROWS[r][1] for r in args.rows]
    raise_nofile(max(counts + [0]) * 3 + 4096)
    run_dir = tempfile.mkdtemp(prefix="esmtp-isolation-", dir=args.workdir)
    module_dir, module, digest, mtime = snapshot_module(args.workdir, args.module or harness.MOD_ESMTP)
    source_module = args.module or harness.MOD_ESMTP
    harness.MOD_ESMTP = module
    info = machine_info(args.workdir)
    info.update(mod_esmtp_module=source_module, mod_esmtp_sha256=digest, mod_esmtp_mtime=mtime,
                argv=" ".join(["bench/isolation"] + argv),
                date=datetime.datetime.now().astimezone().isoformat(timespec="seconds"))
    results = []
    t0 = time.monotonic()
    rc = 0
    setup = None
    try:
        setup = Setup(args, run_dir)
        idle_p99 = None
        for row in args.rows:
            log("=== row %s" % row)
            r = run_row(args, setup, row, idle_p99)
            if row == "idle" and r.get("http") and idle_p99 is None:
                idle_p99 = r["http"]["p99"]  # the first idle row is the reference (a row may repeat)
            results.append(r)
    except KeyboardInterrupt:
        rc = 1
        log("interrupted: partial results")
    finally:
        shutil.rmtree(module_dir, ignore_errors=True)
        shutil.rmtree(run_dir, ignore_errors=True)
    if setup is None:
        return 2
    text = write_report(args, info, results, setup, time.monotonic() - t0)
    sys.stdout.write(text)
    log("results: %s" % os.path.join(args.out, "results.md"))
    if any(r["problems"] for r in results):
        rc = rc or 1
    return rc
