"""Keras models named by a short spec, built lazily (TensorFlow is imported only when a model is built).

Specs: ``mlp:H1,H2,...`` (dense ReLU layers then softmax) and ``cnn:C1,C2,...`` (3x3 conv + 2x2
max-pool per entry, then softmax). Model size is a design choice: every update travels to every
peer, so the default ``mlp:128`` (101,770 parameters, 398 KiB as float32) is kept small.
"""

from __future__ import annotations

from typing import Any

from bpcv.errors import ConfigError


def parse_spec(spec: str) -> tuple[str, list[int]]:
    kind, _, sizes = spec.partition(":")
    try:
        widths = [int(s) for s in sizes.split(",") if s]
    except ValueError:
        widths = []
    if kind not in ("mlp", "cnn") or not widths or min(widths) < 1:
        raise ConfigError(f"model spec {spec!r}: use 'mlp:H1,H2,...' or 'cnn:C1,C2,...'")
    return kind, widths


def build_model(spec: str, input_shape: tuple[int, ...], num_classes: int, seed: int = 0) -> Any:
    """A Keras model (uncompiled) for ``spec``; the same seed gives the same initial weights."""
    kind, widths = parse_spec(spec)
    import tensorflow as tf

    tf.keras.utils.set_random_seed(seed)
    layers: list[Any] = [tf.keras.Input(shape=input_shape)]
    if kind == "cnn":
        for filters in widths:
            layers += [
                tf.keras.layers.Conv2D(filters, 3, activation="relu", padding="same"),
                tf.keras.layers.MaxPooling2D(),
            ]
        layers.append(tf.keras.layers.Flatten())
    else:
        layers.append(tf.keras.layers.Flatten())
        for width in widths:
            layers += [tf.keras.layers.Dense(width), tf.keras.layers.Activation("relu")]
    # Dense layers stay linear with the activation as its own layer: the weights are the same, and
    # DP training can reach each layer's pre-activation output (for per-example gradient norms).
    layers.append(tf.keras.layers.Dense(num_classes))
    if num_classes > 1:
        layers.append(tf.keras.layers.Activation("softmax"))
    return tf.keras.Sequential(layers)


def configure_tensorflow(threads: int) -> None:
    """Quiet TensorFlow's logs and bound its thread pools (call before the first model is built)."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(max(1, threads))
    except RuntimeError:
        pass  # already initialised; keep what is set
