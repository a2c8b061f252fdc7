"""Replay the outlier policy on the votes a finished run recorded on its chain, for several counts of
rounds running an outlier must be one before it is eliminated (``coordinator.rounds.OUTLIER_ROUNDS``).

For every round of each run folder (a ``bpcv demo --out`` folder, e.g. one ``run.py --keep-runs`` kept):
each node's quality Q from the recorded votes under the task's own quality and dissent rules, and
whether it is an outlier of that round (``bpcv.poq.outliers``). Then, for each count, the nodes that
count would have eliminated: one a round, the worst of those that have been an outlier that many rounds
running. The roster is the run's own (a node its coordinator eliminated casts and receives no later
votes), so a count other than the run's is an estimate; a count's replay on a run made with that count
reproduces the run's own eliminations for quality.

    .venv/bin/python experiments/attacks/replay_outliers.py RUN [RUN ...] [--counts 2 3 4] [--csv OUT.csv]

Prints, per run and count, the honest nodes eliminated (with their rounds), and how many of the
attackers that were ever outliers it eliminates (an attacker caught otherwise in the run, as a
dissenting voter or an invalid update, casts no later votes and is seldom an outlier long enough).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from replay_dissent import recorded_run

from bpcv.poq import outliers, round_quality
from coordinator.rounds import next_outlier_streaks

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # experiments/: the shared csv_rows
from csv_rows import write_rows  # noqa: E402

COLUMNS = ["run", "round", "node", "malicious", "quality", "outlier"]


def outliers_by_round(run: Path) -> tuple[set[str], list[list[str]], list[dict[str, object]]]:
    """The run's attackers, each round's outliers worst first, and one row per node per round."""
    malicious, audit = recorded_run(run)
    spec = audit.spec
    assert spec is not None, f"{run}: no task on the chain"
    per_round: list[list[str]] = []
    rows: list[dict[str, object]] = []
    for record in audit.rounds:
        quality, _ = round_quality(record.votes, spec.metric, spec.quality_rule, spec.voter_dissent)
        worse = outliers(quality, spec.metric)
        per_round.append(worse)
        rows += [
            {"run": run.name, "round": record.round, "node": node, "malicious": node in malicious,
             "quality": round(q, 4), "outlier": node in worse}
            for node, q in sorted(quality.items())
        ]  # fmt: skip
    return malicious, per_round, rows


def eliminated(per_round: list[list[str]], count: int) -> list[tuple[int, str]]:
    """(round, node) the outlier policy eliminates when ``count`` rounds running make an outlier go."""
    streaks: dict[str, int] = {}
    out: list[tuple[int, str]] = []
    gone: set[str] = set()
    for round_no, worse in enumerate(per_round, start=1):
        streaks = next_outlier_streaks([n for n in worse if n not in gone], streaks)
        ready = [n for n in worse if streaks.get(n, 0) >= count]
        if ready:
            gone.add(ready[0])
            out.append((round_no, ready[0]))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--counts", nargs="+", type=int, default=[2, 3, 4])
    p.add_argument("--csv", type=Path, help="write every node-round here")
    args = p.parse_args()
    everything = []
    for run in args.runs:
        malicious, per_round, rows = outliers_by_round(run)
        everything += rows
        print(run.name)
        for count in args.counts:
            gone = eliminated(per_round, count)
            honest = [f"{n} (round {r})" for r, n in gone if n not in malicious]
            caught = [r for r, n in gone if n in malicious]
            found = {n for worse in per_round for n in worse} & malicious
            last = max(caught, default="-")
            print(f"  {count} rounds running: honest eliminated {len(honest)} {honest}; attackers eliminated "
                  f"{len(caught)} of the {len(found)} ever outliers, the last in round {last}")  # fmt: skip
    if args.csv:
        write_rows(args.csv, COLUMNS, everything)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
