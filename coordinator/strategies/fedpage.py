"""FedPAGE's server side: the PAGE direction over the nodes' deltas, recomputed in full every 5th round.

Zhao, Li, Richtárik, "FedPAGE: A Fast Local Stochastic Gradient Method for Communication-Efficient
Federated Learning", arXiv:2108.04755 (2021), which runs PAGE (Li, Bao, Zhang, Richtárik, ICML 2021)
across clients. PAGE keeps a direction v: with probability p it is recomputed from a large sample;
otherwise it is the previous v plus the change of the gradients of a small sample between the old
point and the new one. Here a full round sets v to the sample-weighted mean delta (update - global)
of every selected node; any other round adds to v the sample-weighted mean of ``delta_i(now) -
delta_i(previous round)`` over the nodes selected in both rounds (the same source at two points, as
in PAGE); the new global model is global + v. p = 0.2: round 1 and every 5th round after are full.

Departures from the paper: (1) clients train one model per round from the round's global model and
cannot evaluate the old point, so a node's change is between its deltas of two rounds (other local
batches as well as another start); (2) full rounds are every 1/p rounds, not a coin flip; (3) the
clients run plain local SGD, not FedPAGE's corrected local steps, and the server step size is 1.
While the same nodes stay in with the same sample counts the changes telescope and v is the round's
mean delta, i.e. FedAvg; the rule differs when a node joins (it enters v at the next full round) or
leaves (its part stays in v until then). v, the last deltas and the round count live on the instance,
not in the checkpoint: after a coordinator restart the next round is a full one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from coordinator.aggregate import Weights, delta, moved, page_direction, weighted_mean
from coordinator.strategies.base import Strategy

PERIOD = 5  # 1 / p with p = 0.2


class FedPAGE(Strategy):
    """Every ranked update; the global model moves along the PAGE direction (full every ``period`` rounds).
    ``combine`` takes the updates of the nodes the same instance's last ``select`` chose, in that order
    (the correction pairs each node's deltas across rounds)."""

    name = "fedpage"

    def __init__(self, period: int = PERIOD) -> None:
        if period < 1:
            raise ValueError(f"the full-round period must be at least 1, not {period}")
        self.period = period
        self.rounds = 0  # rounds combined so far
        self.direction: Weights | None = None  # v
        self.last: dict[str, Weights] = {}  # each node's delta in the previous combined round
        self._chosen: list[str] | None = None  # what select returned, for the next combine

    def is_full(self, round_no: int) -> bool:
        """Whether the ``round_no``-th combined round (from 1) recomputes v from every delta."""
        return (round_no - 1) % self.period == 0

    def select(self, ranking: Sequence[str], updates: Mapping[str, Weights]) -> list[str]:
        self._chosen = list(ranking)
        return list(ranking)

    def combine(
        self,
        updates: Sequence[Weights],
        sample_counts: Sequence[int],
        quality: Sequence[float],
        global_weights: Weights | None = None,
    ) -> Weights:
        if global_weights is None:
            raise ValueError("FedPAGE works on the updates' deltas from the round's global model: pass it")
        nodes, self._chosen = self._chosen, None
        if nodes is None or len(nodes) != len(updates):
            raise ValueError("FedPAGE combines the updates of the nodes its select chose, in that order")
        deltas = {node: delta(u, global_weights) for node, u in zip(nodes, updates, strict=True)}
        counts = dict(zip(nodes, sample_counts, strict=True))
        self.rounds += 1
        if self.direction is None or self.is_full(self.rounds):
            self.direction = weighted_mean([deltas[n] for n in nodes], sample_counts)
        else:
            both = [n for n in nodes if n in self.last]
            self.direction = page_direction(
                self.direction, [deltas[n] for n in both], [self.last[n] for n in both], [counts[n] for n in both]
            )
        self.last = deltas
        return moved(global_weights, self.direction)
