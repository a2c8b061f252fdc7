"""The packaged sensor sets (bpcv.packaged): real wheels from PyPI, fetched in a session fixture with
``fetch()`` (the setup step; setup.sh runs it, so with the wheels present it downloads nothing), written
out as data folders, and every file read back the way an agent reads it. The watch set is a pickle:
the negative controls show a pickle that would run ``os.system`` refused before anything runs."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from bpcv import packaged
from bpcv.datasources import DataSchema, prepare_local, read_local
from bpcv.errors import DataError
from bpcv.models import build_model
from bpcv.packaged import (
    PACKAGED_SETS,
    available,
    fetch,
    find_wheel,
    load_object_npy,
    materialize,
    packages_dir,
    safe_unpickle,
)
from bpcv.task_file import load_task_file
from bpcv_app.cli import main

FOLDER_FILES = {"task.toml", "model.json", "README.md"}


@pytest.fixture(scope="session")
def wheels():
    return fetch()  # the setup step: skips wheels already there (checked by hash)


@pytest.fixture(scope="session")
def folders(wheels, tmp_path_factory):
    root = tmp_path_factory.mktemp("packaged")
    return {name: materialize(name, root / name) for name in PACKAGED_SETS}


def task_of(folder):
    return load_task_file(folder / "task.toml", task_id="t1", coordinator="coordinator")


def digest(folder) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


# --- the registry and the wheels -------------------------------------------------------------------


def test_registry_pins_each_set():
    assert set(PACKAGED_SETS) == {"wind", "watch"}
    wind, watch = PACKAGED_SETS["wind"], PACKAGED_SETS["watch"]
    assert (wind.requirement, wind.category, wind.devices) == ("openoa==3.2", "regression", 4)
    assert (watch.requirement, watch.category, watch.devices) == ("seglearn==1.2.5", "classification", 10)
    for spec in PACKAGED_SETS.values():
        assert len(spec.sha256) == 64 and spec.licence and spec.member and spec.description


def test_fetched_wheels_match_the_pinned_hashes(wheels):
    assert [p.name for p in wheels] == [s.wheel for s in PACKAGED_SETS.values()]
    assert available() == {"wind": True, "watch": True}
    for name in PACKAGED_SETS:
        assert find_wheel(name, verify=True).parent == packages_dir()


def test_fetch_skips_wheels_already_there_without_running_pip(wheels, monkeypatch):
    def no_pip(*args, **kwargs):
        raise AssertionError("pip ran although the wheels are there")

    monkeypatch.setattr(packaged.subprocess, "run", no_pip)
    assert fetch() == wheels


def test_a_failing_pip_is_one_clear_error(tmp_path, monkeypatch):
    failed = subprocess.CompletedProcess([], 1, "", "ERROR: No matching distribution found for openoa==3.2\n")
    monkeypatch.setattr(packaged.subprocess, "run", lambda *a, **k: failed)
    with pytest.raises(DataError, match=r"pip could not download openoa==3.2 .*No matching distribution"):
        fetch(tmp_path, ["wind"])


def test_a_missing_wheel_names_bpcv_data_fetch(tmp_path, monkeypatch):
    monkeypatch.setenv("BPCV_PACKAGES", str(tmp_path))
    assert packages_dir() == tmp_path and available() == {"wind": False, "watch": False}
    with pytest.raises(
        DataError, match=r"the wind data set is not fetched .*run `bpcv data fetch` \(setup.sh does it\)"
    ):
        materialize("wind", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(DataError, match="no packaged data set 'rain'"):
        materialize("rain", tmp_path / "out")


def test_a_wheel_that_is_not_the_pinned_one_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("BPCV_PACKAGES", str(tmp_path))
    (tmp_path / PACKAGED_SETS["watch"].wheel).write_bytes(b"not the wheel")
    assert available()["watch"]
    with pytest.raises(DataError, match="SHA-256 differs"):
        materialize("watch", tmp_path / "out")


def test_importing_the_module_loads_neither_tensorflow_nor_pandas():
    code = "import sys, bpcv.packaged; print('tensorflow' in sys.modules, 'pandas' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False False", out.stderr


# --- reading a pickle without running code ---------------------------------------------------------


class RunsACommand:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_the_unpickler_refuses_a_pickle_that_would_call_os_system(tmp_path):
    marker = tmp_path / "ran"
    payload = pickle.dumps(RunsACommand(f"touch {marker}"))
    pickle.loads(pickle.dumps(RunsACommand("true")))  # the control: the normal unpickler does run it
    with pytest.raises(DataError, match=r"asks for posix\.system, which is refused: only numpy arrays"):
        safe_unpickle(payload, "evil.pkl")
    assert not marker.exists()


def test_an_object_npy_with_code_inside_is_refused_but_plain_arrays_load(tmp_path):
    marker = tmp_path / "ran"
    evil, plain = io.BytesIO(), io.BytesIO()
    np.save(evil, np.array({"X": [RunsACommand(f"touch {marker}")]}, dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="posix.system, which is refused"):
        load_object_npy(evil.getvalue(), "evil.npy")
    assert not marker.exists()
    arrays = {"X": [np.arange(12.0).reshape(2, 6)], "y": np.array([3]), "labels": ["a", "b"]}
    np.save(plain, np.array(arrays, dtype=object), allow_pickle=True)
    loaded = load_object_npy(plain.getvalue(), "plain.npy")
    assert np.array_equal(loaded["X"][0], arrays["X"][0]) and loaded["labels"] == ["a", "b"]
    with pytest.raises(DataError, match="only latin1"):
        safe_unpickle(pickle.dumps(bytes_via_codec(), protocol=2), "codec.pkl")
    with pytest.raises(DataError, match="expected one pickled object"):
        load_object_npy(_npy(np.zeros(3)), "numbers.npy")


def bytes_via_codec():
    import _codecs

    class ViaCodec:
        def __reduce__(self):
            return (_codecs.encode, ("x", "rot13"))

    return ViaCodec()


def _npy(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, array)
    return out.getvalue()


# --- the data folders ------------------------------------------------------------------------------


def test_wind_folder_one_turbine_per_device(folders):
    folder = folders["wind"]
    assert {p.name for p in folder.iterdir()} == FOLDER_FILES | {f"node-0{i}.csv" for i in range(1, 5)}
    assert "Etalab" in (folder / "README.md").read_text()
    first = (folder / "node-01.csv").read_text().splitlines()[:2]
    assert first == [
        "timestamp,wind_speed,temperature,pitch,power",
        "2014-01-01T01:00:00+01:00,6.869999900000001,4.3000002,-0.93000001,514.23999",
    ]
    task = task_of(folder)
    assert (task.dataset, task.category, task.rounds, task.local_epochs, task.batch_size) == (
        "local",
        "regression",
        10,
        1,
        64,
    )
    schema = task.schema
    assert schema == DataSchema.from_body(schema.to_body()) and schema.target_scale == 2050
    assert task.input_shape() == (6, 4) and schema.outputs == 1
    means, shares = [], []
    for node in sorted(folder.glob("node-*.csv")):
        data, shard = prepare_local(node, schema)
        assert data.rows == 105120 and 15_000 < data.samples < 17_520  # hourly windows over two years
        shares.append(data.dropped / data.rows)
        means.append(float(np.mean(data.y)))
        assert len(shard.y_val) > 1000 and shard.x_train.shape[1:] == (6, 4)
    assert max(shares) < schema.max_nan_share and min(shares) > 0  # the source's gaps, kept
    assert max(means) - min(means) > 0.03  # non-IID: each turbine its own site's wind (share of rated power)
    model = build_model(task.model, task.input_shape(), schema.outputs)
    assert model.output_shape == (None, 1) and 500 < model.count_params() < 5000


def test_watch_folder_one_subject_per_device(folders):
    folder = folders["watch"]
    assert {p.name for p in folder.iterdir()} == FOLDER_FILES | {f"node-{i:02d}.csv" for i in range(1, 11)}
    task = task_of(folder)
    schema = task.schema
    assert (task.category, task.batch_size, schema.kind, schema.label) == ("classification", 32, "series", "exercise")
    assert schema.classes == ("PEN", "ABD", "FEL", "IR", "ER", "TRAP", "ROW")
    assert schema.features == ("ax", "ay", "az", "wx", "wy", "wz") and task.input_shape() == (20, 6)
    header = (folder / "node-01.csv").read_text().splitlines()[0]
    assert header == "t,ax,ay,az,wx,wy,wz,exercise"
    sizes, mixes = [], []
    for node in sorted(folder.glob("node-*.csv")):
        data = prepare_local(node, schema)[0]
        counts = np.bincount(data.y, minlength=7)
        assert data.dropped == 0 and (counts > 0).all()  # every exercise, on every device
        # 14 recordings, 19 rows of each start no window: the 60 s gaps break the series
        assert data.samples == data.rows - 14 * 19
        sizes.append(data.samples)
        mixes.append(counts / counts.sum())
    assert min(sizes) > 2500 and max(sizes) > 1.5 * min(sizes)  # non-IID in size
    assert np.ptp(np.array(mixes), axis=0).max() > 0.03  # and in class mix
    model = build_model(task.model, task.input_shape(), schema.outputs)
    assert model.output_shape == (None, 7) and model.count_params() < 20_000


def test_a_window_never_spans_two_recordings(folders):
    folder = folders["watch"]
    schema = task_of(folder).schema
    no_gap = DataSchema.from_body({**schema.to_body(), "window": {"lookback": 20, "horizon": 0}})
    node = folder / "node-03.csv"
    assert read_local(node, no_gap).samples == read_local(node, schema).samples + 13 * 19


def test_materialize_is_deterministic_and_rewrites_its_own_folder_only(folders, tmp_path):
    for name, folder in folders.items():
        again = materialize(name, tmp_path / name)
        assert digest(again) == digest(folder)
    assert digest(materialize("watch", tmp_path / "watch")) == digest(folders["watch"])  # over itself
    with pytest.raises(DataError, match="not empty and not a wind data folder"):
        materialize("wind", tmp_path / "watch")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(DataError, match="not empty"):
        materialize("watch", tmp_path / "mine")


def test_a_failed_materialize_leaves_no_half_written_folder(wheels, tmp_path, monkeypatch):
    def fails(archive, spec, out):
        (out / "node-01.csv").write_text("t,ax\n")
        raise DataError("the source changed")

    monkeypatch.setattr(packaged, "_write_watch", fails)
    with pytest.raises(DataError, match="the source changed"):
        materialize("watch", tmp_path / "w")
    assert list(tmp_path.iterdir()) == []


def test_cli_lists_and_materializes(wheels, tmp_path, capsys):
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    assert "wind" in out and "watch" in out and "fetched" in out and "Etalab" in out
    assert main(["data", "fetch", "watch"]) == 0
    assert capsys.readouterr().out.strip() == str(find_wheel("watch"))
    assert main(["data", "materialize", "watch", "--out", str(tmp_path / "w")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "w")
    assert (tmp_path / "w" / "node-10.csv").is_file()
    assert main(["data", "materialize", "rain", "--out", str(tmp_path / "r")]) == 2


# --- the tasks learn (central quick trains, a few seconds each) ------------------------------------


def pooled(folder):
    """Every device's own training and validation split, pooled: what federation at best approaches."""
    task = task_of(folder)
    shards = [prepare_local(node, task.schema)[1] for node in sorted(folder.glob("node-*.csv"))]
    x, y, xv, yv = (
        np.concatenate([getattr(s, name) for s in shards]) for name in ("x_train", "y_train", "x_val", "y_val")
    )
    return task, x, y, xv, yv


def quick_train(task, x, y, loss: str):
    import tensorflow as tf

    model = build_model(task.model, task.input_shape(), task.schema.outputs, seed=0)
    model.compile(optimizer=tf.keras.optimizers.legacy.SGD(learning_rate=task.learning_rate), loss=loss)
    tf.keras.utils.set_random_seed(0)
    model.fit(x, y, batch_size=task.batch_size, epochs=1, verbose=0, shuffle=True)
    return model


def test_wind_task_learns_with_its_learning_rate(folders):
    task, x, y, xv, yv = pooled(folders["wind"])
    model = quick_train(task, x, y, "mse")
    mae = float(np.mean(np.abs(model.predict(xv, verbose=0).ravel() - yv)))
    mean_predictor = float(np.mean(np.abs(yv - y.mean())))
    assert mae < 0.5 * mean_predictor, (mae, mean_predictor)  # one epoch must at least halve the mean predictor's error


def test_watch_task_learns_with_its_learning_rate(folders):
    task, x, y, xv, yv = pooled(folders["watch"])
    model = quick_train(task, x, y, "sparse_categorical_crossentropy")
    accuracy = float(np.mean(model.predict(xv, verbose=0).argmax(axis=1) == yv))
    assert accuracy > 3 / 7, accuracy  # chance is 1/7
