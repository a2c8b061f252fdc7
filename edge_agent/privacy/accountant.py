"""Privacy accounting with dp-accounting, per agent and per task.

Each local step samples every record independently with probability q (Poisson sampling) and runs
the mechanism with noise multiplier m. Over k steps:
- Laplace with delta = 0 (pure DP): one step is (1/m)-DP; Poisson sampling amplifies it to
  log(1 + q (e^(1/m) - 1)); k steps compose to k times that. (dp-accounting's PLD accountant
  cannot give delta = 0: its tail truncation makes epsilon infinite there.)
- Laplace with delta > 0: dp-accounting's PLD accountant on the Poisson-sampled Laplace event, or the
  pure bound above where it is smaller (or where PLD's discretisation fails: a tiny noise multiplier).
- Gaussian (delta > 0 required): dp-accounting's RDP accountant on the Poisson-sampled Gaussian event.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import dp_accounting
from dp_accounting import pld, rdp

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


@functools.lru_cache(maxsize=256)  # pure, and PLD accounting takes a while: agents of one pool share it
def epsilon_for(mechanism: str, noise_multiplier: float, sampling_rate: float, steps: int, delta: float) -> float:
    """The epsilon spent after ``steps`` Poisson-sampled steps (infinite for mechanism ``off``)."""
    if steps <= 0:
        return 0.0
    if mechanism == "off" or noise_multiplier <= 0:
        return math.inf
    if mechanism == "laplace":
        pure = steps * amplified_pure_epsilon(1.0 / noise_multiplier, sampling_rate)
        if delta == 0:
            return pure
        # PLD is tighter with delta > 0, but its discretisation fails for a very large privacy loss per
        # step (little noise); the pure bound holds for every delta, so the smaller of the two is valid
        try:
            accountant = pld.PLDAccountant(value_discretization_interval=PLD_VALUE_INTERVAL)
            accountant.compose(step_event(mechanism, noise_multiplier, sampling_rate), steps)
            return min(pure, float(accountant.get_epsilon(delta)))
        except (ValueError, OverflowError, FloatingPointError):
            return pure
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


@dataclass
class PrivacyAccountant:
    """One agent's running account for one task: what was spent, and whether the next round fits."""

    mechanism: str
    noise_multiplier: float
    sampling_rate: float
    delta: float
    budget: float
    steps: int = 0

    @property
    def epsilon_spent(self) -> float:
        return epsilon_for(self.mechanism, self.noise_multiplier, self.sampling_rate, self.steps, self.delta)

    def can_afford(self, more_steps: int) -> bool:
        """Whether ``more_steps`` steps keep the total within the budget."""
        after = epsilon_for(
            self.mechanism, self.noise_multiplier, self.sampling_rate, self.steps + more_steps, self.delta
        )
        return after <= self.budget * (1 + 1e-9)

    def spend(self, steps: int) -> float:
        self.steps += steps
        return self.epsilon_spent
