"""FLTrust: the server's own update on a small clean root data set decides how much each update counts.

Cao, Fang, Liu, Gong, "FLTrust: Byzantine-robust Federated Learning via Trust Bootstrapping", NDSS
2021. Each round the server trains the global model on its root data set (100 clean records) and
takes the delta g0. A node's delta g_i gets the trust score TS_i = ReLU(cos(g_i, g0)) (over all
parameters at once) and is rescaled to g0's norm, ||g0|| / ||g_i|| * g_i; the new global model is
global + sum TS_i * rescaled g_i / sum TS_i, or the global model unchanged when every score is 0.

``select`` keeps every ranked update (the default), so a node whose update points away from g0 is
still recorded as aggregated and paid, but it is combined with weight 0. Sample counts and quality
are not used (the rescaling removes magnitude). The server step size is 1: the deltas already carry
the local learning rate (the paper's global learning rate alpha). The server's training is
``root_update``: given the global weights, the root-trained weights (``coordinator.root_update``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from coordinator.aggregate import Weights, delta, fltrust, fltrust_scores, moved
from coordinator.strategies.base import Strategy


class FLTrust(Strategy):
    """Every ranked update, weighted by its trust score against the server's root update."""

    name = "fltrust"

    def __init__(self, root_update: Callable[[Weights], Weights]) -> None:
        self.root_update = root_update
        self.trust: list[float] = []  # the last combined round's scores, in the updates' order

    def combine(
        self,
        updates: Sequence[Weights],
        sample_counts: Sequence[int],
        quality: Sequence[float],
        global_weights: Weights | None = None,
    ) -> Weights:
        if global_weights is None:
            raise ValueError("FLTrust works on the updates' deltas from the round's global model: pass it")
        root_delta = delta(self.root_update(global_weights), global_weights)
        deltas = [delta(u, global_weights) for u in updates]
        self.trust = fltrust_scores(deltas, root_delta)
        return moved(global_weights, fltrust(deltas, root_delta))
