"""Agent behaviours for experiments: honest, or one of the attacks the system must survive.

A behaviour is an object with hooks; the agent's protocol calls them at fixed points and never asks
which behaviour it runs:

- **on train** — ``trains`` (whether to run local training at all) and ``training_labels`` (the
  labels it trains on);
- **on update** — ``shape_update``: the weights it publishes, given the global model and (if it
  trained) its local result;
- **on vote** — ``shape_scores``: the scores it reports, given its honest scores;
- **on propose** — ``before_propose`` / ``after_propose``, the ``ledger.node.ProposalHooks`` its
  chain node calls around each of its own block proposals.

The honest default of every hook changes nothing. The attacks, registered by name in ``REGISTRY``:

- ``random-weights``: sends random weights instead of training;
- ``label-flip``: trains on labels mapped y -> (C - 1 - y);
- ``sign-flip``: sends the global model pushed against its own update (g - 4 (w - g));
- ``scaling``: sends its own update boosted (g + 10 (w - g)), the model-replacement attack;
- ``free-ride``: sends the global model back unchanged, without training;
- ``free-ride-noise``: sends the global model plus tiny noise (1e-3 of each tensor's spread), without
  training, so its update is not byte-identical to the global model;
- ``free-ride-mimic``: trains once, in its first round, to see which tensors training moves; from then
  on sends the global model with tiny noise on exactly those tensors, without training: the free-rider
  that knows the model and so passes the contribution check (no tensor that training never moves changes);
- ``alie``: "a little is enough" (Baruch, Baruch, Goldberg, NeurIPS 2019): the group of ``alie`` agents
  pool their honest updates and each sends mean - z std, coordinate by coordinate (z = 1), a
  poisoned update within the spread of honest ones;
- ``collude-group``: poisons like ``alie`` and, as a voter, gives fellow members the best score and
  every other peer half its honest accuracy (twice its MAE);
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

import hashlib
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from bpcv.identity import Identity
from ledger.block import Block, build_block
from ledger.node import ProposalHooks

log = logging.getLogger(__name__)
SIGN_FLIP_SCALE = 4.0
BOOST = 10.0  # scaling: how far past its own update the attacker pushes
NOISE_SCALE = 1.5
FREE_RIDE_NOISE = 1e-3
ALIE_Z = 1.0
DOWNVOTE = 0.5  # collude-group: an honest peer's accuracy is reported times this (its MAE divided by it)
Weights = list[np.ndarray]


class Behaviour(ProposalHooks):
    """The honest agent: every hook leaves the protocol's value as it is. ``identity`` is the agent's
    key, for behaviours that sign something of their own (``equivocate``)."""

    name = "honest"
    trains = True  # on train: whether local training runs at all

    def __init__(self, identity: Identity | None = None) -> None:
        self.identity = identity

    def __str__(self) -> str:
        return self.name

    @property
    def node_id(self) -> str:
        return self.identity.node_id if self.identity is not None else "?"

    def training_labels(self, labels: np.ndarray, num_classes: int) -> np.ndarray:
        """On train: the labels local training uses."""
        return labels

    def shape_update(self, global_weights: Weights, local_weights: Weights | None, rng: np.random.Generator) -> Weights:
        """On update: the weights published, given the global model and (if it trained) the local result."""
        assert local_weights is not None
        return local_weights

    def shape_scores(self, scores: dict[str, float], higher_is_better: bool) -> dict[str, float]:
        """On vote: the scores reported, given the honest scores of the assigned peers (for the same peers:
        the vote's digests name the models scored)."""
        return scores


class RandomWeights(Behaviour):
    name = "random-weights"
    trains = False

    def shape_update(self, global_weights: Weights, local_weights: Weights | None, rng: np.random.Generator) -> Weights:
        return [rng.normal(0.0, 1.0, size=w.shape).astype(np.float32) for w in global_weights]


class LabelFlip(Behaviour):
    name = "label-flip"

    def training_labels(self, labels: np.ndarray, num_classes: int) -> np.ndarray:
        return num_classes - 1 - labels


class SignFlip(Behaviour):
    name = "sign-flip"

    def shape_update(self, global_weights: Weights, local_weights: Weights | None, rng: np.random.Generator) -> Weights:
        assert local_weights is not None
        return [
            (g - SIGN_FLIP_SCALE * (w - g)).astype(np.float32)
            for g, w in zip(global_weights, local_weights, strict=True)
        ]


class FreeRide(Behaviour):
    name = "free-ride"
    trains = False

    def shape_update(self, global_weights: Weights, local_weights: Weights | None, rng: np.random.Generator) -> Weights:
        return [np.array(w, dtype=np.float32) for w in global_weights]


class Scaling(Behaviour):
    name = "scaling"

    def shape_update(self, global_weights: Weights, local_weights: Weights | None, rng: np.random.Generator) -> Weights:
        assert local_weights is not None
        return [(g + BOOST * (w - g)).astype(np.float32) for g, w in zip(global_weights, local_weights, strict=True)]


class FreeRideNoise(Behaviour):
    name = "free-ride-noise"
    trains = False

    def shape_update(self, global_weights: Weights, local_weights: Weights | None, rng: np.random.Generator) -> Weights:
        return [(g + _tiny_noise(g, rng)).astype(np.float32) for g in global_weights]


def _tiny_noise(tensor: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise of FREE_RIDE_NOISE of the tensor's spread: the free-riders' disguise."""
    return rng.normal(0.0, FREE_RIDE_NOISE * float(np.std(tensor)) + 1e-12, size=tensor.shape)


class FreeRideMimic(Behaviour):
    name = "free-ride-mimic"

    def __init__(self, identity: Identity | None = None) -> None:
        super().__init__(identity)
        self.trained: list[bool] | None = None  # per tensor: moved by its one round of training

    @property
    def trains(self) -> bool:  # type: ignore[override]
        return self.trained is None

    def shape_update(self, global_weights: Weights, local_weights: Weights | None, rng: np.random.Generator) -> Weights:
        if self.trained is None:  # the one round it trains: honest, and it learns where training shows
            assert local_weights is not None
            self.trained = [bool(np.any(w != g)) for g, w in zip(global_weights, local_weights, strict=True)]
            return local_weights
        return [
            (g + moved * _tiny_noise(g, rng)).astype(np.float32)  # drawn for every tensor, kept where moved
            for g, moved in zip(global_weights, self.trained, strict=True)
        ]


@dataclass
class _Channel:
    """What the members of a colluding group share out of band: the members and this round's honest
    deltas (keyed by a digest of the round's global model), and the last round's spread. The channel is
    the process's memory, so a group's members run in one agent process (the demo puts them there)."""

    members: set[str] = field(default_factory=set)
    round_key: bytes = b""
    deltas: list[Weights] = field(default_factory=list)
    spread: Weights | None = None


_CHANNELS: dict[str, _Channel] = {}


class Alie(Behaviour):
    """Sends mean - z std of the group's honest deltas, added to the global model. The first member to send
    in a round has only its own delta: it uses the spread the group saw the round before (none in round 1,
    when it sends its honest update)."""

    name = "alie"

    def __init__(self, identity: Identity | None = None) -> None:
        super().__init__(identity)
        self.channel = _CHANNELS.setdefault(self.name, _Channel())
        self.channel.members.add(self.node_id)

    def shape_update(self, global_weights: Weights, local_weights: Weights | None, rng: np.random.Generator) -> Weights:
        assert local_weights is not None
        channel = self.channel
        key = hashlib.sha256(b"".join(np.ascontiguousarray(g).tobytes() for g in global_weights)).digest()
        if key != channel.round_key:
            channel.round_key, channel.deltas = key, []
        channel.deltas.append([w - g for g, w in zip(global_weights, local_weights, strict=True)])
        if len(channel.deltas) >= 2:
            channel.spread = [np.std(np.stack(ts), axis=0) for ts in zip(*channel.deltas, strict=True)]
        mean = [np.mean(np.stack(ts), axis=0) for ts in zip(*channel.deltas, strict=True)]
        spread = channel.spread or [np.zeros_like(m) for m in mean]
        return [(g + m - ALIE_Z * s).astype(np.float32) for g, m, s in zip(global_weights, mean, spread, strict=True)]


class ColludeGroup(Alie):
    """ALIE's poisoned update, and votes that lift fellow members and push every other peer down."""

    name = "collude-group"

    def shape_scores(self, scores: dict[str, float], higher_is_better: bool) -> dict[str, float]:
        members = self.channel.members
        if higher_is_better:
            return {n: 1.0 if n in members else round(s * DOWNVOTE, 6) for n, s in scores.items()}
        return {n: 0.0 if n in members else round(s / DOWNVOTE, 6) for n, s in scores.items()}


class LyingVoter(Behaviour):
    """Reverses the order of its honest scores."""

    name = "lying-voter"

    def shape_scores(self, scores: dict[str, float], higher_is_better: bool) -> dict[str, float]:
        if not scores:
            return scores
        if higher_is_better:
            return {n: round(1.0 - s, 6) for n, s in scores.items()}
        top = max(scores.values())
        return {n: round(top - s, 6) for n, s in scores.items()}


class Noisy(Behaviour):
    name = "noisy"

    def shape_update(self, global_weights: Weights, local_weights: Weights | None, rng: np.random.Generator) -> Weights:
        assert local_weights is not None
        return [
            (w + rng.normal(0.0, NOISE_SCALE * float(np.std(w)), size=w.shape)).astype(np.float32)
            for w in local_weights
        ]


class Collude(Behaviour):
    """Gives its victim (the highest node id it scores) the worst score and everyone else the best."""

    name = "collude"

    def shape_scores(self, scores: dict[str, float], higher_is_better: bool) -> dict[str, float]:
        if not scores:
            return scores
        victim = max(scores)
        best, worst = (1.0, 0.0) if higher_is_better else (0.0, max(scores.values()) * 10)
        return {n: worst if n == victim else best for n in scores}


class Equivocate(Behaviour):
    """After each of its proposals, signs and publishes a twin: the same transactions, height, parent
    and rank, 1 ms later."""

    name = "equivocate"

    def after_propose(self, block: Block, txs: list[bytes], publish: Callable[[Block], None]) -> None:
        assert self.identity is not None, "equivocate signs its twin block with the agent's key"
        twin = build_block(
            self.identity,
            block.height,
            block.prev_hash,
            block.task,
            block.round,
            txs,
            ts=block.ts + 0.001,
            rank=block.rank,
        )
        publish(twin)
        log.warning("%s: equivocated: a second block %s… at height %d", self.node_id, twin.hash[:12], twin.height)


class DiesAtProposal(Behaviour):
    """SIGKILLs its own process when it is about to propose as the round's PoQ winner (place 0)."""

    name = "dies-at-proposal"

    def before_propose(self, rank: int) -> None:
        if rank == 0:
            log.warning("%s: dying at proposal time (behaviour dies-at-proposal)", self.node_id)
            os.kill(os.getpid(), signal.SIGKILL)


REGISTRY: dict[str, type[Behaviour]] = {
    b.name: b
    for b in (
        Behaviour,
        RandomWeights,
        LabelFlip,
        SignFlip,
        Scaling,
        FreeRide,
        FreeRideNoise,
        FreeRideMimic,
        Alie,
        ColludeGroup,
        LyingVoter,
        Noisy,
        Collude,
        Equivocate,
        DiesAtProposal,
    )
}
BEHAVIOURS = tuple(REGISTRY)  # the names, honest first (the CLI and demo list them)


def check_behaviour(name: str) -> str:
    if name not in REGISTRY:
        raise ValueError(f"unknown behaviour {name!r}; known: {', '.join(BEHAVIOURS)}")
    return name


def create(name: str, identity: Identity | None = None) -> Behaviour:
    """The behaviour called ``name``, for the agent with key ``identity``; ValueError if unknown."""
    return REGISTRY[check_behaviour(name)](identity)
