"""Proof-of-quality rules, pure: quality of each node from its peers' signed scores, ranking, winner,
and who may propose the round's block.

The coordinator uses these to rank and eliminate; every ledger replica uses the same functions to
re-check that a block's proposer really is the round's quality winner (or a stand-in at its place).
"""

from __future__ import annotations

import statistics
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING

from bpcv.errors import Rejected

if TYPE_CHECKING:
    from bpcv.identity import Registry
    from bpcv.messages import Vote

METRICS = {"accuracy": True, "mae": False}  # metric -> higher is better
QUALITY_RULES = ("mean", "median")


def higher_is_better(metric: str) -> bool:
    try:
        return METRICS[metric]
    except KeyError:
        raise ValueError(f"unknown metric {metric!r}; known: {sorted(METRICS)}") from None


def quality_scores(votes: Mapping[str, Mapping[str, float]], rule: str = "mean") -> dict[str, float]:
    """Quality Q_k of every scored node from ``votes[voter][target] = score``.

    A node's own score of itself is ignored. ``mean`` is the paper's sum divided by the number of
    scores received (equal ranking to the sum when every vote arrives, and fair when one is
    missing); ``median`` resists a minority of lying voters.
    """
    if rule not in QUALITY_RULES:
        raise ValueError(f"unknown quality rule {rule!r}; known: {QUALITY_RULES}")
    received: dict[str, list[float]] = {}
    for voter in sorted(votes):
        for target, score in votes[voter].items():
            if target != voter:
                received.setdefault(target, []).append(float(score))
    combine = statistics.fmean if rule == "mean" else statistics.median
    return {target: float(combine(scores)) for target, scores in received.items()}


def rank_nodes(quality: Mapping[str, float], metric: str) -> list[str]:
    """Node ids best first; ties broken by node id so every replica gets the same order."""
    sign = -1.0 if higher_is_better(metric) else 1.0
    return sorted(quality, key=lambda node: (sign * quality[node], node))


def poq_winner(votes: Mapping[str, Mapping[str, float]], metric: str, rule: str = "mean") -> str | None:
    """The node with the best quality: the one entitled to propose the round's block."""
    ranking = rank_nodes(quality_scores(votes, rule), metric)
    return ranking[0] if ranking else None


def eligible_proposers(ranking: Sequence[str], excluded: Collection[str]) -> list[str]:
    """The PoQ ranking without nodes excluded for equivocation: place k proposes after k timeouts."""
    return [n for n in ranking if n not in excluded]


def vote_scores(vote: Vote, registry: Registry) -> dict[str, float]:
    """The scores of a received vote, checked: registered agents only (the body checks the numbers)."""
    scores = vote.scores
    for target in scores:
        member = registry.get(target)
        if member is None or member.role != "agent":
            raise Rejected("malformed", f"vote scores unknown node {target!r}")
    return scores
