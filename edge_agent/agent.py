"""One edge agent: the data contributor's side of the protocol.

Network callbacks only enqueue; every handler here runs on the pool's worker thread, one message at
a time, so training and scoring never block the MQTT network loop.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bpcv.codec import decode_model, encode_model, model_digest
from bpcv.config import AgentConfig
from bpcv.data import Shard, load_dataset, make_shard
from bpcv.envelope import Envelope, seal
from bpcv.errors import BpcvError, Rejected
from bpcv.identity import Identity
from bpcv.intake import Intake
from bpcv.mqtt import BrokerAddress, Bus
from bpcv.poq import higher_is_better
from bpcv.task import TaskSpec
from bpcv.topics import Topics
from edge_agent import behaviours
from edge_agent.privacy.plan import PrivacyPlan, plan_privacy
from edge_agent.trainer import PrivacySettings, Trainer
from ledger.block import block_height, build_block
from ledger.errors import LedgerError, UnknownParent
from ledger.replica import Replica

log = logging.getLogger(__name__)
Job = tuple[Callable[..., object], tuple[Any, ...]]
TrainerProvider = Callable[[TaskSpec, tuple[int, ...], int, PrivacySettings | None], Trainer]
PENDING_VOTE_WAIT_S = 10.0
SYNC_INTERVAL_S = 5.0
MAX_FUTURE_BLOCKS = 64


class Agent:
    """A data contributor with its own key, MQTT client, data shard and chain replica."""

    def __init__(self, config: AgentConfig, jobs: queue.Queue[Job], trainers: TrainerProvider) -> None:
        self.config = config
        self.identity = Identity.load(Path(config.key))
        self.node_id = self.identity.node_id
        self.behaviour = behaviours.check_behaviour(config.behaviour)
        self.replica = Replica.open(config.chain_dir, Path(config.genesis).read_bytes())
        self.registry = self.replica.state.registry
        if self.node_id not in self.registry:
            raise BpcvError(f"{self.node_id} is not a member of chain {self.replica.state.chain_id}")
        self.topics = Topics(config.base_topic)
        self.intake = Intake(self.registry, self.node_id)
        self._jobs = jobs
        self._trainers = trainers
        self.bus = Bus(
            self.node_id,
            BrokerAddress.parse(config.broker),
            self._enqueue,
            [
                self.topics.all_tasks(),
                self.topics.block(self.replica.state.chain_id),
                self.topics.sync_blocks(self.replica.state.chain_id, self.node_id),
            ],
            status_topic=self.topics.status(self.node_id),
        )
        self.rng = np.random.default_rng(zlib.crc32(self.node_id.encode()) + config.seed)
        self.task: TaskSpec | None = None
        self.task_raw = b""
        self.status = "idle"
        self.round = 0
        self.roster: list[str] = []
        self.assignment: dict[str, list[str]] = {}
        self.updates: dict[int, dict[str, tuple[str, bytes]]] = {}  # round -> node -> (digest, blob)
        self.votes: dict[int, dict[str, bytes]] = {}  # round -> vote digest -> raw envelope
        self.pending_manifest: Envelope | None = None
        self.pending_result: Envelope | None = None
        self.shard: Shard | None = None
        self.trainer: Trainer | None = None
        self.num_classes = 0
        self.privacy: PrivacyPlan | None = None
        self._last_sync_request = -SYNC_INTERVAL_S
        self._future_blocks: dict[int, bytes] = {}  # blocks beyond the head, waiting for the gap to fill

    # plumbing
    def _enqueue(self, topic: str, payload: bytes) -> None:
        self._jobs.put((self.handle, (topic, payload)))

    def _later(self, delay: float, fn: Callable[..., object], *args: Any) -> None:
        timer = threading.Timer(delay, lambda: self._jobs.put((fn, args)))
        timer.daemon = True
        timer.start()

    def _now_or_later(self, attempt: Callable[[bool], bool]) -> None:
        """Run ``attempt`` now; if it is still waiting for messages, run it once more, as final, later."""
        if not attempt(False):
            self._later(PENDING_VOTE_WAIT_S, attempt, True)

    def start(self) -> None:
        self.bus.connect()
        self.request_sync()
        log.info("%s: online (behaviour %s, chain height %d)", self.node_id, self.behaviour, self.replica.height)

    def stop(self) -> None:
        self.bus.close()
        self.replica.close()

    def handle(self, topic: str, payload: bytes) -> None:
        """Dispatch one message by its topic."""
        levels = self.topics.parse(topic)
        if levels[0] == "chain":
            if len(levels) == 3 and levels[2] == "block":
                self.on_block(payload)
            elif len(levels) == 5 and levels[2:] == ("sync", self.node_id, "blocks"):
                self.on_block(payload, synced=True)
        elif levels[0] == "tasks" and len(levels) == 2:
            self.on_task(topic, payload)
        elif self.task is None or levels[1] != self.task.task_id:
            return
        elif len(levels) >= 5 and levels[2] == "round":
            try:
                round_no = int(levels[3])
            except ValueError:
                self.intake.reject(Rejected("malformed", "round is not a number"), topic)
                return
            kind = levels[4]
            sender = levels[5] if len(levels) > 5 else None
            handler = {
                "global": self.on_global,
                "update": self.on_update,
                "manifest": self.on_manifest,
                "vote": self.on_vote,
                "result": self.on_result,
            }.get(kind)
            if handler is not None:
                handler(topic, round_no, sender, payload)

    # task and joining
    def on_task(self, topic: str, payload: bytes) -> None:
        if not payload or self.task is not None:
            return
        opened = self.intake.open_task(payload, topic)
        if opened is None:
            return
        task = opened[1]
        if task.dataset != self.config.dataset:
            log.info(
                "%s: task %s needs %s data, this agent has %s; not answering",
                self.node_id,
                task.task_id,
                task.dataset,
                self.config.dataset,
            )
            return
        try:
            dataset = load_dataset(self.config.dataset, self.config.data_path or None)
            self.shard = make_shard(
                dataset,
                self.config.shard,
                self.config.num_shards,
                self.config.partition,
                self.config.seed,
                self.config.val_fraction,
            )
        except BpcvError as exc:
            log.error("%s: cannot answer task %s: local data unusable: %s", self.node_id, task.task_id, exc)
            return
        try:
            self.privacy = plan_privacy(self.config, task, self.shard.num_samples)
        except BpcvError as exc:
            log.error("%s: cannot answer task %s: %s", self.node_id, task.task_id, exc)
            return
        self.num_classes = dataset.num_classes
        self.trainer = self._trainers(
            task, dataset.input_shape, dataset.num_classes, self.privacy.settings if self.privacy else None
        )
        self.task, self.task_raw = task, payload
        self.bus.subscribe(self.topics.round_wildcard(task.task_id))
        self._later(self.config.join_delay_s, self.join)

    def join(self) -> None:
        assert self.task is not None and self.shard is not None
        body = {
            "num_samples": self.shard.num_samples,
            "dataset": self.config.dataset,
            "privacy": self.privacy.claims() if self.privacy else {"mechanism": "off"},
        }
        env = seal(self.identity, "join", self.task.task_id, 0, body)
        self.bus.publish(self.topics.join(self.task.task_id, self.node_id), env.raw)
        self.status = "joined"
        log.info("%s: joined task %s with %d samples", self.node_id, self.task.task_id, self.shard.num_samples)

    # one round
    def _from_coordinator(self, topic: str, round_no: int, payload: bytes) -> Envelope | None:
        assert self.task is not None
        env = self.intake.open(payload, ("coordinator",), topic, task=self.task.task_id, round_no=round_no)
        if env is not None and env.sender != self.task.coordinator:
            self.intake.reject(Rejected("wrong-sender", f"{env.sender} is not this task's coordinator"), topic)
            return None
        return env

    def on_global(self, topic: str, round_no: int, _sender: str | None, payload: bytes) -> None:
        assert self.task is not None and self.trainer is not None and self.shard is not None
        if round_no <= self.round:
            self.intake.reject(Rejected("wrong-round", f"global model for old round {round_no}"), topic)
            return
        env = self._from_coordinator(topic, round_no, payload)
        if env is None:
            return
        try:
            if len(env.blobs) != 1 or model_digest(env.blobs[0]) != env.body.get("model_digest"):
                raise Rejected("bad-model", "global model digest mismatch")
            global_weights = decode_model(env.blobs[0], self.trainer.shapes)
        except Rejected as exc:
            self.intake.reject(exc, topic)
            return
        self.round = round_no
        self.roster = list(env.body.get("roster", []))
        self.assignment = dict(env.body.get("assignment", {}))
        self.updates = {r: u for r, u in self.updates.items() if r >= round_no}
        self.votes = {r: v for r, v in self.votes.items() if r >= round_no}
        self.pending_manifest = self.pending_result = None
        if self.node_id not in self.roster:
            if self.status not in ("eliminated", "done", "left"):
                self.status = "standby"
            return
        if self.status == "left":
            return
        if self.privacy is not None and not self.privacy.accountant.can_afford(self.privacy.steps_per_round):
            self.leave(round_no, "privacy-budget-spent")
            return
        self.status = "active"
        local = None
        if behaviours.trains(self.behaviour):
            labels = behaviours.training_labels(self.behaviour, self.shard.y_train, self.num_classes)
            seed = zlib.crc32(f"{self.node_id}/{round_no}".encode()) % 2**31
            local, steps = self.trainer.train(global_weights, self.shard.x_train, labels, seed=seed)
            if self.privacy is not None:
                self.privacy.accountant.spend(steps)
        weights = behaviours.shape_update(self.behaviour, global_weights, local, self.rng)
        blob = encode_model(weights)
        body = {
            "digest": model_digest(blob),
            "num_samples": self.shard.num_samples,
            "epsilon_spent": self.epsilon_spent(),
        }
        update = seal(self.identity, "update", self.task.task_id, round_no, body, [blob])
        self.bus.publish(self.topics.update(self.task.task_id, round_no, self.node_id), update.raw)
        log.info(
            "%s: round %d update sent (%d bytes, epsilon spent %s)",
            self.node_id,
            round_no,
            len(update.raw),
            body["epsilon_spent"],
        )

    def epsilon_spent(self) -> float | None:
        """The privacy spent on this task so far (None without DP: no guarantee to state)."""
        return round(self.privacy.accountant.epsilon_spent, 6) if self.privacy is not None else None

    def leave(self, round_no: int, reason: str) -> None:
        """Stop contributing to the task and say so, signed, on the join topic and the status topic."""
        assert self.task is not None
        body = {"reason": reason, "epsilon_spent": self.epsilon_spent()}
        env = seal(self.identity, "leave", self.task.task_id, round_no, body)
        self.bus.publish(self.topics.join(self.task.task_id, self.node_id), env.raw)
        self.bus.publish(self.topics.status(self.node_id), f"left:{reason}".encode(), retain=True)
        self.status = "left"
        log.warning(
            "%s: leaving task %s before round %d: %s (epsilon spent %s of budget %s)",
            self.node_id,
            self.task.task_id,
            round_no,
            reason,
            body["epsilon_spent"],
            self.config.epsilon,
        )

    def on_update(self, topic: str, round_no: int, sender: str | None, payload: bytes) -> None:
        if sender == self.node_id or not self._in_window(topic, round_no):
            return
        assert self.task is not None
        env = self.intake.open(
            payload, ("agent",), topic, task=self.task.task_id, round_no=round_no, topic_sender=sender
        )
        if env is None or len(env.blobs) != 1:
            return
        self.updates.setdefault(round_no, {})[env.sender] = (model_digest(env.blobs[0]), env.blobs[0])
        if self.pending_manifest is not None:
            self._try_vote(final=False)

    def _in_window(self, topic: str, round_no: int) -> bool:
        """Peers' messages are kept for this round and the next (a peer may be a little ahead)."""
        if self.round <= round_no <= self.round + 1:
            return True
        self.intake.reject(Rejected("wrong-round", f"round {round_no}, now {self.round}"), topic)
        return False

    def on_manifest(self, topic: str, round_no: int, _sender: str | None, payload: bytes) -> None:
        env = self._from_coordinator(topic, round_no, payload)
        if env is None or self.node_id not in self.roster or self.status != "active":
            return
        self.pending_manifest = env
        self._now_or_later(self._try_vote)

    def _try_vote(self, final: bool) -> bool:
        """Score the assigned peers once all their updates are here (or, when ``final``, with what is here).
        Returns False while it is still waiting for updates."""
        manifest = self.pending_manifest
        if manifest is None or manifest.round != self.round:
            return self.pending_manifest is None
        assert self.task is not None and self.trainer is not None and self.shard is not None
        listed: dict[str, str] = manifest.body.get("updates", {})
        peers = [p for p in self.assignment.get(self.node_id, []) if p in listed and p != self.node_id]
        received = self.updates.get(self.round, {})
        missing = [p for p in peers if p not in received or received[p][0] != listed[p]]
        if missing and not final:
            return self.pending_manifest is None
        self.pending_manifest = None
        scores: dict[str, float] = {}
        digests: dict[str, str] = {}
        for peer in peers:
            if peer in missing:
                continue
            try:
                weights = decode_model(received[peer][1], self.trainer.shapes)
            except Rejected as exc:
                log.warning("%s: update of %s unusable: %s", self.node_id, peer, exc)
                continue
            scores[peer] = round(self.trainer.evaluate(weights, self.shard.x_val, self.shard.y_val), 6)
            digests[peer] = listed[peer]
        scores = behaviours.shape_scores(self.behaviour, scores, higher_is_better(self.task.metric))
        body = {"metric": self.task.metric, "scores": scores, "digests": digests, "epsilon_spent": self.epsilon_spent()}
        vote = seal(self.identity, "vote", self.task.task_id, self.round, body)
        self.votes.setdefault(self.round, {})[vote.digest] = vote.raw
        self.bus.publish(self.topics.vote(self.task.task_id, self.round, self.node_id), vote.raw)
        log.info(
            "%s: round %d vote sent for %d peers%s",
            self.node_id,
            self.round,
            len(scores),
            f" ({len(missing)} updates missing)" if missing else "",
        )
        return True

    def on_vote(self, topic: str, round_no: int, sender: str | None, payload: bytes) -> None:
        if sender == self.node_id or not self._in_window(topic, round_no):
            return
        assert self.task is not None
        env = self.intake.open(
            payload, ("agent",), topic, task=self.task.task_id, round_no=round_no, topic_sender=sender
        )
        if env is None:
            return
        self.votes.setdefault(round_no, {})[env.digest] = payload
        if self.pending_result is not None:
            self._try_propose(final=False)

    def on_result(self, topic: str, round_no: int, _sender: str | None, payload: bytes) -> None:
        env = self._from_coordinator(topic, round_no, payload)
        if env is None:
            return
        body = env.body
        if body.get("eliminated") == self.node_id or self.node_id in body.get("invalid", {}):
            self.status = "eliminated"
            log.info("%s: eliminated in round %d", self.node_id, round_no)
        if body.get("final"):
            self.status = "done" if self.status != "eliminated" else self.status
        if body.get("proposer") == self.node_id:
            self.pending_result = env
            self._now_or_later(self._try_propose)

    def _try_propose(self, final: bool) -> bool:
        """As the round's PoQ winner, pack the round's transactions into the next block.
        Returns False while it is still waiting for the listed votes."""
        result = self.pending_result
        if result is None:
            return self.pending_result is None
        assert self.task is not None
        listed = list(result.body.get("votes", []))
        votes = self.votes.get(result.round, {})
        missing = [d for d in listed if d not in votes]
        if missing:
            if final:
                log.error(
                    "%s: cannot propose round %d: %d listed votes never arrived",
                    self.node_id,
                    result.round,
                    len(missing),
                )
                self.pending_result = None
            return self.pending_result is None
        self.pending_result = None
        txs = [] if self.task.task_id in self.replica.state.tasks else [self.task_raw]
        txs += [votes[d] for d in sorted(listed)] + [result.raw]
        block = build_block(
            self.identity, self.replica.height + 1, self.replica.head_hash, self.task.task_id, result.round, txs
        )
        try:
            self.replica.append(block.raw)
        except LedgerError as exc:
            log.error("%s: own block for round %d does not validate: %s", self.node_id, result.round, exc)
            return self.pending_result is None
        self.bus.publish(self.topics.block(self.replica.state.chain_id), block.raw)
        log.info("%s: proposed block %d for round %d", self.node_id, block.height, result.round)
        return True

    # the chain
    def request_sync(self) -> None:
        """Ask for the blocks after this replica's head (at most once every SYNC_INTERVAL_S)."""
        now = time.monotonic()
        if now - self._last_sync_request < SYNC_INTERVAL_S:
            return
        self._last_sync_request = now
        chain = self.replica.state.chain_id
        env = seal(self.identity, "sync", "", 0, {"from": self.replica.height + 1})
        self.bus.publish(self.topics.sync_request(chain, self.node_id), env.raw, wait=None)
        log.info("%s: asked for blocks from height %d", self.node_id, self.replica.height + 1)

    def on_block(self, payload: bytes, synced: bool = False) -> None:
        """Verify and append a block. A block beyond the head means this replica is behind: it is kept
        (bounded) until the gap is filled by range sync, and then appended in order."""
        try:
            block = self.replica.append(payload)
        except UnknownParent as exc:
            height = block_height(payload)
            if height is not None and height > self.replica.height and len(self._future_blocks) < MAX_FUTURE_BLOCKS:
                self._future_blocks[height] = payload
            if not synced:
                log.warning("%s: block beyond the head (%s): syncing", self.node_id, exc)
                self.request_sync()
            return
        except LedgerError as exc:
            self.intake.reject(Rejected("invalid-block", str(exc)), "block")
            return
        if block is not None:
            log.debug("%s: appended block %d%s", self.node_id, block.height, " (sync)" if synced else "")
            next_block = self._future_blocks.pop(self.replica.height + 1, None)
            self._future_blocks = {h: b for h, b in self._future_blocks.items() if h > self.replica.height}
            if next_block is not None:
                self.on_block(next_block, synced=True)
