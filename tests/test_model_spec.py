"""The requester's Keras JSON model: the allow-list check (pure), the caps, building it for the data, training
it with and without DP, and ``bpcv task check`` on good and bad task files. Real TensorFlow, tiny models."""

import json
import re
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import tensorflow as tf

from bpcv.errors import ConfigError
from bpcv.model_spec import MAX_MODEL_JSON_BYTES, check_keras_json, describe, dp_refusal, model_from_argument
from bpcv.models import build_keras_json, build_model, configure_tensorflow
from bpcv.task import TaskSpec
from bpcv_app import cli
from edge_agent.privacy.settings import PrivacySettings
from edge_agent.trainer import Trainer

L = tf.keras.layers


@pytest.fixture(scope="module", autouse=True)
def _tensorflow():
    configure_tensorflow(1)


def sequential(input_shape, *layers):
    return tf.keras.Sequential([tf.keras.Input(input_shape), *layers]).to_json()


def dense_json(units=3):
    """A 6-feature classifier with activations as separate layers (the ghost DP path can take it)."""
    return sequential((6,), L.Dense(8), L.Activation("relu"), L.Dense(units), L.Activation("softmax"))


def edit(text, fn):
    config = json.loads(text)
    fn(config)
    return json.dumps(config)


def task(model, **kw):
    spec = TaskSpec(task_id="t", coordinator="c", model=model, local_epochs=1, batch_size=8, **kw)
    spec.validate()
    return spec


def tiny_data(n=16, shape=(6,), classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, *shape), dtype=np.float32), rng.integers(0, classes, n).astype(np.int64)


# building and training


@pytest.mark.parametrize(
    "privacy,path",
    [(None, None), (PrivacySettings("laplace", 1.0, 1.0), "ghost"), (PrivacySettings("gaussian", 1.0, 1.0), "ghost")],
)
def test_a_sequential_dense_json_model_builds_and_trains(privacy, path):
    trainer = Trainer(task(dense_json()), (6,), 3, privacy)
    x, y = tiny_data()
    start = trainer.model.get_weights()
    weights, steps = trainer.train(start, x, y, seed=1)
    assert steps == 2 and getattr(trainer, "dp_path", None) == path
    assert [w.shape for w in weights] == [(6, 8), (8,), (8, 3), (3,)]
    assert any(not np.allclose(a, b) for a, b in zip(start, weights, strict=True))
    assert 0.0 <= trainer.evaluate(weights, x, y) <= 1.0


def test_a_functional_model_with_fused_activations_trains_under_laplace_dp_on_the_jacobian_path():
    inp = tf.keras.Input((6,))
    out = L.Dense(3, activation="softmax")(L.Dense(8, activation="relu")(inp))
    trainer = Trainer(task(tf.keras.Model(inp, out).to_json()), (6,), 3, PrivacySettings("laplace", 1.0, 1.0))
    x, y = tiny_data()
    start = trainer.model.get_weights()
    weights, _ = trainer.train(start, x, y, seed=1)
    assert trainer.dp_path == "jacobian" and not np.allclose(start[0], weights[0])


def test_a_dense_layer_on_a_sequence_is_not_sent_down_the_ghost_path():
    """Ghost clipping's outer-product norms hold only for (batch, features) inputs: a Dense layer on
    (batch, steps, features) must take the Jacobian path, here for a regression task."""
    model = sequential((5, 3), L.Dense(4), L.Flatten(), L.Dense(1))
    trainer = Trainer(task(model, category="regression"), (5, 3), 1, PrivacySettings("gaussian", 1.0, 1.0))
    x = np.random.default_rng(0).random((16, 5, 3), dtype=np.float32)
    weights, _ = trainer.train(trainer.model.get_weights(), x, x[:, 0, 0].copy(), seed=1)
    assert trainer.dp_path == "jacobian" and weights[0].shape == (3, 4)


def test_a_conv1d_model_builds_for_its_data():
    model = build_keras_json(sequential((8, 2), L.Conv1D(4, 3), L.GlobalMaxPooling1D(), L.Dense(3)), (8, 2), 3)
    assert model.count_params() == (3 * 2 * 4 + 4) + (4 * 3 + 3)
    assert model.output_shape == (None, 3)


def test_the_same_seed_gives_the_same_initial_weights():
    a, b = (build_model(dense_json(), (6,), 3, seed=5).get_weights() for _ in range(2))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


# refusals, each with its own message


def test_a_lambda_layer_is_refused_by_name():
    text = sequential((4,), L.Lambda(lambda x: x), L.Dense(2))
    with pytest.raises(ConfigError, match=r"layer 1 'lambda' \(Lambda\) is refused: .*marshalled Python bytecode"):
        check_keras_json(text)
    with pytest.raises(ConfigError, match=r"^task: model JSON: .*Lambda"):
        task(text)


def test_an_unknown_layer_class_is_refused():
    text = edit(dense_json(), lambda c: c["config"]["layers"][1].update(class_name="Embedding"))
    with pytest.raises(ConfigError, match=r"\(Embedding\) is refused: 'Embedding' is not on the allow-list"):
        check_keras_json(text)


def test_a_custom_object_is_refused():
    def custom(c):
        c["config"]["layers"][1].update(module="evil.layers", registered_name="Custom>Dense")

    with pytest.raises(ConfigError, match=r"\(Dense\) is refused: a custom object \(module 'evil.layers'"):
        check_keras_json(edit(dense_json(), custom))


def test_a_custom_initializer_is_refused():
    def custom(c):
        c["config"]["layers"][1]["config"]["kernel_initializer"] = {"module": "evil", "class_name": "GlorotUniform"}

    with pytest.raises(ConfigError, match=r"initializer 'GlorotUniform' comes from 'evil', not Keras"):
        check_keras_json(edit(dense_json(), custom))


def test_an_activation_given_as_a_function_is_refused():
    def identity(x):
        return x

    text = sequential((4,), L.Dense(2, activation=identity))
    assert '"module": "builtins"' in text  # what Keras writes for a Python function
    with pytest.raises(ConfigError, match=r"activation must be a built-in name .*not an object from 'builtins'"):
        check_keras_json(text)


def test_a_function_field_anywhere_in_a_layer_is_refused():
    def hide(c):
        c["config"]["layers"][1]["config"]["units_hint"] = {"function": ["4wEAAAA="]}

    with pytest.raises(ConfigError, match=r"field 'units_hint': has a 'function' field \(code\)"):
        check_keras_json(edit(dense_json(), hide))


def test_an_oversize_json_is_refused_before_it_is_parsed():
    text = edit(dense_json(), lambda c: c["config"].update(name="x" * MAX_MODEL_JSON_BYTES))
    with pytest.raises(ConfigError, match=r"model JSON is 26\d,\d{3} bytes; the cap is 262,144"):
        check_keras_json(text)


def test_a_model_over_the_parameter_cap_is_refused_without_allocating_it():
    """9,012,003 parameters, counted in a throwaway graph where variables are only declared: refused before
    any weight is allocated (so a JSON of a few KiB cannot make a device allocate gigabytes)."""
    text = sequential((3000,), L.Dense(1), L.Dense(3))
    text = edit(text, lambda c: c["config"]["layers"][1]["config"].update(units=3000))
    check_keras_json(text)  # the allow-list has nothing against it: only its size
    with pytest.raises(ConfigError, match=r"^model has 9,012,003 parameters; the cap is 5,000,000$"):
        build_keras_json(text, (3000,), 3)


def test_an_input_shape_mismatch_is_refused():
    with pytest.raises(
        ConfigError, match=r"model input shape \[6\] does not match the data's input shape \[28, 28, 1\]"
    ):
        build_model(dense_json(), (28, 28, 1), 3)


def test_an_output_size_that_is_not_the_number_of_classes_is_refused():
    with pytest.raises(ConfigError, match=r"output shape \[None, 3\] .* must be \[null, 10\]"):
        build_model(dense_json(), (6,), 10)


def test_a_model_without_a_declared_input_shape_is_refused():
    text = tf.keras.Sequential([L.Dense(3)]).to_json()
    with pytest.raises(ConfigError, match=r"declares no input shape"):
        check_keras_json(text)


def test_batch_normalization_is_refused_under_dp_but_trains_without():
    text = sequential((6,), L.Dense(8), L.BatchNormalization(name="norm"), L.Dense(3, activation="softmax"))
    assert "BatchNormalization" in dp_refusal(check_keras_json(text))
    Trainer(task(text), (6,), 3, None)
    with pytest.raises(ConfigError, match=r"'norm' \(BatchNormalization\) cannot train under DP"):
        Trainer(task(text), (6,), 3, PrivacySettings("gaussian", 1.0, 1.0))


# the task field and presets


def test_presets_are_unchanged_and_a_bad_preset_is_refused_by_the_task():
    spec = TaskSpec(task_id="t", coordinator="c")
    assert TaskSpec.from_body(spec.to_body()) == spec and spec.to_body()["model"] == "mlp:128"
    assert describe("cnn:16,32") == "cnn:16,32"
    with pytest.raises(ConfigError, match=r"^task: model spec 'mlp:x'"):
        TaskSpec(task_id="t", coordinator="c", model="mlp:x").validate()


def test_a_preset_of_three_widths_is_a_stack_of_three_and_only_wavelet_needs_exactly_three():
    # three widths once read as a wavelet spec for every kind: "cnn:16,32,64" was refused
    for spec in ("cnn:16,32,64", "mlp:32,16,8"):
        TaskSpec(task_id="t", coordinator="c", model=spec).validate()
    assert (
        sum(isinstance(layer, tf.keras.layers.Conv2D) for layer in build_model("cnn:16,32,64", (28, 28, 1), 10).layers)
        == 3
    )
    with pytest.raises(ConfigError, match=r"model spec 'wavelet:2,4'"):
        TaskSpec(task_id="t", coordinator="c", model="wavelet:2,4").validate()


def test_the_task_check_imports_no_tensorflow():
    code = (
        "import sys, json; from bpcv.task import TaskSpec; "
        f"TaskSpec(task_id='t', coordinator='c', model={dense_json()!r}).validate(); "
        "assert 'tensorflow' not in sys.modules, 'tensorflow imported'"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


def test_request_model_reads_a_json_file_or_only_the_config_of_a_keras_file(tmp_path):
    text = dense_json()
    (tmp_path / "m.json").write_text(text)
    assert model_from_argument(str(tmp_path / "m.json")) == text
    assert model_from_argument("mlp:64") == "mlp:64"
    keras_file = tmp_path / "m.keras"
    with zipfile.ZipFile(keras_file, "w") as archive:  # weights that are not even a valid h5: never opened
        archive.writestr("config.json", json.dumps({**json.loads(text), "compile_config": {"loss": "x"}}))
        archive.writestr("model.weights.h5", b"not weights")
    assert json.loads(model_from_argument(str(keras_file))) == json.loads(text)  # compile_config dropped
    with pytest.raises(ConfigError, match=r"model file .*absent.keras not found"):
        model_from_argument(str(tmp_path / "absent.keras"))


# bpcv task check


def write_task(tmp_path, model_lines):
    path = tmp_path / "task.toml"
    path.write_text('task_id = "t1"\ncoordinator = "coord"\ndataset = "mnist"\nrounds = 3\n' + model_lines)
    return path


def test_task_check_passes_a_good_task_with_a_one_line_summary(tmp_path, capsys):
    model = sequential((28, 28, 1), L.Conv2D(4, 3), L.MaxPooling2D(), L.Flatten(), L.Dense(10, activation="softmax"))
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "cnn.json").write_text(model)
    assert cli.main(["task", "check", str(write_task(tmp_path, 'model_file = "models/cnn.json"\n'))]) == 0
    out = capsys.readouterr().out.strip()
    params = (3 * 3 * 4 + 4) + (13 * 13 * 4 * 10 + 10)
    assert out == (
        f"ok: task t1: keras-json Sequential, 4 layers, DP-SGD ok, {params:,} parameters, "
        f"{4 * params:,} bytes per update (float32), classification, 3 rounds"
    )


@pytest.mark.parametrize(
    "lines,message",
    [
        ('model_file = "lambda.json"\n', r"\(Lambda\) is refused: its config carries marshalled Python bytecode"),
        ('model_file = "small.json"\n', r"model input shape \[6\] does not match the data's input shape \[28, 28, 1\]"),
        ('model_file = "absent.json"\n', r"model_file 'absent.json' not found"),
        ('model = "mlp:0"\n', r"task: model spec 'mlp:0'"),
        ('model = "mlp:8"\nrounds = 0\n', r"not valid TOML: Cannot overwrite a value"),
        ('model = "mlp:8"\nnodez = 3\n', r"task: unknown field\(s\) \['nodez'\]"),
    ],
)
def test_task_check_names_the_first_problem_in_one_line(tmp_path, capsys, lines, message):
    (tmp_path / "lambda.json").write_text(sequential((4,), L.Lambda(lambda x: x)))
    (tmp_path / "small.json").write_text(dense_json(10))
    assert cli.main(["task", "check", str(write_task(tmp_path, lines))]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert captured.out == "" and "\n" not in err and "Traceback" not in err
    assert err.startswith("bpcv: error: ") and str(tmp_path) in err  # names the task file or its model file
    assert re.search(message, err), err
