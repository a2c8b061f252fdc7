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


def predict(model, x: np.ndarray, batch: int = 4096) -> np.ndarray:
    """Model outputs for ``x`` in batches, without Keras' fit/evaluate overhead, through the model's
    forward pass traced once (an eager Keras call spends about 2 ms in Python, most of scoring a peer's
    model on a small validation split)."""
    forward = _forward_passes.get(model)
    if forward is None:
        import tensorflow as tf

        owner = weakref.ref(model)  # the traced function must not keep the model alive
        forward = tf.function(lambda t: owner()(t, training=False), reduce_retracing=True)
        _forward_passes[model] = forward
    return np.concatenate([forward(x[i : i + batch]).numpy() for i in range(0, len(x), batch)])


_forward_passes: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> its traced forward pass
