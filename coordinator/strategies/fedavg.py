"""FedAvg: the average of every update, weighted by its sample count.

McMahan, Moore, Ramage, Hampson, Agüera y Arcas, "Communication-Efficient Learning of Deep Networks
from Decentralized Data", AISTATS 2017 (Algorithm 1, the server's weighted average w = Σ n_k/n · w_k).
"""

from __future__ import annotations

from collections.abc import Sequence

from coordinator.aggregate import Weights, fedavg
from coordinator.strategies.base import Strategy


class FedAvg(Strategy):
    """Combine every ranked update, weighted by sample count (no update is left out)."""

    name = "fedavg"

    def combine(
        self,
        updates: Sequence[Weights],
        sample_counts: Sequence[int],
        quality: Sequence[float],
        global_weights: Weights | None = None,
    ) -> Weights:
        return fedavg(updates, sample_counts)
