"""Aggregation math on lists of weight arrays, pure numpy."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Weights = list[np.ndarray]


def fedavg(updates: Sequence[Weights], sample_counts: Sequence[int]) -> Weights:
    """FedAvg: the average of the updates weighted by their sample counts (the paper's eq. for w_{t+1})."""
    if not updates:
        raise ValueError("fedavg needs at least one update")
    if len(updates) != len(sample_counts) or min(sample_counts) <= 0:
        raise ValueError("one positive sample count per update is required")
    total = float(sum(sample_counts))
    averaged = []
    for i in range(len(updates[0])):
        acc = np.zeros(np.shape(updates[0][i]), dtype=np.float64)
        for update, count in zip(updates, sample_counts, strict=True):
            acc += np.asarray(update[i], dtype=np.float64) * (count / total)
        averaged.append(acc.astype(np.float32))
    return averaged


def _stacked(updates: Sequence[Weights], i: int) -> np.ndarray:
    """Tensor ``i`` of every update, stacked on a new first axis (float64)."""
    return np.stack([np.asarray(u[i], dtype=np.float64) for u in updates])


def coordinate_median(updates: Sequence[Weights]) -> Weights:
    """Every coordinate's median over the updates (Yin et al. 2018); an even count takes the mean of the
    two middle values, as numpy does."""
    if not updates:
        raise ValueError("a median needs at least one update")
    return [np.median(_stacked(updates, i), axis=0).astype(np.float32) for i in range(len(updates[0]))]


def trimmed_mean(updates: Sequence[Weights], trim: int) -> Weights:
    """Every coordinate's mean after dropping its ``trim`` largest and ``trim`` smallest values over the
    updates (Yin et al. 2018's coordinate-wise trimmed mean)."""
    if trim < 0 or len(updates) <= 2 * trim:
        raise ValueError(f"trimming {trim} from each end needs more than {2 * trim} updates, not {len(updates)}")
    out = []
    for i in range(len(updates[0])):
        ordered = np.sort(_stacked(updates, i), axis=0)
        out.append(ordered[trim : len(updates) - trim].mean(axis=0).astype(np.float32))
    return out


def krum_scores(updates: Sequence[Weights], byzantine: int) -> list[float]:
    """Krum's score of every update (Blanchard et al. 2017): the sum of its squared distances to its
    n - f - 2 nearest other updates, for f = ``byzantine``; lower is more central."""
    n = len(updates)
    if byzantine < 0 or n < 2 * byzantine + 3:
        raise ValueError(f"Krum with f = {byzantine} needs at least {2 * byzantine + 3} updates, not {n}")
    flat = np.stack([np.concatenate([np.ravel(np.asarray(t, dtype=np.float64)) for t in u]) for u in updates])
    squared = ((flat[:, None, :] - flat[None, :, :]) ** 2).sum(axis=2)
    neighbours = n - byzantine - 2
    return [float(np.sort(np.delete(squared[k], k))[:neighbours].sum()) for k in range(n)]
