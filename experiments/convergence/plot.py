"""Draw rounds.csv and tabulate results.csv (both from run.py): accuracy per round of each strategy.

    .venv/bin/python experiments/convergence/plot.py [--dir experiments/convergence]

Writes convergence-DATASET.png for every data set run (one panel per nodes and partition: the global
test accuracy per round of every strategy run there, the mean over seeds where several ran, with the
95% and 99% lines) and cells.md: every cell of the default matrix (seed 0, the data set's default
model, for MNIST and for CIFAR-10), its final accuracy and the round it first reached 95%, or "not run".
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # experiments/: the shared csv_rows
from csv_rows import model_label, read_rows
from run import MODELS, NODES, PARTITIONS, STRATEGIES, parser

LABELS = {
    "bpcv": "BPCV-FL (paper's rules)",
    "bpcv-outlier": "BPCV-FL (outlier policy)",
    "bpcv-outlier-momentum": "BPCV-FL (outlier policy, server momentum)",
}


def default_setting(row: dict[str, str]) -> bool:
    """Whether a row was run with run.py's default training for its data set (model, batch, lr, epochs)."""
    defaults = parser().parse_args([])
    wanted = {
        "model": model_label(MODELS[row["dataset"]]), "batch": defaults.batch, "lr": defaults.lr, "lr_decay": defaults.lr_decay,
        "epochs": defaults.epochs,
    }  # fmt: skip
    return all(str(row[k]) == str(v) for k, v in wanted.items())


def curves(rounds: list[dict[str, str]]) -> dict[tuple[str, int, str, str], list[tuple[int, float]]]:
    """(dataset, nodes, partition, strategy) -> [(round, accuracy)], the mean over the seeds run."""
    values: dict[tuple[str, int, str, str], dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rounds:
        if r["accuracy"] and default_setting(r):
            key = (r["dataset"], int(r["nodes"]), r["partition"], r["strategy"])
            values[key][int(r["round"])].append(float(r["accuracy"]))
    return {k: sorted((n, sum(v) / len(v)) for n, v in by_round.items()) for k, by_round in values.items()}


def plot(rounds: list[dict[str, str]], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    series = curves(rounds)
    written = []
    for dataset in sorted({k[0] for k in series}):
        panels = sorted({(n, p) for d, n, p, _ in series if d == dataset}, key=lambda x: (x[0], x[1] != "iid", x[1]))
        cols = min(2, len(panels))
        rows = -(-len(panels) // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(5.5 * cols, 3.8 * rows), sharey=True, squeeze=False)
        handles = {}
        for ax, (nodes, partition) in zip(axes.flat, panels, strict=False):
            for i, strategy in enumerate(STRATEGIES):
                points = series.get((dataset, nodes, partition, strategy))
                if points:
                    label = LABELS.get(strategy, strategy)
                    (line,) = ax.plot(
                        *zip(*points, strict=True),
                        color=f"C{i}",
                        linewidth=1.6 if i == 0 else 1.0,
                        marker="o" if len(points) <= 10 else None,  # a short run's points stay visible
                        markersize=3,
                    )
                    handles[label] = line
            last = max((pts[-1][0] for k, pts in series.items() if k[:3] == (dataset, nodes, partition)), default=1)
            ax.set_xlim(0.5, last + 0.5)
            if last <= 10:
                ax.set_xticks(range(1, last + 1))
            else:
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            for level in (0.95, 0.99):
                ax.axhline(level, color="grey", linestyle=":", linewidth=0.8)
            ax.set_title(f"{nodes} nodes, {partition}")
            ax.grid(alpha=0.3)
        for ax in list(axes.flat)[len(panels) :]:
            ax.axis("off")
        low = min(a for k, pts in series.items() if k[0] == dataset for _, a in pts)
        axes.flat[0].set_ylim(max(0.0, min(0.9, low) - 0.02), 1.0)
        axes.flat[0].legend(handles.values(), handles.keys(), fontsize=8, loc="lower right")
        fig.supxlabel("round")
        fig.supylabel(f"global accuracy ({dataset} test set)")
        fig.suptitle(f"Convergence on {dataset}: BPCV-FL against the baselines (no DP)")
        fig.tight_layout()
        path = out / f"convergence-{dataset}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def table(results: list[dict[str, str]], dataset: str) -> str:
    """Every cell of the default matrix of ``dataset`` (seed 0, its default model), run or not."""
    ran = {
        (int(r["nodes"]), r["partition"], r["strategy"]): r
        for r in results
        if r["dataset"] == dataset and r["seed"] == "0" and default_setting(r)
    }
    lines = ["| nodes | partition | " + " | ".join(STRATEGIES) + " |", "|---|---|" + "---|" * len(STRATEGIES)]
    for nodes in NODES:
        for partition in PARTITIONS:
            cells = []
            for strategy in STRATEGIES:
                r = ran.get((nodes, partition, strategy))
                if r is None:
                    cells.append("not run")
                    continue
                short = f" ({r['rounds']} rounds: {r['stopped_because']})" if r["rounds"] != "80" else ""
                cells.append(
                    f"{float(r['final_accuracy']):.4f} / {r['rounds_to_95'] or '–'} / {r['rounds_to_99'] or '–'}{short}"
                )
            lines.append(f"| {nodes} | {partition} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", default=str(Path(__file__).resolve().parent))
    args = p.parse_args()
    here = Path(args.dir)
    for path in plot(read_rows(here / "rounds.csv"), here):
        print("wrote", path)
    results = read_rows(here / "results.csv")
    text = (
        "Each cell: final accuracy on the test set / the first rounds at which it reached 95% and 99% (– never), "
        "after 80 rounds, seed 0, no DP, 10% standby nodes, run.py's default training (batch, lr, lr_decay, "
        "epochs); bpcv: the paper's rules (lowest-ranked eliminated, mean quality), bpcv-outlier: the demo's "
        "(outlier elimination, median quality, accountable voters), the baselines without elimination. "
        "Written by plot.py from results.csv.\n"
    )
    for dataset in MODELS:
        text += f"\n## {dataset}, model {model_label(MODELS[dataset])}\n\n" + table(results, dataset) + "\n"
    others = [r for r in results if not default_setting(r)]
    if others:
        text += "\n## Other training settings run (not in the table or the plot)\n\n"
        text += "| data set | nodes | partition | strategy | model | batch | lr | lr decay | epochs | rounds run | final | best | 95% at | 99% at |\n"
        text += "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
        for r in others:
            cells = [
                r[k] or "–"
                for k in ("dataset", "nodes", "partition", "strategy", "model", "batch", "lr", "lr_decay", "epochs")
            ]
            run = r["rounds"] + ("" if r["stopped_because"] == "round limit" else f" ({r['stopped_because']})")
            cells += [run, r["final_accuracy"], r["best_accuracy"], r["rounds_to_95"] or "–", r["rounds_to_99"] or "–"]
            text += "| " + " | ".join(cells) + " |\n"
    (here / "cells.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
