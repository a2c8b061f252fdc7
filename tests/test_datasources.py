"""A device's own data against a task's schema (issue 14): real files written here, read with pandas,
pyarrow, numpy and Pillow; each bad input refused with one line naming the file and the column/value."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bpcv.data import Shard
from bpcv.datasources import DataSchema, describe, load_schema, make_windows, prepare_local, read_local
from bpcv.local_split import STAT_BLOCK_VALUES, Standardizer, split_local, standardize
from bpcv.errors import ConfigError, DataError
from bpcv_app.cli import main

CLASSIFY = DataSchema.from_body({"features": ["temp", "hum"], "label": "state", "classes": ["idle", "on", "off"]})
REGRESS = DataSchema.from_body({"category": "regression", "features": ["temp", "hum"], "label": "power"})


def sensor_frame(n: int = 80, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    temp, hum = rng.normal(20, 3, n), rng.uniform(30, 70, n)
    return pd.DataFrame(
        {"temp": temp, "hum": hum, "state": rng.choice(["idle", "on", "off"], n), "power": 2 * temp - 0.1 * hum}
    )


def write_csv(tmp_path, text: str, name: str = "node.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def refused(path, schema: DataSchema) -> str:
    with pytest.raises(DataError) as info:
        read_local(path, schema)
    message = str(info.value)
    assert "\n" not in message and str(path) in message  # one line, naming the file
    return message


# --- good files ------------------------------------------------------------------------------------


def test_classification_csv_reads_features_and_class_indices(tmp_path):
    frame = sensor_frame()
    path = tmp_path / "node.csv"
    frame.to_csv(path, index=False)
    data = read_local(path, CLASSIFY)
    assert data.x.shape == (80, 2) and data.x.dtype == np.float32 and data.y.dtype == np.int64
    assert np.allclose(data.x[:, 0], frame["temp"], atol=1e-4)
    assert [CLASSIFY.classes[i] for i in data.y] == frame["state"].tolist()
    assert data.rows == 80 and data.dropped == 0


def test_regression_csv_and_the_same_table_as_parquet(tmp_path):
    frame = sensor_frame()
    frame.to_csv(tmp_path / "node.csv", index=False)
    frame.to_parquet(tmp_path / "node.parquet")
    from_csv, from_parquet = read_local(tmp_path / "node.csv", REGRESS), read_local(tmp_path / "node.parquet", REGRESS)
    assert from_csv.y.dtype == np.float32 and np.allclose(from_csv.y, frame["power"], atol=1e-4)
    assert np.allclose(from_csv.x, from_parquet.x) and np.allclose(from_csv.y, from_parquet.y)


def test_integer_class_labels_match_1_and_1_0(tmp_path):
    labels = [0, 1, 2] * 20
    text = "a,label\n" + "".join(f"{i},{'1.0' if c == 1 else c}\n" for i, c in enumerate(labels))
    schema = DataSchema.from_body({"features": ["a"], "label": "label", "classes": [0, 1, 2]})
    assert read_local(write_csv(tmp_path, text), schema).y.tolist() == labels


def test_npz_arrays(tmp_path):
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "node.npz", x=rng.normal(size=(60, 4, 3)), y=rng.integers(0, 2, 60))
    schema = DataSchema.from_body({"kind": "arrays", "classes": [0, 1], "shape": [4, 3]})
    data = read_local(tmp_path / "node.npz", schema)
    assert data.x.shape == (60, 4, 3) and data.y.shape == (60,)


def test_image_folder_one_subfolder_per_class(tmp_path):
    from PIL import Image

    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.fromarray(np.full((6, 4, 3), 40 * i, dtype=np.uint8)).save(tmp_path / cls / f"{i}.png")
    schema = DataSchema.from_body({"kind": "images", "classes": ["cat", "dog"], "shape": [6, 4, 1], "min_rows": 6})
    data = read_local(tmp_path, schema)
    assert data.x.shape == (6, 6, 4, 1) and data.y.tolist() == [0, 0, 0, 1, 1, 1]
    assert 0 <= data.x.min() and data.x.max() <= 1


def test_nan_rows_below_the_allowed_share_are_dropped(tmp_path):
    frame = sensor_frame(100)
    frame.loc[[3, 50], "hum"] = np.nan
    frame.loc[7, "temp"] = np.inf
    frame.to_csv(tmp_path / "node.csv", index=False)
    data = read_local(tmp_path / "node.csv", CLASSIFY)
    assert data.rows == 100 and data.dropped == 3 and data.samples == 97 and np.isfinite(data.x).all()


# --- series windows --------------------------------------------------------------------------------


def test_windows_by_hand():
    values = np.arange(8.0)  # one feature: 0..7, target = 10 * value
    x, y = make_windows(values, values * 10, lookback=3, horizon=1)
    assert x[:, :, 0].tolist() == [[0, 1, 2], [1, 2, 3], [2, 3, 4], [3, 4, 5], [4, 5, 6]]
    assert y.tolist() == [30, 40, 50, 60, 70]
    x, y = make_windows(values, values * 10, lookback=2, horizon=0)  # the label of the window's last row
    assert y.tolist() == [10, 20, 30, 40, 50, 60, 70]
    breaks = np.zeros(8, bool)
    breaks[5] = True  # rows 0-4 | 5-7: no window spans rows 4 and 5
    x, y = make_windows(values, values * 10, lookback=3, horizon=1, breaks=breaks)
    assert x[:, :, 0].tolist() == [[0, 1, 2], [1, 2, 3]] and y.tolist() == [30, 40]


def series_csv(tmp_path, missing=range(100, 104), n=200):
    times = pd.date_range("2024-01-01", periods=n, freq="10min")
    frame = pd.DataFrame({"time": times.strftime("%Y-%m-%d %H:%M"), "load": np.arange(n, dtype=float)})
    frame = frame.drop(index=list(missing)).sample(frac=1, random_state=0)  # a gap, rows out of order
    frame.to_csv(tmp_path / "series.csv", index=False)
    return tmp_path / "series.csv"


def series_schema(**window) -> DataSchema:
    body = {"kind": "series", "category": "regression", "features": ["load"], "label": "load"}
    return DataSchema.from_body({**body, "window": {"lookback": 5, "horizon": 1, "time_column": "time", **window}})


def test_a_gap_longer_than_max_gap_breaks_windows(tmp_path):
    data = read_local(series_csv(tmp_path), series_schema(max_gap="15min"))
    # rows 0-99 and 104-199 (sorted by time): (100 - 5) + (96 - 5) windows; none spans the 50-minute gap
    assert data.samples == 95 + 91
    assert np.all(np.diff(data.x[:, :, 0], axis=1) == 1) and np.all(data.y == data.x[:, -1, 0] + 1)


def test_resampling_fills_a_gap_within_max_gap_and_breaks_a_longer_one(tmp_path):
    path = series_csv(tmp_path)
    filled = read_local(path, series_schema(resample="10min", max_gap="1h"))
    assert filled.samples == 200 - 5 and np.allclose(filled.y, np.arange(5, 200))  # interpolated 100..103
    broken = read_local(path, series_schema(resample="10min"))  # default max_gap: one step
    assert broken.samples == 95 + 91


def test_series_split_takes_each_stretchs_tail_with_the_overlap_left_out(tmp_path):
    _, shard = prepare_local(series_csv(tmp_path), series_schema(max_gap="15min"), val_fraction=0.1)
    # stretches of 95 and 91 windows (the gap breaks them): the last 10 and 9 of each for validation, the
    # 5 windows before each tail (they share rows with it) left out
    assert len(shard.y_val) == 10 + 9 and len(shard.y_train) == (95 - 10 - 5) + (91 - 9 - 5)
    first, second = shard.y_val[shard.y_val < 100], shard.y_val[shard.y_val > 104]  # labels are row numbers
    assert first.tolist() == list(range(90, 100)) and second.tolist() == list(range(191, 200))
    # a window labelled v reads rows v-5..v-1: no training window touches a row of a validation window
    train = shard.y_train
    assert train[train < 100].max() == 84 < 90 - 5 and train[train > 104].max() == 185 < 191 - 5


def test_one_unbroken_series_validates_on_its_last_samples(tmp_path):
    _, shard = prepare_local(series_csv(tmp_path, missing=[]), series_schema(max_gap="15min"), val_fraction=0.1)
    assert shard.y_val.tolist() == list(range(180, 200)) and len(shard.y_train) == 195 - 20 - 5


# --- the split and normalisation -------------------------------------------------------------------


def test_split_is_seeded_per_device_and_standardisation_uses_training_only():
    x, y = np.arange(200.0).reshape(100, 2), np.arange(100)
    a, b, c = split_local(x, y, 0.2, seed=1), split_local(x, y, 0.2, seed=1), split_local(x, y, 0.2, seed=2)
    assert isinstance(a, Shard) and len(a.y_val) == 20 and len(a.y_train) == 80
    assert a.y_val.tolist() == b.y_val.tolist() != c.y_val.tolist()
    assert sorted(a.y_train.tolist() + a.y_val.tolist()) == list(range(100))
    scaler = Standardizer.fit(a.x_train, (0,))
    assert np.allclose(scaler.mean[0], a.x_train.mean(axis=0)) and not np.allclose(scaler.mean[0], x.mean(axis=0))
    assert np.allclose(scaler.apply(a.x_train).mean(axis=0), 0, atol=1e-5)
    constant = Standardizer.fit(np.ones((10, 2)), (0,)).apply(np.ones((3, 2)))  # a sensor that never moved
    assert np.isfinite(constant).all() and np.all(constant == 0)


def test_standardisation_sums_in_blocks_as_numpy_would_and_overwrites_only_the_splits_own_copies():
    """The statistics are numpy's float64 mean and std over every feature's axes, though summed a block of
    samples at a time (2.4 million values here: three blocks); prepare_local's split is standardised where
    it lies, without another copy of the device's data, while ``apply`` leaves its argument alone."""
    rng = np.random.default_rng(0)
    x = (rng.normal(3.0, 2.0, (3000, 28, 28)) * rng.random(28)).astype(np.float32)
    assert x.size > 2 * STAT_BLOCK_VALUES
    scaler = Standardizer.fit(x, (0, 1))
    expected_std = x.std(axis=(0, 1), keepdims=True, dtype=np.float64).astype(np.float32)
    np.testing.assert_array_equal(scaler.mean, x.mean(axis=(0, 1), keepdims=True, dtype=np.float64).astype(np.float32))
    np.testing.assert_array_equal(scaler.std, expected_std)
    before = x.copy()
    np.testing.assert_array_equal(scaler.apply(x), (before - scaler.mean) / scaler.std)
    np.testing.assert_array_equal(x, before)  # not in place unless asked
    shard = split_local(x, np.arange(3000), 0.1, seed=0)
    own = shard.x_train
    standardised, _ = standardize(shard, "series")
    assert standardised.x_train is own and np.abs(own.mean(axis=(0, 1))).max() < 1e-4
    np.testing.assert_array_equal(x, before)  # the data read is untouched: the split copied it


def test_a_split_in_place_moves_the_training_rows_within_the_data_instead_of_copying_them():
    """prepare_local's split (``in_place``) gives the same shard as a copying split, its training rows in
    the file's order in the front of the data's own memory: numpy's allocations during the split (traced)
    stay a small part of the data's size, where a copying split allocates the whole training split."""
    import tracemalloc

    rng = np.random.default_rng(5)
    x, y = rng.random((100_000, 100), dtype=np.float32), np.arange(100_000)
    expected = split_local(x, y, 0.1, seed=4)
    assert (np.diff(expected.y_train) > 0).all() and (np.diff(expected.y_val) > 0).all()  # the file's order
    peaks = {}
    for in_place in (False, True):
        data = x.copy()
        tracemalloc.start()
        shard = split_local(data, y, 0.1, seed=4, in_place=in_place)
        peaks[in_place] = tracemalloc.get_traced_memory()[1] / x.nbytes
        tracemalloc.stop()
        for part in ("x_train", "y_train", "x_val", "y_val"):
            np.testing.assert_array_equal(getattr(shard, part), getattr(expected, part))
        assert np.shares_memory(shard.x_train, data) == in_place
    assert peaks[False] > 0.9 and peaks[True] < 0.3, peaks
    windows = np.lib.stride_tricks.sliding_window_view(np.arange(40.0), 4)  # overlapping rows, read-only
    shard = split_local(windows, np.arange(len(windows)), 0.2, seed=0, in_place=True)
    np.testing.assert_array_equal(shard.x_train, windows[shard.y_train])  # copied, as it cannot be moved


def test_prepare_local_gives_a_standardised_shard_and_one_line_of_counts(tmp_path):
    sensor_frame(100).to_csv(tmp_path / "node.csv", index=False)
    data, shard = prepare_local(tmp_path / "node.csv", REGRESS, val_fraction=0.2, seed=3)
    assert shard.num_samples == 80 and np.allclose(shard.x_train.mean(axis=0), 0, atol=1e-5)
    line = describe(data, shard, REGRESS)
    assert "100 rows read" in line and "train 80 / validation 20" in line and "target mean" in line


# --- refusals: one line naming the file and the column/value ---------------------------------------


def test_missing_column_names_it_and_the_columns_there_are(tmp_path):
    message = refused(write_csv(tmp_path, "temp,humidity,state\n1,2,on\n"), CLASSIFY)
    assert "column 'hum' not found" in message and "['temp', 'humidity', 'state']" in message


def test_a_string_in_a_numeric_column_names_the_first_bad_row(tmp_path):
    rows = "".join(f"{i},{'n/a-sensor' if i == 6 else 40},on\n" for i in range(60))
    message = refused(write_csv(tmp_path, "temp,hum,state\n" + rows), CLASSIFY)
    assert "column 'hum' expects numbers, found 'n/a-sensor' at row 7" in message


def test_nan_and_inf_beyond_the_allowed_share(tmp_path):
    rows = "".join(f"{i},{'inf' if i % 10 == 2 else ('' if i % 10 == 5 else 40)},on\n" for i in range(60))
    message = refused(write_csv(tmp_path, "temp,hum,state\n" + rows), CLASSIFY)
    assert "12 of 60 rows (20.0%)" in message and "column 'hum', first at row 3" in message
    assert "at most 5.0%" in message


def test_an_empty_file_and_a_header_only_file(tmp_path):
    assert "empty file" in refused(write_csv(tmp_path, ""), CLASSIFY)
    assert "no data rows" in refused(write_csv(tmp_path, "temp,hum,state\n", "header.csv"), CLASSIFY)


def test_too_few_rows(tmp_path):
    sensor_frame(10).to_csv(tmp_path / "node.csv", index=False)
    assert "10 rows, the task needs at least 50 (min_rows)" in refused(tmp_path / "node.csv", CLASSIFY)


def test_an_unknown_class_names_the_value_and_the_classes(tmp_path):
    rows = "".join(f"{i},40,{'broken' if i == 4 else 'on'}\n" for i in range(60))
    message = refused(write_csv(tmp_path, "temp,hum,state\n" + rows), CLASSIFY)
    assert "column 'state' has unknown class 'broken' at row 5" in message
    assert "['idle', 'on', 'off']" in message


def test_a_malformed_csv_is_one_line(tmp_path):
    message = refused(write_csv(tmp_path, "temp,hum,state\n1,2,on\n3,4,on,extra,fields\n"), CLASSIFY)
    assert "malformed CSV" in message and "line 3" in message


def test_a_declared_int_column_refuses_a_fraction(tmp_path):
    schema = DataSchema.from_body({**CLASSIFY.to_body(), "dtypes": {"hum": "int"}})
    rows = "".join(f"{i},{40.5 if i == 8 else 40},on\n" for i in range(60))
    assert "column 'hum' is declared int, found 40.5 at row 9" in refused(
        write_csv(tmp_path, "temp,hum,state\n" + rows), schema
    )


def test_a_bad_time_names_the_row(tmp_path):
    rows = "".join(f"{'yesterday' if i == 2 else f'2024-01-01 00:{i:02d}'},{i}\n" for i in range(60))
    message = refused(write_csv(tmp_path, "time,load\n" + rows), series_schema())
    assert "column 'time' expects times" in message and "'yesterday' at row 3" in message


def test_a_wrong_image_size(tmp_path):
    from PIL import Image

    (tmp_path / "cat").mkdir()
    Image.fromarray(np.zeros((5, 5), dtype=np.uint8)).save(tmp_path / "cat" / "0.png")
    schema = DataSchema.from_body({"kind": "images", "classes": ["cat"], "shape": [6, 4, 1]})
    message = refused(tmp_path, schema)
    assert "cat/0.png: image is 5x5 pixels, the task expects 4x6" in message


def test_an_image_folder_of_an_unknown_class(tmp_path):
    (tmp_path / "cow").mkdir()
    schema = DataSchema.from_body({"kind": "images", "classes": ["cat", "dog"], "shape": [6, 4, 1]})
    assert "unknown class 'cow'; classes are ['cat', 'dog']" in refused(tmp_path, schema)


def test_npz_without_y_and_npz_with_objects_are_refused(tmp_path):
    np.savez(tmp_path / "node.npz", x=np.zeros((60, 2)), labels=np.zeros(60))
    schema = DataSchema.from_body({"kind": "arrays", "classes": [0, 1]})
    assert "expected arrays 'x' and 'y', the file has ['labels', 'x']" in refused(tmp_path / "node.npz", schema)
    np.savez(tmp_path / "pickled.npz", x=np.array([{"a": 1}] * 60, dtype=object), y=np.zeros(60))
    assert "Object arrays cannot be loaded" in refused(tmp_path / "pickled.npz", schema)  # never unpickled


# --- the schema ------------------------------------------------------------------------------------


def test_schema_round_trips_and_names_the_first_wrong_field(tmp_path):
    schema = series_schema(resample="10min", max_gap="1h")
    assert DataSchema.from_body(schema.to_body()) == schema
    bad = {
        "kind": ("table", "kind must be one of"),
        "min_rows": (0, "min_rows must be a positive integer"),
        "max_nan_share": (1.5, "max_nan_share must be a number in [0, 1)"),
        "features": ("load", "features must be a list"),
        "colour": ("red", "unknown field(s) ['colour']"),
        "window": ({"lookback": 0}, "window.lookback must be an integer >= 1"),
    }
    for field_name, (value, expected) in bad.items():
        with pytest.raises(ConfigError, match=expected.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
            DataSchema.from_body({**schema.to_body(), field_name: value})
    with pytest.raises(ConfigError, match="positive duration"):
        series_schema(resample="10")
    with pytest.raises(ConfigError, match="needs classes"):
        DataSchema.from_body({"features": ["a"], "label": "b"})
    (tmp_path / "s.toml").write_text('kind = "series"\n[window]\nlookback = 3\n')
    with pytest.raises(ConfigError, match="s.toml: schema: a series task needs distinct feature column names"):
        load_schema(tmp_path / "s.toml")


# --- the command -----------------------------------------------------------------------------------


SCHEMA_TOML = """\
kind = "tabular"
category = "classification"
features = ["temp", "hum"]
label = "state"
classes = ["idle", "on", "off"]
min_rows = 50
max_nan_share = 0.05
"""


def test_bpcv_data_check_prints_counts_or_exits_2_with_one_line(tmp_path, capsys):
    (tmp_path / "schema.toml").write_text(SCHEMA_TOML)
    sensor_frame(100).to_csv(tmp_path / "node.csv", index=False)
    assert main(["data", "check", "--schema", str(tmp_path / "schema.toml"), str(tmp_path / "node.csv")]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "100 rows read; 2 features; classes idle=" in out
    assert "train 90 / validation 10" in out
    sensor_frame(10).to_csv(tmp_path / "small.csv", index=False)
    assert main(["data", "check", "--schema", str(tmp_path / "schema.toml"), str(tmp_path / "small.csv")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "small.csv: 10 rows, the task needs at least 50" in err
