"""What a linear head can reach on a fixed feature map, before any noise: the ceiling DP works under.

    .venv/bin/python experiments/dp_accuracy/feature_ceiling.py [--out experiments/dp_accuracy/feature_ceiling.csv]

For each feature map (the frozen layers of a ``bpcv.models`` preset, everything before its Dense
head), on MNIST's 50,000 training and 10,000 test images:
- ``ceiling``: scikit-learn's logistic regression (L-BFGS, to convergence) on the features: the best a
  linear head does with unlimited, noiseless steps;
- ``sgd_60``: 60 plain SGD steps of batch 512 from zero weights (about what a DP task's budget buys
  in the dp_accuracy runs), best of three learning rates: how fast the head learns, which is what DP
  noise competes with. Also without the per-record channel normalisation, to show what it is for.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np

MAPS = ["pool:2", "wavelet:2,4,4", "wavelet:2,4,7"]


def features(spec: str, x: np.ndarray, normalise: bool) -> np.ndarray:
    import tensorflow as tf

    from bpcv.models import build_model

    if spec.startswith("pool:"):
        size = int(spec.split(":")[1])
        return tf.nn.avg_pool2d(x, size, size, "VALID").numpy().reshape(len(x), -1)
    model = build_model(spec, x.shape[1:], 10)
    frozen = [layer for layer in model.layers[:-2] if normalise or not layer.name.startswith("layer_norm")]
    return tf.keras.Sequential(frozen).predict(x, batch_size=2000, verbose=0).reshape(len(x), -1)


def sgd_accuracy(f: np.ndarray, y: np.ndarray, ft: np.ndarray, yt: np.ndarray, lr: float, steps: int = 60) -> float:
    rng = np.random.default_rng(0)
    w, b = np.zeros((f.shape[1], 10)), np.zeros(10)
    for _ in range(steps):
        idx = rng.choice(len(f), 512, replace=False)
        z = f[idx] @ w + b
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        p[np.arange(512), y[idx]] -= 1
        w -= lr * f[idx].T @ p / 512
        b -= lr * p.mean(axis=0)
    return float(((ft @ w + b).argmax(axis=1) == yt).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(Path(__file__).parent / "feature_ceiling.csv"))
    args = parser.parse_args()
    from sklearn.linear_model import LogisticRegression

    from bpcv.data import load_dataset
    from bpcv.models import configure_tensorflow

    configure_tensorflow(2)
    ds = load_dataset("mnist")
    rows = []
    for spec in MAPS:
        for normalise in [True, False] if spec.startswith("wavelet") else [False]:
            started = time.monotonic()
            f, ft = features(spec, ds.x_train, normalise), features(spec, ds.x_test, normalise)
            ceiling = LogisticRegression(max_iter=1000).fit(f, ds.y_train).score(ft, ds.y_test)
            sgd = max(sgd_accuracy(f, ds.y_train, ft, ds.y_test, lr) for lr in (0.5, 2.0, 8.0))
            rows.append(
                {
                    "features": spec,
                    "channel_normalisation": normalise,
                    "dimension": f.shape[1],
                    "ceiling": round(ceiling, 4),
                    "sgd_60": round(sgd, 4),
                    "seconds": round(time.monotonic() - started, 1),
                }
            )
            print(rows[-1], flush=True)
    with open(args.out, "w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
