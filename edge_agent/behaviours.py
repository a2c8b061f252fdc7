"""Agent behaviours for experiments, as pure functions: honest, or one of the attacks the system must survive.

- ``random-weights``: sends random weights instead of training;
- ``label-flip``: trains on labels mapped y -> (C - 1 - y);
- ``sign-flip``: sends the global model pushed against its own update (g - 4 (w - g));
- ``free-ride``: sends the global model back unchanged, without training;
- ``lying-voter``: trains honestly but reverses its scores of others;
- ``noisy``: a subtly poisoned update: its trained weights plus Gaussian noise (NOISE_SCALE of each
  tensor's spread), a few points worse than honest ones;
- ``collude``: trains honestly, but every colluder scores the same victim (the peer with the
  highest node id it scores) 0 and every other peer 1, to get the victim eliminated and keep a
  poisoned update in;
- ``equivocate``: trains honestly, but as a block proposer signs and publishes two different blocks
  for one height (caught as equivocation and excluded);
- ``dies-at-proposal``: trains honestly, but its process is SIGKILLed the moment it should publish
  the round's block as PoQ winner (the next-ranked node must stand in).
"""

from __future__ import annotations

import numpy as np

BEHAVIOURS = (
    "honest",
    "random-weights",
    "label-flip",
    "sign-flip",
    "free-ride",
    "lying-voter",
    "noisy",
    "collude",
    "equivocate",
    "dies-at-proposal",
)
SIGN_FLIP_SCALE = 4.0
NOISE_SCALE = 1.5


def check_behaviour(name: str) -> str:
    if name not in BEHAVIOURS:
        raise ValueError(f"unknown behaviour {name!r}; known: {', '.join(BEHAVIOURS)}")
    return name


def trains(behaviour: str) -> bool:
    """Whether this behaviour runs local training at all."""
    return behaviour not in ("random-weights", "free-ride")


def training_labels(behaviour: str, labels: np.ndarray, num_classes: int) -> np.ndarray:
    return (num_classes - 1 - labels) if behaviour == "label-flip" else labels


def shape_update(
    behaviour: str, global_weights: list[np.ndarray], local_weights: list[np.ndarray] | None, rng: np.random.Generator
) -> list[np.ndarray]:
    """The weights this behaviour publishes, given the global model and (if it trained) its local result."""
    if behaviour == "random-weights":
        return [rng.normal(0.0, 1.0, size=w.shape).astype(np.float32) for w in global_weights]
    if behaviour == "free-ride":
        return [np.array(w, dtype=np.float32) for w in global_weights]
    assert local_weights is not None
    if behaviour == "noisy":
        return [
            (w + rng.normal(0.0, NOISE_SCALE * float(np.std(w)), size=w.shape)).astype(np.float32)
            for w in local_weights
        ]
    if behaviour == "sign-flip":
        return [
            (g - SIGN_FLIP_SCALE * (w - g)).astype(np.float32)
            for g, w in zip(global_weights, local_weights, strict=True)
        ]
    return local_weights


def shape_scores(behaviour: str, scores: dict[str, float], higher_is_better: bool) -> dict[str, float]:
    """The scores this behaviour reports: a lying voter reverses the order of its honest scores; a
    colluder gives its victim (the highest node id) the worst score and everyone else the best."""
    if behaviour == "collude" and scores:
        victim = max(scores)
        best, worst = (1.0, 0.0) if higher_is_better else (0.0, max(scores.values()) * 10)
        return {n: worst if n == victim else best for n in scores}
    if behaviour != "lying-voter" or not scores:
        return scores
    if higher_is_better:
        return {n: round(1.0 - s, 6) for n, s in scores.items()}
    top = max(scores.values())
    return {n: round(top - s, 6) for n, s in scores.items()}
