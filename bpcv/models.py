"""Keras models named by a short spec or given as Keras JSON, built lazily (TensorFlow is imported
only when a model is built).

Specs: ``mlp:H1,H2,...`` (dense ReLU layers then softmax), ``cnn:C1,C2,...`` (3x3 conv + 2x2
max-pool per entry, then softmax) and ``wavelet:J,L,P`` (a frozen Morlet wavelet feature map at J
scales and L orientations, P x P average pooling, then one trainable Dense layer: the model sized for
DP, see ``bpcv.wavelets``). Model size is a design choice: every update travels to every
peer, so the default ``mlp:128`` (101,770 parameters, 398 KiB as float32) is kept small.
Keras JSON (the requester's own model) is built only after ``bpcv.model_spec`` checked it, with no
custom objects, and only when its parameter count (counted first without allocating) is under the cap.
"""

from __future__ import annotations

from typing import Any

from bpcv.errors import ConfigError
from bpcv.model_spec import MAX_MODEL_PARAMS, check_keras_json, is_keras_json


def parse_spec(spec: str) -> tuple[str, list[int]]:
    kind, _, sizes = spec.partition(":")
    try:
        widths = [int(s) for s in sizes.split(",") if s]
    except ValueError:
        widths = []
    if (
        kind not in ("mlp", "cnn", "wavelet")
        or not widths
        or min(widths) < 1
        or (kind == "wavelet" and len(widths) != 3)
    ):
        raise ConfigError(f"model spec {spec!r}: use 'mlp:H1,H2,...', 'cnn:C1,C2,...' or 'wavelet:J,L,P'")
    return kind, widths


def build_model(spec: str, input_shape: tuple[int, ...], num_classes: int, seed: int = 0) -> Any:
    """A Keras model (uncompiled) for ``spec`` (a preset or Keras JSON); the same seed gives the same
    initial weights."""
    if is_keras_json(spec):
        return build_keras_json(spec, input_shape, num_classes, seed)
    kind, widths = parse_spec(spec)
    import tensorflow as tf

    tf.keras.utils.set_random_seed(seed)
    layers: list[Any] = [tf.keras.Input(shape=input_shape)]
    if kind == "wavelet":
        layers += _wavelet_layers(widths, input_shape)
    elif kind == "cnn":
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


def fixed_weights(model: Any) -> list[bool]:
    """For each of ``model.get_weights()``, whether training leaves it as built: the weights of a layer
    without trainable weights (the wavelet map, a Keras layer marked untrainable). A trainable layer's
    non-trainable weights (batch-norm statistics) move in training and count as trained."""
    return [not layer.trainable_weights for layer in model.layers for _ in layer.weights]


def _wavelet_layers(spec: list[int], input_shape: tuple[int, ...]) -> list[Any]:
    """The frozen wavelet feature map (weights set, trainable=False), its pooling and the flattening."""
    import tensorflow as tf

    from bpcv.wavelets import feature_kernels

    scales, orientations, pool = spec
    if len(input_shape) != 3:
        raise ConfigError(f"model 'wavelet' needs image input (height, width, channels), not {list(input_shape)}")
    depthwise, combine = feature_kernels(input_shape[-1], scales, orientations)
    filters = tf.keras.layers.DepthwiseConv2D(
        depthwise.shape[0], depth_multiplier=depthwise.shape[-1], padding="same", use_bias=False, activation="relu"
    )
    moduli = tf.keras.layers.Conv2D(combine.shape[-1], 1, use_bias=False)
    filters.build((None, *input_shape))
    moduli.build((None, *input_shape[:2], combine.shape[2]))
    filters.set_weights([depthwise])
    moduli.set_weights([combine])
    filters.trainable = moduli.trainable = False
    # Each record's features standardised across channels at every position: a fixed function of the
    # one record (no statistics over records, no weights), which lets SGD converge in the few steps a
    # DP budget allows (0.967 vs 0.932 after 60 plain SGD steps on MNIST, docs/PRIVACY.md).
    normalise = tf.keras.layers.LayerNormalization(axis=-1, center=False, scale=False)
    return [filters, moduli, tf.keras.layers.AveragePooling2D(pool), normalise, tf.keras.layers.Flatten()]


def count_keras_json_params(text: str) -> int:
    """The parameter count of checked Keras JSON, counted in a throwaway graph: variables there are only
    declared, so a model far over the cap allocates nothing."""
    info = check_keras_json(text)
    import tensorflow as tf

    with tf.Graph().as_default():
        return int(_from_json(info.to_json()).count_params())


def _from_json(text: str) -> Any:
    """Keras' own builder on checked text, with no custom objects; its complaint as one ConfigError line."""
    import tensorflow as tf

    try:
        return tf.keras.models.model_from_json(text)
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"Keras cannot build the model: {first[:200]}") from exc


def build_keras_json(
    text: str,
    input_shape: tuple[int, ...] | None = None,
    num_classes: int | None = None,
    seed: int = 0,
    max_params: int = MAX_MODEL_PARAMS,
) -> Any:
    """The requester's model from Keras JSON: checked, counted, then built with no custom objects.
    ConfigError when it is refused, too large, or its input/output does not fit the data."""
    info = check_keras_json(text)
    params = count_keras_json_params(text)
    if params > max_params:
        raise ConfigError(f"model has {params:,} parameters; the cap is {max_params:,}")
    if input_shape is not None:
        declared = info.input_shape
        fits = len(declared) == len(input_shape) and all(
            d is None or d == s for d, s in zip(declared, input_shape, strict=True)
        )
        if not fits:
            shape = list(declared)
            raise ConfigError(f"model input shape {shape} does not match the data's input shape {list(input_shape)}")
    import tensorflow as tf

    tf.keras.utils.set_random_seed(seed)
    model = _from_json(info.to_json())
    if num_classes is not None:
        out = model.output_shape
        if len(out) != 2 or out[-1] != num_classes:
            raise ConfigError(
                f"model output shape {list(out)} does not match the task: it must be [null, {num_classes}] "
                f"({'the number of classes' if num_classes > 1 else 'one value for regression'})"
            )
    return model


def configure_tensorflow(threads: int) -> None:
    """Import TensorFlow, quiet its logs and bound its thread pools (call before the first model is built)."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    tf = _import_tensorflow_without_pandas()
    tf.get_logger().setLevel("ERROR")
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(max(1, threads))
    except RuntimeError:
        pass  # already initialised; keep what is set


def _import_tensorflow_without_pandas() -> Any:
    """``import tensorflow`` with pandas hidden, when neither is imported yet. Keras imports pandas only to
    accept DataFrames in ``fit``, which nothing here passes, and pandas imports pyarrow: together about
    88 MiB resident in every agent (docs/DEPLOY.md). A process that reads CSV or Parquet data imports pandas
    itself when it does, unhindered."""
    import sys

    hide = "pandas" not in sys.modules and "tensorflow" not in sys.modules
    if hide:
        sys.modules["pandas"] = None  # type: ignore[assignment]  # Keras' optional import finds no pandas
    try:
        import tensorflow as tf
    finally:
        if hide:
            del sys.modules["pandas"]
    return tf
