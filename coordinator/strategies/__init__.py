"""Aggregation strategies, one file per rule, each a ``Strategy`` (``base.py``); ``STRATEGIES`` names them."""

from __future__ import annotations

from bpcv.errors import ConfigError
from coordinator.strategies.base import Strategy
from coordinator.strategies.bpcv import Bpcv
from coordinator.strategies.fedavg import FedAvg
from coordinator.strategies.krum import MultiKrum
from coordinator.strategies.median import Median
from coordinator.strategies.trimmed_mean import TrimmedMean

STRATEGIES: dict[str, type[Strategy]] = {cls.name: cls for cls in (Bpcv, FedAvg, Median, TrimmedMean, MultiKrum)}


def strategy_named(name: str) -> Strategy:
    """The strategy called ``name``; ConfigError naming the known ones otherwise."""
    try:
        return STRATEGIES[name]()
    except KeyError:
        raise ConfigError(f"unknown aggregation strategy {name!r}; known: {sorted(STRATEGIES)}") from None
