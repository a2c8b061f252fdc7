"""Local training and peer scoring with TensorFlow (imported lazily).

One Trainer per process, task and privacy setting serves every agent of a pool with those settings:
weights are set before each job, so the compiled model is shared and only built once.
Without DP it trains with shuffled mini-batches; with DP (GD-DP) every step samples each record
with probability q = batch_size / n (Poisson sampling, which the privacy accounting assumes).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import numpy as np

from bpcv.errors import ConfigError
from bpcv.fixed_prefix import FixedPrefix
from bpcv.metrics import scores
from bpcv.model_spec import check_keras_json, describe, dp_refusal, is_keras_json
from bpcv.models import build_model
from bpcv.task import TaskSpec
from edge_agent.privacy.settings import PrivacySettings, steps_per_round

log = logging.getLogger(__name__)


def poisson_batches(
    x: np.ndarray, y: np.ndarray, sampling_rate: float, steps: int, rng: np.random.Generator
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``steps`` batches, each holding every record independently with probability ``sampling_rate``."""
    for _ in range(steps):
        idx = np.flatnonzero(rng.random(len(y)) < sampling_rate)
        yield x[idx], y[idx]


class Trainer:
    """Builds the task's model once and runs training / evaluation jobs on it."""

    def __init__(
        self,
        task: TaskSpec,
        input_shape: tuple[int, ...],
        num_classes: int,
        privacy: PrivacySettings | None = None,
        dp_path: str = "auto",
        cache_features: bool = True,
    ) -> None:
        """``dp_path``: ``ghost`` (Dense models), ``jacobian`` (any model), ``auto`` (ghost when it can),
        or ``library-loop`` (tensorflow-privacy's own record-by-record loop through Keras fit).
        ``cache_features``: run a fixed leading feature map once per data set (``bpcv.fixed_prefix``)."""
        self.task = task
        self.privacy = privacy if privacy and privacy.mechanism != "off" else None
        if self.privacy is not None and is_keras_json(task.model):
            problem = dp_refusal(check_keras_json(task.model))
            if problem:  # a BpcvError: the agent logs it and does not join
                raise ConfigError(f"task {task.task_id}: {problem}")
        self.model = build_model(task.model, input_shape, num_classes, seed=0)
        self.loss = self._loss()
        self.optimizer = self.make_optimizer()
        self.model.compile(optimizer=self.optimizer, loss=self.loss)
        self.shapes = [tuple(w.shape) for w in self.model.get_weights()]
        self.prefix = FixedPrefix(self.model)
        # A fixed feature map is computed once per data set; training and scoring run only the rest (the
        # gradients of frozen layers are zero, so the steps are the same). Not on tensorflow-privacy's loop.
        self.cached = cache_features and self.prefix.usable and dp_path != "library-loop"
        self.trained = self.prefix.head if self.cached else self.model
        if self.cached:
            self.trained.compile(optimizer=self.optimizer, loss=self.loss)
        self._dp_step = None
        self._train_steps: dict[Any, Any] = {}  # one traced Keras train_step per model trained
        if self.privacy is not None and dp_path != "library-loop":
            self._dp_step = self._make_dp_step(tuple(self.trained.input_shape[1:]), dp_path)

    def _make_dp_step(self, input_shape: tuple[int, ...], dp_path: str) -> Any:
        import tensorflow as tf

        from edge_agent.privacy.optimizer import supports_ghost_clipping

        ghost = supports_ghost_clipping(self.trained) if dp_path == "auto" else dp_path == "ghost"
        if ghost and not supports_ghost_clipping(self.trained):
            raise ValueError(f"model {describe(self.task.model)} has layers ghost clipping cannot handle")
        self.dp_path = "ghost" if ghost else "jacobian"
        label = (
            tf.TensorSpec((None,), tf.int64)
            if self.task.category == "classification"
            else (tf.TensorSpec((None,), tf.float32))
        )

        @tf.function(input_signature=[tf.TensorSpec((None, *input_shape), tf.float32), label])
        def step(x: Any, y: Any) -> None:
            if self.task.category == "regression":  # (batch, 1) like the output: MSE keeps one loss per record
                y = tf.reshape(y, (-1, 1))
            self.optimizer.dp_step(self.trained, self.loss, x, y, ghost)

        return step

    def _loss(self) -> Any:
        import tensorflow as tf

        # DP needs the per-example losses: the optimizer differentiates each one.
        reduction = tf.keras.losses.Reduction.NONE if self.privacy else tf.keras.losses.Reduction.AUTO
        if self.task.category == "classification":
            return tf.keras.losses.SparseCategoricalCrossentropy(reduction=reduction)
        return tf.keras.losses.MeanSquaredError(reduction=reduction)

    def make_optimizer(self) -> Any:
        """Plain SGD, or DP-SGD whose query is the Laplace or Gaussian mechanism."""
        import tensorflow as tf

        if self.privacy is None:
            return tf.keras.optimizers.legacy.SGD(learning_rate=self.task.learning_rate)
        from edge_agent.privacy.optimizer import VectorizedDPSGD

        p = self.privacy
        if p.mechanism == "laplace":
            from edge_agent.privacy.laplace_query import LaplaceSumQuery

            query: Any = LaplaceSumQuery(p.clip, p.noise_multiplier)
        else:
            from edge_agent.privacy.gaussian_query import GaussianBatchSumQuery

            query = GaussianBatchSumQuery(p.clip, p.noise_multiplier)
        return VectorizedDPSGD(query, expected_batch_size=self.task.batch_size, learning_rate=self.task.learning_rate)

    def train(
        self, weights: list[np.ndarray], x: np.ndarray, y: np.ndarray, seed: int, round_no: int = 1
    ) -> tuple[list[np.ndarray], int]:
        """Train from ``weights`` for the task's local epochs at round ``round_no``'s learning rate; return
        the new weights and the steps taken."""
        import tensorflow as tf

        # No tf.random.set_seed here: it clears TensorFlow's kernel caches, so every compiled function was
        # instantiated again at each job (~40 ms, most of a small shard's round; docs/DECISIONS.md). The
        # job's randomness is seeded explicitly instead: the permutations below, the Poisson batches.
        self.optimizer.learning_rate = self.task.learning_rate_in(round_no)
        self.model.set_weights(weights)
        steps = steps_per_round(len(y), self.task)
        if self.cached and self.prefix.applies_to(weights):
            x = self.prefix.features_of(x)
            model = self.trained
        else:
            model = self.model
        if self.privacy is None:
            self._fit(model, x, y, seed)
            return [np.asarray(w, dtype=np.float32) for w in self.model.get_weights()], steps
        rate = min(1.0, self.task.batch_size / len(y))
        batches = poisson_batches(x, y, rate, steps, np.random.default_rng(seed))
        if self._dp_step is not None:
            for xb, yb in batches:
                self._dp_step(tf.constant(xb), tf.constant(yb))
        else:  # tensorflow-privacy's own loop, through Keras fit
            dataset = tf.data.Dataset.from_generator(
                lambda: batches,
                output_signature=(
                    tf.TensorSpec((None, *x.shape[1:]), tf.float32),
                    tf.TensorSpec((None,), tf.as_dtype(y.dtype)),
                ),
            )
            self.model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0)
        return [np.asarray(w, dtype=np.float32) for w in self.model.get_weights()], steps

    def _fit(self, model: Any, x: np.ndarray, y: np.ndarray, seed: int) -> None:
        """What ``tf.keras.utils.set_random_seed(seed)`` then ``model.fit(x, y, batch_size, epochs,
        shuffle=True)`` does, step for step and bit for bit: Keras' own per-epoch permutations (the same
        op with the seeds fit's would get) and its ``train_step`` on each slice, partial last batch
        included, but without fit's tf.data pipeline over the data set, which kept about 250 MiB more
        resident in an agent (docs/DEPLOY.md), and without resetting the global seed."""
        import tensorflow as tf

        n, batch = len(y), self.task.batch_size
        x, y = _keras_dtype(x), _keras_dtype(y)
        if model not in self._train_steps:
            self._train_steps[model] = tf.function(model.train_step, reduce_retracing=True)
        step = self._train_steps[model]
        seeds = _shuffle_seeds(seed)
        epochs = tf.data.Dataset.range(1).repeat(self.task.local_epochs)
        orders = epochs.map(lambda _: tf.raw_ops.RandomShuffle(value=tf.range(n, dtype=tf.int64), **seeds))
        for order in orders.as_numpy_iterator():
            for start in range(0, n, batch):
                rows = order[start : start + batch]
                step((x[rows], y[rows]))

    def evaluate(self, weights: list[np.ndarray], x: np.ndarray, y: np.ndarray) -> float:
        """Score ``weights`` on (x, y) with the task's metric."""
        return self.evaluate_all(weights, x, y)[self.task.metric]

    def evaluate_all(self, weights: list[np.ndarray], x: np.ndarray, y: np.ndarray) -> dict[str, float]:
        """Every metric of the task's category for ``weights`` on (x, y) (regression: MAE and RMSE)."""
        return scores(self.prefix.outputs(weights, x, self.cached), y, self.task.category)


def _shuffle_seeds(seed: int) -> dict[str, int]:
    """The seeds of the shuffle fit traces after ``tf.random.set_seed(seed)``: the global seed and op seed
    0, the first random op of its graph (tensorflow/python/framework/random_seed.py ``get_seed``)."""
    top = 2**31 - 1
    global_seed = seed % top
    return {"seed": global_seed, "seed2": 0} if global_seed else {"seed": 0, "seed2": top}  # (0, 0): unseeded


def _keras_dtype(a: np.ndarray) -> np.ndarray:
    """Floating arrays as float32, as Keras' fit converts them; integer labels as they are."""
    return a.astype(np.float32) if np.issubdtype(a.dtype, np.floating) and a.dtype != np.float32 else a
