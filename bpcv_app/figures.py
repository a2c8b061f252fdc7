"""The report's figures, drawn with matplotlib (imported lazily, on the Agg backend: no display needed)
from the tables of ``bpcv_app.rundata``."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from bpcv_app.rundata import (
    MB,
    RunData,
    by_node,
    chain_heights,
    ledger_cpu_percent,
    process_label,
    processes,
    quality_matrix,
)


def matrix_min(matrix: np.ndarray) -> float:
    finite = matrix[np.isfinite(matrix)]
    return float(finite.min()) if finite.size else 0.0


def _figure(rows: int = 1, height: float = 4.0):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(rows, 1, figsize=(10, height * rows), squeeze=False, sharex=rows > 1)
    return plt, fig, [a[0] for a in axes]


def _save(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _mark_blocks(ax, data: RunData) -> None:
    """Dotted vertical lines where a round's block was appended (ledger work)."""
    for i, (t, _) in enumerate(chain_heights(data)):
        ax.axvline(t, color="0.55", linestyle=":", linewidth=0.9, label="block appended" if i == 0 else None)


def plot_metric(data: RunData, path: Path) -> Path:
    plt, fig, (ax,) = _figure()
    rounds = data.rounds
    x = [r.round for r in rounds]
    y = [r.value for r in rounds]
    ax.plot(x, y, marker="o", color="tab:blue", label=f"global model, {data.metric} on the {data.summary.evaluated_on}")
    target = data.summary.task.get("target")
    if target is not None:
        ax.axhline(target, color="tab:green", linestyle="--", label=f"target {target}")
    for r in rounds:
        if r.eliminated:
            ax.annotate(
                f"out: {r.eliminated}",
                (r.round, r.value),
                textcoords="offset points",
                xytext=(0, -14),
                ha="center",
                fontsize=7,
                color="tab:red",
            )
    ax.margins(x=0.05, y=0.2)
    ax.set_xlabel("round")
    ax.set_ylabel(f"test {data.metric}")
    ax.set_title(f"Global {data.metric} per round (red: node eliminated that round)")
    ax.set_xticks(x)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    return _save(plt, fig, path)


def plot_quality(data: RunData, path: Path) -> Path:
    nodes, matrix, marks = quality_matrix(data.rounds)
    plt, fig, (ax,) = _figure(height=max(3.0, 0.38 * len(nodes) + 1.5))
    # The scale spans the nodes that stayed in: an eliminated outlier (a random model scores ~0.1) would
    # otherwise squeeze every honest node into one colour; it shows as the "under" colour instead.
    kept = [matrix[i, j] for i in range(len(nodes)) for j in range(len(data.rounds)) if marks.get((i, j)) != "out"]
    kept = [v for v in kept if np.isfinite(v)] or [0.0, 1.0]
    low, high = min(kept), max(kept)
    high = high if high > low else low + 1e-6
    cmap = plt.get_cmap("viridis").with_extremes(under="0.2")
    image = ax.imshow(
        np.ma.masked_invalid(matrix), aspect="auto", cmap=cmap, vmin=low, vmax=high, interpolation="nearest"
    )
    fig.colorbar(
        image,
        ax=ax,
        label=f"peer-voted quality ({data.metric})",
        extend="min" if matrix_min(matrix) < low else "neither",
    )
    for (i, j), text in marks.items():
        alarm = text in ("out", "bad")
        light = np.isfinite(matrix[i, j]) and (matrix[i, j] - low) / (high - low) > 0.55
        box = {"boxstyle": "round,pad=0.2", "facecolor": "white", "edgecolor": "red"} if alarm else None
        ink = "red" if alarm else ("black" if light else "white")
        ax.text(j, i, text, ha="center", va="center", fontsize=7, color=ink, bbox=box)
    ax.set_yticks(range(len(nodes)), nodes)
    ax.set_xticks(range(len(data.rounds)), [str(r.round) for r in data.rounds])
    ax.set_xlabel("round")
    ax.set_title("Quality ranking per round: #k = rank, out = eliminated, bad = invalid update, blank = not active")
    return _save(plt, fig, path)


def plot_chain(data: RunData, path: Path) -> Path:
    plt, fig, (ax,) = _figure(height=3.5)
    points = chain_heights(data)
    if points:
        t, h = zip(*points, strict=True)
        ax.step([0.0, *t], [h[0] - 1, *h], where="post", color="tab:purple", marker="o", markersize=4)
        rounds = [r for _, r, kind, _ in data.events if kind in ("block", "no-block")]
        for x, y, r in zip(t, h, rounds, strict=True):
            ax.annotate(f"round {r}", (x, y), textcoords="offset points", xytext=(-4, 6), ha="right", fontsize=7)
    from matplotlib.ticker import MaxNLocator

    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.margins(y=0.15)
    ax.set_xlabel("seconds since the run began")
    ax.set_ylabel("chain height (blocks)")
    ax.set_title("Chain height over time (one block per round)")
    ax.grid(alpha=0.3)
    return _save(plt, fig, path)


def plot_resources(data: RunData, path: Path) -> Path:
    """CPU and RSS per process (agents of one pool share a process) and ledger CPU per node."""
    plt, fig, (cpu_ax, ledger_ax, rss_ax) = _figure(rows=3, height=3.2)
    per_node = by_node(data.samples)
    palette = [f"C{i}" for i in range(10)]
    colour: dict[str, str] = {}  # node -> its process's colour
    for i, nodes in enumerate(sorted(processes(data.samples).values())):
        own = per_node[sorted(nodes)[0]]
        seconds = [s["ts"] - data.t0 for s in own]
        label, c = process_label(nodes), palette[i % len(palette)]
        colour.update({n: c for n in nodes})
        cpu_ax.plot(seconds, [s["cpu_percent"] for s in own], linewidth=1, color=c, label=label)
        rss_ax.plot(seconds, [s["rss_bytes"] / MB for s in own], linewidth=1, color=c, label=label)
    task_nodes = data.summary.nodes
    agents = [n for n in sorted(per_node) if n in task_nodes]
    grid = np.arange(0.0, max((s["ts"] for s in data.samples), default=data.t0) - data.t0 + 1.0, 1.0)
    per_agent = []
    for node in agents:
        t, pct = ledger_cpu_percent(per_node[node])
        if len(t):
            per_agent.append(np.interp(grid, t - data.t0, pct, left=np.nan, right=np.nan))
    if per_agent:
        stack = np.array(per_agent)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # seconds before any agent's second sample
            low, mid, high = np.nanmin(stack, 0), np.nanmedian(stack, 0), np.nanmax(stack, 0)
        ledger_ax.fill_between(grid, low, high, color="C2", alpha=0.25, label=f"{len(per_agent)} agents: min–max")
        ledger_ax.plot(grid, mid, color="C2", linewidth=1, label="agents: median")
    if "coordinator" in per_node:
        t, pct = ledger_cpu_percent(per_node["coordinator"])
        ledger_ax.plot(t - data.t0, pct, color=colour["coordinator"], linewidth=1, label="coordinator")
    for ax in (cpu_ax, ledger_ax, rss_ax):
        _mark_blocks(ax, data)
        ax.grid(alpha=0.3)
    cpu_ax.set_ylabel("CPU, % of one core")
    cpu_ax.set_title("CPU per process (a pool process hosts several agents)")
    ledger_ax.set_ylabel("ledger CPU, % of one core")
    ledger_ax.set_title("Ledger work per node: verifying and storing blocks (grey dotted: a block appended)")
    rss_ax.set_ylabel("RSS (MiB)")
    rss_ax.set_title("Resident memory per process")
    rss_ax.set_xlabel("seconds since the run began")
    cpu_ax.legend(fontsize=7, loc="upper left")
    rss_ax.legend(fontsize=7, loc="upper left")
    ledger_ax.legend(fontsize=7, loc="upper left")
    return _save(plt, fig, path)


def plot_traffic(rows: list[dict[str, Any]], path: Path) -> Path:
    plt, fig, (ax,) = _figure(height=3.5)
    x = np.array([r["round"] for r in rows])
    width = 0.4
    ax.bar(x - width / 2, [r.get("received", 0) / MB for r in rows], width, label="into the broker (published)")
    ax.bar(x + width / 2, [r.get("sent", 0) / MB for r in rows], width, label="out of the broker (delivered)")
    ax.set_xlabel("round")
    ax.set_ylabel("MiB")
    ax.set_xticks(x)
    ax.set_title("MQTT traffic per round through the broker (models travel to every peer)")
    ax.grid(alpha=0.3, axis="y")
    ax.legend()
    return _save(plt, fig, path)
