"""Draws a benchmark's results.json as chart.png (matplotlib from Debian:
python3-matplotlib): throughput and server CPU per message, per server and
shape, one row per mode, with the spread of the repeats as a min-max bar.

    bench/chart bench/results/YYYYmmdd-HHMMSS     # writes chart.png there

bench/run calls it after writing the report when matplotlib is installed."""

import json
import os
import sys

SERVERS = ["mod_esmtp", "smtp-sink", "postfix", "perl", "node"]
COLORS = {"mod_esmtp": "#c0392b", "smtp-sink": "#7f8c8d", "postfix": "#2c6fbb", "perl": "#8e44ad",
          "node": "#27ae60"}
LABELS = {"mod_esmtp": "mod_esmtp", "smtp-sink": "Postfix smtp-sink", "postfix": "Postfix smtpd",
          "perl": "Net::Server::Mail (Perl)", "node": "smtp-server (Node)"}
SHAPE_TEXT = {"a": "(a) 1 msg/conn", "b": "(b) many msgs/conn", "c": "(c) 1 MB msgs",
              "p-data": "pipelined DATA", "p-bdat": "pipelined BDAT"}
ORDER = ["a", "b", "p-data", "p-bdat", "c"]


def _spread(runs, mode, shape, server, key):
    vals = [r[key] for r in runs if r.get("ok") and r["mode"] == mode and r["shape"] == shape
            and r["server"] == server and r.get(key) is not None]
    return (min(vals), max(vals)) if vals else None


def _panel(ax, summary, runs, mode, shapes, key, run_key, ylabel):
    present = [s for s in SERVERS if any(k[0] == mode and k[2] == s for k in summary)]
    width = 0.8 / max(1, len(present))
    for i, server in enumerate(present):
        xs, ys, lo, hi = [], [], [], []
        for j, shape in enumerate(shapes):
            row = summary.get((mode, shape, server))
            if not row or row.get(key) is None:
                continue
            y = row[key]
            s = _spread(runs, mode, shape, server, run_key) or (y, y)
            xs.append(j + (i - (len(present) - 1) / 2) * width)
            ys.append(y)
            lo.append(max(0.0, y - s[0]))
            hi.append(max(0.0, s[1] - y))
        if xs:
            ax.bar(xs, ys, width, color=COLORS[server], label=LABELS[server], yerr=[lo, hi], capsize=2,
                   error_kw={"elinewidth": 0.8})
    _axes(ax, shapes, ylabel)


def _target_line(ax, summary, shapes, flush_delay_us):
    """Issue 13: with --flush-delay, durable (b) should reach 5x Postfix
    smtpd's msgs/s (and be ahead of every peer): a dashed line over (b)."""
    row = summary.get(("durable", "b", "postfix"))
    if "b" not in shapes or not row or not row.get("msgs_s"):
        return False
    j = shapes.index("b")
    y = 5.0 * row["msgs_s"]
    ax.hlines(y, j - 0.45, j + 0.45, colors="black", linestyles="dashed", linewidth=1)
    ax.text(j, y * 1.08, "target (%g ms flush): mod_esmtp >= 5x Postfix,\nahead of every peer"
            % (flush_delay_us / 1000.0), ha="center", va="bottom", fontsize=7)
    lo, hi = ax.get_ylim()
    if y * 3 > hi:
        ax.set_ylim(lo, y * 3)  # room for the text (log scale)
    return True


def _axes(ax, shapes, ylabel):
    ax.set_xticks(range(len(shapes)))
    ax.set_xticklabels([SHAPE_TEXT.get(s, s) for s in shapes], fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", which="both", alpha=0.3)


def draw(result_dir, out_name="chart.png"):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(os.path.join(result_dir, "results.json")) as f:
        data = json.load(f)
    summary = {(r["mode"], r["shape"], r["server"]): r for r in data["summary"]}
    runs = data.get("runs", [])
    modes = [m for m in ("discard", "durable", "relay") if any(k[0] == m for k in summary)]
    flush_us = data.get("machine", {}).get("flush_delay_us") or data.get("args", {}).get("flush_delay") or 0
    flush_note = " (+%g ms per flush)" % (flush_us / 1000.0) if flush_us else ""
    if not modes:
        raise SystemExit("no discard or durable runs in %s" % result_dir)
    fig, axes = plt.subplots(len(modes), 3, figsize=(15, 4.2 * len(modes)), squeeze=False,
                             gridspec_kw={"width_ratios": [4, 1.3, 5]})
    for row, mode in enumerate(modes):
        present = [s for s in ORDER if any(k[0] == mode and k[1] == s for k in summary)]
        msgs = [s for s in present if s != "c"]
        _panel(axes[row][0], summary, runs, mode, msgs, "msgs_s", "msgs_s", "messages/s (log)")
        axes[row][0].set_title("%s: throughput%s" % (mode, flush_note))
        if mode == "durable" and flush_us:
            _target_line(axes[row][0], summary, msgs, flush_us)
        if "c" in present:
            _panel(axes[row][1], summary, runs, mode, ["c"], "mb_s", "mb_s", "MB/s (log)")
            axes[row][1].set_title("%s: 1 MB messages" % mode)
        else:
            axes[row][1].axis("off")
        _panel(axes[row][2], summary, runs, mode, present, "cpu_us_msg", "cpu_us_msg",
               "server CPU µs per message (log)")
        axes[row][2].set_title("%s: server CPU per message (lower is better)" % mode)
    axes[0][0].legend(fontsize=8, loc="upper left")
    machine = data.get("machine", {})
    when = machine.get("date") or os.path.basename(os.path.normpath(result_dir))
    fig.suptitle("mod_esmtp benchmark %s: medians of %s repeats; bars show min-max of the repeats"
                 % (when, data.get("args", {}).get("repeat", "the")), fontsize=10)
    fig.tight_layout()
    path = os.path.join(result_dir, out_name)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: bench/chart RESULTS_DIR", file=sys.stderr)
        return 2
    print(draw(argv[0]))
    return 0
