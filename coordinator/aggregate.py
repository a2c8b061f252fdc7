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
