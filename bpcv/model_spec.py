"""The requester's model as Keras JSON, checked against an allow-list before anything builds it.

A task may carry its model as the text ``model.to_json()`` writes (TensorFlow 2.15 / Keras 2) or a
``.keras`` file's ``config.json``. Keras can deserialise code from such text (a ``Lambda`` layer
carries marshalled bytecode; a custom object names a Python module to import), so a task would be a
way to run code on every device that opens it. This module is the pure check (no TensorFlow import):
it walks the config and refuses, with one line naming the layer and why, anything that is not plain
data for a Keras built-in on the lists below. ``bpcv.models`` builds only text that passed it, with
no ``custom_objects``, and caps the parameter count. Nested models (a Sequential inside a model) and
layer wrappers (``Bidirectional``, ``TimeDistributed``) are refused: one flat list of layers keeps
the walk, the DP paths and the parameter count simple. See docs/MODELS.md.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bpcv.errors import ConfigError

MAX_MODEL_JSON_BYTES = 256 * 1024  # the model travels in the signed task, to every device
MAX_MODEL_PARAMS = 5_000_000  # every update (4 bytes a parameter) travels to every peer

MODEL_CLASSES = frozenset({"Sequential", "Functional", "Model"})

# Built-in Keras layers a requester's model may use, by group (the groups are for docs/MODELS.md).
ALLOWED_LAYERS: dict[str, frozenset[str]] = {
    "core": frozenset({"InputLayer", "Dense", "Activation", "Flatten", "Reshape", "Permute", "RepeatVector"}),
    "convolution": frozenset({"Conv1D", "Conv2D", "DepthwiseConv2D", "SeparableConv1D", "SeparableConv2D"}),
    "pooling": frozenset(
        {
            "MaxPooling1D",
            "MaxPooling2D",
            "AveragePooling1D",
            "AveragePooling2D",
            "GlobalAveragePooling1D",
            "GlobalAveragePooling2D",
            "GlobalMaxPooling1D",
            "GlobalMaxPooling2D",
        }
    ),
    "padding and resizing": frozenset(
        {"ZeroPadding1D", "ZeroPadding2D", "Cropping1D", "Cropping2D", "UpSampling1D", "UpSampling2D", "Rescaling"}
    ),
    "normalisation": frozenset({"BatchNormalization", "LayerNormalization"}),
    "regularisation": frozenset(
        {"Dropout", "SpatialDropout1D", "SpatialDropout2D", "GaussianNoise", "GaussianDropout", "AlphaDropout"}
    ),
    "recurrent": frozenset({"LSTM", "GRU", "SimpleRNN"}),
    "merging": frozenset({"Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate"}),
    "activation layers": frozenset({"ReLU", "LeakyReLU", "ELU", "PReLU", "Softmax"}),
}
LAYER_CLASSES = frozenset().union(*ALLOWED_LAYERS.values())

# Layers refused by name, with the reason the error gives (anything else off the list is "not allowed").
REFUSED_LAYERS: dict[str, str] = {
    "Lambda": "its config carries marshalled Python bytecode, which Keras would run",
    "TFOpLambda": "it calls a TensorFlow function named in the config",
    "SlicingOpLambda": "it calls a TensorFlow function named in the config",
    "Sequential": "nested models are not allowed; put the layers in one model",
    "Functional": "nested models are not allowed; put the layers in one model",
    "Model": "nested models are not allowed; put the layers in one model",
    "Bidirectional": "layer wrappers are not allowed",
    "TimeDistributed": "layer wrappers are not allowed",
}

ACTIVATIONS = frozenset(
    {
        "linear",
        "relu",
        "relu6",
        "leaky_relu",
        "elu",
        "selu",
        "gelu",
        "sigmoid",
        "hard_sigmoid",
        "tanh",
        "softmax",
        "log_softmax",
        "softplus",
        "softsign",
        "swish",
        "silu",
        "mish",
        "exponential",
    }
)
# Built-in initializers, regularizers and constraints: by class name (a config dict) or alias (a string).
BUILTIN_OBJECTS: dict[str, frozenset[str]] = {
    "initializer": frozenset(
        {
            "Zeros",
            "Ones",
            "Constant",
            "RandomNormal",
            "RandomUniform",
            "TruncatedNormal",
            "VarianceScaling",
            "Orthogonal",
            "Identity",
            "GlorotNormal",
            "GlorotUniform",
            "HeNormal",
            "HeUniform",
            "LecunNormal",
            "LecunUniform",
            "zeros",
            "ones",
            "constant",
            "random_normal",
            "random_uniform",
            "truncated_normal",
            "variance_scaling",
            "orthogonal",
            "identity",
            "glorot_normal",
            "glorot_uniform",
            "he_normal",
            "he_uniform",
            "lecun_normal",
            "lecun_uniform",
        }
    ),
    "regularizer": frozenset({"L1", "L2", "L1L2", "OrthogonalRegularizer", "l1", "l2", "l1_l2"}),
    "constraint": frozenset(
        {"MaxNorm", "MinMaxNorm", "NonNeg", "UnitNorm", "RadialConstraint", "max_norm", "min_max_norm", "non_neg"}
        | {"unit_norm", "radial_constraint"}
    ),
}
# The config keys that name one of those objects, by their suffix.
OBJECT_KEY_SUFFIXES = {"_initializer": "initializer", "_regularizer": "regularizer", "_constraint": "constraint"}
ACTIVATION_KEYS = frozenset({"activation", "recurrent_activation"})
DTYPES = frozenset({"float32", "float64", "float16", "bfloat16"})
# Fields one layer entry may have besides its config (Keras writes these; Functional adds the graph).
LAYER_ENTRY_KEYS = frozenset({"module", "class_name", "config", "registered_name", "build_config"})
FUNCTIONAL_ENTRY_KEYS = frozenset({"name", "inbound_nodes"})
TOP_LEVEL_KEYS = frozenset({"module", "class_name", "config", "registered_name", "build_config"})
TOP_LEVEL_KEYS |= {"keras_version", "backend"}


@dataclass(frozen=True)
class KerasModelInfo:
    """What the check learned: the model class, its layers (class names), its declared input shape."""

    class_name: str
    layers: tuple[str, ...]
    input_shape: tuple[int | None, ...]
    config: dict[str, Any]  # the checked config, what ``to_json`` gives Keras

    def to_json(self) -> str:
        return json.dumps(self.config)


def is_keras_json(model: str) -> bool:
    """True when a task's ``model`` field is Keras JSON rather than a preset spec (``mlp:…``, ``cnn:…``)."""
    return model.lstrip().startswith("{")


def describe(model: str) -> str:
    """A short name for a task's model in logs and summaries (a preset is its spec, unchanged)."""
    if not is_keras_json(model):
        return model
    try:
        info = check_keras_json(model)
    except ConfigError:
        return f"keras-json ({len(model.encode())} bytes, refused)"
    return f"keras-json {info.class_name} ({len(info.layers)} layers)"


def _is_keras_module(module: Any) -> bool:
    return module is None or module == "keras" or (isinstance(module, str) and module.startswith("keras."))


def _plain(value: Any, where: str) -> None:
    """Refuse anything in ``value`` that is not plain data (numbers, strings, lists, dicts without objects)."""
    if value is None or isinstance(value, bool | int | float | str):
        return
    if isinstance(value, list):
        for item in value:
            _plain(item, where)
        return
    if isinstance(value, dict):
        if "function" in value:
            raise ConfigError(f"{where}: has a 'function' field (code), which is refused")
        if "class_name" in value or "module" in value:
            raise ConfigError(f"{where}: holds an object ({value.get('class_name')!r}), which is not allowed there")
        for item in value.values():
            _plain(item, where)
        return
    raise ConfigError(f"{where}: unexpected value {value!r}")


def _check_object(value: Any, kind: str, where: str) -> None:
    """An initializer/regularizer/constraint: None, a built-in alias, or a built-in's config."""
    allowed = BUILTIN_OBJECTS[kind]
    if value is None:
        return
    if isinstance(value, str):
        if value not in allowed:
            raise ConfigError(f"{where}: {kind} {value!r} is not a Keras built-in on the allow-list")
        return
    if not isinstance(value, dict) or value.get("class_name") not in allowed:
        name = value.get("class_name") if isinstance(value, dict) else value
        raise ConfigError(f"{where}: {kind} {name!r} is not a Keras built-in on the allow-list")
    if not _is_keras_module(value.get("module")) or value.get("registered_name") not in (None, value["class_name"]):
        raise ConfigError(f"{where}: {kind} {value['class_name']!r} comes from {value.get('module')!r}, not Keras")
    extra = set(value) - {"module", "class_name", "config", "registered_name"}
    if extra:
        raise ConfigError(f"{where}: {kind} has unexpected field(s) {sorted(extra)}")
    _plain(value.get("config"), f"{where} ({kind} config)")


def _check_activation(value: Any, where: str) -> None:
    """A built-in activation: its name, or the function config the ``.keras`` format writes for it."""
    name = value
    if isinstance(value, dict):
        known = value.get("class_name") == "function" and value.get("registered_name") in (None, "function")
        fields_ok = not set(value) - {"module", "class_name", "config", "registered_name"}
        if not known or value.get("module") != "keras.activations" or not fields_ok:
            raise ConfigError(
                f"{where}: activation must be a built-in name (e.g. 'relu'), not an object from {value.get('module')!r}"
            )
        name = value.get("config")
    if name not in ACTIVATIONS:
        raise ConfigError(f"{where}: activation {name!r} is not a Keras built-in on the allow-list")


def _check_layer(entry: Any, index: int, functional: bool) -> str:
    """Check one layer entry; return its class name."""
    if not isinstance(entry, dict):
        raise ConfigError(f"model JSON: layer {index} is not an object")
    cls = entry.get("class_name")
    config = entry.get("config")
    name = config.get("name") if isinstance(config, dict) else None
    where = f"model JSON: layer {index} {name!r} ({cls})"
    if cls in REFUSED_LAYERS:
        raise ConfigError(f"{where} is refused: {REFUSED_LAYERS[cls]}")
    if cls not in LAYER_CLASSES:
        raise ConfigError(f"{where} is refused: {cls!r} is not on the allow-list of layer types (docs/MODELS.md)")
    if not _is_keras_module(entry.get("module")) or entry.get("registered_name") not in (None, cls):
        raise ConfigError(
            f"{where} is refused: a custom object (module {entry.get('module')!r}, "
            f"registered_name {entry.get('registered_name')!r}); only Keras' own layers are built"
        )
    extra = set(entry) - LAYER_ENTRY_KEYS - (FUNCTIONAL_ENTRY_KEYS if functional else set())
    if extra:
        raise ConfigError(f"{where}: unexpected field(s) {sorted(extra)}")
    if not isinstance(config, dict):
        raise ConfigError(f"{where}: 'config' must be an object")
    for key, value in config.items():
        field = f"{where} field {key!r}"
        suffix = next((s for s in OBJECT_KEY_SUFFIXES if key.endswith(s)), None)
        if key == "function" or key.endswith("_function"):
            raise ConfigError(f"{field}: a function (code) is refused")
        if key in ACTIVATION_KEYS:
            _check_activation(value, field)
        elif suffix is not None:
            _check_object(value, OBJECT_KEY_SUFFIXES[suffix], field)
        elif key == "dtype":
            if value is not None and value not in DTYPES:
                raise ConfigError(f"{field}: dtype must be one of {sorted(DTYPES)}")
        else:
            _plain(value, field)
    for key, value in entry.items():  # build_config, inbound_nodes, name: plain data only
        if key != "config":
            _plain(value, f"{where} {key}")
    return str(cls)


def _shape(value: Any, where: str) -> tuple[int | None, ...]:
    ok = isinstance(value, list) and len(value) >= 2 and value[0] is None
    if not ok or not all(d is None or (isinstance(d, int) and not isinstance(d, bool) and d > 0) for d in value[1:]):
        raise ConfigError(f"{where}: input shape must be [null, d1, ...] with positive sizes, not {value!r}")
    return tuple(value[1:])


def _declared_input_shape(cls: str, config: dict[str, Any]) -> tuple[int | None, ...]:
    layers = config["layers"]
    if cls == "Sequential":
        first = layers[0]["config"]
        for key in ("batch_input_shape", "batch_shape"):
            if first.get(key) is not None:
                return _shape(first[key], f"model JSON: layer 0 {first.get('name')!r}")
        if config.get("build_input_shape") is not None:
            return _shape(config["build_input_shape"], "model JSON: build_input_shape")
        raise ConfigError("model JSON: the model declares no input shape; start it with tf.keras.Input(shape=...)")
    inputs, outputs = config.get("input_layers"), config.get("output_layers")
    if not (isinstance(inputs, list) and len(inputs) == 1 and isinstance(outputs, list) and len(outputs) == 1):
        raise ConfigError("model JSON: a Functional model must have exactly one input and one output")
    input_name = inputs[0][0] if isinstance(inputs[0], list) and inputs[0] else None
    for layer in layers:
        if layer["config"].get("name") == input_name and layer["class_name"] == "InputLayer":
            cfg = layer["config"]
            return _shape(cfg.get("batch_input_shape", cfg.get("batch_shape")), f"model JSON: input {input_name!r}")
    raise ConfigError(f"model JSON: the input layer {input_name!r} is not among the layers")


def check_keras_json(text: str) -> KerasModelInfo:
    """Parse and check Keras JSON against the allow-list and the size cap; ConfigError naming the first
    problem (the layer and why). Pure: imports no TensorFlow and builds nothing."""
    size = len(text.encode())
    if size > MAX_MODEL_JSON_BYTES:
        raise ConfigError(f"model JSON is {size:,} bytes; the cap is {MAX_MODEL_JSON_BYTES:,}")
    try:
        top = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ConfigError(f"model JSON does not parse: {str(exc)[:120]}") from exc
    if not isinstance(top, dict):
        raise ConfigError("model JSON must be an object with class_name and config")
    cls = top.get("class_name")
    if cls not in MODEL_CLASSES:
        raise ConfigError(f"model JSON: the model class must be one of {sorted(MODEL_CLASSES)}, not {cls!r}")
    if not _is_keras_module(top.get("module")) or top.get("registered_name") not in (None, cls):
        raise ConfigError(f"model JSON: the model is a custom class from {top.get('module')!r}, not Keras")
    extra = set(top) - TOP_LEVEL_KEYS
    if extra:
        raise ConfigError(f"model JSON: unexpected top-level field(s) {sorted(extra)}")
    config = top.get("config")
    if not isinstance(config, dict) or not isinstance(config.get("layers"), list) or not config["layers"]:
        raise ConfigError("model JSON: config.layers must be a non-empty list")
    try:
        layers = tuple(_check_layer(e, i, cls != "Sequential") for i, e in enumerate(config["layers"]))
        for key, value in config.items():
            if key != "layers":
                _plain(value, f"model JSON: model field {key!r}")
        for key, value in top.items():  # build_config, keras_version, backend: plain data only
            if key != "config":
                _plain(value, f"model JSON: field {key!r}")
    except RecursionError as exc:
        raise ConfigError("model JSON is nested too deeply") from exc
    input_shape = _declared_input_shape(str(cls), config)
    return KerasModelInfo(str(cls), layers, input_shape, top)


def model_from_argument(value: str) -> str:
    """A ``--model`` value: a preset spec (``mlp:128``), or a ``.json`` / ``.keras`` file whose Keras JSON
    the task carries (``read_model_file``)."""
    if not value.lower().endswith((".json", ".keras")):
        return value
    path = Path(value)
    if not path.is_file():
        raise ConfigError(f"model file {path} not found")
    return read_model_file(path)


def read_model_file(path: Path) -> str:
    """The model text for a task from a ``.json`` file (``model.to_json()``) or a ``.keras`` file, of which
    only ``config.json`` is read (never the weights, never code), its ``compile_config`` (loss and
    optimizer) dropped. Checked against the allow-list; ConfigError naming the file otherwise."""
    suffix = path.suffix.lower()
    if suffix not in (".json", ".keras"):
        raise ConfigError(f"model file {path}: use a .json (model.to_json()) or a .keras file")
    try:
        if suffix == ".json":
            if path.stat().st_size > MAX_MODEL_JSON_BYTES:
                raise ConfigError(
                    f"model file {path} is {path.stat().st_size:,} bytes; the cap is {MAX_MODEL_JSON_BYTES:,}"
                )
            text = path.read_text(encoding="utf-8").strip()
        else:
            with zipfile.ZipFile(path) as archive:
                try:
                    member = archive.getinfo("config.json")
                except KeyError as exc:
                    raise ConfigError(f"model file {path}: no config.json inside (not a Keras v3 .keras file)") from exc
                if member.file_size > 4 * MAX_MODEL_JSON_BYTES:
                    raise ConfigError(f"model file {path}: config.json is {member.file_size:,} bytes, far over the cap")
                with archive.open(member) as handle:
                    raw = handle.read(4 * MAX_MODEL_JSON_BYTES + 1)
            try:
                config = json.loads(raw)
            except (ValueError, RecursionError) as exc:
                raise ConfigError(f"model file {path}: config.json does not parse: {str(exc)[:120]}") from exc
            if isinstance(config, dict):
                config.pop("compile_config", None)  # the requester's loss and optimizer: the task sets these
            text = json.dumps(config)
    except (OSError, UnicodeDecodeError, zipfile.BadZipFile) as exc:
        raise ConfigError(f"model file {path}: cannot read it: {exc}") from exc
    try:
        check_keras_json(text)
    except ConfigError as exc:
        raise ConfigError(f"model file {path}: {exc}") from exc
    return text


def dp_refusal(info: KerasModelInfo) -> str | None:
    """Why this model cannot train under DP-SGD (per-example clipping), or None when it can."""
    for entry in info.config["config"]["layers"]:
        name, cls = entry["config"].get("name"), entry["class_name"]
        if cls == "BatchNormalization":
            return (
                f"layer {name!r} (BatchNormalization) cannot train under DP: batch statistics mix records, so one "
                "record's gradient is not its own, and its moving statistics are updated without noise; "
                "use LayerNormalization"
            )
        for key, value in entry["config"].items():
            if key.endswith("_regularizer") and value is not None:
                return f"layer {name!r} has a {key}, which the DP step does not apply; remove it for a DP task"
    return None
