"""Draw rounds.csv and tabulate results.csv (both from run.py): accuracy per round under each attack.

    .venv/bin/python experiments/attacks/plot.py [--dir experiments/attacks]

Writes attacks-M.png for every malicious count M run (one panel per behaviour: accuracy per round of
every strategy run there, the no-attack run of the same strategy dashed) and cells.md: the whole
matrix run.py asks for by default, each cell's final accuracy, honest nodes eliminated and the round by
which every attacker was out, or "not run".
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from collections.abc import Callable
from operator import itemgetter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # experiments/: the shared csv_rows
from csv_rows import read_rows
from run import BEHAVIOURS, RULE_COLUMNS, STRATEGIES

DISTANCE_MARK = " †"  # a cell last run under the distance dissent rule
TWO_ROUNDS_MARK = " ‡"  # a cell last run when two outlier rounds running eliminated


def latest_rules(rows: list[dict[str, str]], key: Callable[[dict[str, str]], tuple[str, ...]]) -> list[dict[str, str]]:
    """The rows of each cell (``key``) under the rules (RULE_COLUMNS) it last ran under: rows are appended as
    cells finish, so a cell rerun under newer rules replaces its older run."""

    def rules(r: dict[str, str]) -> tuple[str, ...]:
        return tuple(r[c] for c in RULE_COLUMNS)

    newest = {key(r): rules(r) for r in rows}
    return [r for r in rows if rules(r) == newest[key(r)]]


def mark(r: dict[str, str]) -> str:
    """The marks of a cell run under older rules than the current ones."""
    return (DISTANCE_MARK if r["dissent_rule"] == "distance" else "") + (
        TWO_ROUNDS_MARK if r["outlier_rounds"] == "2" else ""
    )


def plot(rounds: list[dict[str, str]], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[tuple[str, str, str], list[tuple[int, float]]] = defaultdict(list)
    cell = itemgetter("behaviour", "malicious", "strategy", "partition", "seed")
    for r in latest_rules(rounds, cell):
        if r["accuracy"] and r["partition"] == "iid":
            series[(r["behaviour"], r["malicious"], r["strategy"])].append((int(r["round"]), float(r["accuracy"])))
    written = []
    for malicious in sorted({m for _, m, _ in series if m != "0"}, key=int):
        behaviours = [b for b in BEHAVIOURS if b != "none" and any(k[:2] == (b, malicious) for k in series)]
        if not behaviours:
            continue
        cols = min(4, len(behaviours))
        rows = -(-len(behaviours) // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(max(4 * cols, 8), 3.2 * rows), sharey=True, squeeze=False)
        for ax, behaviour in zip(axes.flat, behaviours, strict=False):
            for i, strategy in enumerate(STRATEGIES):
                points = sorted(series.get((behaviour, malicious, strategy), []))
                if not points:
                    continue
                colour = f"C{i}"
                ax.plot(*zip(*points, strict=True), color=colour, label=strategy)
                clean = sorted(series.get(("none", "0", strategy), []))
                if clean:
                    ax.plot(*zip(*clean, strict=True), color=colour, linestyle=":", linewidth=0.8)
            ax.set_title(f"{behaviour} ({malicious} of 50)")
            ax.set_ylim(0, 1)
            ax.grid(alpha=0.3)
        for ax in list(axes.flat)[len(behaviours) :]:
            ax.axis("off")
        axes.flat[0].legend(fontsize=7, loc="lower right")
        fig.supxlabel("round")
        fig.supylabel("global accuracy (MNIST test set)")
        fig.suptitle("Under attack: solid, the attacked run; dotted, the same strategy with no attacker")
        fig.tight_layout()
        path = out / f"attacks-{malicious}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def table(results: list[dict[str, str]]) -> str:
    """Every cell of the default matrix (seed 0), run or not."""
    cell = itemgetter("behaviour", "malicious", "variant", "partition", "seed")
    ran = {
        (r["behaviour"], r["malicious"], r["variant"]): r
        for r in latest_rules(results, cell)
        if r["seed"] == "0" and r["partition"] == "iid"
    }
    lines = [
        "| behaviour | malicious | " + " | ".join(STRATEGIES) + " |",
        "|---|---|" + "---|" * len(STRATEGIES),
    ]
    for malicious in ("5", "15"):
        for behaviour in BEHAVIOURS:
            count = "0" if behaviour == "none" else malicious
            if behaviour == "none" and malicious != "5":
                continue
            cells = []
            for strategy in STRATEGIES:
                r = ran.get((behaviour, count, strategy))
                if r is None:
                    cells.append("not run")
                    continue
                out = r["rounds_to_remove_all"] or "–"
                cells.append(f"{float(r['final_accuracy']):.4f} / {r['honest_eliminated']} / {out}{mark(r)}")
            lines.append(f"| {behaviour} | {count} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def skewed(results: list[dict[str, str]]) -> str:
    """The cells run on skewed (non-IID) data: what voter accountability costs honest voters there."""
    rows = [r for r in results if r["partition"] != "iid"]
    if not rows:
        return ""
    lines = [
        "\n## Skewed data (not in the table or the figures)\n",
        (
            "| partition | behaviour | malicious | strategy | seed | dissent rule | outlier rounds | final accuracy | "
            "honest eliminated | honest voters flagged dissenting | honest dissenter-rounds |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [r["partition"], r["behaviour"], r["malicious"], r["variant"], r["seed"]]
        cells += [r["dissent_rule"] or "–", r["outlier_rounds"] or "–"]
        cells += [r["final_accuracy"]]
        cells += [r["honest_eliminated"], r["honest_dissenters"], r["honest_dissenter_rounds"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", default=str(Path(__file__).resolve().parent))
    args = p.parse_args()
    here = Path(args.dir)
    for path in plot(read_rows(here / "rounds.csv"), here):
        print("wrote", path)
    text = (
        "Each cell: final accuracy / honest nodes eliminated / round by which every attacker was out "
        "(– never). 50 active nodes, 20 rounds, seed 0; strategies as run.py names them. BPCV-FL's cells ran "
        "with the rank-aware dissent rule and, under the outlier policy, eliminated a node that was an outlier "
        f"three rounds running; those marked{DISTANCE_MARK} ran with the distance rule before it, those "
        f"marked{TWO_ROUNDS_MARK} eliminated after two rounds running.\n\n"
        + table(read_rows(here / "results.csv"))
        + "\n"
        + skewed(read_rows(here / "results.csv"))
    )
    (here / "cells.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
