"""BPCV-FL's own rule: leave the round's lowest-quality update out, average the rest by data size.

The BPCV-FL paper (shared/paper/bpcv-fl.txt, "mutual-supervised federated learning"): the server
ranks the nodes by the quality their peers' validation gives them, eliminates the worst, and
averages the remaining models weighted by the size of each node's local data set
(w = Σ |D_k| / |D| · w_k). Leaving the worst out of the same round's aggregate (not only out of the
next round) keeps a bad update out of the global model at once (docs/DECISIONS.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from coordinator.aggregate import Weights, fedavg
from coordinator.strategies.base import Strategy


class Bpcv(Strategy):
    """Every ranked update but the lowest-quality one (when there are at least two), by sample count."""

    name = "bpcv"

    def select(self, ranking: Sequence[str], updates: Mapping[str, Weights]) -> list[str]:
        return list(ranking[:-1]) if len(ranking) >= 2 else list(ranking)

    def combine(
        self,
        updates: Sequence[Weights],
        sample_counts: Sequence[int],
        quality: Sequence[float],
        global_weights: Weights | None = None,
    ) -> Weights:
        return fedavg(updates, sample_counts)
