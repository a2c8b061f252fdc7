"""``bpcv report RUN_DIR``: figures and a Markdown summary of one run, from what the coordinator wrote
(``coordinator.json``: the rounds; ``metrics.sqlite``: samples, broker traffic, round events).

The data functions here are pure (tables in, tables out); ``write_report`` draws them with
matplotlib (imported lazily, on the Agg backend: no display needed).
"""

from __future__ import annotations

import json
import statistics
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bpcv.errors import ConfigError
from coordinator.timeseries import TimeSeries

MB = 1024 * 1024


@dataclass
class RunData:
    summary: dict[str, Any]
    samples: list[dict[str, Any]]
    events: list[tuple[float, int, str, dict[str, Any]]]
    traffic: dict[str, list[tuple[float, int]]]
    t0: float = field(init=False)

    def __post_init__(self) -> None:
        stamps = [s["ts"] for s in self.samples] + [e[0] for e in self.events]
        self.t0 = min(stamps) if stamps else 0.0

    @property
    def metric(self) -> str:
        return str(self.summary.get("task", {}).get("metric", "accuracy"))

    @property
    def rounds(self) -> list[dict[str, Any]]:
        return list(self.summary.get("rounds", []))


def load_run(run_dir: Path) -> RunData:
    """The run's summary and time series; ConfigError naming what is missing or unreadable."""
    summary_path = run_dir / "coordinator.json"
    if not summary_path.is_file():
        raise ConfigError(f"{run_dir} is not a run folder: no coordinator.json (was the task run with --out there?)")
    try:
        summary = json.loads(summary_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{summary_path} is not readable JSON: {exc}") from exc
    try:
        store = TimeSeries(run_dir / "metrics.sqlite", readonly=True)
    except FileNotFoundError:
        return RunData(summary, [], [], {"received": [], "sent": []})
    try:
        return RunData(
            summary,
            store.samples(),
            store.events(),
            {c: store.broker_bytes(c) for c in ("received", "sent")},
        )
    finally:
        store.close()


def by_node(samples: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Samples grouped by node, in time order (as the store returns them)."""
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for s in samples:
        grouped[s["node"]].append(s)
    return grouped


def processes(samples: list[dict[str, Any]]) -> dict[tuple[int, float], list[str]]:
    """Which nodes report one process: agents pooled in one OS process share its samples (same pid, same
    first timestamp). Key (pid, first ts) -> node ids."""
    first: dict[str, tuple[int, float]] = {}
    for s in samples:
        first.setdefault(s["node"], (s["pid"], s["ts"]))
    groups: dict[tuple[int, float], list[str]] = defaultdict(list)
    for node, key in first.items():
        groups[key].append(node)
    return dict(groups)


def process_label(nodes: list[str]) -> str:
    """A short name for a process from the nodes it hosts: ``node-01`` or ``pool: node-01, node-03 …(6)``."""
    nodes = sorted(nodes)
    if len(nodes) == 1:
        return nodes[0]
    shown = ", ".join(nodes[:3]) + (" …" if len(nodes) > 3 else "")
    return f"pool of {len(nodes)}: {shown}"


def ledger_cpu_percent(samples: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """One node's ledger CPU, % of one core, between consecutive samples: (times, percents)."""
    ts = np.array([s["ts"] for s in samples], dtype=float)
    cpu = np.array([s["ledger_cpu_s"] for s in samples], dtype=float)
    if len(ts) < 2:
        return ts[:0], ts[:0]
    dt = np.diff(ts)
    used = np.clip(np.diff(cpu), 0.0, None)  # a restarted node starts its count again
    return ts[1:], np.where(dt > 0, 100.0 * used / np.where(dt > 0, dt, 1.0), 0.0)


def monotonic(readings: list[tuple[float, int]]) -> tuple[np.ndarray, np.ndarray]:
    """A cumulative counter made monotonic across broker restarts (which reset it to zero)."""
    ts = np.array([t for t, _ in readings], dtype=float)
    raw = np.array([v for _, v in readings], dtype=float)
    out, offset, previous = np.empty_like(raw), 0.0, 0.0
    for i, value in enumerate(raw):
        if value < previous:
            offset += previous
        out[i], previous = value + offset, value
    return ts, out


def bytes_per_round(data: RunData) -> list[dict[str, Any]]:
    """MQTT bytes through the broker in each round (from the previous round's decision to this one's;
    round 1 from the first reading), per counter; empty without broker counters."""
    decided = {r: ts for ts, r, kind, _ in data.events if kind == "decided"}
    rows: list[dict[str, Any]] = []
    series = {c: monotonic(v) for c, v in data.traffic.items() if len(v) >= 2}
    if not series or not decided:
        return rows
    previous = {c: float(v[1][0]) for c, v in series.items()}
    for round_no in sorted(decided):
        row: dict[str, Any] = {"round": round_no}
        for counter, (ts, values) in series.items():
            now = float(np.interp(decided[round_no], ts, values))
            row[counter] = int(round(now - previous[counter]))
            previous[counter] = now
        rows.append(row)
    return rows


def chain_heights(data: RunData) -> list[tuple[float, int]]:
    """(seconds since the run began, chain height) at each round's block."""
    return [(ts - data.t0, int(d.get("height", 0))) for ts, _, kind, d in data.events if kind in ("block", "no-block")]


def node_table(data: RunData) -> list[dict[str, Any]]:
    """Per node: status, reward, median/peak CPU of its process, peak RSS, ledger CPU seconds."""
    per_node = by_node(data.samples)
    statuses = data.summary.get("nodes", {})
    rows = []
    for node in sorted(set(per_node) | set(statuses)):
        own = per_node.get(node, [])
        info = statuses.get(node, {})
        rows.append(
            {
                "node": node,
                "status": info.get("status", "-"),
                "reward": info.get("reward"),
                "samples": len(own),
                "cpu_median": statistics.median(s["cpu_percent"] for s in own) if own else None,
                "cpu_peak": max(s["cpu_percent"] for s in own) if own else None,
                "rss_peak_mb": max(s["rss_bytes"] for s in own) / MB if own else None,
                "ledger_cpu_s": max(s["ledger_cpu_s"] for s in own) if own else None,
                "epsilon": _epsilon(info.get("privacy", {})),
            }
        )
    return rows


def _epsilon(privacy: dict[str, Any]) -> str:
    """``spent of budget (mechanism)`` for a node under DP, else ``-``."""
    spent, budget = privacy.get("epsilon_spent"), privacy.get("epsilon_budget")
    if privacy.get("mechanism") in (None, "off", "unknown") or spent is None:
        return "-"
    return f"{spent:.3f} of {budget} ({privacy['mechanism']})" if budget is not None else f"{spent:.3f}"


def quality_matrix(rounds: list[dict[str, Any]]) -> tuple[list[str], np.ndarray, dict[tuple[int, int], str]]:
    """Nodes, a nodes × rounds matrix of peer-voted quality (NaN where a node was not scored) and
    cell marks: ``#k`` the rank, ``out`` eliminated, ``bad`` invalid, ``in`` admitted next round."""
    nodes = sorted({n for r in rounds for n in list(r.get("quality", {})) + list(r.get("invalid", {}))})
    index = {n: i for i, n in enumerate(nodes)}
    matrix = np.full((len(nodes), len(rounds)), np.nan)
    marks: dict[tuple[int, int], str] = {}
    for j, row in enumerate(rounds):
        for node, q in row.get("quality", {}).items():
            matrix[index[node], j] = q
        for k, node in enumerate(row.get("ranking", [])):
            marks[(index[node], j)] = f"#{k + 1}"
        for node in row.get("invalid", {}):
            marks[(index[node], j)] = "bad"
        if row.get("eliminated") in index:
            marks[(index[row["eliminated"]], j)] = "out"
    return nodes, matrix, marks


# drawing
def matrix_min(matrix: np.ndarray) -> float:
    finite = matrix[np.isfinite(matrix)]
    return float(finite.min()) if finite.size else 0.0


def _figure(rows: int = 1, height: float = 4.0):  # noqa: ANN202 - matplotlib types, imported lazily
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(rows, 1, figsize=(10, height * rows), squeeze=False, sharex=rows > 1)
    return plt, fig, [a[0] for a in axes]


def _save(plt, fig, path: Path) -> Path:  # noqa: ANN001
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _mark_blocks(ax, data: RunData) -> None:  # noqa: ANN001
    """Dotted vertical lines where a round's block was appended (ledger work)."""
    for i, (t, _) in enumerate(chain_heights(data)):
        ax.axvline(t, color="0.55", linestyle=":", linewidth=0.9, label="block appended" if i == 0 else None)


def plot_metric(data: RunData, path: Path) -> Path:
    plt, fig, (ax,) = _figure()
    rounds = data.rounds
    x = [r["round"] for r in rounds]
    y = [r[data.metric] for r in rounds]
    ax.plot(x, y, marker="o", color="tab:blue", label=f"global model, test {data.metric}")
    target = data.summary.get("task", {}).get("target")
    if target is not None:
        ax.axhline(target, color="tab:green", linestyle="--", label=f"target {target}")
    for r in rounds:
        if r.get("eliminated"):
            ax.annotate(
                f"out: {r['eliminated']}",
                (r["round"], r[data.metric]),
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
    ax.set_xticks(range(len(data.rounds)), [str(r["round"]) for r in data.rounds])
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
    task_nodes = data.summary.get("nodes", {})
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


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def summary_markdown(data: RunData, traffic: list[dict[str, Any]], figures: list[Path]) -> str:
    s, rounds = data.summary, data.rounds
    task = s.get("task", {})
    final = s.get(f"final_{data.metric}")
    eliminated = [f"{r['eliminated']} (round {r['round']})" for r in rounds if r.get("eliminated")]
    lines = [
        f"# Run report: task {task.get('task_id', '?')}",
        "",
        f"- dataset {task.get('dataset', '?')}, model {task.get('model', '?')}, {len(rounds)} rounds, "
        f"stopped because: {s.get('stopped_because') or s.get('error') or '?'}",
        f"- final test {data.metric}: {_fmt(final, '.4f')}; final model digest "
        f"`{(s.get('final_model_digest') or '-')[:16]}`",
        f"- chain: height {rounds[-1].get('chain_height') if rounds else '-'}, "
        f"{sum(1 for r in rounds if r.get('on_chain'))}/{len(rounds)} rounds on chain",
        f"- eliminated: {', '.join(eliminated) or '-'}",
        f"- samples: {len(data.samples)} from {len({x['node'] for x in data.samples})} nodes in "
        f"{len(processes(data.samples))} processes",
    ]
    if traffic:
        total = [r.get("received", 0) + r.get("sent", 0) for r in traffic]
        lines.append(
            f"- broker traffic per round (in + out): median {statistics.median(total) / MB:.1f} MiB, "
            f"total {sum(total) / MB:.1f} MiB"
        )
    lines += [
        "",
        f"| round | {data.metric} | eliminated | admitted | block by (rank) | height |",
        "|---|---|---|---|---|---|",
    ]
    for r in rounds:
        block = f"{r.get('block_proposer')} ({r.get('block_rank')})" if r.get("on_chain") else "none"
        lines.append(
            f"| {r['round']} | {r[data.metric]:.4f} | {r.get('eliminated') or '-'} | "
            f"{', '.join(r.get('admitted', [])) or '-'} | {block} | {r.get('chain_height', '-')} |"
        )
    lines += [
        "",
        "| node | status | reward | CPU median % | CPU peak % | RSS peak MiB | ledger CPU s | privacy ε spent |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n in node_table(data):
        lines.append(
            f"| {n['node']} | {n['status']} | {_fmt(n['reward'], '.2f')} | {_fmt(n['cpu_median'], '.1f')} | "
            f"{_fmt(n['cpu_peak'], '.1f')} | {_fmt(n['rss_peak_mb'], '.0f')} | {_fmt(n['ledger_cpu_s'], '.3f')} | "
            f"{n['epsilon']} |"
        )
    lines += ["", "CPU is of the node's process, in % of one core; agents pooled in one process show that process.", ""]
    lines += [f"![{p.stem}]({p.name})" for p in figures]
    return "\n".join(lines) + "\n"


def write_report(run_dir: Path, out_dir: Path | None = None) -> list[Path]:
    """Write the figures and ``report.md`` into ``out_dir`` (default RUN_DIR/report); return the paths."""
    data = load_run(run_dir)
    out = out_dir or run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    figures = []
    if data.rounds:
        figures += [plot_metric(data, out / f"{data.metric}.png"), plot_quality(data, out / "quality_ranking.png")]
    if data.events:
        figures.append(plot_chain(data, out / "chain_height.png"))
    if data.samples:
        figures.append(plot_resources(data, out / "cpu_memory.png"))
    traffic = bytes_per_round(data)
    if traffic:
        figures.append(plot_traffic(traffic, out / "traffic.png"))
    markdown = out / "report.md"
    markdown.write_text(summary_markdown(data, traffic, figures))
    return [*figures, markdown]
