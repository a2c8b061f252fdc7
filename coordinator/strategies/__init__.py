"""Aggregation strategies, one file per rule, each a ``Strategy`` (``base.py``); ``STRATEGIES`` names them."""

from __future__ import annotations

from bpcv.errors import ConfigError
from coordinator.strategies.base import Strategy
from coordinator.strategies.bpcv import Bpcv
from coordinator.strategies.fedavg import FedAvg

STRATEGIES: dict[str, type[Strategy]] = {cls.name: cls for cls in (Bpcv, FedAvg)}
DEFAULT_STRATEGY = Bpcv.name


def strategy_named(name: str) -> Strategy:
    """The strategy called ``name``; ConfigError naming the known ones otherwise."""
    try:
        return STRATEGIES[name]()
    except KeyError:
        raise ConfigError(f"unknown aggregation strategy {name!r}; known: {sorted(STRATEGIES)}") from None
