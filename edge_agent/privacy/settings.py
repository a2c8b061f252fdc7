"""What the trainer is told about privacy: the GD-DP setting, and how many steps one round takes.

The privacy package owns these; the trainer imports them (never the other way round), so the plan
(``plan``) decides the setting and the trainer only applies it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bpcv.task import TaskSpec


@dataclass(frozen=True)
class PrivacySettings:
    """The mechanism, clip norm (L1 for Laplace, L2 for Gaussian) and noise multiplier of GD-DP."""

    mechanism: str
    clip: float
    noise_multiplier: float


def steps_per_round(num_samples: int, task: TaskSpec) -> int:
    """Optimizer steps one round of local training takes."""
    return task.local_epochs * math.ceil(num_samples / task.batch_size)
