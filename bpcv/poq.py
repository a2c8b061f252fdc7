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
# Who is eliminated each round: "lowest" (the paper: the lowest-quality node, every round, down to the
# task's min_nodes), "outlier" (only a node whose quality is clearly below the rest: ``outliers``), "none".
ELIMINATION_POLICIES = ("lowest", "outlier", "none")
# A quality is an outlier when it is worse than the round's median by more than OUTLIER_MADS robust standard
# deviations (1.4826 MAD) and by more than OUTLIER_SHARE of the median: the share keeps an honest fleet
# whose qualities agree to a fraction of a point from losing members to that fraction.
OUTLIER_MADS = 3.0
OUTLIER_SHARE = 0.05
# A voter dissents when its scores sit further from the other voters' (the per-target median of theirs) than
# DISSENT_MADS robust standard deviations above the voters' median distance, and further than DISSENT_FLOOR
# (accuracy as a fraction; for MAE, a share of the others' median). The floor is wide because a voter's own
# validation set is small: at 50 nodes on MNIST ~96 records, so an honest voter's scores can sit 5-10 points
# from the others' on every model (measured: a floor of 0.05 flagged 2-9 honest voters a round). A score's
# distance is absolute for accuracy and relative for MAE; a voter's distance is the median over the peers it
# scored.
DISSENT_MADS = 3.0
DISSENT_FLOOR = {"accuracy": 0.2, "mae": 0.5}
MAD_TO_SD = 1.4826


def higher_is_better(metric: str) -> bool:
    try:
        return METRICS[metric]
    except KeyError:
        raise ValueError(f"unknown metric {metric!r}; known: {sorted(METRICS)}") from None


def _received(votes: Mapping[str, Mapping[str, float]], ignore: Collection[str] = ()) -> dict[str, dict[str, float]]:
    """target -> {voter: score} of every peer score (a node's score of itself is dropped), voters in
    ``ignore`` left out; voters in sorted order, so sums add up alike on every replica."""
    received: dict[str, dict[str, float]] = {}
    for voter in sorted(votes):
        if voter in ignore:
            continue
        for target, score in votes[voter].items():
            if target != voter:
                received.setdefault(target, {})[voter] = float(score)
    return received


def quality_scores(
    votes: Mapping[str, Mapping[str, float]], rule: str = "mean", ignore: Collection[str] = ()
) -> dict[str, float]:
    """Quality Q_k of every scored node from ``votes[voter][target] = score``, without the votes of the
    voters in ``ignore`` (the round's dissenters, when the task holds voters to account).

    A node's own score of itself is ignored. ``mean`` is the paper's sum divided by the number of
    scores received (equal ranking to the sum when every vote arrives, and fair when one is
    missing); ``median`` resists a minority of lying voters.
    """
    if rule not in QUALITY_RULES:
        raise ValueError(f"unknown quality rule {rule!r}; known: {QUALITY_RULES}")
    received = {t: list(by.values()) for t, by in _received(votes, ignore).items()}
    combine = statistics.fmean if rule == "mean" else statistics.median
    return {target: float(combine(scores)) for target, scores in received.items()}


def _robust_spread(values: Sequence[float]) -> tuple[float, float]:
    """The median and the robust standard deviation (1.4826 x the median absolute deviation)."""
    middle = statistics.median(values)
    return middle, MAD_TO_SD * statistics.median(abs(v - middle) for v in values)


def outliers(quality: Mapping[str, float], metric: str) -> list[str]:
    """The nodes whose quality is clearly worse than the round's (OUTLIER_MADS, OUTLIER_SHARE), worst first;
    none below three scored nodes (no majority to compare with)."""
    if len(quality) < 3:
        return []
    middle, spread = _robust_spread(list(quality.values()))
    margin = max(OUTLIER_MADS * spread, OUTLIER_SHARE * abs(middle))
    sign = 1.0 if higher_is_better(metric) else -1.0
    worse = [n for n, q in quality.items() if sign * (middle - q) > margin]
    return [n for n in reversed(rank_nodes(quality, metric)) if n in worse]


def dissenting_voters(votes: Mapping[str, Mapping[str, float]], metric: str) -> list[str]:
    """The voters whose scores disagree with the others' (DISSENT_MADS, DISSENT_FLOOR), sorted; none below
    three voters. A voter's distance is the median, over the peers it scored that someone else scored too,
    of its score's distance from the median of the other voters' scores of that peer."""
    relative = not higher_is_better(metric)
    received = _received(votes)
    distance: dict[str, float] = {}
    for voter in votes:
        gaps = []
        for by in received.values():
            if voter not in by or len(by) < 2:
                continue
            others = statistics.median(s for v, s in by.items() if v != voter)
            gap = abs(by[voter] - others)
            gaps.append(gap / max(abs(others), 1e-12) if relative else gap)
        if gaps:
            distance[voter] = statistics.median(gaps)
    if len(distance) < 3:
        return []
    middle, spread = _robust_spread(list(distance.values()))
    limit = max(middle + DISSENT_MADS * spread, DISSENT_FLOOR[metric])
    return sorted(v for v, d in distance.items() if d > limit)


def round_quality(
    votes: Mapping[str, Mapping[str, float]], metric: str, rule: str, accountable: bool
) -> tuple[dict[str, float], list[str]]:
    """The round's quality per scored node and its dissenting voters: with ``accountable`` voters the
    dissenters' votes do not count (and the dissenters are named); otherwise every vote counts."""
    dissenters = dissenting_voters(votes, metric) if accountable else []
    return quality_scores(votes, rule, ignore=dissenters), dissenters


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
