"""Running a model without recomputing a fixed feature map for every call.

Mutual validation scores every peer's model on the agent's own validation set: N - 1 models a round;
the coordinator scores every round's global model on its test set. When a model starts with layers
that learn nothing (the frozen wavelet map of ``wavelet:J,L,P``, a Flatten), every honest model computes
the same features there, so they are computed once per data set and only the rest of the model runs per
model: at N = 50 this is most of an agent's round (docs/BENCHMARKS.md), and most of the coordinator's
decision (docs/SCALE.md). A model whose fixed layers' weights differ from the task's runs whole, so what
is scored is always exactly the model received.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bpcv.metrics import predict


class FixedPrefix:
    """The model's leading layers without trainable weights, as a feature map, and the rest as a head."""

    def __init__(self, model: Any) -> None:
        import tensorflow as tf

        self.model = model
        layers = list(model.layers)
        cut = 0
        while cut < len(layers) - 1 and not layers[cut].trainable_weights:
            cut += 1
        self.fixed_count = sum(len(layer.weights) for layer in layers[:cut])
        self.usable = self.fixed_count > 0  # a map with fixed weights (a bare Flatten is not worth caching)
        self.fixed = [np.array(w) for w in model.get_weights()[: self.fixed_count]]
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        if not self.usable:
            return
        self.features = tf.keras.Model(model.inputs, layers[cut - 1].output)
        # a Sequential of the model's own layers (set_weights on the model reaches it), which DP's ghost
        # clipping walks as a chain
        self.head = tf.keras.Sequential([tf.keras.Input(shape=layers[cut - 1].output.shape[1:]), *layers[cut:]])

    def applies_to(self, weights: list[np.ndarray]) -> bool:
        """Whether ``weights`` keep the fixed layers as the task built them (then the cached features hold)."""
        return self.usable and all(
            np.array_equal(w, f) for w, f in zip(weights[: self.fixed_count], self.fixed, strict=True)
        )

    def features_of(self, x: np.ndarray) -> np.ndarray:
        """The fixed map's output for ``x``, computed on first use (the cache holds the array itself, so a
        new array with a reused id is never confused with it)."""
        cached = self._cache.get(id(x))
        if cached is None or cached[0] is not x:
            cached = (x, predict(self.features, x))
            self._cache[id(x)] = cached
        return cached[1]

    def predict_head(self, x: np.ndarray) -> np.ndarray:
        """The model's outputs for ``x``, from the cached features of ``x``."""
        return predict(self.head, self.features_of(x))

    def outputs(self, weights: list[np.ndarray], x: np.ndarray, use_cache: bool = True) -> np.ndarray:
        """The model's outputs for ``x`` with ``weights`` (set on the model): from the cached features of
        ``x`` when ``use_cache`` and ``weights`` keep the fixed layers as the task built them, else whole."""
        self.model.set_weights(weights)
        return self.predict_head(x) if use_cache and self.applies_to(weights) else predict(self.model, x)
