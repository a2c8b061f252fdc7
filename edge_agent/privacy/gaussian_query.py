"""The Gaussian mechanism: tensorflow-privacy's own GaussianSumQuery, plus a whole-sample clip."""

from __future__ import annotations

import tensorflow as tf
from tensorflow_privacy.privacy.dp_query.gaussian_query import GaussianSumQuery


class GaussianBatchSumQuery(GaussianSumQuery):
    """GaussianSumQuery (L2 clip C, noise stddev C * m) that can also clip a whole sample at once."""

    def __init__(self, l2_norm_clip: float, noise_multiplier: float) -> None:
        super().__init__(l2_norm_clip, l2_norm_clip * noise_multiplier)
        self.noise_multiplier = float(noise_multiplier)

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
