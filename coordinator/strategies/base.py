"""The aggregation strategy interface: how a round's accepted updates become the next global model.

Mutual supervision decides *who is in*: peers' votes rank the round's valid updates, and the
elimination rule removes a node from the task. A strategy decides *how the ranked updates are
combined*: which of them it uses (``select``) and the arithmetic (``combine``, plain numpy in
``coordinator.aggregate``). A strategy does no I/O; one instance serves one task run, so a rule with
server state between rounds (a momentum, a control variate) keeps it on the instance.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import ClassVar

from coordinator.aggregate import Weights


class Strategy(ABC):
    """One aggregation rule. Subclasses set ``name`` (how a task or config names it)."""

    name: ClassVar[str]

    def select(self, ranking: Sequence[str], updates: Mapping[str, Weights]) -> list[str]:
        """The nodes whose updates are combined this round, from the quality ranking (best first) and,
        for a rule that looks at them, the updates themselves (node -> weights). The rest are recorded as
        the round result's ``excluded`` and are not paid. Default: all of them."""
        return list(ranking)

    @abstractmethod
    def combine(
        self,
        updates: Sequence[Weights],
        sample_counts: Sequence[int],
        quality: Sequence[float],
        global_weights: Weights | None = None,
    ) -> Weights:
        """The next global model from the selected updates; the three sequences are in the same order
        (one entry per selected node, at least one). ``global_weights`` is the round's global model (the
        point every update started from), for a rule that works on the updates' deltas from it. Raises
        ValueError on inconsistent input."""
