"""A device's samples split and standardised on the device (issue 14): pure array logic, apart from
reading them (``bpcv.datasources``).

``split_local`` draws the validation split (seeded per device; for a series, the tail of each unbroken
stretch, with a gap against overlapping windows), and ``Standardizer`` fits each feature's mean and
standard deviation on the device's own training split. Neither the split nor the statistics leave the
device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bpcv.data import Shard
from bpcv.errors import ConfigError, DataError

# values per block when the split moves rows and when the standardiser sums in float64 (8 MiB of temporaries)
STAT_BLOCK_VALUES = 1 << 20


def split_local(
    x: np.ndarray,
    y: np.ndarray,
    val_fraction: float = 0.1,
    seed: int = 0,
    ordered: bool = False,
    gap: int = 0,
    stretch: np.ndarray | None = None,
    in_place: bool = False,
) -> Shard:
    """Train and validation splits on the device, seeded per device. ``ordered`` (series): the last samples
    are the validation split, ``gap`` samples before them left out (overlapping windows on both sides would
    show validation rows to training). With ``stretch`` (each sample's unbroken stretch): the tail of every
    stretch long enough to split, so validation covers every session, not only the last one. Each split
    keeps its rows in the file's order (training shuffles them every epoch). ``in_place``: the training
    split is ``x``'s own memory, its rows moved to the front (``x`` is overwritten), so a device holds its
    samples once while it splits them, not twice."""
    n = len(y)
    if not 0 < val_fraction < 1:
        raise ConfigError(f"val_fraction must be in (0, 1), not {val_fraction}")
    n_val = max(1, round(n * val_fraction))
    if n - n_val - gap < 1:
        raise DataError(f"{n} samples are too few to split into training and validation")
    if ordered:
        val, train = tail_split(np.zeros(n, dtype=np.int64) if stretch is None else stretch, val_fraction, gap)
        if len(val) == 0:  # no stretch long enough on its own: the tail of all of it
            val, train = np.arange(n - n_val, n), np.arange(n - n_val - gap)
    else:
        order = np.random.default_rng(seed).permutation(n)
        val, train = order[:n_val], order[n_val:]
    val, train = np.sort(val), np.sort(train)
    x_val, y_val = x[val], y[val]
    movable = in_place and x.flags.writeable and x.flags.c_contiguous  # not a view of overlapping windows
    return Shard(_front_rows(x, train) if movable else x[train], y[train], x_val, y_val)


def _front_rows(x: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``x[rows]`` for ascending ``rows``, written over the front of ``x`` a block at a time: every row moves
    to a place at or before its own, after the rows before it have moved, so none is overwritten before
    it is read. A view of ``x``; one block of temporaries instead of a copy of the data set."""
    block = _rows_per_block(x)
    for start in range(0, len(rows), block):
        part = rows[start : start + block]
        x[start : start + len(part)] = x[part]
    return x[: len(rows)]


def _rows_per_block(x: np.ndarray) -> int:
    """Samples of ``x`` in a block of about ``STAT_BLOCK_VALUES`` values (at least one)."""
    return max(1, STAT_BLOCK_VALUES // max(1, x[0].size))


def tail_split(stretch: np.ndarray, val_fraction: float, gap: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices: the last ``val_fraction`` of each stretch for validation, the ``gap`` before it left out,
    the rest for training; a stretch too short to split goes to training whole."""
    val, train = [], []
    for number in np.unique(stretch):
        idx = np.flatnonzero(stretch == number)
        n_val = round(len(idx) * val_fraction)
        if n_val < 1 or len(idx) - n_val - gap < 1:
            train.append(idx)
            continue
        val.append(idx[len(idx) - n_val :])
        train.append(idx[: len(idx) - n_val - gap])
    joined = [np.concatenate(part) if part else np.empty(0, dtype=np.int64) for part in (val, train)]
    return joined[0], joined[1]


@dataclass(frozen=True)
class Standardizer:
    """Per-feature mean and standard deviation of THIS device's training split.

    They stay on the device. Shared, they would tell the others the device's typical level and spread
    of every reading (a household's usual load says when it is occupied, a turbine's mean power its
    site's wind), exactly, without noise, and round after round; the coordinator could also undo the
    normalisation of the device's updates. Each device therefore trains on its own scale.
    """

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray, axes: tuple[int, ...]) -> Standardizer:
        """Mean and standard deviation over ``axes`` (the samples' axis 0 among them), in float64 a block of
        samples at a time: no float64 copy of the whole data set (twice its float32 size) on a device."""
        rows = _rows_per_block(x)
        blocks = [x[i : i + rows] for i in range(0, len(x), rows)]
        count = math.prod(x.shape[a] for a in axes)
        mean = sum(b.sum(axis=axes, keepdims=True, dtype=np.float64) for b in blocks) / count
        std = np.sqrt(sum(np.square(b - mean).sum(axis=axes, keepdims=True) for b in blocks) / count)
        std[~(std > 0)] = 1.0  # a constant feature stays as it is, centred
        return cls(mean.astype(np.float32), std.astype(np.float32))

    def apply(self, x: np.ndarray, in_place: bool = False) -> np.ndarray:
        """``(x - mean) / std`` as float32; ``in_place`` overwrites a float32 ``x`` instead of copying it."""
        out = np.subtract(x, self.mean, out=x if in_place and x.dtype == np.float32 else None)
        np.divide(out, self.std, out=out)
        return out.astype(np.float32, copy=False)


def feature_axes(kind: str, ndim: int) -> tuple[int, ...]:
    """The axes one feature's statistics are taken over: samples (and time steps, and pixels)."""
    return {"series": (0, 1), "images": (0, 1, 2)}.get(kind, (0,))[: max(1, ndim - 1)]


def standardize(shard: Shard, kind: str) -> tuple[Shard, Standardizer]:
    """Fit on the training split only, apply to both; labels and targets are left as they are. The shard's
    float32 samples are standardised in place (the split's own memory), so standardising copies nothing."""
    scaler = Standardizer.fit(shard.x_train, feature_axes(kind, shard.x_train.ndim))
    x_train, x_val = (scaler.apply(x, in_place=True) for x in (shard.x_train, shard.x_val))
    return Shard(x_train, shard.y_train, x_val, shard.y_val), scaler
