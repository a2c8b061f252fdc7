"""Local training and peer scoring with TensorFlow (imported lazily).

One Trainer per process serves every agent of a pool in turn: weights are set before each job,
so the compiled model is shared and only built once per task.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from bpcv.metrics import predict, score
from bpcv.models import build_model
from bpcv.task import TaskSpec

log = logging.getLogger(__name__)


class Trainer:
    """Builds the task's model once and runs training / evaluation jobs on it."""

    def __init__(self, task: TaskSpec, input_shape: tuple[int, ...], num_classes: int) -> None:
        self.task = task
        self.model = build_model(task.model, input_shape, num_classes, seed=0)
        self.model.compile(optimizer=self.make_optimizer(), loss=self._loss())
        self.shapes = [tuple(w.shape) for w in self.model.get_weights()]

    def _loss(self) -> Any:
        import tensorflow as tf

        if self.task.category == "classification":
            return tf.keras.losses.SparseCategoricalCrossentropy()
        return tf.keras.losses.MeanSquaredError()

    def make_optimizer(self) -> Any:
        """The local optimizer: plain SGD here; the seam where the GD-DP optimizer plugs in."""
        import tensorflow as tf

        return tf.keras.optimizers.legacy.SGD(learning_rate=self.task.learning_rate)

    def train(self, weights: list[np.ndarray], x: np.ndarray, y: np.ndarray, seed: int) -> list[np.ndarray]:
        """Train from ``weights`` for the task's local epochs; return the new weights."""
        import tensorflow as tf

        tf.keras.utils.set_random_seed(seed)
        self.model.set_weights(weights)
        self.model.fit(x, y, batch_size=self.task.batch_size, epochs=self.task.local_epochs, verbose=0, shuffle=True)
        return [np.asarray(w, dtype=np.float32) for w in self.model.get_weights()]

    def evaluate(self, weights: list[np.ndarray], x: np.ndarray, y: np.ndarray) -> float:
        """Score ``weights`` on (x, y) with the task's metric."""
        self.model.set_weights(weights)
        return score(predict(self.model, x), y, self.task.metric)
