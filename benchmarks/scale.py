"""Benchmark: round time, broker traffic and memory against the number of active nodes, with every peer
validating every update (the paper) and with validation committees, float32 and compressed updates
(issue #17).

    .venv/bin/python benchmarks/scale.py                                   # the default grid (resumes)
    .venv/bin/python benchmarks/scale.py --nodes 10,50 --committee 0,5 --dtype float32 --rounds 4
    .venv/bin/python benchmarks/scale.py --mode plain --nodes 10,50 --committee 0   # the cost of supervision

Each cell is one live ``bpcv demo``: N active agents in agent pools (several agents per OS process, one
TensorFlow runtime each), the embedded MQTT broker, MNIST split over the N agents, model mlp:128 (no
fixed layers, so every encoding applies; ``--model`` another, column ``model``), 1 local epoch, Laplace
GD-DP, no standby. From the run folder:

- ``round_s``: the median time between consecutive round decisions (round 1, which includes TensorFlow
  start-up and the first DP calibration, is not counted);
- ``broker_bytes_per_round``: the median over rounds 2.. of the bytes the broker sent in the round (its
  own $SYS counters, as ``bpcv report`` reads them; mosquitto publishes them about every 2 s, so rounds
  much shorter than that are misread: ``agent_received_kb`` is exact);
- ``peak_rss_mb``: the largest peak RSS of one agent-pool process (and ``agents_per_process``);
- ``overhead_share`` and ``busy_shares``: from the agents' own per-round breakdown (``bpcv report``), the
  share of their busy seconds that is not training or scoring, and every phase's share;
- ``coordinator_stages``: the coordinator's round by stage (``bpcv report``), median seconds per round of
  updates (global model out to every update in), votes, decide, block and between;
- ``agent_received_kb``: what one agent received a round by kind (``bpcv report``): the median kB per
  agent-round of each kind of message it handled, and ``all``, the median of its totals.

``--mode plain`` runs the same cells as plain federated learning (``--strategy fedavg --no-supervision``: no
votes, ranking, elimination or chain), the baseline for what mutual supervision costs (column ``mode``).
``--broker mosquitto`` runs them on a mosquitto the demo starts instead of the embedded broker (amqtt,
Python, in the demo's process): what a fleet runs (column ``broker``).
``--training paper`` trains as the convergence experiments do (2 local epochs, batch 32, learning rate 0.3,
no DP; with their CNN as ``--model``): the paper's workload, where training is most of a round, instead of
the default one DP epoch of a small shard (column ``training``).

Each finished cell appends a row to benchmarks/results/scale.csv (a cell already there is skipped, so an
interrupted grid resumes); ``--plot`` draws the CSV's figures: ``scale.png`` (round time and broker traffic
against N, the ``mlp:128`` cells) and ``scale_received.png`` (what one agent received by kind against N,
the cells that counted it; named after the CSV).
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "experiments"))

from convergence.run import TRAINING_OPTIONS
from csv_rows import append_rows, read_rows, write_rows

from bpcv.topics import TRAFFIC_KINDS
from bpcv_app.rundata import by_node, bytes_per_round, coordinator_timeline, load_run, processes, round_breakdown

RESULTS = ROOT / "benchmarks" / "results"
COLUMNS = [
    "nodes", "committee", "dtype", "round_s", "broker_bytes_per_round", "peak_rss_mb",
    "rounds", "rounds_done", "agents_per_process", "round_s_all", "final_accuracy", "wall_s", "seed", "mode",
    "overhead_share", "busy_shares", "coordinator_stages", "model", "broker", "training", "agent_received_kb",
]  # fmt: skip
DEFAULT_MODEL = "mlp:128"
# the value of a column a row from before it lacks
FILLED = {"mode": "bpcv", "model": DEFAULT_MODEL, "broker": "embedded", "training": "dp-1-epoch"}
KEY_COLUMNS = ("nodes", "committee", "dtype", "rounds", "mode", "model", "broker", "training")
MODES = {"bpcv": [], "plain": ["--strategy", "fedavg", "--no-supervision"]}
# How each agent trains a round. dp-1-epoch: the demo's (Laplace GD-DP, its batch and learning rate), one
# local epoch. paper: the convergence experiments' (experiments/convergence/run.py's TRAINING, no DP), with
# their CNN as --model.
TRAININGS = {
    "dp-1-epoch": ["--epochs", "1"],
    "paper": [*TRAINING_OPTIONS, "--dp", "off"],
}
MB = 1024 * 1024


def value(row: dict[str, object], column: str) -> str:
    """``row``'s ``column``, or what it was before the CSV had that column."""
    return str(row.get(column) or FILLED.get(column, ""))


def cell_key(row: dict[str, object]) -> tuple[str, ...]:
    return tuple(value(row, c) for c in KEY_COLUMNS)


def pools(nodes: int) -> int:
    """Agent processes for N agents: about 25 agents a process, at least 2 (one TensorFlow each)."""
    return max(2, round(nodes / 25))


def run_cell(
    nodes: int,
    committee: int,
    dtype: str,
    rounds: int,
    seed: int,
    work: Path,
    mode: str,
    broker: str = "embedded",
    model: str = DEFAULT_MODEL,
    training: str = "dp-1-epoch",
) -> dict[str, object]:
    """One live demo cell on ``broker`` (the demo's ``--broker``: ``embedded``, ``mosquitto`` or an MQTT
    URL); its row."""
    stem = Path(model).stem.replace(":", "")
    out = work / f"{mode}-n{nodes}-k{committee}-{dtype.replace('+', '_')}-r{rounds}-{stem}-{training}"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "bpcv_app.cli", "demo", "--out", str(out), "--agents", str(nodes),
           "--standby", "0", "--processes", str(pools(nodes)), "--rounds", str(rounds), *TRAININGS[training],
           "--model", model, "--committee", str(committee), "--update-encoding", dtype, "--seed", str(seed),
           "--update-timeout", "900", "--vote-timeout", "600", "--timeout", "7200", *MODES[mode],
           "--broker", broker]  # fmt: skip
    print(f"== {mode} N={nodes} committee={committee} {dtype} rounds={rounds} {model}: {' '.join(cmd[3:])}", flush=True)
    started = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=7500, check=False)
    wall = time.monotonic() - started
    (work / f"{out.name}.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise SystemExit(
            f"cell failed (rc {done.returncode}); log: {work / (out.name + '.log')}\n{done.stdout[-2000:]}"
        )
    data = load_run(out)
    decided = sorted(ts for ts, _, kind, _ in data.events if kind == "decided")
    gaps = [b - a for a, b in itertools.pairwise(decided)]
    sent = [row["sent"] for row in bytes_per_round(data)[1:] if "sent" in row]
    agent_samples = {n: s for n, s in by_node(data.samples).items() if n != "coordinator"}
    peak = {n: max(s["rss_bytes"] for s in own) for n, own in agent_samples.items() if own}
    groups = [g for g in processes(data.samples).values() if "coordinator" not in g]
    summary = json.loads((out / "summary.json").read_text())
    breakdown = round_breakdown(data.round_times)  # the agents' own clocks (bpcv report's table)
    timeline = coordinator_timeline(data.events)  # the coordinator's stages (the next table of bpcv report)
    received = breakdown.received if breakdown else {}
    row = {
        "nodes": nodes,
        "committee": committee,
        "dtype": dtype,
        "round_s": round(statistics.median(gaps), 2) if gaps else "",
        "broker_bytes_per_round": int(statistics.median(sent)) if sent else "",
        "peak_rss_mb": round(max(peak.values()) / MB, 1) if peak else "",
        "rounds": rounds,
        "rounds_done": len(decided),
        "agents_per_process": max((len(g) for g in groups), default=""),
        "round_s_all": " ".join(f"{g:.1f}" for g in gaps),
        "final_accuracy": summary.get("final_metric", summary.get("final_accuracy", "")),
        "wall_s": round(wall, 1),
        "seed": seed,
        "mode": mode,
        "overhead_share": round(breakdown.overhead, 4) if breakdown else "",
        "busy_shares": " ".join(f"{p}={v:.3f}" for p, v in breakdown.busy_share.items()) if breakdown else "",
        "coordinator_stages": " ".join(f"{s}={v:.3f}" for s, v in timeline.median_s.items()) if timeline else "",
        "model": model,
        "broker": broker,
        "training": training,
        # what one agent received a round by kind, median kB (bpcv report's table; empty before it was counted)
        "agent_received_kb": " ".join(f"{k}={v / 1000:.1f}" for k, v in received.items()),
    }
    shutil.rmtree(out, ignore_errors=True)
    return row


def plot(csv_path: Path) -> list[Path]:
    """The CSV's figures: round time and broker traffic against N (``mlp:128`` cells), and what one agent
    received by kind against N (cells that counted it); the paths drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_rows(csv_path)
    drawn = [png for png in (plot_rounds(plt, rows, csv_path), plot_received(plt, rows, csv_path)) if png]
    plt.close("all")
    return drawn


def plot_received(plt: Any, rows: list[dict[str, str]], csv_path: Path) -> Path | None:
    """Stacked kB one agent received a round, by kind, and MB per node (the broker's sent bytes over N, one
    agent's count), against N."""
    counted = sorted((int(r["nodes"]), r) for r in rows if value(r, "agent_received_kb") and value(r, "mode") == "bpcv")
    if not counted:
        return None
    kinds = {n: dict(kv.split("=") for kv in value(r, "agent_received_kb").split()) for n, r in counted}
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    labels = [str(n) for n, _ in counted]
    bottom = [0.0] * len(counted)
    for kind in [k for k in TRAFFIC_KINDS if any(k in own for own in kinds.values())]:
        heights = [float(kinds[n].get(kind, 0)) for n, _ in counted]
        left.bar(labels, heights, bottom=bottom, label=kind)
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    left.set(xlabel="active nodes N", ylabel="kB per agent a round (median)", title="What one agent receives")
    nodes = [n for n, _ in counted]
    right.plot(nodes, [float(r["broker_bytes_per_round"]) / n / MB for n, r in counted], "o-", label="broker sent / N")
    right.plot(nodes, [float(kinds[n]["all"]) * 1000 / MB for n in nodes], "s--", label="one agent received")
    right.set(xlabel="active nodes N", ylabel="MB per round, per node", title="Traffic per node")
    right.set_ylim(bottom=0)
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    first = counted[0][1]
    fig.suptitle(f"bpcv demo, {value(first, 'model')}, training {value(first, 'training')}, k = {first['committee']}")
    fig.tight_layout()
    png = csv_path.with_name(csv_path.stem + "_received.png")
    fig.savefig(png, dpi=110)
    return png


def plot_rounds(plt: Any, rows: list[dict[str, str]], csv_path: Path) -> Path | None:
    """Round time and broker traffic against N for the ``mlp:128`` cells, a line per (committee, dtype)."""
    series: dict[tuple[str, str], list[tuple[int, float, float]]] = {}
    for r in rows:
        plotted = (
            value(r, "mode") == "bpcv" and value(r, "model") == DEFAULT_MODEL and value(r, "training") == "dp-1-epoch"
        )
        if r["round_s"] and r["broker_bytes_per_round"] and plotted:
            key = (r["committee"], r["dtype"])
            series.setdefault(key, []).append(
                (int(r["nodes"]), float(r["round_s"]), float(r["broker_bytes_per_round"]))
            )
    if not series:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for (committee, dtype), cells in sorted(series.items()):
        by_n: dict[int, list[tuple[int, float, float]]] = {}
        for cell in cells:  # a cell run more than once (other round counts): the median of its runs
            by_n.setdefault(cell[0], []).append(cell)
        points = [
            (n, statistics.median(c[1] for c in runs), statistics.median(c[2] for c in runs))
            for n, runs in sorted(by_n.items())
        ]
        label = f"{'all peers' if committee == '0' else 'k = ' + committee}, {dtype}"
        left.plot([p[0] for p in points], [p[1] for p in points], "o-", label=label)
        right.plot([p[0] for p in points], [p[2] / MB for p in points], "o-", label=label)
    left.set(xlabel="active nodes N", ylabel="median round time (s)", title="Round time")
    right.set(xlabel="active nodes N", ylabel="MB sent by the broker per round", title="Broker traffic", yscale="log")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("bpcv demo, mlp:128, MNIST, Laplace GD-DP, 2-core machine")
    fig.tight_layout()
    png = csv_path.with_suffix(".png")
    fig.savefig(png, dpi=110)
    return png


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nodes", default="10,30,50,100,200", help="comma-separated N")
    p.add_argument("--committee", default="0,5", help="comma-separated k (0 = all peers)")
    p.add_argument("--dtype", default="float32,int8+deflate", help="comma-separated update encodings")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--max-all-peers", type=int, default=50, help="largest N run with all-peer validation")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--model", default=DEFAULT_MODEL, help="a demo model preset or Keras .json (plotted: mlp:128 only)")
    p.add_argument("--mode", default="bpcv", choices=sorted(MODES), help="bpcv, or plain federated learning")
    p.add_argument("--broker", default="embedded", help="embedded (amqtt in the demo), mosquitto, or mqtt://HOST:PORT")
    p.add_argument("--training", default="dp-1-epoch", choices=sorted(TRAININGS), help="how agents train a round")
    p.add_argument("--csv", type=Path, default=RESULTS / "scale.csv")
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "scale")
    p.add_argument("--plot", action="store_true", help="only draw the CSV's figures")
    a = p.parse_args()
    if a.plot:
        print(*plot(a.csv), sep="\n")
        return 0
    a.work.mkdir(parents=True, exist_ok=True)
    rows = read_rows(a.csv)
    if rows and list(rows[0]) != COLUMNS:  # a CSV from before a column was added: rewrite it with the new one
        write_rows(a.csv, COLUMNS, [{c: value(r, c) for c in COLUMNS} for r in rows])
    done = {cell_key(r) for r in rows}
    for nodes in (int(n) for n in a.nodes.split(",")):
        for committee in (int(k) for k in a.committee.split(",")):
            for dtype in a.dtype.split(","):
                if committee == 0 and nodes > a.max_all_peers:
                    print(f"-- N={nodes} all peers: not run (over --max-all-peers {a.max_all_peers})")
                    continue
                values = (nodes, committee, dtype, a.rounds, a.mode, a.model, a.broker, a.training)
                cell = dict(zip(KEY_COLUMNS, values, strict=True))
                key = cell_key({c: str(v) for c, v in cell.items()})  # as the CSV holds them: strings
                if key in done:
                    print(f"-- {a.mode} N={nodes} committee={committee} {dtype} rounds={a.rounds}: in the CSV already")
                    continue
                row = run_cell(nodes, committee, dtype, a.rounds, a.seed, a.work, a.mode, a.broker, a.model, a.training)
                append_rows(a.csv, COLUMNS, [row])
                print("   ", {k: row[k] for k in COLUMNS[:7]}, flush=True)
    print(*plot(a.csv), sep="\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
