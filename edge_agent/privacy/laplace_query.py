"""The Laplace mechanism as a tensorflow-privacy DPQuery (the paper's GD-DP).

Each record is clipped to an L1 norm of at most C (L1 is the Laplace mechanism's sensitivity: adding
or removing one record moves the sum by at most C in L1), the sample is summed, and independent
Laplace noise of scale b = C * m is added to every coordinate. One step is then (1/m)-DP.
"""

from __future__ import annotations

import collections
from typing import Any

import dp_accounting
import tensorflow as tf
from tensorflow_privacy.privacy.dp_query import dp_query


def l1_clip_factors(per_example: list[tf.Tensor], l1_norm_clip: tf.Tensor) -> tf.Tensor:
    """Per-record factors min(1, C / ||record||_1) for records stacked along axis 0 of every tensor."""
    norms = tf.add_n([tf.reduce_sum(tf.abs(tf.reshape(t, [tf.shape(t)[0], -1])), axis=1) for t in per_example])
    return tf.minimum(1.0, l1_norm_clip / tf.maximum(norms, 1e-12))


def scaled_sum(per_example: list[tf.Tensor], factors: tf.Tensor) -> list[tf.Tensor]:
    """Sum over axis 0 of every tensor, each record scaled by its factor."""
    return [tf.tensordot(factors, t, axes=1) for t in per_example]


def laplace_from_uniform(u: tf.Tensor, scale: tf.Tensor) -> tf.Tensor:
    """Inverse CDF of Laplace(0, scale) at u in [-0.5, 0.5).

    float32 uniforms lie on a grid of 2^-24 and can be exactly -0.5, where the inverse CDF is
    infinite; 1 - 2|u| is floored at that grid step, so the largest sample is 16.6 * scale (the
    Laplace tail beyond it has probability 6e-8, the grid's own resolution).
    """
    return -scale * tf.sign(u) * tf.math.log(tf.maximum(1.0 - 2.0 * tf.abs(u), 2.0**-24))


class LaplaceSumQuery(dp_query.SumAggregationDPQuery):
    """Clips records to L1 norm ``l1_norm_clip``; adds Laplace(``l1_norm_clip * noise_multiplier``) noise."""

    _GlobalState = collections.namedtuple("_GlobalState", ["l1_norm_clip", "noise_scale"])

    def __init__(self, l1_norm_clip: float, noise_multiplier: float, seed: int | None = None) -> None:
        if l1_norm_clip <= 0 or noise_multiplier < 0:
            raise ValueError("l1_norm_clip must be > 0 and noise_multiplier >= 0")
        self._l1_norm_clip = float(l1_norm_clip)
        self._noise_multiplier = float(noise_multiplier)
        self._rng = (
            tf.random.Generator.from_seed(seed)
            if seed is not None
            else tf.random.Generator.from_non_deterministic_state()
        )

    @property
    def noise_multiplier(self) -> float:
        return self._noise_multiplier

    def initial_global_state(self) -> Any:
        return self._GlobalState(
            tf.constant(self._l1_norm_clip, tf.float32),
            tf.constant(self._l1_norm_clip * self._noise_multiplier, tf.float32),
        )

    def derive_sample_params(self, global_state: Any) -> tf.Tensor:
        return global_state.l1_norm_clip

    def preprocess_record(self, params: tf.Tensor, record: Any) -> Any:
        """One record clipped to L1 norm at most ``params``."""
        flat = tf.nest.flatten(record)
        factor = l1_clip_factors([tf.expand_dims(t, 0) for t in flat], params)[0]
        return tf.nest.pack_sequence_as(record, [t * factor for t in flat])

    def preprocess_batch(self, params: tf.Tensor, per_example: list[tf.Tensor]) -> list[tf.Tensor]:
        """The sum of a whole sample's clipped records at once (records stacked on axis 0): the
        vectorised equivalent of ``accumulate_record`` over every record."""
        return scaled_sum(per_example, l1_clip_factors(per_example, params))

    def outer_norm_parts(self, inputs: tf.Tensor, deltas: tf.Tensor) -> tf.Tensor:
        """Per-record L1 norm of a Dense layer's weight and bias gradient: |h|_1 |delta|_1 + |delta|_1."""
        d1 = tf.reduce_sum(tf.abs(deltas), axis=1)
        return tf.reduce_sum(tf.abs(inputs), axis=1) * d1 + d1

    def clip_factors(self, params: tf.Tensor, norm_parts: list[tf.Tensor]) -> tf.Tensor:
        """min(1, C / total L1 norm) per record, from each layer's part of the norm."""
        return tf.minimum(1.0, params / tf.maximum(tf.add_n(norm_parts), 1e-12))

    def laplace_noise(self, shape: Any, scale: tf.Tensor) -> tf.Tensor:
        """Laplace(0, scale) samples from this query's random generator."""
        return laplace_from_uniform(self._rng.uniform(shape, minval=-0.5, maxval=0.5), scale)

    def get_noised_result(self, sample_state: Any, global_state: Any) -> tuple[Any, Any, Any]:
        def add_noise(v: tf.Tensor) -> tf.Tensor:
            if self._noise_multiplier == 0:
                return v
            return v + tf.cast(self.laplace_noise(tf.shape(v), global_state.noise_scale), v.dtype)

        result = tf.nest.map_structure(add_noise, sample_state)
        event = (
            dp_accounting.LaplaceDpEvent(self._noise_multiplier)
            if self._noise_multiplier
            else (dp_accounting.NonPrivateDpEvent())
        )
        return result, global_state, event
