"""Coordinate-wise median: every parameter is the median of that parameter over the updates.

Yin, Chen, Ramchandran, Bartlett, "Byzantine-Robust Distributed Learning: Towards Optimal Statistical
Rates", ICML 2018 (the coordinate-wise median estimator). Robust to fewer than half of the updates
being arbitrary; it ignores sample counts.
"""

from __future__ import annotations

from collections.abc import Sequence

from coordinator.aggregate import Weights, coordinate_median
from coordinator.strategies.base import Strategy


class Median(Strategy):
    """Every ranked update, combined coordinate by coordinate by the median."""

    name = "median"

    def combine(
        self,
        updates: Sequence[Weights],
        sample_counts: Sequence[int],
        quality: Sequence[float],
        global_weights: Weights | None = None,
    ) -> Weights:
        return coordinate_median(updates)
