"""DP-SGD in tensorflow-privacy's generic Keras optimizer, with fast per-example clipping.

tensorflow-privacy's generic optimizer computes every example's gradient (a Jacobian) and then
clips and accumulates the records one at a time in a ``tf.while_loop``. This optimizer keeps its
query (the mechanism: clip, sum, noise) and its global state, and adds two faster ways to get the
same clipped sum:

- ``ghost``: for models whose trainable layers are linear Dense layers (activations as separate
  layers), the gradient of one example for a layer ``z = h W + b`` is the outer product of its input
  ``h`` and ``delta = dLoss/dz``; its L1 norm is ``|h|_1 |delta|_1`` and its L2 norm
  ``|h|_2 |delta|_2``, so every record's norm comes from one ordinary backward pass, and the clipped
  sum is ``H^T (c * Delta)``: no per-example gradient is ever materialised;
- ``jacobian``: per-example gradients by a vectorised Jacobian, clipped together by the query's
  ``preprocess_batch`` (any model).

Gradients are divided by the *expected* batch size, as DP-SGD with Poisson sampling requires.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf
from tensorflow_privacy.privacy.optimizers.dp_optimizer_keras import make_keras_generic_optimizer_class

_GenericDPSGD = make_keras_generic_optimizer_class(tf.keras.optimizers.legacy.SGD)


def supports_ghost_clipping(model: Any) -> bool:
    """True for a Sequential model whose trainable layers are all linear Dense layers with bias on a flat
    (batch, features) input; every other layer must have no trainable weights (pooling, flattening, a
    frozen feature map: fixed functions of one record). The ghost step walks ``model.layers`` as a
    chain, and its outer-product norms hold only for 2-D layer inputs."""
    if not isinstance(model, tf.keras.Sequential):
        return False
    for layer in model.layers:
        if not layer.trainable_weights:
            continue
        if not isinstance(layer, tf.keras.layers.Dense):
            return False
        if layer.activation is not tf.keras.activations.linear or not layer.use_bias or len(layer.input_shape) != 2:
            return False
    return True


class VectorizedDPSGD(_GenericDPSGD):  # type: ignore[misc, valid-type]
    """DP-SGD whose ``dp_sum_query`` clips, sums and noises; see the module docstring for the paths."""

    _global_state: Any  # the query's state, set by tensorflow-privacy's constructor

    def __init__(self, dp_sum_query: Any, expected_batch_size: float, **kwargs: Any) -> None:
        super().__init__(dp_sum_query, num_microbatches=None, **kwargs)
        self._expected_batch_size = float(expected_batch_size)

    def clipped_sum_ghost(self, model: Any, loss_fn: Any, x: tf.Tensor, y: tf.Tensor) -> list[tf.Tensor]:
        """Sum of per-example clipped gradients via layer inputs and output gradients (Dense models)."""
        params = self._dp_sum_query.derive_sample_params(self._global_state)
        inputs, outputs = [], []
        with tf.GradientTape() as tape:
            h = x
            for layer in model.layers:
                if layer.trainable_weights:  # a Dense layer (supports_ghost_clipping checked)
                    inputs.append(h)
                    h = layer(h)
                    outputs.append(h)
                else:
                    h = layer(h)
            total_loss = tf.reduce_sum(loss_fn(y, h))
        deltas = tape.gradient(total_loss, outputs)
        norm_parts = [self._dp_sum_query.outer_norm_parts(a, d) for a, d in zip(inputs, deltas, strict=True)]
        factors = self._dp_sum_query.clip_factors(params, norm_parts)
        sums: list[tf.Tensor] = []
        for a, d in zip(inputs, deltas, strict=True):
            scaled = d * factors[:, None]
            sums += [tf.matmul(a, scaled, transpose_a=True), tf.reduce_sum(scaled, axis=0)]
        return sums

    def clipped_sum_jacobian(self, model: Any, loss_fn: Any, x: tf.Tensor, y: tf.Tensor) -> list[tf.Tensor]:
        """Sum of per-example clipped gradients from a vectorised Jacobian (any model)."""
        params = self._dp_sum_query.derive_sample_params(self._global_state)
        with tf.GradientTape() as tape:
            losses = loss_fn(y, model(x, training=True))
        per_example = tape.jacobian(losses, model.trainable_variables, unconnected_gradients="zero")
        return self._dp_sum_query.preprocess_batch(params, per_example)

    def noised_mean(self, clipped_sum: list[tf.Tensor]) -> list[tf.Tensor]:
        """Ask the query for its noised result and divide by the expected batch size."""
        noised, self._global_state, _ = self._dp_sum_query.get_noised_result(clipped_sum, self._global_state)
        return [g / self._expected_batch_size for g in noised]

    def dp_step(self, model: Any, loss_fn: Any, x: tf.Tensor, y: tf.Tensor, ghost: bool) -> None:
        """One DP-SGD step on the sample (x, y)."""
        self._was_dp_gradients_called = True
        clipped = (self.clipped_sum_ghost if ghost else self.clipped_sum_jacobian)(model, loss_fn, x, y)
        self.apply_gradients(zip(self.noised_mean(clipped), model.trainable_variables, strict=True))
