"""Compressed updates: what float16 and int8 (each with deflate) cost in accuracy and save in bytes against
float32, on MNIST with 30 nodes (issue #17, must-show 3). Each cell is one live ``bpcv demo`` (an agent
pool over the embedded MQTT broker, the same code as any live run) with the update encoding as the only
change; the same seed gives every encoding the same data split and initial model.

    .venv/bin/python experiments/compression/run.py                      # 3 encodings x 3 seeds (resumes)
    .venv/bin/python experiments/compression/run.py --seeds 1 --dtypes float32,int8+deflate
    .venv/bin/python experiments/compression/run.py --plot                # compression.png from the CSVs
    .venv/bin/python experiments/compression/run.py --workload paper --seeds 1   # the paper's CNN

Setting: 30 active nodes, IID, model mlp:128 (101,770 parameters; no fixed layers, so every encoding
applies), no DP (so the comparison is of the encodings, not of the noise), plain SGD batch 32, learning
rate 0.1, 1 local epoch, 10 rounds, BPCV-FL's default rules. Writes results.csv (one row a cell: final and
best accuracy, update bytes, broker bytes per round) and rounds.csv (accuracy per round).

``--workload paper``: the paper's workload instead, the convergence experiments' CNN and training
(experiments/convergence: cnn32-64-dropout.json, 34,826 parameters, 2 local epochs, batch 32, learning
rate 0.3 decayed 0.98 a round, no DP), to results_paper.csv, rounds_paper.csv and compression_paper.png.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "experiments"))

from convergence.run import MODELS, TRAINING_OPTIONS
from csv_rows import append_rows, model_label, read_rows

from bpcv_app.rundata import bytes_per_round, load_run

COLUMNS = ["dtype", "seed", "nodes", "model", "rounds", "final_accuracy", "best_accuracy", "update_bytes",
           "broker_bytes_per_round", "wall_s"]  # fmt: skip
ROUND_COLUMNS = ["dtype", "seed", "round", "accuracy"]
NODES, ROUNDS = 30, 10
# Each workload: the model and how agents train (the demo's options), and the suffix of its files.
WORKLOADS = {
    "mlp": ("mlp:128", ["--epochs", "1", "--batch", "32", "--lr", "0.1"], ""),
    "paper": (MODELS["mnist"], TRAINING_OPTIONS, "_paper"),
}


def run_cell(dtype: str, seed: int, work: Path, workload: str) -> tuple[dict[str, object], list[dict[str, object]]]:
    model, training, suffix = WORKLOADS[workload]
    out = work / f"{dtype.replace('+', '_')}-s{seed}{suffix}"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "bpcv_app.cli", "demo", "--out", str(out), "--agents", str(NODES), "--standby", "0",
           "--processes", "2", "--rounds", str(ROUNDS), "--model", model, *training, "--dp", "off",
           "--update-encoding", dtype, "--seed", str(seed),
           "--update-timeout", "900", "--vote-timeout", "600", "--timeout", "5400"]  # fmt: skip
    print(f"== {dtype} seed {seed}", flush=True)
    started = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=5600, check=False)
    wall = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"cell failed (rc {done.returncode}):\n{done.stdout[-3000:]}")
    rounds = json.loads((out / "coordinator.json").read_text())["rounds"]
    accuracy = [r["accuracy"] for r in rounds]
    logs = "".join(p.read_text() for p in (out / "logs").glob("agents-*.log"))
    sizes = [
        int(line.split("update sent (")[1].split(" bytes")[0]) for line in logs.splitlines() if "update sent (" in line
    ]
    sent = [r["sent"] for r in bytes_per_round(load_run(out))[1:] if "sent" in r]
    row = {
        "dtype": dtype, "seed": seed, "nodes": NODES, "model": model_label(model), "rounds": len(rounds),
        "final_accuracy": accuracy[-1], "best_accuracy": max(accuracy),
        "update_bytes": int(statistics.median(sizes)) if sizes else "",
        "broker_bytes_per_round": int(statistics.median(sent)) if sent else "", "wall_s": round(wall, 1),
    }  # fmt: skip
    per_round = [{"dtype": dtype, "seed": seed, "round": r["round"], "accuracy": r["accuracy"]} for r in rounds]
    shutil.rmtree(out, ignore_errors=True)
    return row, per_round


def plot(workload: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model, _, suffix = WORKLOADS[workload]
    rows = read_rows(HERE / f"rounds{suffix}.csv")
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for dtype in dict.fromkeys(r["dtype"] for r in rows):
        by_round: dict[int, list[float]] = {}
        for r in rows:
            if r["dtype"] == dtype:
                by_round.setdefault(int(r["round"]), []).append(float(r["accuracy"]))
        xs = sorted(by_round)
        ax.plot(
            xs, [statistics.fmean(by_round[x]) for x in xs], "o-", label=f"{dtype} (mean of {len(by_round[xs[0]])})"
        )
    title = f"MNIST, {NODES} nodes, {model_label(model)}, no DP: update encodings"
    ax.set(xlabel="round", ylabel="test accuracy", title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    png = HERE / f"compression{suffix}.png"
    fig.savefig(png, dpi=110)
    return png


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dtypes", default="float32,float16+deflate,int8+deflate")
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "compression")
    p.add_argument("--workload", default="mlp", choices=sorted(WORKLOADS), help="mlp:128, or the paper's CNN")
    p.add_argument("--plot", action="store_true")
    a = p.parse_args()
    suffix = WORKLOADS[a.workload][2]
    results, per_rounds = HERE / f"results{suffix}.csv", HERE / f"rounds{suffix}.csv"
    if not a.plot:
        a.work.mkdir(parents=True, exist_ok=True)
        done = {(r["dtype"], r["seed"]) for r in read_rows(results)}
        for seed in a.seeds.split(","):
            for dtype in a.dtypes.split(","):
                if (dtype, seed) in done:
                    print(f"-- {dtype} seed {seed}: in {results.name} already")
                    continue
                row, per_round = run_cell(dtype, int(seed), a.work, a.workload)
                append_rows(results, COLUMNS, [row])
                append_rows(per_rounds, ROUND_COLUMNS, per_round)
                print("   ", row, flush=True)
    print(plot(a.workload))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
