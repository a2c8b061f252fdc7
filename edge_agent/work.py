"""An agent's own work in a task, apart from the protocol: train on its shard, score its peers'
updates on its validation split, and account the privacy it spends.

``ShardWork.prepare`` loads the agent's shard, plans its privacy (``edge_agent.privacy.plan``) and gets
a trainer for the task; the protocol (``edge_agent.agent``) then asks it for one round's update and
one round's scores. The behaviour's train / update / vote hooks are applied here, so the protocol
never sees them.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from bpcv.codec import decode_model
from bpcv.config import AgentConfig
from bpcv.data import Shard, load_dataset, make_shard
from bpcv.datasources import prepare_local
from bpcv.errors import BpcvError, DataError, Rejected
from bpcv.poq import higher_is_better
from bpcv.task import TaskSpec
from edge_agent.behaviours import Behaviour
from edge_agent.privacy import spent
from edge_agent.privacy.plan import PrivacyPlan, plan_privacy
from edge_agent.privacy.settings import PrivacySettings
from edge_agent.trainer import Trainer

log = logging.getLogger(__name__)
Weights = list[np.ndarray]
SCORES_KEPT = 1024  # scores of updates kept by digest: more than one round's at any fleet size run here
TrainerProvider = Callable[[TaskSpec, tuple[int, ...], int, PrivacySettings | None], Trainer]


def load_shard(config: AgentConfig, task: TaskSpec) -> tuple[Shard, tuple[int, ...], int]:
    """This device's train/validation split, one sample's shape and the number of classes (1: a
    regression target): its own file read against the task's schema, or its shard of a packaged set."""
    schema = task.schema
    if schema is not None:
        if not config.data_path:
            raise DataError("this agent's config names no data_path (its own data file) for a local-data task")
        shard = prepare_local(config.data_path, schema, config.val_fraction, config.seed)[1]
        shape, outputs = tuple(shard.x_train.shape[1:]), schema.outputs
    else:
        dataset = load_dataset(config.dataset, config.data_path or None)
        shard = make_shard(dataset, config.shard, config.num_shards, config.partition, config.seed, config.val_fraction)
        shape, outputs = dataset.input_shape, dataset.num_classes
    return_freed_memory()
    return shard, shape, outputs


def return_freed_memory() -> None:
    """Give the C heap's free pages back to the system (glibc's ``malloc_trim``). Loading a data set frees
    much of what it allocates (temporaries of the checks, the split and the standardisation), but once
    a large block has been freed glibc raises its threshold for serving blocks from the heap and keeps
    what is freed there resident: 17 MiB for a quarter of MNIST, on a device that may have 1 GiB
    (docs/DEPLOY.md). A no-op on a C library without ``malloc_trim``."""
    import ctypes

    try:
        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return
    trim(0)


class ShardWork:
    """Training and scoring for one task on one agent's shard, with its privacy plan and behaviour."""

    def __init__(
        self,
        node_id: str,
        task: TaskSpec,
        shard: Shard,
        num_classes: int,
        trainer: Trainer,
        privacy: PrivacyPlan | None,
        behaviour: Behaviour,
        rng: np.random.Generator,
        spent_file: Path | None = None,
    ) -> None:
        self.node_id = node_id
        self.task = task
        self.shard = shard
        self.num_classes = num_classes
        self.trainer = trainer
        self.privacy = privacy
        self.behaviour = behaviour
        self.rng = rng  # the behaviour's randomness (random or noisy weights)
        self.spent_file = spent_file  # where the privacy spent on this task is kept (with DP)
        self.scored: dict[str, float | None] = {}  # update digest -> its honest score, the latest SCORES_KEPT

    @classmethod
    def prepare(
        cls, config: AgentConfig, node_id: str, task: TaskSpec, trainers: TrainerProvider, behaviour: Behaviour
    ) -> ShardWork:
        """The work for ``task`` on the shard ``config`` names; BpcvError (saying why) if the local data
        is unusable or the privacy settings cannot be met."""
        try:
            shard, input_shape, num_classes = load_shard(config, task)
        except BpcvError as exc:
            raise BpcvError(f"local data unusable: {exc}") from exc
        privacy = plan_privacy(config, task, shard.num_samples)
        where = None
        if privacy is not None:  # what earlier runs of this agent already spent on the task counts
            where = spent.spent_file(config.chain_dir, node_id)
            spent.resume(where, task.task_id, privacy.accountant)
        trainer = trainers(task, input_shape, num_classes, privacy.settings if privacy else None)
        rng = np.random.default_rng(zlib.crc32(node_id.encode()) + config.seed)
        return cls(node_id, task, shard, num_classes, trainer, privacy, behaviour, rng, where)

    @property
    def num_samples(self) -> int:
        return self.shard.num_samples

    def privacy_claims(self) -> dict[str, float | str]:
        """What the agent states about its privacy when it joins."""
        return self.privacy.claims() if self.privacy is not None else {"mechanism": "off"}

    def epsilon_spent(self) -> float | None:
        """The privacy spent on this task so far (None without DP: no guarantee to state)."""
        return round(self.privacy.accountant.epsilon_spent, 6) if self.privacy is not None else None

    def can_afford_round(self) -> bool:
        """Whether one more round of training stays within the privacy budget."""
        return self.privacy is None or self.privacy.accountant.can_afford(self.privacy.steps_per_round)

    def validation_scores(self, weights: Weights) -> dict[str, float] | None:
        """On its own data (a local-data task), the task's metrics of ``weights`` (the global model it
        received) on this device's validation split: what the coordinator averages when the requester
        holds no test set. None on a packaged set, where the coordinator holds the test split."""
        if self.task.schema is None:
            return None
        return {
            m: round(v, 6) for m, v in self.trainer.evaluate_all(weights, self.shard.x_val, self.shard.y_val).items()
        }

    def decode(self, blob: bytes) -> Weights:
        """A model blob as weights of the task's shapes; Rejected if it is not one."""
        return decode_model(blob, self.trainer.shapes)

    def local_update(self, global_weights: Weights, round_no: int) -> Weights:
        """The weights to publish for ``round_no``: trained from the global model on the shard (spending
        privacy), as the behaviour shapes them."""
        local = None
        if self.behaviour.trains:
            labels = self.behaviour.training_labels(self.shard.y_train, self.num_classes)
            seed = zlib.crc32(f"{self.node_id}/{round_no}".encode()) % 2**31
            local, steps = self.trainer.train(global_weights, self.shard.x_train, labels, seed=seed, round_no=round_no)
            if self.privacy is not None:
                self.privacy.accountant.spend(steps)
                if self.spent_file is not None:  # on disk before the update leaves the device
                    spent.record(self.spent_file, self.task.task_id, self.privacy.accountant)
        return self.behaviour.shape_update(global_weights, local, self.rng)

    def score_peers(self, updates: Mapping[str, tuple[str, bytes]]) -> dict[str, float]:
        """The scores to report of the peers' updates ((digest, blob) each) on the validation split, as the
        behaviour shapes them; a peer whose blob is not a model of the task's shapes is left out."""
        honest = {peer: self.score(peer, digest, blob) for peer, (digest, blob) in updates.items()}
        scores = {peer: score for peer, score in honest.items() if score is not None}
        return self.behaviour.shape_scores(scores, higher_is_better(self.task.metric))

    def score(self, peer: str, digest: str, blob: bytes) -> float | None:
        """The honest score of one update on the validation split (None: not a model of the task's
        shapes), kept by its digest: an update scored as it arrived is not scored again for the vote."""
        if digest not in self.scored:
            try:
                weights = self.decode(blob)
            except Rejected as exc:
                log.warning("%s: update of %s unusable: %s", self.node_id, peer, exc)
                self.scored[digest] = None
            else:
                self.scored[digest] = round(self.trainer.evaluate(weights, self.shard.x_val, self.shard.y_val), 6)
            if len(self.scored) > SCORES_KEPT:
                del self.scored[next(iter(self.scored))]  # the oldest: scores of rounds gone by
        return self.scored[digest]
