"""Draw rounds.csv and tabulate results.csv (both from run.py): accuracy per round, DP vs no DP.

    .venv/bin/python experiments/dp_accuracy/plot.py [--dir experiments/dp_accuracy]

Writes accuracy.png (one panel per model: every configuration's mean accuracy over its seeds, per
round) and prints a Markdown table: per model and configuration, the seeds run, the final-round
accuracy (mean, and min-max over seeds), the best round's, each agent's total epsilon, and the gap
to no DP on the same model in points (difference of the means).
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path


def read(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def order_key(config: str) -> tuple[bool, str, float]:
    mechanism, _, rest = config.partition(":")
    return mechanism != "off", mechanism, -float(rest.split(":")[0]) if rest else 0.0


def label(config: str) -> str:
    if config == "off":
        return "no DP"
    mechanism, epsilon, delta, clip = config.split(":")
    norm = "L1" if mechanism == "laplace" else "L2"
    return f"{mechanism.capitalize()}, ε = {epsilon}, δ = {float(delta):g}, clip {norm} {clip}"


def plot(rounds: list[dict[str, str]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves: dict[str, dict[str, dict[int, list[float]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for r in rounds:
        curves[r["model"]][r["config"]][int(r["round"])].append(float(r["accuracy"]))
    models = sorted(curves, key=lambda m: m != "wavelet:2,4,7")
    fig, axes = plt.subplots(1, len(models), figsize=(7 * len(models), 5.5), dpi=110, squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        for config in sorted(curves[model], key=order_key):
            per_round = curves[model][config]
            xs = sorted(per_round)
            ys = [sum(per_round[x]) / len(per_round[x]) for x in xs]
            mechanism = config.split(":")[0]
            ax.plot(
                xs,
                ys,
                label=f"{label(config)} ({len(per_round[xs[-1]])} seed{'s' if len(per_round[xs[-1]]) > 1 else ''})",
                color="black" if mechanism == "off" else None,
                linestyle="--" if mechanism == "laplace" else "-",
                linewidth=2.2 if mechanism == "off" else 1.4,
            )
        ax.set_title(f"{model}: MNIST, 30 IID agents × 1,500 records, FedAvg")
        ax.set_xlabel("federated round (ε: each agent's total over all 20 rounds)")
        ax.set_ylabel("global model accuracy, MNIST test set")
        ax.set_ylim(0.5, 1.0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7.5, loc="lower right")
    fig.tight_layout()
    fig.savefig(out)
    print(f"wrote {out}\n")


def table(results: list[dict[str, str]]) -> None:
    runs: dict[tuple[str, str], list[dict[str, str]]] = defaultdict(list)
    for r in results:
        runs[(r["model"], r["config"])].append(r)

    def mean(rows: list[dict[str, str]], key: str) -> float:
        return sum(float(r[key]) for r in rows) / len(rows)

    print(
        "| model | configuration | seeds | final accuracy (min–max) | best (round) | total ε per agent | gap (points) |"
    )
    print("|---|---|---|---|---|---|---|")
    for model, config in sorted(runs, key=lambda k: (k[0] != "wavelet:2,4,7", k[0], order_key(k[1]))):
        rows = runs[(model, config)]
        finals = [float(r["final_accuracy"]) for r in rows]
        base = runs.get((model, "off"))
        gap = (
            f"{(mean(base, 'final_accuracy') - mean(rows, 'final_accuracy')) * 100:.1f}"
            if base and config != "off"
            else ""
        )
        best = max(rows, key=lambda r: float(r["best_accuracy"]))
        eps = "∞" if config == "off" else f"{max(float(r['epsilon_spent']) for r in rows):.3g}"
        print(
            f"| {model} | {label(config)} | {len(rows)} | {mean(rows, 'final_accuracy'):.4f} "
            f"({min(finals):.4f}–{max(finals):.4f}) | {float(best['best_accuracy']):.4f} ({best['best_round']}) "
            f"| {eps} | {gap} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", default=str(Path(__file__).parent))
    args = parser.parse_args()
    folder = Path(args.dir)
    plot(read(folder / "rounds.csv"), folder / "accuracy.png")
    table(read(folder / "results.csv"))


if __name__ == "__main__":
    main()
