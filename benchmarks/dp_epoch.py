"""Benchmark: one local epoch with and without GD-DP, same model and data, side by side in one run.

    .venv/bin/python benchmarks/dp_epoch.py [--repeats 5] [--out benchmarks/results/dp_epoch.json]

Measures the median wall time of one epoch (4,500 MNIST samples, the demo's mlp:128, batch 32) for:
no DP; Laplace and Gaussian DP with ghost clipping (per-example norms from layer inputs and output
gradients); Laplace DP with a vectorised Jacobian; and Laplace DP through tensorflow-privacy's own
record-by-record loop. Reports ratios to no DP, and the peak RSS (ru_maxrss) of a separate process
that does what one agent does in DP training (loads MNIST, builds its DP trainer, trains one epoch,
scores). Each configuration is warmed up once (graph tracing) first; runs are interleaved.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path


def agent_peak_rss_mb(args: argparse.Namespace) -> float:
    """Peak RSS of a process doing what one agent does: load MNIST, build its DP trainer, train an epoch."""
    from bpcv.data import load_dataset, make_shard
    from bpcv.models import configure_tensorflow
    from bpcv.task import TaskSpec
    from edge_agent.privacy.settings import PrivacySettings
    from edge_agent.trainer import Trainer

    configure_tensorflow(args.threads)
    ds = load_dataset("mnist")
    shard = make_shard(ds, 0, max(1, 50000 // args.samples))
    task = TaskSpec(task_id="bench", coordinator="c", model=args.model, local_epochs=1)
    trainer = Trainer(task, ds.input_shape, 10, PrivacySettings("laplace", 100.0, 1.0))
    trainer.train(trainer.model.get_weights(), shard.x_train, shard.y_train, seed=0)
    trainer.evaluate(trainer.model.get_weights(), shard.x_val, shard.y_val)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--samples", type=int, default=4500)
    parser.add_argument("--model", default="mlp:128")
    parser.add_argument("--threads", type=int, default=1, help="TensorFlow threads (1: one agent per core)")
    parser.add_argument("--out", default="benchmarks/results/dp_epoch.json")
    parser.add_argument("--agent-rss", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.agent_rss:
        print(agent_peak_rss_mb(args))
        return

    from bpcv.data import load_dataset
    from bpcv.models import configure_tensorflow
    from bpcv.task import TaskSpec
    from edge_agent.privacy.settings import PrivacySettings
    from edge_agent.trainer import Trainer

    configure_tensorflow(args.threads)
    ds = load_dataset("mnist")
    x, y = ds.x_train[: args.samples], ds.y_train[: args.samples]
    task = TaskSpec(task_id="bench", coordinator="c", model=args.model, local_epochs=1)
    laplace, gaussian = PrivacySettings("laplace", 1.0, 1.0), PrivacySettings("gaussian", 1.0, 1.0)
    configs = {
        "no_dp": (None, "auto"),
        "laplace_ghost": (laplace, "ghost"),
        "gaussian_ghost": (gaussian, "ghost"),
        "laplace_jacobian": (laplace, "jacobian"),
        "laplace_tf_privacy_loop": (laplace, "library-loop"),
    }
    trainers = {
        name: Trainer(task, ds.input_shape, 10, privacy, dp_path=path) for name, (privacy, path) in configs.items()
    }
    weights = trainers["no_dp"].model.get_weights()
    for trainer in trainers.values():  # warm-up: trace the graphs
        trainer.train(weights, x[:256], y[:256], seed=0)
    times: dict[str, list[float]] = {name: [] for name in trainers}
    for r in range(args.repeats):  # interleaved, so machine noise hits every configuration alike
        for name, trainer in trainers.items():
            start = time.perf_counter()
            trainer.train(weights, x, y, seed=r)
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(t) for name, t in times.items()}
    result = {
        "what": f"one local epoch, {args.samples} MNIST samples, {args.model}, batch 32, {args.threads} TF thread(s)",
        "machine": f"{platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores",
        "repeats": args.repeats,
        "median_seconds": {k: round(v, 3) for k, v in medians.items()},
        "ratio_to_no_dp": {k: round(v / medians["no_dp"], 2) for k, v in medians.items()},
        "all_seconds": {k: [round(t, 3) for t in v] for k, v in times.items()},
        "benchmark_process_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "agent_process_peak_rss_mb": float(
            subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--agent-rss",
                    "--samples",
                    str(args.samples),
                    "--model",
                    args.model,
                    "--threads",
                    str(args.threads),
                ],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()[-1]
        ),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    keys = ("what", "median_seconds", "ratio_to_no_dp", "agent_process_peak_rss_mb")
    print(json.dumps({k: result[k] for k in keys}, indent=2))


if __name__ == "__main__":
    main()
