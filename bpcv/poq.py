"""Proof-of-quality rules, pure: quality of each node from its peers' signed scores, ranking, winner.

The coordinator uses these to rank and eliminate; every ledger replica uses the same functions to
re-check that a block's proposer really is the round's quality winner.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping

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
