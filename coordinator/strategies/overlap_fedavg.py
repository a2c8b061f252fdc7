"""Overlap-FedAvg's server update: FedAvg's mean delta through a momentum buffer (beta = 0.9).

Zhou, Ye, Lv, "Communication-Efficient Federated Learning with Compensated Overlap-FedAvg", IEEE TPDS
2021 (doi:10.1109/TPDS.2021.3090331, arXiv:2012.06706). Its clients train while the last round's models are still in flight,
so their updates start from a stale global model; the server compensates for that staleness (a
first-order correction lambda * (w_t - w_stale) * c * c, c the weighted mean of the squared worker
deltas) and then steps with a momentum buffer. The authors' implementation
(github.com/Soptq/Overlap-FedAvg, ``ParameterServer.model_update``) updates, with the server's
pseudo-gradient g = -(sample-weighted mean delta): m <- beta * m + g, w <- w - m. Here, with
d_t = the sample-weighted mean of (update - global): m_t = beta * m_(t-1) + d_t, global + m_t.

Departures: every update in our protocol starts from the round's global model (no overlap, so no
staleness), which makes the compensation term exactly zero, and it is left out; what remains is the
server momentum of the authors' code (the paper calls it Nesterov's; the code's update is the
heavy-ball form above, which is what this follows). The buffer lives on the instance, not in the
checkpoint: a restarted coordinator starts it from zero.
"""

from __future__ import annotations

from collections.abc import Sequence

from coordinator.aggregate import Weights, delta, momentum, moved, weighted_mean
from coordinator.strategies.base import Strategy

BETA = 0.9  # the momentum constant (the authors' default ``--mom``)


class OverlapFedAvg(Strategy):
    """Every ranked update; the global model moves by the momentum buffer of the mean deltas."""

    name = "overlap-fedavg"

    def __init__(self, beta: float = BETA) -> None:
        if not 0 <= beta < 1:
            raise ValueError(f"the momentum constant must be in [0, 1), not {beta}")
        self.beta = beta
        self.buffer: Weights | None = None  # m

    def combine(
        self,
        updates: Sequence[Weights],
        sample_counts: Sequence[int],
        quality: Sequence[float],
        global_weights: Weights | None = None,
    ) -> Weights:
        if global_weights is None:
            raise ValueError("Overlap-FedAvg works on the updates' deltas from the round's global model: pass it")
        mean_delta = weighted_mean([delta(u, global_weights) for u in updates], sample_counts)
        self.buffer = momentum(self.buffer, mean_delta, self.beta)
        return moved(global_weights, self.buffer)
