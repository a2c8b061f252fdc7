"""What a round decides, pure: who is dropped, excluded, eliminated, admitted, and who is paid what.

Rules (DESIGN.md, One round, step 5):
- a roster node that sent no update is *dropped* (it left; not a misbehaviour);
- a node whose update failed checks (shape, NaN/Inf, digest) is eliminated for an invalid update;
- the lowest-quality node is eliminated, unless that would leave fewer than ``min_nodes`` active
  with no standby node to admit;
- the aggregation strategy picks which ranked updates it combines (the paper's ``bpcv`` leaves the
  lowest-quality one out); the others are *excluded* from this round's aggregate;
- the fastest-responding standby nodes are admitted until the roster is back to ``nodes``;
- the round's reward is split among the aggregated nodes in proportion to their quality
  (accuracy, or 1/MAE for regression).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from bpcv.poq import higher_is_better, quality_scores, rank_nodes
from bpcv.task import TaskSpec
from coordinator.aggregate import Weights
from coordinator.strategies.base import Strategy


@dataclass(frozen=True)
class RoundOutcome:
    """What a round decided (the coordinator publishes it as the round's ``Result``)."""

    quality: dict[str, float]
    ranking: list[str]
    proposer: str | None
    aggregated: list[str]
    excluded: list[str]
    eliminated: str | None
    eliminated_reason: str | None
    invalid: dict[str, str]
    dropped: list[str]
    admitted: list[str]
    next_roster: list[str]
    rewards: dict[str, float] = field(default_factory=dict)


def split_reward(quality: Mapping[str, float], nodes: Sequence[str], metric: str, reward: float) -> dict[str, float]:
    """Shares of ``reward`` for ``nodes`` in proportion to their quality, each rounded *down* to 6 decimals,
    so the shares never sum to more than ``reward`` (rounding each to nearest did: 6 × 0.166667 for 1)."""
    if not nodes or reward <= 0:
        return {n: 0.0 for n in nodes}
    if higher_is_better(metric):
        weights = {n: max(quality[n], 0.0) for n in nodes}
    else:
        weights = {n: 1.0 / max(quality[n], 1e-9) for n in nodes}
    total = sum(weights.values())
    if total <= 0:
        return {n: reward / len(nodes) for n in nodes}
    # 1e-6 of a micro-unit absorbs float noise (100 x 0.25 may come out as 24.999999999999996)
    return {n: math.floor(reward * w / total * 1e6 + 1e-6) / 1e6 for n, w in weights.items()}


def decide_round(
    *,
    task: TaskSpec,
    strategy: Strategy,
    roster: Sequence[str],
    valid_updates: Sequence[str],
    invalid_updates: Mapping[str, str],
    votes: Mapping[str, Mapping[str, float]],
    standby: Sequence[str],
    updates: Mapping[str, Weights] | None = None,
) -> RoundOutcome:
    """Decide a round from what arrived: ``votes[voter][target]`` are the scores of the valid updates;
    ``standby`` is ordered fastest responder first; ``updates`` (node -> weights) for a strategy whose
    selection looks at the updates themselves."""
    metric = task.metric
    dropped = [n for n in roster if n not in valid_updates and n not in invalid_updates]
    quality = quality_scores(votes, task.quality_rule)
    quality = {n: q for n, q in quality.items() if n in valid_updates}
    ranking = rank_nodes(quality, metric)
    aggregated = strategy.select(ranking, updates or {})
    excluded = [n for n in ranking if n not in aggregated]

    remaining = [n for n in roster if n in valid_updates]
    queue = list(standby)
    eliminated = None
    if len(ranking) >= 2 and len(remaining) - 1 + len(queue) >= task.min_nodes:
        eliminated = ranking[-1]
        remaining.remove(eliminated)
    admitted = []
    while len(remaining) < task.nodes and queue:
        node = queue.pop(0)
        admitted.append(node)
        remaining.append(node)
    return RoundOutcome(
        quality=quality,
        ranking=ranking,
        proposer=ranking[0] if ranking else None,
        aggregated=aggregated,
        excluded=excluded,
        eliminated=eliminated,
        eliminated_reason="lowest-quality" if eliminated else None,
        invalid=dict(invalid_updates),
        dropped=dropped,
        admitted=admitted,
        next_roster=sorted(remaining),
        rewards=split_reward(quality, aggregated, metric, task.reward_per_round),
    )
