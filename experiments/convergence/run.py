"""Convergence at the paper's scale (its Figs 2-3): accuracy per round of BPCV-FL against FedAvg,
FedPAGE and Overlap-FedAvg on MNIST (and CIFAR-10 from the official tarball), 30 and 50 data nodes, IID
and Dirichlet(0.5) splits. Each cell is one ``bpcv demo`` (an agent pool over the embedded MQTT broker,
the same agent and coordinator code as any live run), without DP.

    .venv/bin/python experiments/convergence/run.py                   # the MNIST matrix (resumes)
    .venv/bin/python experiments/convergence/run.py --nodes 30 --partition iid --strategy bpcv fedavg
    .venv/bin/python experiments/convergence/run.py --dataset cifar10 --data-path cifar-10-python.tar.gz
    .venv/bin/python experiments/convergence/run.py --list            # the cells, run or not

A cell is (dataset, nodes, partition, strategy, model, batch, lr, lr_decay, epochs, seed). ``bpcv`` is
BPCV-FL by the paper's rules (the lowest-ranked node eliminated each round down to half the nodes,
mean quality), ``bpcv-outlier`` by the demo's defaults (outlier elimination, median quality,
accountable voters); the baselines aggregate every update and eliminate no one. Every cell has 10%
standby nodes on top of ``nodes`` active ones (BPCV-FL admits them in place of the eliminated). Each finished cell appends one line to
results.csv (a cell already there is skipped, so an interrupted matrix resumes) and its accuracy per
round to rounds.csv; a cell that stopped on its time limit short of its rounds counts as not run, and its
rerun replaces its earlier lines in both files; plot.py draws the curves and writes cells.md. The run folder is deleted after
reading it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # experiments/: the shared csv_rows
from csv_rows import append_rows, model_label, read_rows, write_rows
from demo_rules import DEMO_RULES, PAPER_RULES, baseline_rules, bpcv_rules

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
NODES = [30, 50]
PARTITIONS = ["iid", "dirichlet:0.5"]
STRATEGIES = ["bpcv", "bpcv-outlier", "bpcv-outlier-momentum", "fedavg", "fedpage", "overlap-fedavg"]
# BPCV-FL under the demo's rules with Overlap-FedAvg's server momentum as its aggregate: supervision
# decides who is in, the momentum rule how they are combined
OUTLIER_MOMENTUM = bpcv_rules("outlier", "median", accountable=True, aggregator="overlap-fedavg")
# The Keras example's MNIST CNN (two convolutions, Dropout 0.5, 34,826 parameters on MNIST): the CNNs
# without Dropout tried first (cnn:16,32 and cnn:16,32,64) plateau near 0.989, this one does not.
MODELS = {
    "mnist": str(HERE / "models" / "cnn32-64-dropout.json"),
    "cifar10": str(HERE / "models" / "cnn32-64-dropout-cifar10.json"),
}
# How every cell trains (the defaults of --batch, --lr, --lr-decay, --epochs; no DP): also the "paper" workload
# of benchmarks/scale.py and experiments/compression/run.py
TRAINING = {"batch": 32, "lr": 0.3, "lr_decay": 0.98, "epochs": 2}
# The same as `bpcv demo` options (--batch 32 --lr 0.3 ...)
TRAINING_OPTIONS = [a for option, v in TRAINING.items() for a in (f"--{option.replace('_', '-')}", str(v))]
# The task gets this share of the cell timeout as its own time limit: a cell out of time stops cleanly
# (stopped_because "time limit") and is recorded, before the demo itself gives up.
TASK_SHARE = 0.9
COLUMNS = [
    "dataset", "nodes", "partition", "strategy", "model", "batch", "lr", "lr_decay", "epochs", "rounds", "final_accuracy",
    "best_accuracy", "rounds_to_95", "rounds_to_99", "seed", "wall_s", "stopped_because", "eliminated",
]  # fmt: skip
ROUND_COLUMNS = ["dataset", "nodes", "partition", "strategy", "model", "batch", "lr", "lr_decay", "epochs", "seed", "round", "accuracy", "elapsed_s"]  # fmt: skip
KEY = ["dataset", "nodes", "partition", "strategy", "model", "batch", "lr", "lr_decay", "epochs", "seed"]


def strategy_options(strategy: str) -> list[str]:
    """bpcv demo options of a strategy: BPCV-FL by the paper's rules (``bpcv``) or by the demo's defaults
    (``bpcv-outlier``: outlier elimination, median quality, accountable voters; ``bpcv-outlier-momentum``:
    the same, aggregated by Overlap-FedAvg's rule), no elimination for a baseline."""
    composed = {"bpcv": PAPER_RULES, "bpcv-outlier": DEMO_RULES, "bpcv-outlier-momentum": OUTLIER_MOMENTUM}
    return composed.get(strategy) or baseline_rules(strategy)


def standby_for(nodes: int, fraction: float) -> int:
    return max(1, round(nodes * fraction))


def first_round(rounds: list[dict[str, object]], threshold: float) -> int | str:
    """The first round whose global accuracy reaches ``threshold`` ("" when none did)."""
    for row in rounds:
        value = row["accuracy"]
        if isinstance(value, (int, float)) and value >= threshold:
            return int(str(row["round"]))
    return ""


def measure(run: Path) -> tuple[dict[str, object], list[dict[str, object]]]:
    """The cell's figures from the demo's summary.json and coordinator.json."""
    summary = json.loads((run / "summary.json").read_text())
    rounds = json.loads((run / "coordinator.json").read_text())["rounds"]
    # elapsed_s: seconds since the task started when the round was decided (the budget in README.md)
    per_round = [{"round": r["round"], "accuracy": r["accuracy"], "elapsed_s": r.get("elapsed_s", "")} for r in rounds]
    accuracies = [r["accuracy"] for r in rounds if r["accuracy"] is not None]
    figures = {
        "rounds": len(rounds),
        "final_accuracy": summary["final_accuracy"],
        "best_accuracy": max(accuracies) if accuracies else "",
        "rounds_to_95": first_round(per_round, 0.95),
        "rounds_to_99": first_round(per_round, 0.99),
        "stopped_because": summary["stopped_because"],
        # nobody attacks here, so every node eliminated or refused is an honest one
        "eliminated": sum(len(r.get("invalid") or []) + bool(r.get("eliminated")) for r in rounds),
    }
    return figures, per_round


def key_of(row: dict[str, object]) -> tuple[str, ...]:
    return tuple(str(row[k]) for k in KEY)


def done_cells(path: Path, rounds: int) -> set[tuple[str, ...]]:
    """The cells of results.csv that ran to the end: one stopped on its time limit before ``rounds`` runs again."""
    return {key_of(r) for r in read_rows(path) if not cut_short(r, rounds)}


def cut_short(row: dict[str, str], rounds: int) -> bool:
    return row["stopped_because"] == "time limit" and int(row["rounds"]) < rounds


def drop_cell(path: Path, columns: list[str], key: tuple[str, ...]) -> None:
    """Remove the lines of the cell ``key`` from ``path`` (an earlier, cut-short run of a cell run again)."""
    rows = read_rows(path)
    kept = [r for r in rows if key_of(r) != key]
    if len(kept) < len(rows):
        write_rows(path, columns, kept)


def run_cell(args: argparse.Namespace, cell: dict[str, object]) -> None:
    nodes, partition, strategy, seed = cell["nodes"], str(cell["partition"]), str(cell["strategy"]), cell["seed"]
    assert isinstance(nodes, int)
    standby = standby_for(nodes, args.standby_fraction)
    name = f"{args.dataset}-{nodes}-{partition.replace(':', '')}-{strategy}-{seed}"
    run = Path(args.work) / name
    shutil.rmtree(run, ignore_errors=True)
    command = [
        str(ROOT / ".venv" / "bin" / "bpcv"), "demo", "--dataset", args.dataset,
        "--agents", str(nodes + standby), "--standby", str(standby), "--min-nodes", str(max(2, nodes // 2)),
        "--rounds", str(args.rounds), "--partition", partition, "--dp", "off", "--model", args.model,
        "--batch", str(args.batch), "--lr", str(args.lr), "--lr-decay", str(args.lr_decay), "--epochs", str(args.epochs),
        "--processes", str(args.processes), "--seed", str(seed), "--out", str(run),
        "--timeout", str(args.cell_timeout), "--time-limit", str(round(TASK_SHARE * args.cell_timeout)),
        *strategy_options(strategy),
    ]  # fmt: skip
    if args.data_path:
        command += ["--data-path", str(Path(args.data_path).resolve())]
    print(f"[{time.strftime('%H:%M:%S')}] {name}: {' '.join(command[1:])}", flush=True)
    log = Path(args.work) / f"{name}.log"
    started = time.monotonic()
    with log.open("w") as out:
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, check=False)
    wall = round(time.monotonic() - started, 1)
    if done.returncode != 0 or not (run / "summary.json").exists():
        print(f"  failed (exit {done.returncode}): see {log} and {run}", flush=True)
        return
    figures, per_round = measure(run)
    row = {**cell, **figures, "wall_s": wall}
    for file, columns in (("results.csv", COLUMNS), ("rounds.csv", ROUND_COLUMNS)):
        drop_cell(Path(args.results) / file, columns, key_of(cell))
    append_rows(Path(args.results) / "results.csv", COLUMNS, [row])
    where = {k: cell[k] for k in ROUND_COLUMNS if k in cell}
    append_rows(Path(args.results) / "rounds.csv", ROUND_COLUMNS, [{**where, **r} for r in per_round])
    print(
        f"  final {figures['final_accuracy']} best {figures['best_accuracy']} after {figures['rounds']} rounds "
        f"({figures['stopped_because']}); 95% at round {figures['rounds_to_95'] or '-'}, 99% at "
        f"{figures['rounds_to_99'] or '-'}; {wall}s",
        flush=True,
    )
    if figures["stopped_because"] != "round limit" and len(per_round) < args.rounds:
        print(f"  ! stopped after {len(per_round)} of {args.rounds} rounds: {figures['stopped_because']}", flush=True)
    shutil.rmtree(run, ignore_errors=True)
    log.unlink(missing_ok=True)


def cells(args: argparse.Namespace) -> list[dict[str, object]]:
    """Every cell asked for, in the order they run (all strategies of a setting side by side first)."""
    training = {
        "model": model_label(args.model),
        "batch": args.batch,
        "lr": args.lr,
        "lr_decay": args.lr_decay,
        "epochs": args.epochs,
    }
    return [
        {"dataset": args.dataset, "nodes": n, "partition": p, "strategy": s, **training, "seed": seed}
        for seed in args.seeds
        for n in args.nodes
        for p in args.partition
        for s in args.strategy
    ]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="mnist", choices=sorted(MODELS))
    p.add_argument("--data-path", default=None, help="cifar10: the official cifar-10-python.tar.gz (or its folder)")
    p.add_argument("--nodes", nargs="+", type=int, default=NODES, help="active data nodes (default 30 50)")
    p.add_argument("--partition", nargs="+", default=PARTITIONS, help="iid and/or dirichlet:ALPHA")
    p.add_argument("--strategy", nargs="+", default=STRATEGIES, choices=STRATEGIES)
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--rounds", type=int, default=80)
    p.add_argument(
        "--model", default=None, help="a preset or a Keras .json file (default models/cnn32-64-dropout*.json)"
    )
    p.add_argument("--batch", type=int, default=TRAINING["batch"])
    p.add_argument("--lr", type=float, default=TRAINING["lr"], help="plain SGD's learning rate (no DP)")
    p.add_argument(
        "--lr-decay", type=float, default=TRAINING["lr_decay"], help="round r trains at lr * lr_decay**(r-1)"
    )
    p.add_argument("--epochs", type=int, default=TRAINING["epochs"], help="local epochs per round")
    p.add_argument("--standby-fraction", type=float, default=0.1, help="standby nodes, of the active (at least 1)")
    p.add_argument("--processes", type=int, default=2, help="agent processes of each demo")
    p.add_argument(
        "--cell-timeout",
        type=float,
        default=6 * 3600,
        help="the demo gives up after this many seconds; the task stops at 90%% of it",
    )
    p.add_argument("--work", default=str(ROOT / "runs" / "convergence"), help="run folders and logs while running")
    p.add_argument("--results", default=str(HERE), help="where results.csv and rounds.csv go")
    p.add_argument("--list", action="store_true", help="print the cells and whether each has run")
    return p


def main() -> int:
    args = parser().parse_args()
    args.model = args.model or MODELS[args.dataset]
    if args.dataset == "cifar10" and not args.data_path:
        raise SystemExit("--dataset cifar10 needs --data-path: the official cifar-10-python.tar.gz")
    done = done_cells(Path(args.results) / "results.csv", args.rounds)
    for cell in cells(args):
        ran = key_of(cell) in done
        if args.list:
            print(*(cell[k] for k in KEY), "done" if ran else "not run")
        elif not ran:
            Path(args.work).mkdir(parents=True, exist_ok=True)
            run_cell(args, cell)
    return 0


if __name__ == "__main__":
    sys.exit(main())
