"""Attacks at the paper's scale (its Fig. 6): live tasks under every attack behaviour, BPCV-FL against
the baselines, each cell one ``bpcv demo`` (an agent pool over the embedded MQTT broker, the same agent
and coordinator code as any live run).

    .venv/bin/python experiments/attacks/run.py                      # the whole matrix (resumes)
    .venv/bin/python experiments/attacks/run.py --malicious 5 --behaviour alie --strategy bpcv-outlier-median
    .venv/bin/python experiments/attacks/run.py --list               # the cells, run or not

A cell is (behaviour, malicious, strategy, partition, seed); the matrix is IID, ``--partition
dirichlet:0.5`` runs a cell on skewed data (what voter accountability costs honest voters whose
validation data is unusual: ``honest_dissenters``). ``strategy`` is a baseline aggregator (fedavg, median,
trimmed-mean, multi-krum, fltrust; no elimination, every vote counts) or ``bpcv-POLICY-RULE``: the
paper's aggregation with elimination policy ``lowest`` or ``outlier``, quality rule ``mean`` or
``median``, and accountable voters. Each finished cell appends one line to results.csv (a cell already
there is skipped, so an interrupted matrix resumes) and its accuracy per round to rounds.csv; plot.py
draws the figures and writes the table of cells not run. The run folder is deleted after reading it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bpcv.poq import DISSENT_RULES
from coordinator.rounds import OUTLIER_ROUNDS

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # experiments/: the shared csv_rows
from csv_rows import append_rows, read_rows
from demo_rules import baseline_rules, bpcv_rules

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
BEHAVIOURS = [
    "none", "random-weights", "label-flip", "sign-flip", "scaling", "free-ride", "free-ride-noise",
    "free-ride-mimic", "lying-voter", "alie", "collude-group", "mixed",
]  # fmt: skip
# "mixed": several attacks in one run, in turn (a poisoner, a free-rider, liars, a colluding pair ...)
MIXED = ["random-weights", "label-flip", "scaling", "lying-voter", "collude-group"]
STRATEGIES = [
    "bpcv-outlier-median", "bpcv-outlier-mean", "bpcv-lowest-mean", "bpcv-lowest-median",
    "fedavg", "median", "trimmed-mean", "multi-krum", "fltrust",
]  # fmt: skip
COLUMNS = [
    "behaviour", "malicious", "nodes", "strategy", "policy", "quality_rule", "final_accuracy",
    "honest_eliminated", "rounds_to_remove_all", "seed",
    "malicious_eliminated", "best_accuracy", "malicious_reward_share", "malicious_unpaid_from", "rounds",
    "accountable_voters", "variant", "wall_s", "partition", "honest_dissenters", "honest_dissenter_rounds",
    "dissent_rule", "outlier_rounds",
]  # fmt: skip
ROUND_COLUMNS = [
    "behaviour", "malicious", "strategy", "partition", "seed", "round", "accuracy", "honest_eliminated_so_far",
    "dissent_rule", "outlier_rounds",
]  # fmt: skip
RULE_COLUMNS = ("dissent_rule", "outlier_rounds")


def demo_options(strategy: str, dissent_rule: str) -> tuple[list[str], str, str, bool]:
    """bpcv demo options of a strategy column; its policy, quality rule and voter accountability."""
    if strategy.startswith("bpcv-"):
        _, policy, rule = strategy.split("-")
        return bpcv_rules(policy, rule, accountable=True, dissent_rule=dissent_rule), policy, rule, True
    return baseline_rules(strategy), "none", "-", False


def behaviour_list(behaviour: str, malicious: int) -> str:
    if behaviour == "mixed":
        return ",".join(MIXED[i % len(MIXED)] for i in range(malicious))
    return behaviour


def measure(run: Path, behaviour: str, malicious_count: int) -> tuple[dict[str, object], list[dict[str, object]]]:
    """The cell's figures from the demo's summary.json and coordinator.json."""
    summary = json.loads((run / "summary.json").read_text())
    rounds = json.loads((run / "coordinator.json").read_text())["rounds"]
    malicious = {n["id"] for n in summary["nodes"] if n["behaviour"] != "honest"}
    assert len(malicious) == (0 if behaviour == "none" else malicious_count), "the demo made other attackers"
    out: set[str] = set()
    honest_out = 0
    remove_all = None
    unpaid_from = None
    paid_total = paid_malicious = 0.0
    per_round = []
    honest_dissenters: set[str] = set()
    honest_dissenter_rounds = 0
    for row in rounds:
        flagged = set(row.get("dissenters", [])) - malicious  # honest voters whose votes were set aside
        honest_dissenters |= flagged
        honest_dissenter_rounds += len(flagged)
        gone = set(row["invalid"]) | ({row["eliminated"]} if row["eliminated"] else set())
        honest_out += len(gone - malicious - out)
        out |= gone
        if malicious and remove_all is None and malicious <= out:
            remove_all = row["round"]
        paid = {n for n, v in row["rewards"].items() if v > 0}
        paid_total += sum(row["rewards"].values())
        paid_malicious += sum(v for n, v in row["rewards"].items() if n in malicious)
        if malicious and paid & malicious:
            unpaid_from = None
        elif malicious and unpaid_from is None:
            unpaid_from = row["round"]
        per_round.append({"round": row["round"], "accuracy": row["accuracy"], "honest_eliminated_so_far": honest_out})
    accuracies = [r["accuracy"] for r in rounds if r["accuracy"] is not None]
    figures = {
        "final_accuracy": summary["final_accuracy"],
        "best_accuracy": max(accuracies) if accuracies else None,
        "honest_eliminated": honest_out,
        "malicious_eliminated": len(malicious & out),
        "rounds_to_remove_all": remove_all if malicious else "",
        "malicious_reward_share": round(paid_malicious / paid_total, 4) if malicious and paid_total else "",
        "malicious_unpaid_from": unpaid_from if malicious else "",
        "rounds": len(rounds),
        "honest_dissenters": len(honest_dissenters),
        "honest_dissenter_rounds": honest_dissenter_rounds,
    }
    return figures, per_round


def cell_rules(strategy: str, dissent_rule: str) -> dict[str, str]:
    """The rules a strategy column's cells run under (RULE_COLUMNS): the dissent rule for BPCV-FL's (voters
    held to account), and under the outlier policy how many rounds running an outlier is eliminated after
    (coordinator.rounds.OUTLIER_ROUNDS); "" where a rule does not apply."""
    return {
        "dissent_rule": dissent_rule if strategy.startswith("bpcv-") else "",
        "outlier_rounds": str(OUTLIER_ROUNDS) if strategy.startswith("bpcv-outlier-") else "",
    }


def done_cells(path: Path) -> set[tuple[str, ...]]:
    return {
        (r["behaviour"], r["malicious"], r["variant"], r["partition"], r["seed"], *(r[c] for c in RULE_COLUMNS))
        for r in read_rows(path)
    }


def run_cell(args: argparse.Namespace, behaviour: str, malicious: int, strategy: str, seed: int) -> None:
    options, policy, rule, accountable = demo_options(strategy, args.dissent_rule)
    count = 0 if behaviour == "none" else malicious
    run = Path(args.work) / f"{behaviour}-{malicious}-{strategy}-{args.partition.replace(':', '')}-{seed}"
    shutil.rmtree(run, ignore_errors=True)
    command = [
        str(ROOT / ".venv" / "bin" / "bpcv"), "demo", "--agents", str(args.nodes + args.standby),
        "--standby", str(args.standby), "--rounds", str(args.rounds), "--dp", "off", "--model", args.model,
        "--batch", str(args.batch), "--lr", str(args.lr), "--processes", str(args.processes),
        "--seed", str(seed), "--out", str(run), "--min-nodes", str(args.nodes // 2),
        "--partition", args.partition, *options,
    ]  # fmt: skip
    if count:
        command += ["--malicious", str(count), "--behaviour", behaviour_list(behaviour, count)]
    started = time.monotonic()
    print(f"[{time.strftime('%H:%M:%S')}] {behaviour} x{count} {strategy} {args.partition} seed {seed}", flush=True)
    log = Path(args.work) / f"{run.name}.log"
    done = subprocess.run(
        command, stdout=log.open("w"), stderr=subprocess.STDOUT, timeout=args.cell_timeout, check=False
    )
    wall = round(time.monotonic() - started, 1)
    if done.returncode != 0 or not (run / "coordinator.json").exists():
        print(f"  failed (exit {done.returncode}): see {log}", flush=True)
        return
    figures, per_round = measure(run, behaviour, count)
    row = {
        "behaviour": behaviour, "malicious": malicious, "nodes": args.nodes, "strategy": strategy,
        "policy": policy, "quality_rule": rule, "seed": seed, "accountable_voters": accountable, "wall_s": wall,
        "variant": strategy, "partition": args.partition, **cell_rules(strategy, args.dissent_rule),
        **figures,
    }  # fmt: skip
    row["strategy"] = "bpcv" if strategy.startswith("bpcv-") else strategy
    append_rows(Path(args.results) / "results.csv", COLUMNS, [row])
    key = {
        "behaviour": behaviour,
        "malicious": malicious,
        "strategy": strategy,
        "partition": args.partition,
        "seed": seed,
        **{c: row[c] for c in RULE_COLUMNS},
    }
    append_rows(Path(args.results) / "rounds.csv", ROUND_COLUMNS, [{**key, **r} for r in per_round])
    print(f"  final {figures['final_accuracy']} honest out {figures['honest_eliminated']} all out by "
          f"{figures['rounds_to_remove_all'] or '-'} in {wall}s", flush=True)  # fmt: skip
    if not args.keep_runs:
        shutil.rmtree(run, ignore_errors=True)
        log.unlink(missing_ok=True)


def cells(args: argparse.Namespace) -> list[tuple[str, int, str, int]]:
    """Every cell of the matrix asked for, in the order they run: each behaviour at each malicious count,
    each strategy; the no-attack row once per strategy (its malicious count is 0)."""
    out = []
    for seed in args.seeds:
        for malicious in args.malicious:
            for behaviour in args.behaviour:
                if behaviour == "none" and malicious != min(args.malicious):
                    continue
                for strategy in args.strategy:
                    out.append((behaviour, 0 if behaviour == "none" else malicious, strategy, seed))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--behaviour", nargs="+", default=BEHAVIOURS, choices=BEHAVIOURS)
    p.add_argument("--malicious", nargs="+", type=int, default=[5, 15])
    p.add_argument("--strategy", nargs="+", default=STRATEGIES, choices=STRATEGIES)
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--nodes", type=int, default=50, help="active data nodes")
    p.add_argument("--standby", type=int, default=5)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--partition", default="iid", help="iid or dirichlet:ALPHA (each node's train and validation data)")
    p.add_argument("--model", default="wavelet:2,4,7")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.4)
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--cell-timeout", type=float, default=1800)
    p.add_argument("--work", default=str(ROOT / "runs" / "attacks"))
    p.add_argument(
        "--dissent-rule", default="rank-aware", choices=DISSENT_RULES, help="how BPCV-FL's cells find dissenting voters"
    )
    p.add_argument(
        "--keep-runs", action="store_true", help="keep each cell's run directory (chain, summaries) in --work"
    )
    p.add_argument("--results", default=str(HERE), help="where results.csv and rounds.csv go")
    p.add_argument("--list", action="store_true", help="print the cells and whether each has run")
    args = p.parse_args()
    Path(args.work).mkdir(parents=True, exist_ok=True)
    done = done_cells(Path(args.results) / "results.csv")
    todo = cells(args)
    for behaviour, malicious, strategy, seed in todo:
        ran = (behaviour, str(malicious), strategy, args.partition, str(seed))
        rules = cell_rules(strategy, args.dissent_rule)
        ran += tuple(rules[c] for c in RULE_COLUMNS)
        if args.list:
            print(*ran, "done" if ran in done else "not run")
            continue
        if ran in done:
            continue
        run_cell(args, behaviour, malicious, strategy, seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
