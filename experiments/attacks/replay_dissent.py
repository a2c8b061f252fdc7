"""Replay the dissent rules on the votes a finished run recorded on its chain.

For every round of each run folder (a ``bpcv demo --out`` folder, e.g. one ``run.py --keep-runs`` kept),
every voter's distance from the others (``bpcv.poq.voter_standings``), the round's limit, the Spearman
correlation of its scores with the others' medians, and whether each rule in ``bpcv.poq.DISSENT_RULES``
finds it a dissenter. The votes are what the agents signed; the rules are applied afresh, so one run
answers how every rule would have judged the same voters (the roster is the run's own: a node its rule
eliminated casts no later votes).

    .venv/bin/python experiments/attacks/replay_dissent.py RUN [RUN ...] --csv OUT.csv

Prints, per run and rule: the honest voters found dissenting (and in how many rounds), those found two
rounds running (what eliminates a voter), the round each attacker was first found, and the range of the
correlation among the honest voters past the limit and among the attackers.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from scipy.stats import spearmanr

from bpcv.poq import DISSENT_RULES, dissent_limit, dissenting_voters, voter_standings
from ledger.audit import TaskAudit, audit_task

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # experiments/: the shared csv_rows
from csv_rows import write_rows  # noqa: E402

COLUMNS = [
    "run",
    "round",
    "voter",
    "malicious",
    "median_gap",
    "limit",
    "spearman",
    *(f"dissents_{r}" for r in DISSENT_RULES),
]


def recorded_run(run: Path) -> tuple[set[str], TaskAudit]:
    """A run folder's attackers (from its summary) and its task as its coordinator's chain records it."""
    summary = json.loads((run / "summary.json").read_text())
    malicious = {n["id"] for n in summary["nodes"] if n["behaviour"] != "honest"}
    return malicious, audit_task(run / "nodes" / "coordinator" / "chain", summary["task"]["task_id"])


def replay(run: Path) -> list[dict[str, object]]:
    """One row per voter per round of ``run``."""
    malicious, audit = recorded_run(run)
    rows: list[dict[str, object]] = []
    for record in audit.rounds:
        standings = voter_standings(record.votes, "accuracy")
        if len(standings) < 3:
            continue
        limit = dissent_limit(standings, "accuracy")
        found = {rule: set(dissenting_voters(record.votes, "accuracy", rule)) for rule in DISSENT_RULES}
        for voter, s in sorted(standings.items()):
            rho = float(spearmanr(s.scores, s.others).statistic) if len(s.scores) >= 3 else float("nan")
            rows.append({
                "run": run.name, "round": record.round, "voter": voter, "malicious": voter in malicious,
                "median_gap": round(s.distance, 4), "limit": round(limit, 4), "spearman": round(rho, 3),
                **{f"dissents_{rule}": voter in found[rule] for rule in DISSENT_RULES},
            })  # fmt: skip
    return rows


def two_running(rounds: list[int]) -> bool:
    return any(b == a + 1 for a, b in zip(rounds, rounds[1:], strict=False))


def report(rows: list[dict[str, object]]) -> None:
    for rule in DISSENT_RULES:
        found: dict[str, list[int]] = {}
        for r in rows:
            if r[f"dissents_{rule}"]:
                found.setdefault(str(r["voter"]), []).append(int(r["round"]))  # type: ignore[call-overload]
        bad = {str(r["voter"]) for r in rows if r["malicious"]}
        honest = {v: rs for v, rs in found.items() if v not in bad}
        rho = {
            side: [float(r["spearman"]) for r in rows if r[f"dissents_{rule}"] and (r["malicious"] == side)]  # type: ignore[arg-type]
            for side in (False, True)
        }
        span = {side: f"{min(v):.2f} to {max(v):.2f}" if v else "-" for side, v in rho.items()}
        print(
            f"  {rule:10s} honest dissenters {len(honest)} ({sum(map(len, honest.values()))} rounds), "
            f"two rounds running {sum(two_running(rs) for rs in honest.values())}; attackers first found "
            f"{[found[v][0] if v in found else None for v in sorted(bad)]}; spearman of those found: honest "
            f"{span[False]}, attackers {span[True]}"
        )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--csv", type=Path, help="write every voter-round here")
    args = p.parse_args()
    everything = []
    for run in args.runs:
        rows = replay(run)
        print(run.name)
        report(rows)
        everything += rows
    if args.csv:
        write_rows(args.csv, COLUMNS, everything)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
