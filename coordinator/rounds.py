"""What a round decides, pure: who is dropped, excluded, eliminated, admitted, and who is paid what.

Rules (DESIGN.md, One round, step 5):
- a roster node that sent no update is *dropped* (it left; not a misbehaviour);
- a node whose update failed checks (shape, NaN/Inf, digest) is eliminated for an invalid update;
- with accountable voters, the voters whose scores disagree with the others' (``bpcv.poq``) are the
  round's *dissenters*: their votes do not count and they are not paid;
- at most one node is eliminated for what the votes say, unless that would leave fewer than
  ``min_nodes`` active with no standby node to admit: a voter that dissented in this round and the
  one before (``dissenting-voter``) first; otherwise, by the task's policy, the lowest-quality node
  (``lowest``, the paper's), or the worst node whose quality is an outlier in this round and the
  OUTLIER_ROUNDS - 1 before (``outlier``: an honest node's unlucky rounds cost it those rounds'
  aggregates and pay, not its membership), or none;
- under the outlier policy every outlier is left out of the aggregate at once; of the rest, the
  aggregation strategy picks which it combines (the paper's ``bpcv`` leaves the lowest-quality one
  out); the others are *excluded* from this round's aggregate;
- the fastest-responding standby nodes are admitted until the roster is back to ``nodes``;
- the round's reward is split among the aggregated nodes that did not dissent, in proportion to their
  quality (accuracy, or 1/MAE for regression).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bpcv.poq import higher_is_better, outliers, rank_nodes, round_quality
from bpcv.task import TaskSpec
from coordinator.aggregate import Weights
from coordinator.strategies.base import Strategy

# Rounds running a node must be an outlier to be eliminated as one. Leaving an outlier out of the aggregate
# protects the model at once; elimination is for good, so it waits for more evidence. An honest node with
# skewed data (Dirichlet 0.5, few classes) can be an outlier two rounds running: at 2, 4 and 3 honest nodes of
# 50 were eliminated in 20 rounds (two seeds); at 3, 1 and 0 (docs/RESULTS.md). A poisoner is an outlier every
# round, so it is eliminated one round later.
OUTLIER_ROUNDS = 3


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
    dissenters: list[str] = field(default_factory=list)
    outliers: list[str] = field(default_factory=list)  # under the outlier policy, worst first
    outlier_streaks: dict[str, int] = field(default_factory=dict)  # node -> rounds running it was an outlier

    def result_fields(self) -> dict[str, Any]:
        """The fields of the round's ``Result`` that record this decision (quality rounded to 6 places)."""
        fields = {name: getattr(self, name) for name in RESULT_FIELDS}
        return fields | {"quality": {n: round(q, 6) for n, q in self.quality.items()}}


RESULT_FIELDS = (
    "ranking", "proposer", "aggregated", "excluded", "eliminated", "eliminated_reason", "invalid", "dropped",
    "admitted", "next_roster", "dissenters",
)  # fmt: skip


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
    dissented_before: Collection[str] = (),
    outlier_streaks: Mapping[str, int] | None = None,
) -> RoundOutcome:
    """Decide a round from what arrived: ``votes[voter][target]`` are the scores of the valid updates;
    ``standby`` is ordered fastest responder first; ``updates`` (node -> weights) for a strategy whose
    selection looks at the updates themselves; ``dissented_before``: the previous round's dissenters;
    ``outlier_streaks``: how many rounds running each node has been an outlier, up to the previous round."""
    metric = task.metric
    dropped = [n for n in roster if n not in valid_updates and n not in invalid_updates]
    quality, dissenters = round_quality(votes, metric, task.quality_rule, task.voter_dissent)
    quality = {n: q for n, q in quality.items() if n in valid_updates}
    ranking = rank_nodes(quality, metric)
    worse = outliers(quality, metric) if task.elimination == "outlier" else []
    candidates = ranking if task.supervised else sorted(valid_updates)  # without votes: every valid update
    aggregated = strategy.select([n for n in candidates if n not in worse], updates or {})
    excluded = [n for n in ranking if n not in aggregated]

    remaining = [n for n in roster if n in valid_updates]
    queue = list(standby)
    before = outlier_streaks or {}
    streaks = next_outlier_streaks(worse, before) if len(quality) >= 3 else dict(before)
    persistent = [n for n in worse if streaks[n] >= OUTLIER_ROUNDS]
    eliminated, reason = _elimination(task.elimination, ranking, persistent, dissenters, dissented_before, remaining)
    if eliminated is not None and len(remaining) - 1 + len(queue) >= task.min_nodes:
        remaining.remove(eliminated)
    else:
        eliminated, reason = None, None
    admitted = []
    while len(remaining) < task.nodes and queue:
        node = queue.pop(0)
        admitted.append(node)
        remaining.append(node)
    paid = [n for n in aggregated if n not in dissenters] if task.supervised else []  # no chain, no rewards
    return RoundOutcome(
        quality=quality,
        ranking=ranking,
        proposer=ranking[0] if ranking else None,
        aggregated=aggregated,
        excluded=excluded,
        eliminated=eliminated,
        eliminated_reason=reason,
        invalid=dict(invalid_updates),
        dropped=dropped,
        admitted=admitted,
        next_roster=sorted(remaining),
        rewards=split_reward(quality, paid, metric, task.reward_per_round),
        dissenters=dissenters,
        outliers=worse,
        outlier_streaks=streaks,  # too few ranked to judge: the streaks stand
    )


def stop_reason(
    task: TaskSpec, round_no: int, value: float | None, next_roster: Sequence[str], elapsed_s: float
) -> str | None:
    """Why the task stops after round ``round_no`` (its metric ``value``, ``elapsed_s`` into the task), or
    None to go on."""
    if (
        task.target is not None
        and value is not None
        and (value >= task.target if higher_is_better(task.metric) else value <= task.target)
    ):
        return "target"
    if elapsed_s >= task.time_limit_s:
        return "time limit"
    if round_no == task.rounds:
        return "round limit"
    return "too few nodes" if len(next_roster) < 2 else None


def next_outlier_streaks(worse: Collection[str], before: Mapping[str, int]) -> dict[str, int]:
    """Each of this round's outliers' streak: one more than it had; a node that is not one has none."""
    return {n: before.get(n, 0) + 1 for n in worse}


def _elimination(
    policy: str,
    ranking: Sequence[str],
    worse: Sequence[str],
    dissenters: Collection[str],
    dissented_before: Collection[str],
    remaining: Sequence[str],
) -> tuple[str | None, str | None]:
    """The node the votes eliminate this round and why, before the ``min_nodes`` check: a persistent
    dissenter (the lowest-ranked one), else the policy's choice (``worse``: the nodes that are outliers
    OUTLIER_ROUNDS rounds running, worst first)."""
    persistent = [n for n in remaining if n in dissenters and n in dissented_before]
    if persistent:
        return max(persistent, key=lambda n: (ranking.index(n) if n in ranking else len(ranking), n)), (
            "dissenting-voter"
        )
    if policy == "lowest" and len(ranking) >= 2:
        return ranking[-1], "lowest-quality"
    if policy == "outlier" and worse:
        return worse[0], "outlier"
    return None, None
