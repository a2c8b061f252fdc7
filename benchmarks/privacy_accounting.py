"""Benchmark: an agent's privacy accounting per round, composing every step again against composing one
round onto the kept account.

    .venv/bin/python benchmarks/privacy_accounting.py [--repeats 3]

Before each round an agent asks whether the next round's steps fit its budget (Laplace, delta > 0:
dp-accounting's privacy loss distribution), then states the epsilon spent in its update. Each case is
one agent's whole task, round by round, timed per round in both ways in the same run:

- ``recomposed``: the PLD of all steps so far built again each round (``epsilon_for`` with its cache
  cleared, what a lone agent on a device did before: a pool's agents shared the cache);
- ``kept``: ``PrivacyAccountant``, which keeps the PLD of the steps it spent and composes one round's PLD
  onto it.

Writes benchmarks/results/privacy_accounting.csv: median milliseconds per round (rounds 2.., round 1
builds the PLD whole either way), their ratio, and the largest difference in the stated epsilon.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "experiments"))

from csv_rows import write_rows

from edge_agent.privacy.accountant import PrivacyAccountant, calibrate_noise_multiplier, epsilon_for, forget_accounts

# (what, records in a shard's training split, batch, local epochs, rounds, epsilon budget)
CASES = [
    ("the demo's agent (10 of 12 nodes, 10 rounds)", 5400, 32, 1, 10, 10.0),
    ("a 50-node convergence agent, 80 rounds", 1080, 32, 2, 80, 10.0),
    ("a 10-node scale.py agent, mlp:128, 30 rounds", 5400, 64, 1, 30, 10.0),
]
DELTA = 1e-5
COLUMNS = [
    "case",
    "rounds",
    "steps_per_round",
    "noise_multiplier",
    "recomposed_ms",
    "kept_ms",
    "ratio",
    "max_epsilon_diff",
]


def per_round(
    records: int, batch: int, epochs: int, rounds: int, budget: float
) -> tuple[float, float, float, float, int, float]:
    q = batch / records
    steps = epochs * -(-records // batch)
    noise = calibrate_noise_multiplier("laplace", budget, q, rounds * steps, DELTA)
    recomposed, kept, diff = [], [], 0.0
    acc = PrivacyAccountant("laplace", noise, q, DELTA, budget)
    forget_accounts()
    for r in range(1, rounds + 1):
        epsilon_for.cache_clear()
        start = time.perf_counter()
        before = epsilon_for("laplace", noise, q, r * steps, DELTA) if r * steps else 0.0
        recomposed.append(time.perf_counter() - start)
        start = time.perf_counter()
        assert acc.can_afford(steps), f"round {r} does not fit"
        after = acc.spend(steps)
        kept.append(time.perf_counter() - start)
        diff = max(diff, abs(after - before))
    old, new = statistics.median(recomposed[1:]) * 1e3, statistics.median(kept[1:]) * 1e3
    return old, new, old / new, diff, steps, noise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--csv", default=str(ROOT / "benchmarks" / "results" / "privacy_accounting.csv"))
    args = parser.parse_args()
    rows = []
    for what, records, batch, epochs, rounds, budget in CASES:
        runs = [per_round(records, batch, epochs, rounds, budget) for _ in range(args.repeats)]
        old = statistics.median(r[0] for r in runs)
        new = statistics.median(r[1] for r in runs)
        row = {
            "case": what, "rounds": rounds, "steps_per_round": runs[0][4], "noise_multiplier": round(runs[0][5], 4),
            "recomposed_ms": round(old, 2), "kept_ms": round(new, 2), "ratio": round(old / new, 1),
            "max_epsilon_diff": f"{max(r[3] for r in runs):.1e}",
        }  # fmt: skip
        print(row, flush=True)
        rows.append(row)
    write_rows(Path(args.csv), COLUMNS, rows)


if __name__ == "__main__":
    main()
