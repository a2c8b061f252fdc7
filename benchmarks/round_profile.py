"""Benchmark: where the CPU of a live round goes, agents and coordinator (issue #17, must-show 4).

    .venv/bin/pip install py-spy                         # a sampling profiler; not a project dependency
    .venv/bin/python benchmarks/round_profile.py --nodes 10 --committee 0
    .venv/bin/python benchmarks/round_profile.py --nodes 50 --committee 5 --seconds 20

Runs one ``bpcv demo`` (N active agents in agent pools, embedded broker, MNIST, mlp:128, Laplace GD-DP,
1 local epoch) and, once round 2 is decided, samples every agent-pool process and the coordinator with
py-spy for ``--seconds`` (100 samples a second, without pausing them, idle threads left out), so what is
counted is CPU work. Each sampled stack is put in the first phase its frames enter, from the outermost:

- agents: ``train`` (local DP training), ``score`` (scoring peers' models), ``privacy`` (the accountant's
  epsilon for the next round, PLD for Laplace), ``ledger`` (receiving,
  verifying and storing blocks, proposing), ``codec`` (encoding, decoding and digesting models outside
  training and scoring), ``crypto`` (sealing and opening signed envelopes: Ed25519, digests, intake
  checks), ``mqtt`` (the paho client's network thread), ``metrics`` (the psutil sampler), ``other``;
- coordinator: ``aggregate``, ``evaluate`` (the global model on the test set), ``intake`` (updates and
  votes in: verify, decode), ``ledger``, ``mqtt``, ``metrics``, ``other``.

A sample of a thread waiting (paho's select, a queue, an event) is not counted; a stack with no Python
frame is TensorFlow's own thread pool at work (``tensorflow``), which in an agent runs only for training
and scoring. The overhead share is everything but ``train``, ``score`` and ``tensorflow``, over all agent
samples; ``privacy`` (the DP accountant) is part of it. Writes
benchmarks/results/round_profile.json (one entry per N and committee, replaced when run again).
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "round_profile.json"
RATE = 100
# (phase, substrings of a frame that enter it), tried for each frame from the outermost
AGENT_PHASES = [
    ("train", ("local_update (edge_agent/work.py",)),
    ("score", ("score_peers (edge_agent/work.py", "score (edge_agent/work.py")),
    ("privacy", ("edge_agent/privacy/accountant.py", "dp_accounting/")),
    ("ledger", ("ledger/",)),
    ("metrics", ("bpcv/sampler.py", "publish_metrics")),
    ("codec", ("bpcv/codec.py", "keep_update (edge_agent/rounds.py")),
    ("crypto", ("bpcv/envelope.py", "bpcv/intake.py", "bpcv/identity.py", "seal_message")),
    ("mqtt", ("paho/mqtt",)),
]
COORDINATOR_PHASES = [
    ("aggregate", ("_combine (coordinator/task_runner.py", "coordinator/strategies/", "coordinator/aggregate.py")),
    ("evaluate", ("coordinator/evaluation.py",)),
    ("ledger", ("ledger/",)),
    ("metrics", ("bpcv/sampler.py", "timeseries.py")),
    ("intake", ("coordinator/collector.py", "bpcv/intake.py", "bpcv/envelope.py", "bpcv/codec.py")),
    ("mqtt", ("paho/mqtt",)),
]


def phase_of(stack: str, phases: list[tuple[str, tuple[str, ...]]]) -> str:
    """The phase a collapsed stack (outermost frame first, frames joined by ';') belongs to."""
    for frame in stack.split(";"):
        for name, marks in phases:
            if any(mark in frame for mark in marks):
                return name
    return "other"


# Innermost frames of a thread that waits (py-spy's idle test misses timed waits without pausing the process):
# paho's select() on its socket, the pool's queue, the sampler's interval
WAITING = ("_loop (paho/mqtt/client.py:1667)", "Condition.wait (threading.py", "Event.wait (threading.py")


def tally(raw: Path, phases: list[tuple[str, tuple[str, ...]]]) -> Counter[str]:
    """Samples per phase in a py-spy ``raw`` file (collapsed stacks, a count at the end of each line). A
    waiting thread is not counted; a stack without Python frames is one of TensorFlow's own compute
    threads (phase ``tensorflow``: in an agent only training and scoring run TensorFlow ops, in the
    coordinator only aggregation and evaluation)."""
    counts: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit() or stack.split(";")[-1].startswith(WAITING):
            continue
        counts[phase_of(stack, phases) if stack else "tensorflow"] += int(count)
    return counts


def demo_processes(demo: psutil.Process) -> dict[str, list[int]]:
    """The demo's agent-pool processes and its coordinator, by kind."""
    found: dict[str, list[int]] = {"agents": [], "coordinator": []}
    for child in demo.children(recursive=True):
        try:
            cmd = child.cmdline()
        except psutil.Error:
            continue
        if "bpcv_app.cli" in cmd and "agent" in cmd:
            found["agents"].append(child.pid)
        elif "bpcv_app.cli" in cmd and "coordinator" in cmd:
            found["coordinator"].append(child.pid)
    return found


def shares(counts: Counter[str]) -> dict[str, float]:
    total = sum(counts.values()) or 1
    return {phase: round(n / total, 4) for phase, n in counts.most_common()}


def profile(nodes: int, committee: int, seconds: float, work: Path) -> dict[str, object]:
    out = work / f"profile-n{nodes}-k{committee}"
    shutil.rmtree(out, ignore_errors=True)
    rounds = 8 if nodes <= 20 else 5
    cmd = [sys.executable, "-m", "bpcv_app.cli", "demo", "--out", str(out), "--agents", str(nodes), "--standby", "0",
           "--processes", str(max(2, round(nodes / 25))), "--rounds", str(rounds), "--epochs", "1",
           "--model", "mlp:128", "--committee", str(committee), "--update-timeout", "900", "--vote-timeout", "600"]  # fmt: skip
    demo = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    log = out / "logs" / "coordinator.log"
    deadline = time.monotonic() + 1800
    while not (log.exists() and "round 2:" in log.read_text()):
        if demo.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the demo ended or stalled before round 2:\n{demo.communicate()[0][-2000:]}")
        time.sleep(0.5)
    pids = demo_processes(psutil.Process(demo.pid))
    recorders = []
    for kind, kind_pids in pids.items():
        for pid in kind_pids:
            raw = work / f"{out.name}-{kind}-{pid}.txt"
            spy = [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(pid), "--duration",
                   str(int(seconds)), "--rate", str(RATE), "--format", "raw", "--nonblocking", "--output", str(raw)]  # fmt: skip
            recorders.append((kind, raw, subprocess.Popen(spy, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)))
    for _, _, spy in recorders:
        spy.wait(timeout=seconds + 120)
    text = demo.communicate(timeout=3600)[0]
    if demo.returncode != 0:
        raise SystemExit(f"the demo failed:\n{text[-2000:]}")
    agents, coordinator = Counter(), Counter()
    for kind, raw, _ in recorders:
        if raw.exists():
            (agents if kind == "agents" else coordinator).update(
                tally(raw, AGENT_PHASES if kind == "agents" else COORDINATOR_PHASES)
            )
    decided = json.loads((out / "coordinator.json").read_text())["rounds"]
    elapsed = [r["elapsed_s"] for r in decided]
    gaps = sorted(b - a for a, b in itertools.pairwise(elapsed[1:]))
    total = sum(agents.values()) or 1
    overhead = 1 - (agents["train"] + agents["score"] + agents["tensorflow"]) / total
    shutil.rmtree(out, ignore_errors=True)
    return {
        "nodes": nodes,
        "committee": committee,
        "seconds_sampled": seconds,
        "agent_processes": len(pids["agents"]),
        "median_round_s": gaps[len(gaps) // 2] if gaps else None,
        "agent_cpu_s": round(total / RATE, 1),
        "agent_cpu_s_per_node_per_s": round(total / RATE / nodes / seconds, 4),
        "agent_shares": shares(agents),
        "agent_overhead_share": round(overhead, 4),
        "coordinator_cpu_s": round(sum(coordinator.values()) / RATE, 1),
        "coordinator_shares": shares(coordinator),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nodes", type=int, default=10)
    p.add_argument("--committee", type=int, default=0)
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "profile")
    a = p.parse_args()
    if shutil.which("py-spy", path=str(Path(sys.executable).parent)) is None:
        raise SystemExit("py-spy is not installed in this environment: .venv/bin/pip install py-spy")
    a.work.mkdir(parents=True, exist_ok=True)
    entry = profile(a.nodes, a.committee, a.seconds, a.work)
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    results = [r for r in results if (r["nodes"], r["committee"]) != (a.nodes, a.committee)] + [entry]
    RESULTS.write_text(json.dumps(sorted(results, key=lambda r: (r["nodes"], r["committee"])), indent=2) + "\n")
    print(json.dumps(entry, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
