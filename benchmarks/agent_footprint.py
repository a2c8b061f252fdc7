"""Benchmark: what one edge agent needs, memory and CPU, during live rounds (issue #7: against the
memory of the Raspberry Pi models in docs/DEPLOY.md).

    .venv/bin/python benchmarks/agent_footprint.py [--model mlp:128 --model cnn:16,32] [--rounds 4]

For each model: a live demo on mosquitto with 4 agents, each in its own OS process (a device runs
one agent), MNIST, 1 local epoch, no DP, then 4 agents with Laplace GD-DP. Every agent's psutil
samples (once a second, the same ones `bpcv report` uses) give its peak RSS and its CPU: median and
p95 of the per-second samples while the task ran, and CPU-seconds per round (the samples
integrated over the task, divided by the rounds). Writes benchmarks/results/agent_footprint.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from broker.runner import free_port, start_broker_process  # noqa: E402
from coordinator.timeseries import TimeSeries  # noqa: E402

AGENTS = 4


def run_case(model: str, dp: str, rounds: int, work: Path, broker_url: str) -> dict[str, object]:
    out = work / f"{model.replace(':', '-').replace(',', '_')}-{dp}"
    cmd = [sys.executable, "-m", "bpcv_app.cli", "demo", "--broker", broker_url, "--out", str(out), "--agents",
           str(AGENTS), "--standby", "0", "--processes", str(AGENTS), "--rounds", str(rounds), "--epochs", "1",
           "--model", model, "--dp", dp, "--min-nodes", str(AGENTS - 1)]  # fmt: skip
    started = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise SystemExit(done.stdout[-3000:] + done.stderr[-3000:])
    wall = time.monotonic() - started
    summary = json.loads((out / "coordinator.json").read_text())
    first = min(r["elapsed_s"] for r in summary["rounds"])
    store = TimeSeries(out / "metrics.sqlite", readonly=True)
    per_agent = {}
    for node in sorted(summary["nodes"]):
        samples = store.samples(node)
        cpu = [s["cpu_percent"] for s in samples]
        span = samples[-1]["ts"] - samples[0]["ts"]
        cpu_seconds = statistics.fmean(cpu) / 100 * span
        per_agent[node] = {
            "peak_rss_mib": round(max(s["rss_bytes"] for s in samples) / 2**20, 1),
            "cpu_median_percent": round(statistics.median(cpu), 1),
            "cpu_p95_percent": round(sorted(cpu)[int(0.95 * (len(cpu) - 1))], 1),
            "cpu_seconds_per_round": round(cpu_seconds / len(summary["rounds"]), 2),
            "samples": len(samples),
        }
    store.close()
    return {
        "model": model,
        "dp": dp,
        "rounds": len(summary["rounds"]),
        "final_accuracy": summary.get("final_accuracy"),
        "seconds_to_first_round": first,
        "demo_wall_s": round(wall, 1),
        "peak_rss_mib_max": max(a["peak_rss_mib"] for a in per_agent.values()),
        "cpu_seconds_per_round_median": statistics.median(a["cpu_seconds_per_round"] for a in per_agent.values()),
        "agents": per_agent,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", default=[])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/agent_footprint.json"))
    args = parser.parse_args()
    cases = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        port = free_port()
        broker = start_broker_process("mosquitto", "127.0.0.1", port, work / "broker")
        try:
            for model in args.model or ["mlp:128", "cnn:16,32"]:
                for dp in ("off", "laplace"):
                    case = run_case(model, dp, args.rounds, work, f"mqtt://127.0.0.1:{port}")
                    print(json.dumps({k: v for k, v in case.items() if k != "agents"}), flush=True)
                    cases.append(case)
        finally:
            broker.terminate()
            broker.wait(timeout=10)
    result = {
        "what": f"{AGENTS} agents, one OS process each, live demo on mosquitto, MNIST, 1 local epoch per round; "
        "psutil samples once a second (RSS of the agent's process; CPU in % of one core)",
        "machine": f"{psutil.cpu_count()} cores x86-64, {psutil.virtual_memory().total / 2**30:.0f} GiB, "
        f"Python {sys.version.split()[0]}",
        "cases": cases,
    }
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
