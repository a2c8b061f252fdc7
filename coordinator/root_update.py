"""FLTrust's server update (``coordinator.strategies.fltrust``): the task's model trained from the round's
global weights on a small clean root data set the coordinator holds.

Cao et al. (NDSS 2021) give the server 100 clean records and train on them the way the clients train.
``root_set`` takes them, class-balanced, from the coordinator's held-out test data (the set
``coordinator.evaluation`` scores the global model on); ``RootTrainer`` trains like an agent without
DP (``edge_agent.trainer.Trainer``: plain SGD at the task's learning rate, shuffled mini-batches of the
task's batch size, the task's local epochs). The coordinator may not import the agent's package (the
import contract keeps the roles apart), so the few lines of that non-DP path are repeated here.
TensorFlow is imported only when a model is built or trained.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bpcv.models import build_model
from bpcv.task import TaskSpec
from coordinator.aggregate import Weights

ROOT_SIZE = 100  # FLTrust's root data set


def root_indices(y: np.ndarray, size: int = ROOT_SIZE, seed: int = 0) -> np.ndarray:
    """Indices (ascending) of ``size`` records of ``y``: for integer labels, class-balanced (each class
    size // k records or one more, a class short of records leaving its share to the others); for
    regression targets, uniformly at random. Every record when there are no more than ``size``."""
    if size < 1:
        raise ValueError(f"a root data set needs at least one record, not {size}")
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    if len(y) <= size:
        return np.arange(len(y))
    if not np.issubdtype(y.dtype, np.integer):
        return np.sort(rng.choice(len(y), size, replace=False))
    classes = rng.permutation(np.unique(y))  # which classes get the remainder is random too
    pools = [list(rng.permutation(np.flatnonzero(y == c))) for c in classes]
    chosen: list[int] = []
    while len(chosen) < size:  # round-robin over the classes; ends, since len(y) > size
        for pool in pools:
            if pool and len(chosen) < size:
                chosen.append(int(pool.pop()))
    return np.sort(np.array(chosen))


def root_set(
    test_x: np.ndarray, test_y: np.ndarray, size: int = ROOT_SIZE, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """FLTrust's root data set: ``size`` records of the coordinator's held-out data (``root_indices``)."""
    if len(test_x) != len(test_y):
        raise ValueError(f"{len(test_x)} inputs but {len(test_y)} labels")
    idx = root_indices(test_y, size, seed)
    return test_x[idx], test_y[idx]


class RootTrainer:
    """``trainer(global_weights)``: the task's model trained from ``global_weights`` on the root data
    (x, y); the same seed and call count give the same weights."""

    def __init__(
        self,
        task: TaskSpec,
        x: np.ndarray,
        y: np.ndarray,
        num_classes: int,
        epochs: int | None = None,
        seed: int = 0,
    ) -> None:
        """``num_classes``: the model's outputs (the classes, or a regression's targets); ``epochs``: the
        task's local epochs unless given (FLTrust trains the server's update like the clients')."""
        if len(x) != len(y) or len(y) == 0:
            raise ValueError(f"a root data set needs matching, non-empty inputs and labels ({len(x)}, {len(y)})")
        self.task = task
        self.x, self.y = x, y
        self.num_classes = num_classes
        self.epochs = task.local_epochs if epochs is None else epochs
        self.seed = seed
        self.calls = 0
        self._model: Any = None

    def model(self) -> Any:
        """The task's Keras model, compiled for plain SGD (built on first use)."""
        if self._model is None:
            import tensorflow as tf

            model = build_model(self.task.model, tuple(self.x.shape[1:]), self.num_classes, seed=0)
            if self.task.category == "classification":
                loss: Any = tf.keras.losses.SparseCategoricalCrossentropy()
            else:
                loss = tf.keras.losses.MeanSquaredError()
            model.compile(optimizer=tf.keras.optimizers.legacy.SGD(learning_rate=self.task.learning_rate), loss=loss)
            self._model = model
        return self._model

    def __call__(self, global_weights: Weights) -> Weights:
        import tensorflow as tf

        model = self.model()
        tf.keras.utils.set_random_seed(self.seed + self.calls)
        self.calls += 1  # once a round: this is round ``calls``
        model.optimizer.learning_rate = self.task.learning_rate_in(self.calls)
        model.set_weights(global_weights)
        model.fit(self.x, self.y, batch_size=self.task.batch_size, epochs=self.epochs, verbose=0, shuffle=True)
        return [np.asarray(w, dtype=np.float32) for w in model.get_weights()]


def root_trainer(
    task: TaskSpec, test_x: np.ndarray | None, test_y: np.ndarray | None, num_classes: int
) -> RootTrainer | None:
    """For an FLTrust task, its server training on a root set taken from the coordinator's held-out data
    (``coordinator.evaluation.Evaluation``'s x_test / y_test); None for any other strategy, or when the
    coordinator holds no test data (``strategy_named`` then refuses FLTrust with the reason)."""
    if task.strategy != "fltrust" or test_x is None or test_y is None:
        return None
    x, y = root_set(test_x, test_y)
    return RootTrainer(task, x, y, num_classes)
