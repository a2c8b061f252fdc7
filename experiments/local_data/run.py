"""Federated vs central on a packaged sensor data set, side by side (issue 14).

    .venv/bin/python experiments/local_data/run.py --set wind [--rounds 10] [--dp laplace:10 --dp gaussian:10] \
        [--attack sign-flip:1 --attack lying-voter:1 ...] [--out experiments/local_data/results]

1. The data folder of the set (``bpcv data materialize``): one file per device and the task file.
2. **Federated**: a live ``bpcv demo --data FOLDER`` over a real mosquitto broker: one agent per
   device file, each reading only its own file; the coordinator has no test file, so its per-round
   metric is the agents' validation mean of the model of the round before. The final model
   (``final_model.bpmt``) is scored here on the pooled validation splits. Without DP, and once more
   for every ``--dp MECHANISM:EPSILON`` (GD-DP in every agent, the demo's default delta and clip).
2. **Central**: the same model, the same trainer (``edge_agent.trainer.Trainer``: plain SGD, the task's
   batch size and learning rate), trained on all devices' training splits pooled, for the same epoch
   budget (``rounds x local_epochs`` epochs over every sample), scored after each round's worth of epochs.
3. **Device mean**: each device predicts the mean target of its own training split (classification: its
   most common class); for a forecast also **persistence**: the label's last value in the window.

Every method is scored on the same samples: each device's own validation split, cut and standardised
exactly as its agent does (``bpcv.datasources.prepare_local``, val_fraction 0.1, seed 0: the demo's).
Writes ``results-SET.csv`` (method, round, metrics), ``summary-SET.json`` and ``SET.png``.

4. **Under attack** (``--attack BEHAVIOUR:K``, repeatable): the first K devices' agents run an attack
   behaviour (``bpcv demo --malicious K --behaviour B``), once under BPCV-FL's default rules (outlier
   elimination, median quality, accountable voters) and once under FedAvg (every update aggregated, no
   elimination), and once each without attackers. Writes ``attacks-SET.csv`` (one line per run: the
   final model's metrics on the pooled validation splits, the rounds an attacker's update was
   aggregated, the attackers' share of the rewards, honest nodes eliminated) and ``attacks-SET.png``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "experiments"))  # the shared csv_rows and demo_rules

from bpcv.codec import decode_model  # noqa: E402
from bpcv.data import Shard  # noqa: E402
from bpcv.datasources import prepare_local, read_local  # noqa: E402
from bpcv.local_split import split_local  # noqa: E402
from bpcv.metrics import METRICS, predict, scores  # noqa: E402
from bpcv.task_file import load_task_file  # noqa: E402
from bpcv_app.demo_data import DataFolder, open_data_folder  # noqa: E402
from csv_rows import read_rows, write_rows  # noqa: E402
from demo_rules import DEMO_RULES, baseline_rules  # noqa: E402


FEDERATED = "federated (BPCV-FL, live)"


def pooled(shards: list[Shard]) -> Shard:
    return Shard(*(np.concatenate([getattr(s, f) for s in shards]) for f in ("x_train", "y_train", "x_val", "y_val")))


ATTACK_COLUMNS = [
    "behaviour", "malicious", "devices", "strategy", "rounds", "metric", "final", "rmse",
    "malicious_rounds_aggregated", "malicious_reward_share", "honest_eliminated", "wall_s",
]  # fmt: skip
STRATEGY_OPTIONS = {"bpcv": DEMO_RULES, "fedavg": baseline_rules("fedavg")}


def run_federated(
    folder: Path, out: Path, rounds: int, dp: str, extra: list[str] | None = None
) -> tuple[dict, Path, float]:
    """One live ``bpcv demo --data FOLDER``: its summary.json, the final model's path and the seconds."""
    mechanism, _, epsilon = dp.partition(":")
    cmd = [sys.executable, "-m", "bpcv_app.cli", "demo", "--data", str(folder), "--broker", "mosquitto",
           "--out", str(out), "--rounds", str(rounds), "--timeout", "3600", "--dp", mechanism,
           *(["--epsilon", epsilon] if epsilon else []), *(extra or [])]  # fmt: skip
    started = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False)
    print(done.stdout[-3000:], file=sys.stderr)
    if done.returncode != 0:
        raise SystemExit(f"the federated run failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    summary = json.loads((out / "summary.json").read_text())
    return summary, out / "final_model.bpmt", time.monotonic() - started


def attack_figures(summary: dict) -> dict[str, object]:
    """What the attackers got out of a run: rounds their updates were aggregated, their reward share,
    and how many honest nodes were eliminated."""
    bad = {n["id"] for n in summary["nodes"] if n["behaviour"] != "honest"}
    rewards = {n["id"]: n["reward"] or 0.0 for n in summary["nodes"]}
    total = sum(rewards.values())
    eliminated = {e for r in summary["rounds"] for e in r["eliminated"]}
    return {
        "malicious_rounds_aggregated": sum(bool(bad & set(r["aggregated"])) for r in summary["rounds"]),
        "malicious_reward_share": round(sum(rewards[n] for n in bad) / total, 4) if bad and total else "",
        "honest_eliminated": len(eliminated - bad),
    }


def persistence(device: Path, schema) -> np.ndarray:  # noqa: ANN001 - a DataSchema
    """The label's last value in each of the device's validation windows, unstandardised (the same split)."""
    data = read_local(device, schema)
    window = schema.window
    gap = window.lookback + window.horizon - 1
    shard = split_local(data.x, data.y, 0.1, 0, ordered=True, gap=gap, stretch=data.stretch)
    return shard.x_val[:, -1, schema.features.index(schema.label)] / schema.target_scale


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--set", default="wind", help="a packaged set (bpcv data list)")
    p.add_argument("--rounds", type=int, default=None, help="rounds (default: the task file's)")
    p.add_argument(
        "--dp", action="append", default=[], help="also a federated run with GD-DP, e.g. laplace:10 (repeatable)"
    )
    p.add_argument(
        "--attack", action="append", default=[], help="also runs with K attackers, e.g. sign-flip:1 (repeatable)"
    )
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    p.add_argument("--replot", action="store_true", help="only redraw SET.png from results-SET.csv")
    args = p.parse_args()
    out = Path(args.out)
    if args.replot:
        rows = [
            {k: v if k == "method" else float(v) for k, v in r.items()}
            for r in read_rows(out / f"results-{args.set}.csv")
        ]
        key = [k for k in rows[0] if k not in ("method", "round")][0]
        plot(rows, key, out / f"{args.set}.png", f"{args.set}: {key} on the devices' validation splits")
        return
    work = out / f"work-{args.set}"
    if work.exists():
        import shutil

        shutil.rmtree(work)
    from bpcv.packaged import materialize

    folder = open_data_folder(materialize(args.set, work / "data"))
    task = load_task_file(folder.path / "task.toml", task_id="experiment", coordinator="coordinator")
    rounds = args.rounds or task.rounds
    schema = task.schema
    metric_names = METRICS[task.category]
    shards = [prepare_local(device, schema, 0.1, 0)[1] for device in folder.devices]
    pool = pooled(shards)
    sizes = {d.name: (len(s.y_train), len(s.y_val)) for d, s in zip(folder.devices, shards, strict=True)}
    print(f"{args.set}: devices {sizes}", file=sys.stderr)
    rows: list[dict] = []

    def add(method: str, round_no: int, values: dict[str, float]) -> None:
        rows.append({"method": method, "round": round_no, **{m: round(values[m], 6) for m in metric_names}})

    # 3. each device predicts its own training mean (regression) or its most common class
    if task.category == "regression":
        guesses = [np.full((len(s.y_val), 1), s.y_train.mean()) for s in shards]
    else:
        width = len(schema.classes)
        guesses = [
            np.tile(np.eye(width)[np.bincount(s.y_train, minlength=width).argmax()], (len(s.y_val), 1)) for s in shards
        ]
    baseline = scores(np.concatenate(guesses), pool.y_val, task.category)
    for r in range(rounds + 1):
        add("device mean" if task.category == "regression" else "device majority class", r, baseline)
    if schema.window is not None and schema.label in schema.features and task.category == "regression":
        # a forecast's hardest simple rival: the label's last value in the window, repeated (persistence)
        last = [persistence(device, schema) for device in folder.devices]
        held = scores(np.concatenate(last)[:, None], pool.y_val, task.category)
        for r in range(rounds + 1):
            add("persistence (last value)", r, held)

    # 2. central, on the pooled training splits, the same epoch budget
    from bpcv.models import configure_tensorflow
    from edge_agent.trainer import Trainer

    configure_tensorflow(2)
    trainer = Trainer(task, tuple(pool.x_train.shape[1:]), schema.outputs)
    weights = [np.asarray(w) for w in trainer.model.get_weights()]
    started = time.monotonic()
    add("central (pooled data)", 0, trainer.evaluate_all(weights, pool.x_val, pool.y_val))
    for r in range(1, rounds + 1):
        weights, _ = trainer.train(weights, pool.x_train, pool.y_train, seed=r)
        add("central (pooled data)", r, trainer.evaluate_all(weights, pool.x_val, pool.y_val))
    central_s = time.monotonic() - started

    shapes = [tuple(w.shape) for w in weights]

    def final_scores(final_model: Path) -> dict[str, float]:
        """A federated run's final model, scored on the pooled validation splits."""
        trainer.model.set_weights(decode_model(final_model.read_bytes(), shapes))
        return scores(predict(trainer.model, pool.x_val), pool.y_val, task.category)

    # 1. federated, live: without DP, then with each --dp
    federated_s = {}
    for dp in ["off", *args.dp]:
        method = FEDERATED if dp == "off" else f"{FEDERATED}, GD-DP {dp.replace(':', ' ε=')}"
        summary, final_model, federated_s[method] = run_federated(folder.path, work / f"run-{dp}", rounds, dp)
        fed_rounds = summary["rounds"]
        for i, row in enumerate(fed_rounds):  # round i+1 reports the model after i rounds
            add(method, i, {m: row[m] for m in metric_names})
        add(method, len(fed_rounds), final_scores(final_model))

    write_rows(out / f"results-{args.set}.csv", ["method", "round", *metric_names], rows)
    last = {m: [r for r in rows if r["method"] == m][-1] for m in dict.fromkeys(r["method"] for r in rows)}
    key = metric_names[0]
    fed, cen = last[FEDERATED][key], last["central (pooled data)"][key]
    summary = {
        "set": args.set,
        "rounds": rounds,
        "devices": sizes,
        "metric": key,
        "final": {m: {k: r[k] for k in metric_names} for m, r in last.items()},
        "federated_over_central": round(fed / cen, 4),
        "seconds": {**{m: round(t, 1) for m, t in federated_s.items()}, "central_training": round(central_s, 1)},
        "task": {k: v for k, v in task.to_body().items() if k not in ("model",)},
    }
    (out / f"summary-{args.set}.json").write_text(json.dumps(summary, indent=2))
    plot(rows, key, out / f"{args.set}.png", f"{args.set}: {key} on the devices' validation splits")
    print(json.dumps(summary["final"], indent=2), f"\nfederated / central {key}: {fed / cen:.3f}")
    if args.attack:
        attack_rows = run_attacks(args.attack, folder, work, rounds, key, final_scores)
        write_rows(out / f"attacks-{args.set}.csv", ATTACK_COLUMNS, attack_rows)
        plot_attacks(attack_rows, key, out / f"attacks-{args.set}.png", args.set)


def run_attacks(
    attacks: list[str], folder: DataFolder, work: Path, rounds: int, key: str, final_scores: Callable[[Path], dict]
) -> list[dict[str, object]]:
    """Live runs without attackers and with each ``BEHAVIOUR:K`` of ``attacks``, under every strategy of
    STRATEGY_OPTIONS: one attacks-SET.csv row each (``final_scores`` scores a final model file)."""
    runs = [("none", 0)] + [(b, int(k)) for b, _, k in (a.partition(":") for a in attacks)]
    rows: list[dict[str, object]] = []
    for behaviour, malicious in runs:
        for strategy, options in STRATEGY_OPTIONS.items():
            extra = [*options, *(["--malicious", str(malicious), "--behaviour", behaviour] if malicious else [])]
            run_dir = work / f"attack-{behaviour}-{malicious}-{strategy}"
            result, final_model, seconds = run_federated(folder.path, run_dir, rounds, "off", extra)
            final = final_scores(final_model)
            rows.append({
                "behaviour": behaviour, "malicious": malicious, "devices": len(folder.devices),
                "strategy": strategy, "rounds": len(result["rounds"]), "metric": key,
                "final": round(final[key], 6), "rmse": round(final["rmse"], 6) if "rmse" in final else "",
                **attack_figures(result), "wall_s": round(seconds, 1),
            })  # fmt: skip
            print(rows[-1], file=sys.stderr)
    return rows


def plot_attacks(rows: list[dict], key: str, path: Path, name: str) -> None:
    """The final metric of every attack, BPCV-FL and FedAvg side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(dict.fromkeys(f"{r['behaviour']} x{r['malicious']}" for r in rows))
    fig, ax = plt.subplots(figsize=(1.4 * len(labels) + 2, 4))
    for i, strategy in enumerate(STRATEGY_OPTIONS):
        mine = {f"{r['behaviour']} x{r['malicious']}": r["final"] for r in rows if r["strategy"] == strategy}
        xs = [j + (i - 0.5) * 0.38 for j in range(len(labels))]
        ax.bar(
            xs,
            [mine.get(label, 0) for label in labels],
            width=0.38,
            label="BPCV-FL" if strategy == "bpcv" else strategy,
        )
    ax.set_xticks(range(len(labels)), labels, rotation=20)
    ax.set_ylabel(f"final {key}, pooled validation splits" + (" (log)" if key != "accuracy" else ""))
    if key != "accuracy":
        ax.set_yscale("log")
    ax.set_title(f"{name} under attack: BPCV-FL (outlier, median, accountable) vs FedAvg")
    ax.grid(alpha=0.3, axis="y")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot(rows: list[dict], key: str, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method]
        style = "--" if method.startswith(("device", "persistence")) else "-"
        ax.plot([r["round"] for r in mine], [r[key] for r in mine], style, marker="o", markersize=3, label=method)
    ax.set_xlabel("rounds (central: the same epochs)")
    ax.set_ylabel(key + (" (log scale)" if key != "accuracy" else ""))
    if key != "accuracy":  # the untrained model's error would flatten every later round
        ax.set_yscale("log")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
