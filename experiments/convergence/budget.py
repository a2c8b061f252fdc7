"""What a round of the convergence matrix costs on this machine, from the agents' own training and
scoring code timed in one process (one TensorFlow thread, as each agent process of a 2-core demo has).

    .venv/bin/python experiments/convergence/budget.py [--nodes 30 50] [--model cnn:16,32] [--processes 2]

A round's compute is every active node's local training (one epoch on its shard), every node scoring
the N - 1 peers' models on its validation split (mutual validation: N(N - 1) scorings), and the
coordinator scoring the global model on the 10,000-image test set. The agents' work is spread over
``--processes`` processes; the protocol's own waits (messages, votes, blocks) come on top and are
measured from a live run's per-round times (rounds.csv ``elapsed_s``), not here. The estimate is an
extrapolation from these timings, not a measured 30- or 50-node run.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def timed(fn, repeat: int) -> float:
    """Median seconds of ``fn()`` over ``repeat`` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--data-path", default=None)
    p.add_argument("--nodes", nargs="+", type=int, default=[30, 50])
    p.add_argument("--model", default="cnn:16,32")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--rounds", type=int, default=80)
    p.add_argument("--processes", type=int, default=2, help="agent processes sharing the work (one core each)")
    p.add_argument("--overhead", type=float, default=0.0, help="protocol seconds per round to add (from a live run)")
    args = p.parse_args()

    from bpcv.data import load_dataset, make_shard
    from bpcv.models import configure_tensorflow
    from bpcv.task import TaskSpec
    from coordinator.evaluation import build_evaluation
    from edge_agent.trainer import Trainer

    configure_tensorflow(1)
    dataset = load_dataset(args.dataset, args.data_path)
    task = TaskSpec(
        task_id="budget", coordinator="coordinator", dataset=args.dataset, model=args.model,
        local_epochs=1, batch_size=args.batch, learning_rate=args.lr,
    )  # fmt: skip
    trainer = Trainer(task, dataset.input_shape, dataset.num_classes)
    weights = trainer.model.get_weights()
    _, evaluation = build_evaluation(task, args.data_path or "")
    coordinator_s = timed(lambda: evaluation(weights, {}, {}), 3)
    print(f"{args.dataset} {args.model}: coordinator scores the global model in {coordinator_s:.2f}s")
    for n in args.nodes:
        shard = make_shard(dataset, 0, n + max(1, round(n * 0.1)), "iid", seed=0)
        train_s = timed(lambda s=shard: trainer.train(weights, s.x_train, s.y_train, 0), 2)
        score_s = timed(lambda s=shard: trainer.evaluate(weights, s.x_val, s.y_val), 10)
        agents_s = (n * train_s + n * (n - 1) * score_s) / args.processes
        round_s = agents_s + coordinator_s + args.overhead
        print(
            f"  {n} nodes ({shard.num_samples} train / {len(shard.y_val)} validation records each): training "
            f"{train_s:.2f}s a node, scoring one peer {score_s * 1000:.0f}ms; a round ~ {round_s:.0f}s "
            f"({n} x {train_s:.2f} + {n * (n - 1)} x {score_s:.3f}, over {args.processes} processes, "
            f"+ {coordinator_s:.1f} + {args.overhead:.0f}); {args.rounds} rounds ~ {args.rounds * round_s / 3600:.1f} h"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
