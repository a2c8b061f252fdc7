"""What a run folder holds, as tables: ``coordinator.json`` (the rounds) and ``metrics.sqlite`` (samples,
broker traffic, round events, the agents' round breakdowns), read by ``load_run``. Every function here
is pure (tables in, tables out); ``bpcv_app.figures`` draws them and ``bpcv_app.report`` writes the report.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bpcv.errors import ConfigError
from bpcv.messages import ROUND_PHASES, RoundTimes
from bpcv.topics import TRAFFIC_KINDS
from coordinator.summary import RoundRow, TaskSummary
from coordinator.timeseries import TimeSeries

MB = 1024 * 1024


@dataclass
class RunData:
    summary: TaskSummary
    samples: list[dict[str, Any]]
    events: list[tuple[float, int, str, dict[str, Any]]]
    traffic: dict[str, list[tuple[float, int]]]
    round_times: list[tuple[str, RoundTimes]] = field(default_factory=list)  # (agent, its round's phases)
    t0: float = field(init=False)

    def __post_init__(self) -> None:
        stamps = [s["ts"] for s in self.samples] + [e[0] for e in self.events]
        self.t0 = min(stamps) if stamps else 0.0

    @property
    def metric(self) -> str:
        return self.summary.metric

    @property
    def rounds(self) -> list[RoundRow]:
        return self.summary.rounds


def load_run(run_dir: Path) -> RunData:
    """The run's summary and time series; ConfigError naming what is missing or unreadable."""
    summary_path = run_dir / "coordinator.json"
    if not summary_path.is_file():
        raise ConfigError(f"{run_dir} is not a run folder: no coordinator.json (was the task run with --out there?)")
    try:
        raw = json.loads(summary_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{summary_path} is not readable JSON: {exc}") from exc
    try:
        summary = TaskSummary.from_json(raw)
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{summary_path} is not a coordinator summary this version reads: {exc!r}") from exc
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
            store.round_times(),
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
    statuses = data.summary.nodes
    rows = []
    for node in sorted(set(per_node) | set(statuses)):
        own = per_node.get(node, [])
        info = statuses.get(node)
        rows.append(
            {
                "node": node,
                "status": info.status if info else "-",
                "reward": info.reward if info else None,
                "samples": len(own),
                "cpu_median": statistics.median(s["cpu_percent"] for s in own) if own else None,
                "cpu_peak": max(s["cpu_percent"] for s in own) if own else None,
                "rss_peak_mb": max(s["rss_bytes"] for s in own) / MB if own else None,
                "ledger_cpu_s": max(s["ledger_cpu_s"] for s in own) if own else None,
                "epsilon": _epsilon(info.privacy if info else {}),
            }
        )
    return rows


def _epsilon(privacy: dict[str, Any]) -> str:
    """``spent of budget (mechanism)`` for a node under DP, else ``-``."""
    spent, budget = privacy.get("epsilon_spent"), privacy.get("epsilon_budget")
    if privacy.get("mechanism") in (None, "off", "unknown") or spent is None:
        return "-"
    return f"{spent:.3f} of {budget} ({privacy['mechanism']})" if budget is not None else f"{spent:.3f}"


def quality_matrix(rounds: list[RoundRow]) -> tuple[list[str], np.ndarray, dict[tuple[int, int], str]]:
    """Nodes, a nodes × rounds matrix of peer-voted quality (NaN where a node was not scored) and
    cell marks: ``#k`` the rank, ``out`` eliminated, ``bad`` invalid, ``in`` admitted next round."""
    nodes = sorted({n for r in rounds for n in list(r.quality) + list(r.invalid)})
    index = {n: i for i, n in enumerate(nodes)}
    matrix = np.full((len(nodes), len(rounds)), np.nan)
    marks: dict[tuple[int, int], str] = {}
    for j, row in enumerate(rounds):
        for node, q in row.quality.items():
            matrix[index[node], j] = q
        for k, node in enumerate(row.ranking):
            marks[(index[node], j)] = f"#{k + 1}"
        for node in row.invalid:
            marks[(index[node], j)] = "bad"
        if row.eliminated in index:
            marks[(index[row.eliminated], j)] = "out"
    return nodes, matrix, marks


WORK_PHASES = ("train", "score")  # what a round is for; every other phase is overhead


@dataclass(frozen=True)
class Breakdown:
    """Where the agents' rounds went: per phase (and ``waiting``) the median seconds per agent-round and
    the share of all the agents' busy seconds; ``overhead`` is the busy share outside WORK_PHASES."""

    agent_rounds: int
    median_s: dict[str, float]
    busy_share: dict[str, float]
    median_wall_s: float
    overhead: float
    received: dict[str, float] = field(default_factory=dict)  # kind -> median bytes an agent received a round,
    # and "all": the median of the agent-rounds' totals (over the agent-rounds that counted bytes)


def round_breakdown(times: list[tuple[str, RoundTimes]]) -> Breakdown | None:
    """The breakdown of ``times`` (each agent's rounds), None without any."""
    if not times:
        return None
    phases = [p for p in ROUND_PHASES if any(p in t.seconds for _, t in times)]
    busy = sum(sum(t.seconds.values()) for _, t in times)
    median_s = {p: statistics.median(t.seconds.get(p, 0.0) for _, t in times) for p in phases}
    median_s["waiting"] = statistics.median(t.waiting_s for _, t in times)
    share = {p: sum(t.seconds.get(p, 0.0) for _, t in times) / busy if busy else 0.0 for p in phases}
    overhead = sum(v for p, v in share.items() if p not in WORK_PHASES)
    counted = [t.received for _, t in times if t.received]
    received = {
        k: statistics.median(r.get(k, 0) for r in counted) for k in TRAFFIC_KINDS if any(k in r for r in counted)
    }
    if counted:
        received["all"] = statistics.median(sum(r.values()) for r in counted)
    return Breakdown(len(times), median_s, share, statistics.median(t.wall_s for _, t in times), overhead, received)


# The coordinator's round, stage by stage: each stage ends at the named event of the round (the last
# one if a resumed round recorded it twice) if that came before the next round's model; "between" runs
# from the last of them to the next round's model.
COORDINATOR_STAGES = (
    ("updates", "updates-in"),  # global model out until every update is in (training, transfer, stragglers)
    ("votes", "votes-in"),  # manifest out until every vote is in (scoring); absent without supervision
    ("decide", "decided"),  # ranking, aggregation, evaluation, the result published
    ("block", "block"),  # until the round's block is in the coordinator's replica (or given up on): in runs
    # before 2026-12-05 the next round waited for it; now the block is written while the next round runs
)


@dataclass(frozen=True)
class Timeline:
    """The coordinator's rounds by stage (its critical path): median seconds per round and share of the
    rounds' seconds, over the rounds followed by another (``between`` needs the next round's start)."""

    rounds: int
    median_s: dict[str, float]
    share: dict[str, float]
    median_round_s: float


def coordinator_timeline(events: list[tuple[float, int, str, dict[str, Any]]]) -> Timeline | None:
    """The timeline of the coordinator's round events; None without two whole rounds in a row."""
    stamps: dict[int, dict[str, float]] = defaultdict(dict)
    for ts, round_no, kind, _ in events:
        stamps[round_no]["block" if kind == "no-block" else kind] = ts
    stages: list[dict[str, float]] = []
    for round_no, own in sorted(stamps.items()):
        following = stamps.get(round_no + 1, {}).get("global-out")
        if "global-out" not in own or following is None:
            continue
        seen, previous = {}, own["global-out"]
        for stage, kind in COORDINATOR_STAGES:
            if kind in own and previous <= own[kind] <= following:
                seen[stage], previous = own[kind] - previous, own[kind]
        if "updates" in seen and "decide" in seen:
            seen["between"] = following - previous
            stages.append(seen)
    if not stages:
        return None
    names = [s for s, _ in COORDINATOR_STAGES if any(s in r for r in stages)] + ["between"]
    total = sum(sum(r.values()) for r in stages)
    return Timeline(
        rounds=len(stages),
        median_s={s: statistics.median(r.get(s, 0.0) for r in stages) for s in names},
        share={s: sum(r.get(s, 0.0) for r in stages) / total if total else 0.0 for s in names},
        median_round_s=statistics.median(sum(r.values()) for r in stages),
    )
