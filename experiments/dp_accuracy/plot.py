"""Plot results.csv (from run.py, one or more files) like the paper's Figures 4-5, and print the gaps.

    .venv/bin/python experiments/dp_accuracy/plot.py [--note "batch 32, lr 0.2"] results.csv [more.csv ...]

Writes accuracy<suffix>.png beside the first CSV (results-X.csv gives accuracy-X.png) and prints a
Markdown table: accuracy at rounds 20, 40 and
the last round for every configuration, the gap to no DP in points, and each agent's total epsilon.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path


def load(paths: list[Path]) -> dict[str, list[dict[str, str]]]:
    runs: dict[str, list[dict[str, str]]] = defaultdict(list)
    for path in paths:
        with path.open() as f:
            for row in csv.DictReader(f):
                runs[row["config"]].append(row)
    return {k: sorted(v, key=lambda r: int(r["round"])) for k, v in runs.items()}


def label(rows: list[dict[str, str]]) -> str:
    r = rows[-1]
    if r["mechanism"] == "off":
        return "no DP"
    delta = float(r["delta"])
    return (
        f"{r['mechanism'].capitalize()}, total ε = {float(r['epsilon_spent']):.3g} per agent"
        f" (δ = {delta:g}, clip {float(r['clip']):g}, noise mult. {float(r['noise_multiplier']):.3g})"
    )


def accuracy_at(rows: list[dict[str, str]], round_no: int) -> float | None:
    match = [float(r["accuracy"]) for r in rows if int(r["round"]) == round_no]
    return match[0] if match else None


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--note", default="", help="training settings for the title")
    parser.add_argument("csv", nargs="*", default=["experiments/dp_accuracy/results.csv"])
    args = parser.parse_args()
    paths = [Path(p) for p in args.csv]
    runs = load(paths)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 7.5), dpi=120)
    order = sorted(
        runs,
        key=lambda k: (
            runs[k][-1]["mechanism"] != "off",
            runs[k][-1]["mechanism"],
            float(runs[k][-1]["epsilon_budget"]),
        ),
    )
    for config in order:
        rows = runs[config]
        mechanism = rows[-1]["mechanism"]
        ax.plot(
            [int(r["round"]) for r in rows],
            [float(r["accuracy"]) for r in rows],
            label=label(rows),
            linewidth=2.4 if mechanism == "off" else 1.5,
            linestyle="--" if mechanism == "laplace" else "-",
            color="black" if mechanism == "off" else None,
        )
    for x in (20, 40):
        ax.axvline(x, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("federated round")
    ax.set_ylabel("global model accuracy on the MNIST test set (10,000 images)")
    agents = "30"
    note = f", {args.note}" if args.note else ""
    ax.set_title(
        f"GD-DP vs no DP: MNIST, {agents} IID agents, mlp:128, 1 local epoch per round{note}\n"
        "ε is each agent's total over the whole run (dp-accounting; Poisson-sampled steps)"
    )
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2)
    fig.tight_layout()
    out = paths[0].parent / ("accuracy" + paths[0].stem.removeprefix("results") + ".png")
    fig.savefig(out)
    print(f"wrote {out}\n")

    base = runs.get("off")
    print(
        "| configuration | total ε per agent | round 20 | round 40 | last round | best (round) "
        "| gap at 20 / 40 / last (points) |"
    )
    print("|---|---|---|---|---|---|---|")
    for config in order:
        rows = runs[config]
        last = int(rows[-1]["round"])
        accs = [accuracy_at(rows, r) for r in (20, 40, last)]
        gaps = ""
        if base and config != "off":
            base_accs = [accuracy_at(base, r) for r in (20, 40, last)]
            gaps = " / ".join(
                f"{(b - a) * 100:.1f}" if a is not None and b is not None else "–"
                for a, b in zip(accs, base_accs, strict=True)
            )
        eps = "∞ (no DP)" if rows[-1]["mechanism"] == "off" else f"{float(rows[-1]['epsilon_spent']):.3g}"
        cells = " | ".join(f"{a:.4f}" if a is not None else "–" for a in accs)
        best = max(rows, key=lambda r: float(r["accuracy"]))
        print(
            f"| {config} | {eps} | {cells} (round {last}) | {float(best['accuracy']):.4f} ({best['round']}) | {gaps} |"
        )


if __name__ == "__main__":
    main()
