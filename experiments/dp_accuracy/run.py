"""DP vs no DP on MNIST, federated over N IID agents (the paper's Figures 4-5), run in one process.

    .venv/bin/python experiments/dp_accuracy/run.py --agents 30 --rounds 20 --batch 512 --lr 2 \
        --model wavelet:2,4,4 --seeds 0 1 2 \
        --config off --config laplace:10:1e-5:50 --config gaussian:10:1e-5:3 ... --out experiments/dp_accuracy

A config is ``off`` or ``MECHANISM:EPSILON[:DELTA[:CLIP]]``: each agent's *total* budget for the
whole run. Its noise multiplier is calibrated (dp-accounting) so that every agent's epsilon after
all rounds stays within that budget, given its own shard size and the Poisson-sampled steps of
local training. The same Trainer (GD-DP optimizer, ghost clipping), FedAvg and accountant as the
live system are used; only MQTT is left out, since the network does not change the accuracy.
Writes rounds.csv (every round of every run: accuracy, epsilon spent) as it goes and, when a run
ends, one line of results.csv (mechanism, epsilon, delta, clip, model, rounds, final_accuracy,
best_accuracy, best_round, seed, ...); a run already in results.csv is skipped, so an interrupted
sweep resumes. plot.py draws the figure and prints the table.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # experiments/: the shared csv_rows
from csv_rows import append_rows, model_label, read_rows

DEFAULT_CLIP = {"laplace": 100.0, "gaussian": 3.0}


def parse_config(text: str) -> tuple[str, float, float, float]:
    parts = text.split(":")
    if parts[0] == "off":
        return "off", math.inf, 0.0, 0.0
    mechanism, epsilon = parts[0], float(parts[1])
    delta = float(parts[2]) if len(parts) > 2 else (0.0 if mechanism == "laplace" else 1e-5)
    clip = float(parts[3]) if len(parts) > 3 else DEFAULT_CLIP[mechanism]
    return mechanism, epsilon, delta, clip


ROUND_COLUMNS = [
    "config", "model", "seed", "mechanism", "epsilon_budget", "delta", "clip", "noise_multiplier",
    "round", "accuracy", "epsilon_spent", "elapsed_s",
]  # fmt: skip
RESULT_COLUMNS = [
    "mechanism", "epsilon", "delta", "clip", "model", "rounds", "final_accuracy", "best_accuracy", "best_round",
    "seed", "config", "epsilon_spent", "noise_multiplier", "agents", "records_per_agent", "batch", "lr", "epochs",
]  # fmt: skip


def run_config(text: str, seed: int, args: argparse.Namespace, out: Path) -> None:
    from bpcv.data import load_dataset, make_shard
    from bpcv.metrics import predict, score
    from bpcv.model_spec import model_from_argument
    from bpcv.task import TaskSpec
    from coordinator.aggregate import fedavg
    from edge_agent.privacy.accountant import calibrate_noise_multiplier, epsilon_for
    from edge_agent.privacy.settings import PrivacySettings, steps_per_round
    from edge_agent.trainer import Trainer

    mechanism, budget, delta, clip = parse_config(text)
    ds = load_dataset("mnist")
    shards = [make_shard(ds, i, args.agents, "iid", seed=seed) for i in range(args.agents)]
    task = TaskSpec(
        task_id="exp",
        coordinator="c",
        model=model_from_argument(args.model),
        local_epochs=args.epochs,
        batch_size=args.batch,
        learning_rate=args.lr,
    )
    privacy, noise = None, 0.0
    if mechanism != "off":
        # one noise multiplier for all agents: the largest any agent needs (smaller shard, larger q)
        noise = max(
            calibrate_noise_multiplier(
                mechanism,
                budget,
                min(1.0, args.batch / s.num_samples),
                args.rounds * steps_per_round(s.num_samples, task),
                delta,
            )
            for s in shards[:1] + shards[-1:]
        )
        privacy = PrivacySettings(mechanism, clip, noise)
    trainer = Trainer(task, ds.input_shape, ds.num_classes, privacy)
    weights = trainer.model.get_weights()
    steps = 0
    history: list[float] = []
    started = time.monotonic()
    for round_no in range(1, args.rounds + 1):
        updates = []
        for i, shard in enumerate(shards):
            w, taken = trainer.train(weights, shard.x_train, shard.y_train, seed=seed * 100003 + round_no * 1009 + i)
            updates.append(w)
        steps += taken
        weights = fedavg(updates, [s.num_samples for s in shards])
        trainer.model.set_weights(weights)
        accuracy = score(predict(trainer.model, ds.x_test), ds.y_test, "accuracy")
        spent = (
            max(
                epsilon_for(mechanism, noise, min(1.0, args.batch / s.num_samples), steps, delta)
                for s in shards[:1] + shards[-1:]
            )
            if privacy
            else math.inf
        )
        history.append(accuracy)
        append_rows(
            out / "rounds.csv",
            ROUND_COLUMNS,
            [
                {
                    "config": text,
                    "model": model_label(args.model),
                    "seed": seed,
                    "mechanism": mechanism,
                    "epsilon_budget": budget,
                    "delta": delta,
                    "clip": clip,
                    "noise_multiplier": round(noise, 5),
                    "round": round_no,
                    "accuracy": round(accuracy, 5),
                    "epsilon_spent": round(spent, 4),
                    "elapsed_s": round(time.monotonic() - started, 1),
                }
            ],
        )
        print(
            f"{text:<24} seed {seed} round {round_no:>3} accuracy {accuracy:.4f} epsilon {spent:.3f} "
            f"(noise multiplier {noise:.4f})",
            flush=True,
        )
    best = int(np.argmax(history))
    append_rows(
        out / "results.csv",
        RESULT_COLUMNS,
        [
            {
                "mechanism": mechanism,
                "epsilon": budget,
                "delta": delta,
                "clip": clip,
                "model": model_label(args.model),
                "rounds": args.rounds,
                "final_accuracy": round(history[-1], 5),
                "best_accuracy": round(history[best], 5),
                "best_round": best + 1,
                "seed": seed,
                "config": text,
                "epsilon_spent": round(spent, 4),
                "noise_multiplier": round(noise, 5),
                "agents": args.agents,
                "records_per_agent": min(s.num_samples for s in shards),
                "batch": args.batch,
                "lr": args.lr,
                "epochs": args.epochs,
            }
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=80)
    parser.add_argument("--epochs", type=int, default=1, help="local epochs per round")
    parser.add_argument("--batch", type=int, default=512, help="expected local batch size (Poisson q = batch / n)")
    parser.add_argument("--lr", type=float, default=2.0)
    parser.add_argument("--model", default="wavelet:2,4,4", help="a preset or a Keras .json file")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="one run per seed and config")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--config", action="append", required=True)
    parser.add_argument("--out", default="experiments/dp_accuracy")
    args = parser.parse_args()

    from bpcv.models import configure_tensorflow

    configure_tensorflow(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    done = {(r["config"], r["model"], int(r["seed"]), int(r["rounds"])) for r in read_rows(out / "results.csv")}
    for seed in args.seeds:
        for text in args.config:
            if (text, model_label(args.model), seed, args.rounds) in done:
                print(f"{text} seed {seed}: already in {out / 'results.csv'}, skipped")
                continue
            np.random.seed(seed)
            run_config(text, seed, args, out)


if __name__ == "__main__":
    main()
