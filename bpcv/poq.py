"""Proof-of-quality rules, pure: quality of each node from its peers' signed scores, ranking, winner,
and who may propose the round's block.

The coordinator uses these to rank and eliminate; every ledger replica uses the same functions to
re-check that a block's proposer really is the round's quality winner (or a stand-in at its place).
"""

from __future__ import annotations

import statistics
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
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
# (accuracy as a fraction; for MAE, a share of the others' median), and unusual data does not explain it. The
# floor is wide because a voter's own validation set is small: at 50 nodes on MNIST ~96 records, so an honest
# voter's scores can sit 5-10 points from the others' on every model (measured: a floor of 0.05 flagged 2-9
# honest voters a round). A score's distance is absolute for accuracy and relative for MAE; a voter's distance
# is the median over the peers it scored.
# Unusual data explains a distance up to DISSENT_FAR times that limit when the voter still orders the peers
# like the others do (Spearman rank correlation of its scores with the others' medians above 0): with skewed
# (Dirichlet 0.5) validation data honest voters sat 0.21-0.34 from the rest in early rounds, past the floor,
# at rank correlations 0.15-0.59; voters that reverse their scores sat at -0.29 to -0.91 (docs/RESULTS.md).
DISSENT_MADS = 3.0
DISSENT_FLOOR = {"accuracy": 0.2, "mae": 0.5}
DISSENT_FAR = 2.0
# Which test finds dissenters: "distance" (the median distance alone: tasks that name no rule, as before this
# one existed) or "rank-aware" (a voter within DISSENT_FAR of the limit whose scores order the peers like the
# others' is not a dissenter). A task's rule is on the chain, so every replica re-derives its rounds alike.
DISSENT_RULES = ("distance", "rank-aware")
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


@dataclass(frozen=True)
class VoterStanding:
    """How far one voter's scores sit from the other voters': ``distance`` (the median gap, as DISSENT_*
    describes), and per peer it scored that someone else scored too, its score and the others' median."""

    distance: float
    scores: list[float]
    others: list[float]


def voter_standings(votes: Mapping[str, Mapping[str, float]], metric: str) -> dict[str, VoterStanding]:
    """Every voter that scored a peer someone else scored too: its distance from the others' median
    scores (absolute for accuracy, relative for MAE) and the scores it was measured on."""
    relative = not higher_is_better(metric)
    received = _received(votes)
    standings: dict[str, VoterStanding] = {}
    for voter in votes:
        mine, theirs, gaps = [], [], []
        for by in received.values():
            if voter not in by or len(by) < 2:
                continue
            others = statistics.median(s for v, s in by.items() if v != voter)
            gap = abs(by[voter] - others)
            gaps.append(gap / max(abs(others), 1e-12) if relative else gap)
            mine.append(by[voter])
            theirs.append(others)
        if gaps:
            standings[voter] = VoterStanding(statistics.median(gaps), mine, theirs)
    return standings


def dissent_limit(standings: Mapping[str, VoterStanding], metric: str) -> float:
    """The distance past which a voter may be a dissenter: DISSENT_MADS robust SDs above the voters'
    median distance, and at least DISSENT_FLOOR."""
    middle, spread = _robust_spread([s.distance for s in standings.values()])
    return max(middle + DISSENT_MADS * spread, DISSENT_FLOOR[metric])


def dissenting_voters(votes: Mapping[str, Mapping[str, float]], metric: str, rule: str = "rank-aware") -> list[str]:
    """The voters whose scores disagree with the others', sorted; none below three voters: those whose
    distance (``voter_standings``) is past the limit (``dissent_limit``) and, under ``rule`` "rank-aware",
    either past DISSENT_FAR times the limit or whose scores do not order those peers like the others'
    medians do (``ranks_agree``); under "distance", past the limit is enough."""
    if rule not in DISSENT_RULES:
        raise ValueError(f"unknown dissent rule {rule!r}; known: {DISSENT_RULES}")
    standings = voter_standings(votes, metric)
    if len(standings) < 3:
        return []
    limit = dissent_limit(standings, metric)
    far = DISSENT_FAR * limit if rule == "rank-aware" else limit
    return sorted(
        v
        for v, s in standings.items()
        if s.distance > limit and (s.distance > far or not ranks_agree(s.scores, s.others))
    )


def _doubled_ranks(values: Sequence[float]) -> list[int]:
    """Twice each value's rank from 0, ties given the mean of the ranks they span: integers, so sums are exact."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for i in order[start : end + 1]:
            ranks[i] = start + end
        start = end + 1
    return ranks


def ranks_agree(a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether ``a`` and ``b`` order their entries alike: Spearman's rank correlation above 0, decided
    exactly (the sign of the covariance of integer ranks), so every replica agrees; False below three."""
    if len(a) != len(b):
        raise ValueError(f"ranks_agree needs sequences of one length, got {len(a)} and {len(b)}")
    if len(a) < 3:
        return False
    ra, rb = _doubled_ranks(a), _doubled_ranks(b)
    return len(a) * sum(x * y for x, y in zip(ra, rb, strict=True)) - sum(ra) * sum(rb) > 0


def round_quality(
    votes: Mapping[str, Mapping[str, float]], metric: str, rule: str, dissent_rule: str | None
) -> tuple[dict[str, float], list[str]]:
    """The round's quality per scored node and its dissenting voters: when the task holds voters to account
    (``dissent_rule``, one of DISSENT_RULES) the dissenters' votes do not count (and the dissenters are
    named); with None every vote counts."""
    dissenters = dissenting_voters(votes, metric, dissent_rule) if dissent_rule is not None else []
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
