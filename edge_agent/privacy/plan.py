"""An agent's privacy plan for one task: mechanism, clip, noise and the running account."""

from __future__ import annotations

import math
from dataclasses import dataclass

from bpcv.config import AgentConfig
from bpcv.errors import ConfigError
from bpcv.task import TaskSpec
from edge_agent.privacy.accountant import MECHANISMS, PrivacyAccountant, calibrate_noise_multiplier
from edge_agent.privacy.settings import PrivacySettings, steps_per_round

# L1 for Laplace, L2 for Gaussian: chosen for a linear head on wavelet features (docs/PRIVACY.md); a
# model whose per-record gradient norms differ wants its own (the agent's `clip`).
DEFAULT_CLIP = {"laplace": 20.0, "gaussian": 3.0}
# Laplace needs no delta, but its PLD accounting with delta = 1e-5 is far tighter than the pure bound
# (the same delta as Gaussian); delta = 0 asks for pure epsilon-DP (docs/PRIVACY.md: what that costs).
DEFAULT_DELTA = {"laplace": 1e-5, "gaussian": 1e-5}


def round_up(value: float, digits: int = 3) -> float:
    """``value`` rounded *up* to ``digits`` significant digits: more noise never breaks the budget, and
    agents with near-equal shards end up with the same setting (so a pool shares one compiled model)."""
    scale = 10 ** (digits - 1 - math.floor(math.log10(value)))
    return math.ceil(value * scale) / scale


@dataclass
class PrivacyPlan:
    settings: PrivacySettings
    accountant: PrivacyAccountant
    steps_per_round: int

    def claims(self) -> dict[str, float | str]:
        """What the agent states about its privacy when it joins (signed, so on record)."""
        return {
            "mechanism": self.settings.mechanism,
            "epsilon_budget": self.accountant.budget,
            "delta": self.accountant.delta,
            "noise_multiplier": round(self.settings.noise_multiplier, 6),
            "clip": self.settings.clip,
        }


def plan_privacy(config: AgentConfig, task: TaskSpec, num_samples: int) -> PrivacyPlan | None:
    """The plan for ``config``'s DP settings on ``task``, or None when DP is off."""
    if config.dp not in MECHANISMS:
        raise ConfigError(f"dp must be one of {MECHANISMS}, not {config.dp!r}")
    if config.dp == "off":
        return None
    delta = DEFAULT_DELTA[config.dp] if config.delta < 0 else config.delta
    clip = config.clip or DEFAULT_CLIP[config.dp]
    rate = min(1.0, task.batch_size / num_samples)
    per_round = steps_per_round(num_samples, task)
    noise = config.noise_multiplier or round_up(
        calibrate_noise_multiplier(config.dp, config.epsilon, rate, task.rounds * per_round, delta)
    )
    return PrivacyPlan(
        PrivacySettings(config.dp, clip, noise),
        PrivacyAccountant(config.dp, noise, rate, delta, config.epsilon),
        per_round,
    )
