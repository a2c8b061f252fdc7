"""The ``bpcv demo`` options the live-cell experiments (attacks/, convergence/, local_data/) run BPCV-FL
and the baselines with, every rule spelled out: the demo's own defaults are BPCV-FL's current rules, so
a baseline that left one out would run with accountable voters or the median quality rule."""

from __future__ import annotations


def bpcv_rules(
    policy: str, quality_rule: str, accountable: bool, dissent_rule: str = "rank-aware", aggregator: str = "bpcv"
) -> list[str]:
    """BPCV-FL with an elimination policy, a quality rule, and voters held to account (by ``dissent_rule``)
    or not; the nodes it keeps combined by ``aggregator`` (the paper's ``bpcv``, or a baseline's rule)."""
    voters = ["--accountable-voters", "--dissent-rule", dissent_rule] if accountable else ["--no-accountable-voters"]
    return ["--strategy", aggregator, "--elimination", policy, "--quality-rule", quality_rule, *voters]


def baseline_rules(strategy: str) -> list[str]:
    """A baseline aggregator: every update combined, nobody eliminated, every vote counted."""
    return ["--strategy", strategy, "--elimination", "none", "--quality-rule", "mean", "--no-accountable-voters"]


PAPER_RULES = bpcv_rules("lowest", "mean", accountable=False)  # the paper's: the lowest-ranked goes each round
DEMO_RULES = bpcv_rules("outlier", "median", accountable=True)  # bpcv demo's and bpcv request's defaults
