"""Plot results.csv (from run.py) like the paper's Figures 8-9: ledger-node CPU over time, 30 and 50 nodes.

    .venv/bin/python experiments/ledger_cpu/plot.py [experiments/ledger_cpu/results.csv]

One panel per consortium size: the mean over nodes of each second's CPU, the band from the least to
the busiest node, and a 10-second moving average of the mean (one-second samples of a process
that mostly waits are quantised by the kernel's 10 ms CPU-time ticks). Writes cpu_over_time.png
beside the CSV and prints a Markdown table.
"""

from __future__ import annotations

import csv
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np


def load(path: Path) -> dict[int, dict[int, list[tuple[str, float]]]]:
    """nodes -> second -> [(phase, cpu_percent) per node]."""
    data: dict[int, dict[int, list[tuple[str, float]]]] = defaultdict(lambda: defaultdict(list))
    with path.open() as f:
        for r in csv.DictReader(f):
            data[int(r["nodes"])][int(r["t_s"])].append((r["phase"], float(r["cpu_percent"])))
    return data


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "results.csv"
    data = load(path)
    sizes = sorted(data)
    fig, axes = plt.subplots(len(sizes), 1, figsize=(10, 3.4 * len(sizes)), sharex=True, sharey=True, squeeze=False)
    print("| nodes | phase | mean CPU per node (% of one core) | busiest node's mean | max 1-s sample |")
    print("|---|---|---|---|---|")
    for ax, n in zip([a[0] for a in axes], sizes, strict=True):
        seconds = sorted(data[n])
        values = [np.array([v for _, v in data[n][s]]) for s in seconds]
        mean = np.array([v.mean() for v in values])
        ax.fill_between(
            seconds, [v.min() for v in values], [v.max() for v in values], alpha=0.2, label="min–max over nodes"
        )
        ax.plot(seconds, mean, linewidth=0.8, label="mean over nodes")
        window = 10
        smooth = np.convolve(mean, np.ones(window) / window, mode="valid")
        ax.plot(seconds[window - 1 :], smooth, linewidth=2, label="mean, 10-s moving average")
        idle_end = max((s for s in seconds if data[n][s][0][0] == "idle"), default=0)
        ax.axvspan(0, idle_end, color="0.9", label="connected, no blocks")
        ax.set_title(f"{n} ledger nodes (one OS process each): 5 tx/s, one block every 2 s")
        ax.set_ylabel("CPU, % of one core")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper right", fontsize=8)
        for phase in ("idle", "load"):
            per_node: dict[int, list[float]] = defaultdict(list)
            for s in seconds:
                for i, (p, v) in enumerate(data[n][s]):
                    if p == phase:
                        per_node[i].append(v)
            flat = [v for vs in per_node.values() for v in vs]
            if flat:
                busiest = max(statistics.fmean(vs) for vs in per_node.values())
                print(f"| {n} | {phase} | {statistics.fmean(flat):.3f} | {busiest:.3f} | {max(flat):.1f} |")
    axes[-1][0].set_xlabel("seconds")
    fig.tight_layout()
    out = path.parent / "cpu_over_time.png"
    fig.savefig(out, dpi=110)
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
