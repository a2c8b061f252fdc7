"""The Gaussian mechanism: tensorflow-privacy's own GaussianSumQuery, plus a whole-sample clip and noise
from the query's own random generator."""

from __future__ import annotations

from typing import Any

import dp_accounting
import tensorflow as tf
from tensorflow_privacy.privacy.dp_query.gaussian_query import GaussianSumQuery


class GaussianBatchSumQuery(GaussianSumQuery):
    """GaussianSumQuery (L2 clip C, noise stddev C * m) that can also clip a whole sample at once.

    The library draws its noise with ``tf.random_normal_initializer``: inside a ``tf.function`` that op's
    stream starts again from the same numbers whenever ``tf.keras.utils.set_random_seed`` is called, with
    any seed. The trainer seeds every round, so every round and every agent added the SAME noise: it did
    not average out over agents, it piled up over rounds, and the rounds were not independent as the
    accounting assumes. The noise here comes from this query's own ``tf.random.Generator`` (as in
    ``LaplaceSumQuery``), which the global seed does not touch.
    """

    def __init__(self, l2_norm_clip: float, noise_multiplier: float, seed: int | None = None) -> None:
        super().__init__(l2_norm_clip, l2_norm_clip * noise_multiplier)
        self.noise_multiplier = float(noise_multiplier)
        self._rng = (
            tf.random.Generator.from_seed(seed)
            if seed is not None
            else tf.random.Generator.from_non_deterministic_state()
        )

    def preprocess_batch(self, params: tf.Tensor, per_example: list[tf.Tensor]) -> list[tf.Tensor]:
        """Sum of records each clipped to L2 norm ``params`` (records stacked on axis 0)."""
        squares = tf.add_n([tf.reduce_sum(tf.square(tf.reshape(t, [tf.shape(t)[0], -1])), axis=1) for t in per_example])
        factors = tf.minimum(1.0, params / tf.maximum(tf.sqrt(squares), 1e-12))
        return [tf.tensordot(factors, t, axes=1) for t in per_example]

    def outer_norm_parts(self, inputs: tf.Tensor, deltas: tf.Tensor) -> tf.Tensor:
        """Per-record squared L2 norm of a Dense layer's weight and bias gradient: |h|^2 |delta|^2 + |delta|^2."""
        d2 = tf.reduce_sum(tf.square(deltas), axis=1)
        return tf.reduce_sum(tf.square(inputs), axis=1) * d2 + d2

    def clip_factors(self, params: tf.Tensor, norm_parts: list[tf.Tensor]) -> tf.Tensor:
        """min(1, C / total L2 norm) per record, from each layer's squared part of the norm."""
        return tf.minimum(1.0, params / tf.maximum(tf.sqrt(tf.add_n(norm_parts)), 1e-12))

    def get_noised_result(self, sample_state: Any, global_state: Any) -> tuple[Any, Any, Any]:
        """The sum plus N(0, (C m)^2) noise per coordinate, drawn from this query's own generator."""

        def add_noise(v: tf.Tensor) -> tf.Tensor:
            noise = self._rng.normal(tf.shape(v), stddev=global_state.stddev)
            return v + tf.cast(noise, v.dtype)

        result = tf.nest.map_structure(add_noise, sample_state)
        event = dp_accounting.GaussianDpEvent(global_state.stddev / global_state.l2_norm_clip)
        return result, global_state, event
