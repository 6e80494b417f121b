#!/usr/bin/env python3
"""Plot attach (prepare) time vs N from the attach bench's CSV.

usage: python3 bench/plot.py [bench/results/attach.csv] [out.png]

Needs matplotlib (pip install matplotlib); the bench itself does not.
"""
import csv
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

src = sys.argv[1] if len(sys.argv) > 1 else "bench/results/attach.csv"
out = sys.argv[2] if len(sys.argv) > 2 else src.rsplit(".", 1)[0] + ".png"

series = defaultdict(list)
with open(src) as f:
    for r in csv.DictReader(f):
        series[(r["impl"], r["target"])].append(
            (int(r["n"]), float(r["prepare_median_us"]), float(r["prepare_p99_us"]))
        )

names = {"rust": "xenblock in-process, long-lived (claims index)", "rust-scan": "xenblock in-process, full scan", "cli": "xenblock CLI (process per call)", "dropin": "xenblock drop-in (as libxl runs the script)", "script": "Xen block script"}
colors = {"rust": "tab:blue", "rust-scan": "tab:purple", "cli": "tab:green", "dropin": "tab:olive", "script": "tab:red"}
styles = {"phy": "-o", "file": "--s"}

fig, ax = plt.subplots(figsize=(8, 5.5))
for (imp, target), pts in sorted(series.items()):
    pts.sort()
    # N = 0 cannot sit on a log axis: draw it at 10 and label the tick.
    xs = [max(n, 10) for n, _, _ in pts]
    med = [m / 1000 for _, m, _ in pts]
    p99 = [p / 1000 for _, _, p in pts]
    ax.plot(xs, med, styles.get(target, "-"), color=colors.get(imp), label=f"{names.get(imp, imp)}, {target}")
    ax.fill_between(xs, med, p99, color=colors.get(imp), alpha=0.08)
ax.set_xscale("log")
ax.set_yscale("log")
ticks = sorted({max(n, 10) for pts in series.values() for n, _, _ in pts})
ax.set_xticks(ticks)
ax.set_xticklabels(["0" if t == 10 else str(t) for t in ticks])
ax.set_xlabel("other disks already in xenstore (N)")
ax.set_ylabel("prepare (attach) time, ms — median (line), to p99 (band)")
if "realxen" in src:
    ax.set_title("Attach time vs existing disks, Xen 4.17's C xenstored (dom0 under QEMU TCG)")
elif ("script", "phy") in series:
    ax.set_title("Attach time vs existing disks: xenblock vs Xen's block script")
else:
    ax.set_title("Attach time vs existing disks (embedded xenstored)")
ax.grid(True, which="both", alpha=0.3)
ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig(out, dpi=120)
print(out)
