"""CPU time and memory of a server's process tree, from /proc.

CPU: the sum over the live processes of the tree of utime+stime+cutime+cstime
(cutime/cstime hold what reaped children used, so processes that exit during a
run, like Postfix's smtpd after max_use sessions, are still counted once their
parent reaped them).

Memory: the sum of Pss (proportional set size, /proc/PID/smaps_rollup) of the
tree, which does not count shared pages (code, the httpd parent's pre-fork
memory) once per process as an RSS sum would. RSS is recorded as well."""

import os
import threading
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat(pid):
    """(ppid, cpu_ticks incl. reaped children) of one process, or None."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            data = f.read()
    except OSError:
        return None
    rest = data[data.rindex(b")") + 2:].split()
    # rest[0] = state (field 3), rest[1] = ppid, rest[11..14] = utime stime cutime cstime
    return int(rest[1]), int(rest[11]) + int(rest[12]) + int(rest[13]) + int(rest[14])


def all_ppids():
    out = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open("/proc/%s/stat" % name, "rb") as f:
                    data = f.read()
                out[int(name)] = int(data[data.rindex(b")") + 2:].split()[1])
            except (OSError, ValueError, IndexError):
                pass
    return out


def tree(roots):
    """The pids of `roots` and of all their descendants."""
    ppids = all_ppids()
    children = {}
    for pid, ppid in ppids.items():
        children.setdefault(ppid, []).append(pid)
    out = []
    todo = [r for r in roots if r in ppids]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def cpu_seconds(roots):
    """User+system CPU seconds used so far by the tree (see module doc)."""
    total = 0
    for pid in tree(roots):
        st = _stat(pid)
        if st:
            total += st[1]
    return total / CLK_TCK


def memory_kb(pids):
    """(pss_kb, rss_kb) summed over `pids`."""
    pss = rss = 0
    for pid in pids:
        try:
            with open("/proc/%d/smaps_rollup" % pid, "rb") as f:
                for line in f:
                    if line.startswith(b"Pss:"):
                        pss += int(line.split()[1])
                    elif line.startswith(b"Rss:"):
                        rss += int(line.split()[1])
        except OSError:
            pass
    return pss, rss


class MemorySampler:
    """Samples the tree's Pss/RSS every `interval` seconds in a thread; keeps
    the peaks (and the first sample)."""

    def __init__(self, roots_fn, interval=0.1):
        self.roots_fn = roots_fn
        self.interval = interval
        self.peak_pss_kb = 0
        self.peak_rss_kb = 0
        self.first_pss_kb = None
        self.samples = 0
        self._stop = threading.Event()
        self._thread = None

    def sample(self):
        pss, rss = memory_kb(tree(self.roots_fn()))
        if self.first_pss_kb is None:
            self.first_pss_kb = pss
        self.peak_pss_kb = max(self.peak_pss_kb, pss)
        self.peak_rss_kb = max(self.peak_rss_kb, rss)
        self.samples += 1
        return pss

    def _run(self):
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def __enter__(self):
        self.sample()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)
        self.sample()


def settle_memory_kb(roots_fn, wait=0.3):
    time.sleep(wait)
    return memory_kb(tree(roots_fn()))[0]


def system_busy_seconds():
    """CPU seconds the whole machine spent busy (all CPUs), from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal ...
    busy = fields[0] + fields[1] + fields[2] + fields[5] + fields[6] + (fields[7] if len(fields) > 7 else 0)
    return busy / CLK_TCK
