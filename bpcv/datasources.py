"""A device's own data, read against the schema a task declares (issue 14, "local data sources").

``DataSchema`` says what a task's input is: a table (``tabular``), a time series cut into windows
(``series``), a folder of images (``images``) or an ``.npz`` of arrays (``arrays``); which columns are
features and which is the label; the classes or a regression target; and how much missing data is
tolerated. ``read_local`` reads one device's file (CSV and Parquet with pandas/pyarrow, ``.npz`` with
numpy, PNG/JPEG with Pillow) and returns checked arrays, or raises ``DataError`` with ONE line naming
the file, the column (or value) and what was expected. ``prepare_local`` then splits the samples on the
device (seeded) and standardises them with statistics from the device's own training split only
(``bpcv.local_split``, the array logic apart from reading),
giving a ``bpcv.data.Shard`` the trainer already knows.

Nothing here sends anything: the data, the split and the statistics stay on the device; a caller may
report only counts (``describe``). pandas, pyarrow and Pillow are imported inside the readers, so
importing this module (and ``bpcv --help``) stays light.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import tomllib

from bpcv.data import Shard
from bpcv.errors import ConfigError, DataError
from bpcv.local_split import split_local, standardize

KINDS = ("tabular", "series", "images", "arrays")
CATEGORIES = ("classification", "regression")
FEATURE_DTYPES = ("float", "int")  # a categorical feature would need its categories in the schema: not yet
TABLE_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".npy")
DEVICE_FILE_SUFFIXES = (*TABLE_SUFFIXES, ".npz")  # one device's data as a file (else an image folder)


# --- the schema ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """How a series becomes samples: ``lookback`` rows of the features in, the label ``horizon`` rows
    after the window's last row out (``horizon = 0``: the label of the last row itself)."""

    lookback: int
    horizon: int = 1
    time_column: str = ""  # ISO-8601 times or Unix seconds; rows are sorted by it
    resample: str = ""  # a duration ("10min"): one row per step, the mean of the readings in it
    max_gap: str = ""  # a duration: a longer gap between readings breaks windows (default: one step)

    def validate(self, category: str) -> None:
        for name, least in (("lookback", 1), ("horizon", 0)):
            value = getattr(self, name)
            if not _is_int(value) or value < least:
                raise ConfigError(f"schema: window.{name} must be an integer >= {least}, not {value!r}")
        for name in ("time_column", "resample", "max_gap"):
            if not isinstance(getattr(self, name), str):
                raise ConfigError(f"schema: window.{name} must be a string, not {getattr(self, name)!r}")
        for name in ("resample", "max_gap"):
            if getattr(self, name):
                if not self.time_column:
                    raise ConfigError(f"schema: window.{name} needs window.time_column")
                duration(getattr(self, name), f"window.{name}")
        if self.resample and category == "classification":
            raise ConfigError("schema: window.resample averages readings, which a class label cannot be")


@dataclass(frozen=True)
class DataSchema:
    """The input a task declares; ``from_body`` names the first wrong or missing field."""

    kind: str = "tabular"
    category: str = "classification"  # or "regression"
    features: tuple[str, ...] = ()  # column names (tabular, series)
    label: str = ""  # column name (tabular, series)
    classes: tuple[str | int, ...] = ()  # classification: the allowed label values; their order = class index
    dtypes: tuple[tuple[str, str], ...] = ()  # (feature, "float" | "int"); an unlisted feature is "float"
    window: Window | None = None  # series only
    shape: tuple[int, ...] = ()  # images: (height, width, channels); arrays: optional shape of one x row
    min_rows: int = 50  # fewest samples (rows, windows, images) a device needs to take part
    max_nan_share: float = 0.05  # more rows than this with a missing/NaN/Inf value: refused; fewer: dropped
    target_scale: float = 1.0  # regression: targets are divided by this public constant (e.g. rated power)

    @property
    def outputs(self) -> int:
        """The model's output width: one per class, or one value."""
        return len(self.classes) if self.category == "classification" else 1

    def input_shape(self) -> tuple[int, ...] | None:
        """One sample's shape as the schema fixes it (None: arrays without a declared ``shape``)."""
        if self.kind == "tabular":
            return (len(self.features),)
        if self.kind == "series":
            assert self.window is not None
            return (self.window.lookback, len(self.features))
        return tuple(self.shape) or None

    def dtype(self, feature: str) -> str:
        return dict(self.dtypes).get(feature, "float")

    def to_body(self) -> dict[str, Any]:
        body = asdict(self)
        body.update(features=list(self.features), classes=list(self.classes), shape=list(self.shape))
        body["dtypes"] = dict(self.dtypes)
        if self.window is None:
            del body["window"]  # TOML has no null
        return body

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> DataSchema:
        if not isinstance(body, Mapping):
            raise ConfigError(f"schema: expected a table of fields, not {type(body).__name__}")
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(body) - set(known))
        if unknown:
            raise ConfigError(f"schema: unknown field(s) {unknown}; known: {known}")
        values: dict[str, Any] = {}
        for name in ("kind", "category", "label"):
            if name in body:
                values[name] = _text(body[name], name)
        if "features" in body:
            values["features"] = tuple(_text(v, "features[]") for v in _items(body["features"], "features"))
        if "classes" in body:
            values["classes"] = tuple(_class_value(v) for v in _items(body["classes"], "classes"))
        if "dtypes" in body:
            if not isinstance(body["dtypes"], Mapping):
                raise ConfigError('schema: dtypes must be a table of feature = "float" | "int"')
            values["dtypes"] = tuple((str(k), _text(v, f"dtypes.{k}")) for k, v in body["dtypes"].items())
        if "shape" in body:
            values["shape"] = tuple(_items(body["shape"], "shape"))
        if "window" in body:
            window = body["window"]
            wrong = sorted(set(window) - {f.name for f in fields(Window)}) if isinstance(window, Mapping) else None
            if wrong is None or wrong or "lookback" not in window:
                raise ConfigError(f"schema: window must be a table with lookback (unknown: {wrong})")
            values["window"] = Window(**window)
        for name in ("min_rows", "max_nan_share", "target_scale"):
            if name in body:
                values[name] = body[name]
        schema = cls(**values)
        schema.validate()
        return schema

    def validate(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"schema: kind must be one of {list(KINDS)}, not {self.kind!r}")
        if self.category not in CATEGORIES:
            raise ConfigError(f"schema: category must be one of {list(CATEGORIES)}, not {self.category!r}")
        if self.kind in ("tabular", "series"):
            if not self.features or len(set(self.features)) != len(self.features):
                raise ConfigError(f"schema: a {self.kind} task needs distinct feature column names")
            if not self.label:
                raise ConfigError(f"schema: a {self.kind} task needs a label column")
        for feature, dtype in self.dtypes:
            if feature not in self.features or dtype not in FEATURE_DTYPES:
                raise ConfigError(f"schema: dtypes.{feature} = {dtype!r}: a feature's dtype is one of {FEATURE_DTYPES}")
        if self.category == "classification":
            if not self.classes or len({str(c) for c in self.classes}) != len(self.classes):
                raise ConfigError("schema: a classification task needs classes, a list of distinct label values")
        elif self.classes:
            raise ConfigError("schema: a regression task has no classes")
        if (self.kind == "series") != (self.window is not None):
            raise ConfigError("schema: a series task needs a [window], and only a series task has one")
        if self.window is not None:
            self.window.validate(self.category)
        if not all(_is_int(s) and s > 0 for s in self.shape):
            raise ConfigError(f"schema: shape must be positive integers, not {list(self.shape)}")
        if self.kind == "images" and (len(self.shape) != 3 or self.shape[2] not in (1, 3)):
            raise ConfigError(f"schema: an images task needs shape = [height, width, 1 or 3], not {list(self.shape)}")
        if not _is_int(self.min_rows) or self.min_rows < 1:
            raise ConfigError(f"schema: min_rows must be a positive integer, not {self.min_rows!r}")
        share = self.max_nan_share
        if isinstance(share, bool) or not isinstance(share, int | float) or not 0 <= share < 1:
            raise ConfigError(f"schema: max_nan_share must be a number in [0, 1), not {share!r}")
        scale = self.target_scale
        if isinstance(scale, bool) or not isinstance(scale, int | float) or not 0 < scale < 1e15:
            raise ConfigError(f"schema: target_scale must be a positive number, not {scale!r}")
        if scale != 1.0 and self.category != "regression":
            raise ConfigError("schema: target_scale is for a regression target")


def load_schema(path: Path | str) -> DataSchema:
    """A DataSchema from a TOML file holding its fields (``[window]`` and ``[dtypes]`` as tables)."""
    path = Path(path)
    try:
        return DataSchema.from_body(tomllib.loads(path.read_text()))
    except OSError as exc:
        raise ConfigError(f"cannot read schema {path}: {exc.strerror}") from exc
    except (tomllib.TOMLDecodeError, ConfigError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def duration(text: str, name: str = "duration"):
    """A positive duration with a unit, e.g. "10min", "30s", "1h"."""
    import pandas as pd

    try:
        value = pd.Timedelta(text) if isinstance(text, str) and any(c.isalpha() for c in text) else None
    except ValueError:
        value = None
    if value is None or value <= pd.Timedelta(0):
        raise ConfigError(f"schema: {name} must be a positive duration with a unit like '10min', not {text!r}")
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"schema: {name} must be a string, not {value!r}")
    return value


def _items(value: Any, name: str) -> list:
    if not isinstance(value, list | tuple):
        raise ConfigError(f"schema: {name} must be a list, not {value!r}")
    return list(value)


def _class_value(value: Any) -> str | int:
    if not (isinstance(value, str) or _is_int(value)):
        raise ConfigError(f"schema: classes must be strings or integers, not {value!r}")
    return value


# --- reading ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalData:
    """One device's samples, checked against the schema. x is float32; y holds class indices (int64, in
    the order of ``schema.classes``) or regression targets divided by ``schema.target_scale`` (float32).
    It never leaves the device."""

    source: str
    x: np.ndarray
    y: np.ndarray
    rows: int  # rows (images) in the file
    dropped: int  # rows dropped for a missing, NaN or Inf value (fewer than the schema allows)
    stretch: np.ndarray | None = None  # series: each window's unbroken stretch (session), in time order

    @property
    def samples(self) -> int:
        return len(self.y)


def read_local(path: Path | str, schema: DataSchema) -> LocalData:
    """Read a device's file (or image folder) as the schema's kind says; DataError in one line if it
    does not match."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if schema.kind == "images":
        data = read_image_folder(path, schema)
    elif schema.kind == "arrays":
        data = read_npz(path, schema)
    else:
        data = table_samples(read_table(path), path, schema)
    if data.samples < schema.min_rows:
        unit = {"series": "windows", "images": "images"}.get(schema.kind, "rows")
        raise DataError(f"{path}: {data.samples} {unit}, the task needs at least {schema.min_rows} (min_rows)")
    return data


def read_table(path: Path):
    """A CSV (every cell read as text, checked later) or Parquet file as a DataFrame."""
    fmt = TABLE_SUFFIXES.get(path.suffix.lower())
    if fmt is None or not path.is_file():
        raise DataError(f"{path}: a table is read from a .csv or .parquet file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file")
    import pandas as pd

    try:
        frame = pd.read_csv(path, dtype=str, skipinitialspace=True) if fmt == "csv" else pd.read_parquet(path)
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{path}: empty file (no header)") from exc
    except pd.errors.ParserError as exc:
        raise DataError(f"{path}: malformed CSV: {_one_line(exc)}") from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not a UTF-8 text CSV ({exc.reason} at byte {exc.start})") from exc
    except ImportError as exc:
        raise DataError(f"{path}: reading Parquet needs pyarrow ({_one_line(exc)})") from exc
    except Exception as exc:
        raise DataError(f"{path}: not a readable {fmt} file: {type(exc).__name__}: {_one_line(exc)}") from exc
    if len(frame) == 0:
        raise DataError(f"{path}: no data rows (only a header)")
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def table_samples(frame, path: Path, schema: DataSchema) -> LocalData:
    """Check a table's columns against the schema and turn it into samples (rows, or windows)."""
    window = schema.window
    time_column = window.time_column if window else ""
    for column in [*schema.features, schema.label] + ([time_column] if time_column else []):
        if column not in frame.columns:
            raise DataError(f"{path}: column {column!r} not found; the file has {_names(frame.columns)}")
    features = np.column_stack([numbers(frame[c], path, c, schema.dtype(c)) for c in schema.features])
    if schema.category == "classification":
        target = class_indices(frame[schema.label].to_numpy(dtype=object), path, f"column {schema.label!r}", schema)
    else:
        target = numbers(frame[schema.label], path, schema.label, "float")
    missing = {c: ~np.isfinite(features[:, i]) for i, c in enumerate(schema.features)}
    missing[schema.label] = missing.get(schema.label, False) | ~np.isfinite(target)
    times = None
    if time_column:
        times = parse_times(frame[time_column], path, time_column)
        missing[time_column] = np.isnat(times)
    bad = check_missing(path, missing, schema.max_nan_share)
    stretch = None
    if window is None:
        x, y = features[~bad], target[~bad]
    else:
        x, y, stretch = series_windows(features, target, bad, times, window)
    y = y.astype(np.int64) if schema.category == "classification" else (y / schema.target_scale).astype(np.float32)
    return LocalData(str(path), x.astype(np.float32), y, len(frame), int(bad.sum()), stretch)


def numbers(column, path: Path, name: str, dtype: str) -> np.ndarray:
    """A column as float64 (NaN where empty); DataError naming the first cell that is not a number."""
    import pandas as pd

    values = pd.to_numeric(column.astype(float) if column.dtype == bool else column, errors="coerce")
    wrong = np.flatnonzero(values.isna().to_numpy() & column.notna().to_numpy())
    if wrong.size:
        row = int(wrong[0])
        raise DataError(f"{path}: column {name!r} expects numbers, found {_show(column.iloc[row])} at row {row + 1}")
    out = values.to_numpy(dtype=np.float64)
    if dtype == "int":
        fractional = np.flatnonzero(np.isfinite(out) & (out != np.round(out)))
        if fractional.size:
            row = int(fractional[0])
            raise DataError(f"{path}: column {name!r} is declared int, found {out[row]!r} at row {row + 1}")
    return out


def class_indices(values: np.ndarray, path: Path, where: str, schema: DataSchema) -> np.ndarray:
    """Label values → their index in ``schema.classes`` (NaN where missing); DataError naming the first
    value that is not a class. 1, 1.0 and "1" all match the class 1."""
    names = [str(c) for c in schema.classes]
    index = {name: i for i, name in enumerate(names)}
    out = np.full(len(values), np.nan)
    cache: dict[Any, int | None] = {}
    for row, value in enumerate(values.tolist()):
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        if value not in cache:
            cache[value] = _class_of(value, index)
        if cache[value] is None:
            raise DataError(f"{path}: {where} has unknown class {_show(value)} at row {row + 1}; classes are {names}")
        out[row] = cache[value]
    return out


def _class_of(value: Any, index: dict[str, int]) -> int | None:
    key = value.decode(errors="replace") if isinstance(value, bytes) else str(value).strip()
    if key in index:
        return index[key]
    try:
        number = float(key)
    except ValueError:
        return None
    return index.get(str(int(number))) if number.is_integer() else None


def parse_times(column, path: Path, name: str) -> np.ndarray:
    """ISO-8601 text or Unix seconds → datetime64[ns] (UTC; NaT where empty)."""
    import pandas as pd

    numeric = pd.to_numeric(column, errors="coerce")
    if numeric.notna().sum() == column.notna().sum():  # every time given is a number: Unix seconds
        times = pd.to_datetime(numeric, unit="s", errors="coerce", utc=True)
    else:
        times = pd.to_datetime(column, errors="coerce", utc=True, format="ISO8601")
    wrong = np.flatnonzero(times.isna().to_numpy() & column.notna().to_numpy())
    if wrong.size:
        row = int(wrong[0])
        raise DataError(
            f"{path}: column {name!r} expects times (ISO 8601 or Unix seconds), "
            f"found {_show(column.iloc[row])} at row {row + 1}"
        )
    return times.dt.tz_localize(None).to_numpy(dtype="datetime64[ns]")


def check_missing(path: Path, missing: dict[str, np.ndarray], max_share: float) -> np.ndarray:
    """Rows with a missing/NaN/Inf value in any column: refused beyond ``max_share``, else returned (to drop)."""
    bad = np.zeros(len(next(iter(missing.values()))), dtype=bool)
    for mask in missing.values():
        bad |= mask
    share = bad.mean() if bad.size else 0.0
    if share > max_share:
        worst = max(missing, key=lambda c: int(np.sum(missing[c])))
        first = int(np.flatnonzero(missing[worst])[0]) + 1
        raise DataError(
            f"{path}: {int(bad.sum())} of {bad.size} rows ({share:.1%}) have a missing, NaN or Inf value "
            f"(most in column {worst!r}, first at row {first}); the task allows at most {max_share:.1%} (max_nan_share)"
        )
    return bad


def read_npz(path: Path, schema: DataSchema) -> LocalData:
    """An ``.npz`` with arrays ``x`` (one row per sample) and ``y`` (labels or targets); never unpickles."""
    if path.suffix.lower() != ".npz" or not path.is_file():
        raise DataError(f"{path}: an arrays task reads a .npz file with arrays 'x' and 'y'")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file")
    try:
        with np.load(path, allow_pickle=False) as npz:
            if not {"x", "y"} <= set(npz.files):
                raise DataError(f"{path}: expected arrays 'x' and 'y', the file has {sorted(npz.files)}")
            x, y = npz["x"], npz["y"]
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{path}: not a readable .npz ({type(exc).__name__}: {_one_line(exc)})") from exc
    if x.ndim < 2 or y.ndim != 1 or len(x) != len(y):
        raise DataError(f"{path}: expected x of shape (n, ...) and y of shape (n,), found {x.shape} and {y.shape}")
    if len(y) == 0:
        raise DataError(f"{path}: no rows (x and y are empty)")
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise DataError(f"{path}: array 'x' expects numbers, found dtype {x.dtype}")
    if schema.shape and tuple(x.shape[1:]) != schema.shape:
        raise DataError(f"{path}: array 'x' has rows of shape {x.shape[1:]}, the task expects {schema.shape}")
    x = x.astype(np.float32, copy=False)  # a device's copy: float64 would take twice the memory
    if schema.category == "classification":
        target = class_indices(y.astype(object), path, "array 'y'", schema)
    elif np.issubdtype(y.dtype, np.number):
        target = y.astype(np.float64)
    else:
        raise DataError(f"{path}: array 'y' expects numbers (a regression target), found dtype {y.dtype}")
    bad = check_missing(
        path, {"x": ~np.isfinite(x).reshape(len(x), -1).all(axis=1), "y": ~np.isfinite(target)}, schema.max_nan_share
    )
    y_out = target[~bad]
    y_out = (
        y_out.astype(np.int64)
        if schema.category == "classification"
        else (y_out / schema.target_scale).astype(np.float32)
    )
    return LocalData(str(path), x[~bad] if bad.any() else x, y_out, len(y), int(bad.sum()))


def read_image_folder(path: Path, schema: DataSchema) -> LocalData:
    """A folder with one subfolder per class (named as in ``schema.classes``) of PNG/JPEG (scaled to
    [0, 1], converted to the declared channels, never resized) or ``.npy`` images (taken as they are)."""
    names = [str(c) for c in schema.classes]
    if not path.is_dir():
        raise DataError(f"{path}: an images task reads a folder with one subfolder per class of {names}")
    files: list[tuple[Path, int]] = []
    for folder in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if folder.name not in names:
            raise DataError(f"{folder}: unknown class {folder.name!r}; classes are {names}")
        files += [(f, names.index(folder.name)) for f in sorted(folder.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise DataError(f"{path}: no images ({', '.join(IMAGE_SUFFIXES)}) in class subfolders named {names}")
    x = np.stack([_image(f, schema.shape) for f, _ in files])
    y = np.array([label for _, label in files], dtype=np.int64)
    bad = check_missing(path, {"pixels": ~np.isfinite(x).reshape(len(x), -1).all(axis=1)}, schema.max_nan_share)
    return LocalData(str(path), x[~bad], y[~bad], len(files), int(bad.sum()))


def _image(file: Path, shape: tuple[int, ...]) -> np.ndarray:
    height, width, channels = shape
    if file.suffix.lower() == ".npy":
        try:
            image = np.load(file, allow_pickle=False)
        except Exception as exc:
            raise DataError(f"{file}: not a readable .npy image ({_one_line(exc)})") from exc
        image = image[..., None] if image.ndim == 2 and channels == 1 else image
        if image.shape != tuple(shape) or not np.issubdtype(image.dtype, np.number):
            raise DataError(f"{file}: image of shape {image.shape} ({image.dtype}), the task expects {tuple(shape)}")
        return image.astype(np.float32)
    try:
        from PIL import Image
    except ImportError as exc:
        raise DataError(f"{file}: reading PNG/JPEG needs Pillow (pip install pillow)") from exc
    try:
        with Image.open(file) as img:  # the size comes from the header; pixels are decoded only if it fits
            if img.size != (width, height):
                raise DataError(
                    f"{file}: image is {img.width}x{img.height} pixels, the task expects {width}x{height} "
                    f"(width x height; images are not resized)"
                )
            pixels = np.asarray(img.convert("L" if channels == 1 else "RGB"), dtype=np.float32) / 255.0
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{file}: not a readable image ({type(exc).__name__}: {_one_line(exc)})") from exc
    return pixels.reshape(height, width, channels)


# --- series windows --------------------------------------------------------------------------------


def series_windows(
    features: np.ndarray, target: np.ndarray, bad: np.ndarray, times: np.ndarray | None, window: Window
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows (sorted by time, optionally resampled) → windows, each with its stretch's number. A dropped row, a step with no reading
    after resampling, or a gap longer than ``max_gap`` between readings breaks the series: no window
    spans it. With resampling, steps missing inside a gap of at most ``max_gap`` are interpolated."""
    import pandas as pd

    if times is not None:
        order = np.argsort(times, kind="stable")
        features, target, bad, times = features[order], target[order], bad[order], times[order]
    if window.resample:
        step = duration(window.resample, "window.resample")
        frame = pd.DataFrame(np.column_stack([features, target])[~bad], index=pd.DatetimeIndex(times[~bad]))
        frame = frame.resample(step).mean()
        observed = frame.notna().all(axis=1).to_numpy()
        seen = pd.Series(frame.index, index=frame.index).where(observed)  # the time of each observed step
        max_gap = duration(window.max_gap, "window.max_gap") if window.max_gap else step
        short = (~observed) & ((seen.bfill() - seen.ffill()) <= max_gap).to_numpy()
        filled = frame.interpolate(method="time", limit_area="inside")
        frame.loc[short] = filled.loc[short]
        values = frame.to_numpy()
        features, target, times = values[:, :-1], values[:, -1], None
        bad = ~np.isfinite(values).all(axis=1)
    breaks = np.zeros(len(target), dtype=bool)
    breaks[1:] = bad[:-1]  # a dropped row (or an empty step) ends a stretch
    keep = ~bad
    features, target, breaks = features[keep], target[keep], breaks[keep]
    if times is not None and window.max_gap:
        gap = duration(window.max_gap, "window.max_gap").to_timedelta64()
        breaks[1:] |= np.diff(times[keep]) > gap
    return windows_by_stretch(features, target, window.lookback, window.horizon, breaks)


def make_windows(
    values: np.ndarray, target: np.ndarray, lookback: int, horizon: int, breaks: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Sliding windows: x[k] = values[i : i + lookback], y[k] = target[i + lookback - 1 + horizon], for
    every i whose window and label lie in one stretch. ``breaks[j]`` True: row j starts a new stretch."""
    x, y, _ = windows_by_stretch(values, target, lookback, horizon, breaks)
    return x, y


def windows_by_stretch(
    values: np.ndarray, target: np.ndarray, lookback: int, horizon: int, breaks: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``make_windows``, and for each window the number of the unbroken stretch (session) it lies in."""
    values = np.asarray(values).reshape(len(values), -1)
    starts = np.flatnonzero(breaks) if breaks is not None else np.array([], dtype=int)
    bounds = sorted({0, *starts.tolist(), len(values)})
    xs = [np.empty((0, lookback, values.shape[1]), dtype=values.dtype)]
    ys = [np.empty((0,), dtype=np.asarray(target).dtype)]
    stretch = [np.empty((0,), dtype=np.int64)]
    for number, (start, end) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        count = end - start - lookback - horizon + 1
        if count <= 0:
            continue
        views = np.lib.stride_tricks.sliding_window_view(values[start:end], lookback, axis=0)[:count]
        xs.append(np.moveaxis(views, -1, 1))  # (count, features, lookback) → (count, lookback, features)
        first = start + lookback - 1 + horizon
        ys.append(np.asarray(target)[first : first + count])
        stretch.append(np.full(count, number, dtype=np.int64))
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(stretch)


# --- a device's shard ----------------------------------------------------------------------------


def prepare_local(
    path: Path | str, schema: DataSchema, val_fraction: float = 0.1, seed: int = 0
) -> tuple[LocalData, Shard]:
    """Read, check, split (series: in time order, the windows overlapping both sides left out) and
    standardise one device's data: the Shard the trainer takes."""
    data = read_local(path, schema)
    window = schema.window
    gap = window.lookback + window.horizon - 1 if window else 0
    shard = split_local(
        data.x, data.y, val_fraction, seed, ordered=window is not None, gap=gap, stretch=data.stretch, in_place=True
    )
    # data.x now holds the training split: the LocalData returned describes the file (rows, labels), not x
    return replace(data, x=data.x[:0]), standardize(shard, schema.kind)[0]


def describe(data: LocalData, shard: Shard, schema: DataSchema) -> str:
    """One line for the device's owner: counts, and the target's distribution (printed, never sent)."""
    parts = [f"{data.source}: {data.rows} rows read"]
    if data.dropped:
        parts[0] += f", {data.dropped} dropped for a missing/NaN/Inf value"
    if schema.kind in ("tabular", "series"):
        parts.append(f"{len(schema.features)} features")
    if schema.kind == "series":
        parts.append(f"{data.samples} windows of {schema.window.lookback}")
    if schema.category == "classification":
        counts = np.bincount(data.y, minlength=len(schema.classes))
        parts.append("classes " + " ".join(f"{c}={n}" for c, n in zip(schema.classes, counts, strict=True)))
    else:
        unit = f" (in units of {schema.target_scale:g})" if schema.target_scale != 1.0 else ""
        parts.append(f"target mean {float(np.mean(data.y)):.4g} std {float(np.std(data.y)):.4g}{unit}")
    parts.append(f"train {len(shard.y_train)} / validation {len(shard.y_val)}")
    return "; ".join(parts)


def _names(columns: Any, limit: int = 12) -> str:
    names = [str(c) for c in columns]
    return str(names[:limit])[:-1] + (f", ... {len(names) - limit} more]" if len(names) > limit else "]")


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]
