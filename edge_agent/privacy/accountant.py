"""Privacy accounting with dp-accounting, per agent and per task.

Each local step samples every record independently with probability q (Poisson sampling) and runs
the mechanism with noise multiplier m. Over k steps:
- Laplace with delta = 0 (pure DP): one step is (1/m)-DP; Poisson sampling amplifies it to
  log(1 + q (e^(1/m) - 1)); k steps compose to k times that. (dp-accounting's PLD accountant
  cannot give delta = 0: its tail truncation makes epsilon infinite there.)
- Laplace with delta > 0: dp-accounting's privacy loss distribution (PLD) of the Poisson-sampled Laplace
  steps, or the pure bound above where it is smaller (or where PLD's discretisation fails: a tiny noise
  multiplier). An agent's account keeps the PLD of what it has spent and composes the next round's
  steps onto it, as dp-accounting's own accountant composes events, instead of composing every step
  again each round.
- Gaussian (delta > 0 required): dp-accounting's RDP accountant on the Poisson-sampled Gaussian event.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import dp_accounting
from dp_accounting import rdp
from dp_accounting.pld import privacy_loss_distribution

from bpcv.errors import ConfigError

MECHANISMS = ("laplace", "gaussian", "off")
# PLD's loss grid. Its pessimistic estimate is an upper bound at any spacing; 1e-3 instead of the
# library's 1e-4 adds at most 0.002 to epsilon in the cases of tests/test_privacy.py (0.8411 -> 0.8430
# after 1,000 steps at q = 0.01; 9.8870 -> 9.8871 after 1,410 steps of a demo agent) and takes a
# sixth of the time (0.25 -> 0.03 s), which an agent spends every round: PLD was 11% of an agent's CPU
# in a 10-node round (docs/SCALE.md).
PLD_VALUE_INTERVAL = 1e-3


def step_event(mechanism: str, noise_multiplier: float, sampling_rate: float) -> dp_accounting.DpEvent:
    inner = (
        dp_accounting.LaplaceDpEvent(noise_multiplier)
        if mechanism == "laplace"
        else dp_accounting.GaussianDpEvent(noise_multiplier)
    )
    return dp_accounting.PoissonSampledDpEvent(sampling_rate, inner)


def amplified_pure_epsilon(epsilon: float, sampling_rate: float) -> float:
    """log(1 + q (e^epsilon - 1)): a pure epsilon-DP step under Poisson sampling with rate q.
    For large epsilon it is computed as epsilon + log(q + (1 - q) e^-epsilon), which cannot overflow."""
    if epsilon <= 1.0:
        return math.log1p(sampling_rate * math.expm1(epsilon))
    return epsilon + math.log(sampling_rate + (1.0 - sampling_rate) * math.exp(-epsilon))


def laplace_steps_loss(noise_multiplier: float, sampling_rate: float, steps: int) -> Any:
    """The PLD of ``steps`` Poisson-sampled Laplace steps, built as dp-accounting's ``PLDAccountant`` builds
    it (pessimistic, on the ``PLD_VALUE_INTERVAL`` grid)."""
    return privacy_loss_distribution.from_laplace_mechanism(
        noise_multiplier, value_discretization_interval=PLD_VALUE_INTERVAL, sampling_prob=sampling_rate
    ).self_compose(steps)


# one round's steps: what every round of an account composes (agents of a pool with its settings share it)
round_loss = functools.lru_cache(maxsize=64)(laplace_steps_loss)


def laplace_epsilon(
    noise_multiplier: float, sampling_rate: float, steps: int, delta: float, loss: Callable[[], Any]
) -> float:
    """The epsilon of ``steps`` Laplace steps: the pure bound, or with delta > 0 the smaller of it and what
    the PLD ``loss()`` gives (the pure bound holds for every delta, and PLD's discretisation fails for a very
    large privacy loss per step, little noise)."""
    pure = steps * amplified_pure_epsilon(1.0 / noise_multiplier, sampling_rate)
    if delta == 0:
        return pure
    try:
        return min(pure, float(loss().get_epsilon_for_delta(delta)))
    except (ValueError, OverflowError, FloatingPointError):
        return pure


@functools.lru_cache(maxsize=256)  # pure, and PLD accounting takes a while: agents of one pool share it
def epsilon_for(mechanism: str, noise_multiplier: float, sampling_rate: float, steps: int, delta: float) -> float:
    """The epsilon spent after ``steps`` Poisson-sampled steps (infinite for mechanism ``off``)."""
    if steps <= 0:
        return 0.0
    if mechanism == "off" or noise_multiplier <= 0:
        return math.inf
    if mechanism == "laplace":
        return laplace_epsilon(
            noise_multiplier, sampling_rate, steps, delta,
            lambda: laplace_steps_loss(noise_multiplier, sampling_rate, steps),
        )  # fmt: skip
    if delta <= 0:
        raise ConfigError("the Gaussian mechanism needs delta > 0")
    accountant = rdp.RdpAccountant()
    accountant.compose(step_event(mechanism, noise_multiplier, sampling_rate), steps)
    return float(accountant.get_epsilon(delta))


@functools.lru_cache(maxsize=64)  # every agent of a pool with the same shard size asks the same question
def calibrate_noise_multiplier(
    mechanism: str, target_epsilon: float, sampling_rate: float, steps: int, delta: float, tolerance: float = 0.01
) -> float:
    """The smallest noise multiplier (within ``tolerance`` relative) whose epsilon after ``steps`` is at
    most ``target_epsilon``."""
    if target_epsilon <= 0:
        raise ConfigError("the privacy budget epsilon must be > 0")
    low, high = 1e-3, 1.0
    while epsilon_for(mechanism, high, sampling_rate, steps, delta) > target_epsilon:
        low, high = high, high * 2
        if high > 1e6:
            raise ConfigError(f"no noise multiplier reaches epsilon {target_epsilon} in {steps} steps")
    while high / low > 1 + tolerance:
        mid = math.sqrt(low * high)
        if epsilon_for(mechanism, mid, sampling_rate, steps, delta) > target_epsilon:
            low = mid
        else:
            high = mid
    return high


# The latest accounts computed in this process, (noise multiplier, sampling rate, delta, steps) -> (PLD,
# epsilon): a pool's agents with the same settings ask the same question each round. A few, each PLD up to
# about 1 MB after 80 rounds.
_recent: dict[tuple[float, float, float, int], tuple[Any, float]] = {}
_recent_lock = threading.Lock()
RECENT_KEPT = 8


def forget_accounts() -> None:
    """Forget every account this process computed (what a fresh process starts with; for benchmarks)."""
    epsilon_for.cache_clear()
    round_loss.cache_clear()
    with _recent_lock:
        _recent.clear()


@dataclass
class PrivacyAccountant:
    """One agent's running account for one task: what was spent, and whether the next round fits."""

    mechanism: str
    noise_multiplier: float
    sampling_rate: float
    delta: float
    budget: float
    steps: int = 0
    # the last account computed, (steps, their PLD, its epsilon): the same question again costs nothing, and
    # the next round's PLD is one composition away
    _kept: tuple[int, Any, float] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def epsilon_spent(self) -> float:
        return self.epsilon_after(self.steps)

    def can_afford(self, more_steps: int) -> bool:
        """Whether ``more_steps`` steps keep the total within the budget."""
        return self.epsilon_after(self.steps + more_steps) <= self.budget * (1 + 1e-9)

    def spend(self, steps: int) -> float:
        self.steps += steps
        return self.epsilon_spent

    def epsilon_after(self, steps: int) -> float:
        """The epsilon spent after ``steps`` steps in all. For Laplace with delta > 0 the PLD of ``steps`` is
        the kept PLD of fewer steps composed with the rest (dp-accounting's round PLD): the epsilon
        from scratch up to floating point (2e-8 after 80 rounds), in a quarter to a fifth of the time of
        composing every step again (``benchmarks/privacy_accounting.py``); ``epsilon_for`` otherwise."""
        if self.mechanism != "laplace" or self.delta == 0 or self.noise_multiplier <= 0 or steps <= 0:
            return epsilon_for(self.mechanism, self.noise_multiplier, self.sampling_rate, steps, self.delta)
        if self._kept is not None and self._kept[0] == steps:
            return self._kept[2]
        key = (self.noise_multiplier, self.sampling_rate, self.delta, steps)
        with _recent_lock:
            recent = _recent.get(key)
        if recent is not None:  # another agent of this process asked it
            self._kept = (steps, *recent)
            return recent[1]
        built: list[Any] = []  # the PLD of ``steps``, once laplace_epsilon asks for it

        def loss() -> Any:
            built.append(self._loss(steps))
            return built[0]

        epsilon = laplace_epsilon(self.noise_multiplier, self.sampling_rate, steps, self.delta, loss)
        if built:
            self._kept = (steps, built[0], epsilon)
            with _recent_lock:
                _recent[key] = (built[0], epsilon)
                while len(_recent) > RECENT_KEPT:
                    del _recent[next(iter(_recent))]  # the oldest
        return epsilon

    def _loss(self, steps: int) -> Any:
        if self._kept is not None and self._kept[0] < steps:
            return self._kept[1].compose(round_loss(self.noise_multiplier, self.sampling_rate, steps - self._kept[0]))
        # the first account, a resumed one, or fewer steps than kept (a round not afforded)
        return laplace_steps_loss(self.noise_multiplier, self.sampling_rate, steps)
