"""How a model is scored: accuracy for classification, mean absolute error for regression (the task's
metric, by which nodes are ranked), and root mean squared error beside it."""

from __future__ import annotations

import weakref

import numpy as np


def score(predictions: np.ndarray, labels: np.ndarray, metric: str) -> float:
    """Accuracy (``predictions`` are class scores) or MAE (``predictions`` are values)."""
    if len(labels) == 0:
        raise ValueError("cannot score on an empty validation set")
    if metric == "accuracy":
        return float(np.mean(np.argmax(predictions, axis=1) == labels))
    if metric == "mae":
        return float(np.mean(np.abs(predictions.reshape(-1) - labels.reshape(-1))))
    if metric == "rmse":
        return float(np.sqrt(np.mean(np.square(predictions.reshape(-1) - labels.reshape(-1)))))
    raise ValueError(f"unknown metric {metric!r}")


METRICS = {"classification": ("accuracy",), "regression": ("mae", "rmse")}  # the first is the task's metric


def scores(predictions: np.ndarray, labels: np.ndarray, category: str) -> dict[str, float]:
    """Every metric of ``category``: {"accuracy": ...} or {"mae": ..., "rmse": ...}."""
    return {m: score(predictions, labels, m) for m in METRICS[category]}


# Bytes of the widest layer output (float32) over one forward batch. A batch was 4,096 records whatever the
# model: a convolution's output over 4,096 MNIST records (28x28x16 floats each) is 205 MB, which made
# scoring a CNN the peak of an agent's memory. 8 MiB, not 32: the layers after the widest one hold
# their own outputs at the same time (32 MiB kept 39 MiB more resident in a cnn:16,32 agent, 8 MiB
# 6 MiB), for 3-22% more time per record scored (docs/DECISIONS.md).
ACTIVATION_BUDGET = 8 * 2**20
MAX_BATCH = 4096


def batch_for(model) -> int:
    """Records per forward batch for ``model``: as many as keep its widest layer output within
    ``ACTIVATION_BUDGET``, at most ``MAX_BATCH`` (2,674 for an MLP on MNIST, 167 for cnn:16,32)."""
    widest = 1
    for layer in model.layers:
        try:
            shape = layer.output.shape[1:]
        except (AttributeError, RuntimeError, ValueError):  # a layer called more than once has no one output
            continue
        widest = max(widest, int(np.prod([d for d in shape if d is not None], dtype=np.int64)))
    return int(max(1, min(MAX_BATCH, ACTIVATION_BUDGET // (4 * widest))))


def predict(model, x: np.ndarray) -> np.ndarray:
    """Model outputs for ``x`` in batches of ``batch_for(model)``, without Keras' fit/evaluate overhead,
    through the model's forward pass traced once (an eager Keras call spends about 2 ms in Python, most of
    scoring a peer's model on a small validation split)."""
    traced = _forward_passes.get(model)
    if traced is None:
        import tensorflow as tf

        owner = weakref.ref(model)  # the traced function must not keep the model alive
        traced = (tf.function(lambda t: owner()(t, training=False), reduce_retracing=True), batch_for(model))
        _forward_passes[model] = traced
    forward, batch = traced
    return np.concatenate([forward(x[i : i + batch]).numpy() for i in range(0, len(x), batch)])


_forward_passes: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> (traced forward pass, batch)
