"""Compressed updates: what float16 and int8 (each with deflate) cost in accuracy and save in bytes against
float32, on MNIST with 30 nodes (issue #17, must-show 3). Each cell is one live ``bpcv demo`` (an agent
pool over the embedded MQTT broker, the same code as any live run) with the update encoding as the only
change; the same seed gives every encoding the same data split and initial model.

    .venv/bin/python experiments/compression/run.py                      # 3 encodings x 3 seeds (resumes)
    .venv/bin/python experiments/compression/run.py --seeds 1 --dtypes float32,int8+deflate
    .venv/bin/python experiments/compression/run.py --plot                # compression.png from the CSVs

Setting: 30 active nodes, IID, model mlp:128 (101,770 parameters; no fixed layers, so every encoding
applies), no DP (so the comparison is of the encodings, not of the noise), plain SGD batch 32, learning
rate 0.1, 1 local epoch, 10 rounds, BPCV-FL's default rules. Writes results.csv (one row a cell: final and
best accuracy, update bytes, broker bytes per round) and rounds.csv (accuracy per round).
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

from csv_rows import append_rows, read_rows

from bpcv_app.rundata import bytes_per_round, load_run

COLUMNS = ["dtype", "seed", "nodes", "model", "rounds", "final_accuracy", "best_accuracy", "update_bytes",
           "broker_bytes_per_round", "wall_s"]  # fmt: skip
ROUND_COLUMNS = ["dtype", "seed", "round", "accuracy"]
NODES, MODEL, ROUNDS = 30, "mlp:128", 10


def run_cell(dtype: str, seed: int, work: Path) -> tuple[dict[str, object], list[dict[str, object]]]:
    out = work / f"{dtype.replace('+', '_')}-s{seed}"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "bpcv_app.cli", "demo", "--out", str(out), "--agents", str(NODES), "--standby", "0",
           "--processes", "2", "--rounds", str(ROUNDS), "--epochs", "1", "--model", MODEL, "--dp", "off",
           "--batch", "32", "--lr", "0.1", "--update-encoding", dtype, "--seed", str(seed),
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
        "dtype": dtype, "seed": seed, "nodes": NODES, "model": MODEL, "rounds": len(rounds),
        "final_accuracy": accuracy[-1], "best_accuracy": max(accuracy),
        "update_bytes": int(statistics.median(sizes)) if sizes else "",
        "broker_bytes_per_round": int(statistics.median(sent)) if sent else "", "wall_s": round(wall, 1),
    }  # fmt: skip
    per_round = [{"dtype": dtype, "seed": seed, "round": r["round"], "accuracy": r["accuracy"]} for r in rounds]
    shutil.rmtree(out, ignore_errors=True)
    return row, per_round


def plot() -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_rows(HERE / "rounds.csv")
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
    ax.set(xlabel="round", ylabel="test accuracy", title=f"MNIST, {NODES} nodes, {MODEL}, no DP: update encodings")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    png = HERE / "compression.png"
    fig.savefig(png, dpi=110)
    return png


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dtypes", default="float32,float16+deflate,int8+deflate")
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "compression")
    p.add_argument("--plot", action="store_true")
    a = p.parse_args()
    if not a.plot:
        a.work.mkdir(parents=True, exist_ok=True)
        done = {(r["dtype"], r["seed"]) for r in read_rows(HERE / "results.csv")}
        for seed in a.seeds.split(","):
            for dtype in a.dtypes.split(","):
                if (dtype, seed) in done:
                    print(f"-- {dtype} seed {seed}: in results.csv already")
                    continue
                row, per_round = run_cell(dtype, int(seed), a.work)
                append_rows(HERE / "results.csv", COLUMNS, [row])
                append_rows(HERE / "rounds.csv", ROUND_COLUMNS, per_round)
                print("   ", row, flush=True)
    print(plot())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
