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


def delta(update: Weights, base: Weights) -> Weights:
    """``update - base``, tensor by tensor (float64): how far a model moved from where it started."""
    if len(update) != len(base):
        raise ValueError(f"an update of {len(update)} tensors cannot start from a model of {len(base)}")
    return [
        np.asarray(u, dtype=np.float64) - np.asarray(b, dtype=np.float64) for u, b in zip(update, base, strict=True)
    ]


def moved(base: Weights, step: Weights) -> Weights:
    """``base + step``, tensor by tensor, as float32 weights (the next global model)."""
    return [(np.asarray(b, dtype=np.float64) + s).astype(np.float32) for b, s in zip(base, step, strict=True)]


def weighted_mean(tensors: Sequence[Weights], sample_counts: Sequence[int]) -> Weights:
    """The mean of several weight lists (deltas), weighted by sample count, kept in float64."""
    if not tensors:
        raise ValueError("a mean needs at least one update")
    if len(tensors) != len(sample_counts) or min(sample_counts) <= 0:
        raise ValueError("one positive sample count per update is required")
    total = float(sum(sample_counts))
    return [
        sum(np.asarray(t[i], dtype=np.float64) * (n / total) for t, n in zip(tensors, sample_counts, strict=True))
        for i in range(len(tensors[0]))
    ]


def page_direction(
    previous: Weights, now: Sequence[Weights], before: Sequence[Weights], sample_counts: Sequence[int]
) -> Weights:
    """PAGE's cheap step (Li et al. 2021; FedPAGE, Zhao et al. 2021): the previous direction plus the
    sample-weighted mean change ``now[i] - before[i]`` of the same sources (the same clients' deltas at two
    consecutive global models). With no such source the previous direction is kept."""
    if not now:
        return [np.array(p, dtype=np.float64) for p in previous]
    change = weighted_mean([delta(n, b) for n, b in zip(now, before, strict=True)], sample_counts)
    return [np.asarray(p, dtype=np.float64) + c for p, c in zip(previous, change, strict=True)]


def momentum(buffer: Weights | None, step: Weights, beta: float) -> Weights:
    """A heavy-ball momentum buffer ``beta * buffer + step`` (``step`` alone when there is no buffer yet)."""
    if buffer is None:
        return [np.array(s, dtype=np.float64) for s in step]
    return [beta * np.asarray(m, dtype=np.float64) + s for m, s in zip(buffer, step, strict=True)]


def _flat(tensors: Weights) -> np.ndarray:
    return np.concatenate([np.ravel(np.asarray(t, dtype=np.float64)) for t in tensors])


def fltrust_scores(deltas: Sequence[Weights], root_delta: Weights) -> list[float]:
    """FLTrust's trust score of every delta (Cao et al. 2021): ReLU of its cosine similarity to the
    server's own ``root_delta`` over all parameters; 0 for a zero delta (it has no direction)."""
    root = _flat(root_delta)
    root_norm = float(np.linalg.norm(root))
    out = []
    for d in deltas:
        flat = _flat(d)
        norm = float(np.linalg.norm(flat))
        out.append(max(0.0, float(flat @ root) / (norm * root_norm)) if norm > 0 and root_norm > 0 else 0.0)
    return out


def fltrust(deltas: Sequence[Weights], root_delta: Weights) -> Weights:
    """FLTrust's aggregate (Cao et al. 2021): every delta rescaled to the root delta's norm,
    ||g0|| / ||g_i|| * g_i, then averaged with the trust scores as weights (float64). All-zero trust
    gives a zero delta: the global model stays where it is."""
    if not deltas:
        raise ValueError("FLTrust needs at least one update")
    scores = fltrust_scores(deltas, root_delta)
    total = sum(scores)
    out = [np.zeros(np.shape(t), dtype=np.float64) for t in root_delta]
    if total <= 0:
        return out
    root_norm = float(np.linalg.norm(_flat(root_delta)))
    for d, score in zip(deltas, scores, strict=True):
        if score > 0:
            scale = score / total * root_norm / float(np.linalg.norm(_flat(d)))
            for acc, t in zip(out, d, strict=True):
                acc += scale * np.asarray(t, dtype=np.float64)
    return out
