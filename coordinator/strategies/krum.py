"""Multi-Krum: average the m updates that are closest to their neighbours.

Blanchard, El Mhamdi, Guerraoui, Stainer, "Machine Learning with Adversaries: Byzantine Tolerant
Gradient Descent", NeurIPS 2017. Each update's score is the sum of its squared distances to its
n - f - 2 nearest others; Krum picks the lowest score, Multi-Krum averages the m lowest. Here f is
the most Byzantine updates Krum tolerates, floor((n - 3) / 2), and m = n - f: the updates Krum would
still trust. Below 3 updates every one is kept. The choice is the strategy's ``select``, so the round
result records the updates Krum left out as excluded (and unpaid); sample counts weight the average
of the chosen ones, as in FedAvg.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from coordinator.aggregate import Weights, krum_scores
from coordinator.strategies.fedavg import FedAvg


def tolerated(n: int) -> int:
    """The largest f with n >= 2 f + 3 (Krum's condition), 0 below 3 updates."""
    return max(0, (n - 3) // 2)


class MultiKrum(FedAvg):
    """The n - f most central ranked updates by Krum's score (``select``), averaged by sample count
    (FedAvg's ``combine``)."""

    name = "multi-krum"

    def select(self, ranking: Sequence[str], updates: Mapping[str, Weights]) -> list[str]:
        n = len(ranking)
        if n < 3:
            return list(ranking)
        f = tolerated(n)
        scores = dict(zip(ranking, krum_scores([updates[node] for node in ranking], f), strict=True))
        chosen = set(sorted(ranking, key=lambda node: (scores[node], node))[: n - f])
        return [node for node in ranking if node in chosen]
