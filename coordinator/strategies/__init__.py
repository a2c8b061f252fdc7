"""Aggregation strategies, one file per rule, each a ``Strategy`` (``base.py``); ``STRATEGIES`` names them."""

from __future__ import annotations

from collections.abc import Callable

from bpcv.errors import ConfigError
from coordinator.aggregate import Weights
from coordinator.strategies.base import Strategy
from coordinator.strategies.bpcv import Bpcv
from coordinator.strategies.fedavg import FedAvg
from coordinator.strategies.fedpage import FedPAGE
from coordinator.strategies.fltrust import FLTrust
from coordinator.strategies.krum import MultiKrum
from coordinator.strategies.median import Median
from coordinator.strategies.overlap_fedavg import OverlapFedAvg
from coordinator.strategies.trimmed_mean import TrimmedMean

STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls for cls in (Bpcv, FedAvg, Median, TrimmedMean, MultiKrum, FedPAGE, OverlapFedAvg, FLTrust)
}


def strategy_named(name: str, root_update: Callable[[Weights], Weights] | None = None) -> Strategy:
    """A new instance of the strategy called ``name`` (one serves one task run); ConfigError naming the
    known ones otherwise. ``root_update`` is FLTrust's server training (given the global weights, the
    weights trained on the server's root data set, ``coordinator.root_update.RootTrainer``); FLTrust
    cannot run without it, the other strategies ignore it."""
    if name not in STRATEGIES:
        raise ConfigError(f"unknown aggregation strategy {name!r}; known: {sorted(STRATEGIES)}")
    if name == FLTrust.name:
        if root_update is None:
            raise ConfigError(
                "aggregation strategy 'fltrust' needs a root data set on the coordinator (FLTrust trains the "
                "global model on it every round) and none was given: hold a test set (a packaged dataset or "
                "the coordinator's data_path) or choose another strategy"
            )
        return FLTrust(root_update)
    return STRATEGIES[name]()
