"""Coordinate-wise trimmed mean: drop each parameter's largest and smallest values, average the rest.

Yin, Chen, Ramchandran, Bartlett, "Byzantine-Robust Distributed Learning: Towards Optimal Statistical
Rates", ICML 2018 (the coordinate-wise trimmed mean with trim fraction beta). Here beta = 0.2: with n
updates, floor(0.2 n) values are dropped at each end of every coordinate (none below 5 updates, where
it is the plain mean). It ignores sample counts.
"""

from __future__ import annotations

from collections.abc import Sequence

from coordinator.aggregate import Weights, trimmed_mean
from coordinator.strategies.base import Strategy

TRIM_FRACTION = 0.2


class TrimmedMean(Strategy):
    """Every ranked update, combined coordinate by coordinate by the 20% trimmed mean."""

    name = "trimmed-mean"

    def combine(
        self,
        updates: Sequence[Weights],
        sample_counts: Sequence[int],
        quality: Sequence[float],
        global_weights: Weights | None = None,
    ) -> Weights:
        return trimmed_mean(updates, int(TRIM_FRACTION * len(updates)))
