"""One edge agent: the data contributor's side of the protocol. Network callbacks only enqueue; every
handler runs on the pool's worker thread, one message at a time, so training never blocks MQTT.

This module is the protocol only: dispatch by topic, answer a task (join, leave), turn a round's
global model into this agent's update and its manifest into this agent's vote. Composed: training,
scoring and the privacy account on the agent's shard (``work.ShardWork``); the round in progress
(``rounds.RoundState``); the chain replica (``ledger.node.ChainNode``) and which round blocks to
propose (``ledger.proposer.RoundProposer``); an experiment's attack (``behaviours``, through hooks).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from bpcv.codec import encode_model, model_digest
from bpcv.config import AgentConfig, broker_address
from bpcv.envelope import Envelope
from bpcv.errors import BpcvError, Rejected
from bpcv.identity import Identity
from bpcv.intake import Intake
from bpcv.messages import (
    Abort,
    Final,
    GlobalModel,
    Join,
    Leave,
    Manifest,
    Message,
    Result,
    Reward,
    Update,
    Vote,
    WantBlock,
    read,
    seal_message,
)
from bpcv.mqtt import Bus
from bpcv.sampler import Sample
from bpcv.task import TaskSpec
from bpcv.topics import Topics
from edge_agent import behaviours
from edge_agent.round_topics import RoundTopics
from edge_agent.rounds import RoundState
from edge_agent.status import ENDED, Status
from edge_agent.work import ShardWork, TrainerProvider
from ledger.node import ChainNode
from ledger.proposer import RoundProposer
from ledger.replica import Replica

log = logging.getLogger(__name__)
Job = tuple[Callable[..., object], tuple[Any, ...]]
M = TypeVar("M", bound=Message)
PENDING_VOTE_WAIT_S = 10.0  # how long a vote or proposal waits for messages it lists before going ahead
BLOCK_TXS: dict[str, type[Message]] = {Vote.KIND: Vote, Reward.KIND: Reward, Final.KIND: Final}  # on result topics
JOIN_AGAIN_S = 15.0  # a join no global model answered is sent again (lost, or the coordinator restarted)


class Agent:
    """A data contributor with its own key, MQTT client, data shard and chain replica."""

    def __init__(self, config: AgentConfig, jobs: queue.Queue[Job], trainers: TrainerProvider) -> None:
        self.config = config
        self.identity = Identity.load(Path(config.key))
        self.behaviour = behaviours.create(config.behaviour, self.identity)
        replica = Replica.open(config.chain_dir, Path(config.genesis).read_bytes())
        if self.identity.node_id not in replica.state.registry:
            raise BpcvError(f"{self.identity.node_id} is not a member of chain {replica.state.chain_id}")
        self.topics = Topics(config.base_topic)
        self.intake = Intake(replica.state.registry, self.identity.node_id)
        self.chain = ChainNode(
            replica, self.topics, lambda: self.bus, identity=self.identity, intake=self.intake, hooks=self.behaviour
        )
        self._jobs = jobs
        self._trainers = trainers
        self.bus = Bus(
            self.identity.node_id,
            broker_address(config),
            self._enqueue,
            [self.topics.all_tasks(), *self.chain.subscriptions()],
            status_topic=self.topics.status(self.identity.node_id),
            persistent=True,
        )
        self.task: TaskSpec | None = None
        self.work: ShardWork | None = None  # this agent's training and scoring for the task
        self.status = Status.IDLE
        self.rounds = RoundState()
        self.round_topics = RoundTopics(self.bus, self.topics, self.identity.node_id, self.rounds.clock)
        self.proposer = RoundProposer(self.chain, self._later, PENDING_VOTE_WAIT_S, self.round_topics.fetch_votes)

    @property
    def node_id(self) -> str:
        return self.identity.node_id

    @property
    def replica(self) -> Replica:
        return self.chain.replica

    @property
    def round(self) -> int:
        """The round in progress (0 before the first global model)."""
        return self.rounds.number

    def epsilon_spent(self) -> float | None:
        """The privacy spent on this task so far (None without DP: no guarantee to state)."""
        return self.work.epsilon_spent() if self.work is not None else None

    # plumbing
    def _enqueue(self, topic: str, payload: bytes) -> None:
        job = (self.topics.traffic_kind(topic), len(payload), self.handle, topic, payload)
        self._jobs.put((self.rounds.clock.handled, job))

    def _later(self, delay: float, fn: Callable[..., object], *args: Any) -> None:
        timer = threading.Timer(delay, lambda: self._jobs.put((self.rounds.clock.run, (fn, *args))))
        timer.daemon = True
        timer.start()

    def start(self) -> None:
        self.bus.connect()
        self.chain.request_sync()
        log.info("%s: online (behaviour %s, chain height %d)", self.node_id, self.behaviour, self.replica.height)

    def stop(self) -> None:
        self.bus.close()
        self.replica.close()

    def publish_metrics(self, sample: Sample) -> Sample:
        """A psutil sample of the process with our replica's CPU and height, signed, on our metrics topic."""
        own = sample.of_replica(self.replica.cpu_s, self.replica.height)
        self.bus.publish(self.topics.metrics(self.node_id), own.sealed(self.identity), qos=0)
        return own

    def handle(self, topic: str, payload: bytes) -> None:
        """Dispatch one message by its topic."""
        levels = self.topics.parse(topic)
        if levels[0] == "chain":
            with self.rounds.clock.phase("ledger"):
                self.chain.handle(topic, levels, payload)
        elif levels[0] == "tasks" and len(levels) == 2:
            self.on_task(topic, payload)
        elif self.task and len(levels) >= 5 and levels[1] == self.task.task_id and levels[2] == "round" and payload:
            try:
                round_no = int(levels[3])
            except ValueError:
                self.intake.reject(Rejected("malformed", "round is not a number"), topic)
                return
            sender = levels[5] if len(levels) > 5 else None
            handler = {
                "global": self.on_global,
                "update": self.on_update,
                "manifest": self.on_manifest,
                "vote": self.on_vote,
                "result": self.on_result,
            }.get(levels[4])
            if handler is not None:
                handler(topic, round_no, sender, payload)

    def _read(self, env: Envelope, kind: type[M], topic: str) -> M | None:
        """The typed body of ``env``, or None after counting why it was refused."""
        try:
            return read(env, kind)
        except Rejected as exc:
            self.intake.reject(exc, topic)
            return None

    # task and joining
    def on_task(self, topic: str, payload: bytes) -> None:
        if not payload or self.task is not None:
            return
        opened = self.intake.open_task(payload, topic)
        if opened is None:
            return
        task = opened[1]
        if task.dataset != self.config.dataset:
            why = f"needs {task.dataset} data, this agent has {self.config.dataset}"
            log.info("%s: task %s %s; not answering", self.node_id, task.task_id, why)
            return
        try:
            self.work = ShardWork.prepare(self.config, self.node_id, task, self._trainers, self.behaviour)
        except BpcvError as exc:
            log.error("%s: cannot answer task %s: %s", self.node_id, task.task_id, exc)
            return
        self.task = task
        self.proposer.start_task(task, payload)
        self.round_topics.start_task(task)
        self._later(self.config.join_delay_s, self.join)

    def join(self) -> None:
        assert self.task is not None and self.work is not None
        join = Join(self.work.num_samples, self.config.dataset, self.work.privacy_claims())
        env = seal_message(self.identity, join, self.task.task_id, 0)
        self.bus.publish(self.topics.join(self.task.task_id, self.node_id), env.raw)
        self.status = Status.JOINED
        log.info("%s: joined task %s with %d samples", self.node_id, self.task.task_id, join.num_samples)
        task = self.task
        self._later(JOIN_AGAIN_S, lambda: self.task is task and self.status is Status.JOINED and self.join())

    def leave(self, round_no: int, reason: str) -> None:
        """Stop contributing to the task and say so, signed, on the join topic and the status topic."""
        assert self.task is not None
        leave = Leave(reason, self.epsilon_spent())
        env = seal_message(self.identity, leave, self.task.task_id, round_no)
        self.bus.publish(self.topics.join(self.task.task_id, self.node_id), env.raw)
        self.bus.publish(self.topics.status(self.node_id), f"left:{reason}".encode(), retain=True)
        self.status = Status.LEFT
        spent = f"epsilon spent {leave.epsilon_spent} of budget {self.config.epsilon}"
        log.warning("%s: leaving before round %d: %s (task %s, %s)", self.node_id, round_no, reason, self.task.task_id, spent)

    # one round: global model -> update
    def _from_coordinator(self, topic: str, round_no: int, payload: bytes, relayed: bool = False) -> Envelope | None:
        """The coordinator's message, opened (with ``relayed``, also a voter's own vote that it relays)."""
        assert self.task is not None
        with self.rounds.clock.phase("verify"):
            roles = ("coordinator", "agent") if relayed else ("coordinator",)
            env = self.intake.open(payload, roles, topic, task=self.task.task_id, round_no=round_no)
        if env is not None and env.sender != self.task.coordinator and not (relayed and env.type == Vote.KIND):
            self.intake.reject(Rejected("wrong-sender", f"{env.sender} is not this task's coordinator"), topic)
            return None
        return env

    def on_global(self, topic: str, round_no: int, _sender: str | None, payload: bytes) -> None:
        assert self.work is not None
        if round_no < self.round:
            self.intake.reject(Rejected("wrong-round", f"global model for old round {round_no}"), topic)
            return
        env = self._from_coordinator(topic, round_no, payload)
        if env is None:
            return
        message = self._read(env, GlobalModel, topic)
        if message is None:
            return
        if round_no == self.round:  # asked again: our update was lost on the way
            self._send_again("update", round_no, message.resend_to)
            return
        try:
            with self.rounds.clock.phase("verify"):  # the global model's digest, and decoding it
                if len(env.blobs) != 1 or model_digest(env.blobs[0]) != message.model_digest:
                    raise Rejected("bad-model", "global model digest mismatch")
                global_weights = self.work.decode(env.blobs[0])
        except Rejected as exc:
            self.intake.reject(exc, topic)
            return
        if (times := self.rounds.clock.begin(round_no)) is not None and "train" in times.seconds:  # we took part
            self.bus.publish(self.topics.metrics(self.node_id), times.sealed(self.identity), wait=None)
        self.rounds.start(round_no, message.roster, self.task, self.node_id, message.committee_seed)
        self.round_topics.follow(round_no, self.rounds.peers)
        self.proposer.forget_before(round_no)
        if self.node_id not in self.rounds.roster:
            if self.status is Status.ACTIVE:  # dropped: our update never came (a partition, a restart)
                self.join()  # the coordinator takes a dropped node back as standby
            if self.status not in ENDED:
                self.status = Status.STANDBY
            return
        if self.status is Status.LEFT:
            return
        with self.rounds.clock.phase("privacy"):
            affordable = self.work.can_afford_round()
        if not affordable:
            self.leave(round_no, "privacy-budget-spent")
            return
        self.status = Status.ACTIVE
        self._send_update(round_no, global_weights)

    def _send_update(self, round_no: int, global_weights: list[np.ndarray]) -> None:
        assert self.task is not None and self.work is not None
        with self.rounds.clock.phase("score"):
            val = self.work.validation_scores(global_weights)
        with self.rounds.clock.phase("train"):
            weights = self.work.local_update(global_weights, round_no)
        with self.rounds.clock.phase("sign"):
            blob = encode_model(weights, self.task.update_encoding)
            update = Update(model_digest(blob), self.work.num_samples, self.work.epsilon_spent(), val)
            env = seal_message(self.identity, update, self.task.task_id, round_no, [blob])
        self.rounds.record_sent("update", round_no, env.raw)
        self.round_topics.publish_update(round_no, env.raw)
        spent = update.epsilon_spent
        log.info("%s: round %d update sent (%d bytes, epsilon spent %s)", self.node_id, round_no, len(env.raw), spent)

    def _send_again(self, kind: str, round_no: int, resend_to: tuple[str, ...] | None) -> None:
        """Publish our ``kind`` message of ``round_no`` again, the same bytes, when the request names us."""
        assert self.task is not None
        raw = self.rounds.to_send_again(kind, round_no, self.node_id, resend_to)
        if raw is None:
            return
        self.round_topics.publish_again(kind, round_no, raw)
        log.info("%s: round %d %s sent again (the coordinator asked)", self.node_id, round_no, kind)
        if (why := self.rounds.lost(kind, round_no)) is not None:
            log.warning("%s: %s", self.node_id, why)

    def _from_peer(self, topic: str, round_no: int, sender: str | None, raw: bytes, behind: int = 0) -> Envelope | None:
        """A peer's message of this round or the next (a peer may be a little ahead), or of ``behind``
        rounds before, opened; not our own."""
        if sender == self.node_id:
            return None
        if not self.rounds.in_window(round_no, behind):
            self.intake.reject(Rejected("wrong-round", f"round {round_no}, now {self.round}"), topic)
            return None
        assert self.task is not None
        with self.rounds.clock.phase("verify"):
            return self.intake.open(
                raw, ("agent",), topic, task=self.task.task_id, round_no=round_no, topic_sender=sender
            )

    def on_update(self, topic: str, round_no: int, sender: str | None, payload: bytes) -> None:
        env = self._from_peer(topic, round_no, sender, payload)
        if env is None or len(env.blobs) != 1 or self._read(env, Update, topic) is None:
            return
        self.rounds.keep_update(round_no, env.sender, env.blobs[0])
        if self.rounds.manifest is not None:
            self._try_vote(final=False)
        elif (early := self.rounds.to_score_early(round_no, self.node_id, env.sender)) is not None:
            with self.rounds.clock.phase("score"):
                self.work.score(env.sender, *early)

    # one round: manifest -> vote
    def on_manifest(self, topic: str, round_no: int, _sender: str | None, payload: bytes) -> None:
        env = self._from_coordinator(topic, round_no, payload)
        if env is None or self.node_id not in self.rounds.roster or self.status is not Status.ACTIVE:
            return
        manifest = self._read(env, Manifest, topic)
        if manifest is None:
            return
        if ("vote", round_no) in self.rounds.sent:  # asked again: our vote was lost on the way
            self._send_again("vote", round_no, manifest.resend_to)
            return
        self.rounds.manifest = (round_no, manifest)
        if not self._try_vote(final=False):
            self._later(PENDING_VOTE_WAIT_S, self._try_vote, True)

    def _try_vote(self, final: bool) -> bool:
        """Score the assigned peers once all their updates are here (or, when ``final``, with what is here).
        Returns False while it is still waiting for updates."""
        pending = self.rounds.manifest
        round_no = self.round
        if pending is None or pending[0] != round_no:
            return pending is None
        assert self.task is not None and self.work is not None
        listed = pending[1].updates
        missing, blobs = self.rounds.to_score(self.node_id, listed)
        if missing and not final:
            return False
        self.rounds.manifest = None
        with self.rounds.clock.phase("score"):
            scores = self.work.score_peers(blobs)
        with self.rounds.clock.phase("sign"):
            vote = Vote(scores, self.task.metric, {p: listed[p] for p in scores}, self.work.epsilon_spent())
            env = seal_message(self.identity, vote, self.task.task_id, round_no)
        self.proposer.keep(round_no, env.digest, env.raw)
        self.rounds.record_sent("vote", round_no, env.raw)
        self.round_topics.publish_vote(round_no, env.raw)
        gaps = f" ({len(missing)} updates missing)" if missing else ""
        log.info("%s: round %d vote sent for %d peers%s", self.node_id, round_no, len(scores), gaps)
        return True

    def on_vote(self, topic: str, round_no: int, sender: str | None, payload: bytes) -> None:
        env = self._from_peer(topic, round_no, sender, payload, behind=1)  # the block may follow the next round's start
        if env is not None and self._read(env, Vote, topic) is not None:
            with self.rounds.clock.phase("ledger"):  # kept for the round's block
                self.proposer.keep(round_no, env.digest, payload)

    # the round's outcome
    def on_result(self, topic: str, round_no: int, _sender: str | None, payload: bytes) -> None:
        """The coordinator's round outcome: its records (kept for the round block), its result (our
        status, and the block if our PoQ place says so), an abort, or a request for the round's block."""
        env = self._from_coordinator(topic, round_no, payload, relayed=True)
        if env is None:
            return
        if env.type in BLOCK_TXS:  # records, published before the result; votes, relayed while the block is late
            if self._read(env, BLOCK_TXS[env.type], topic) is not None:
                self.proposer.keep(round_no, env.digest, payload)
        elif env.type == WantBlock.KIND:  # the coordinator lacks the round's block: whoever holds it sends it
            if self._read(env, WantBlock, topic) is not None:
                self.chain.republish_round(env)
        elif env.type == Abort.KIND:  # the coordinator ended the task without committing this round
            abort = self._read(env, Abort, topic)
            if abort is not None:
                log.warning("%s: task aborted in round %d: %s", self.node_id, round_no, abort.reason)
                self.status = Status.DONE if self.status is not Status.ELIMINATED else self.status
        elif env.type == Result.KIND:
            result = self._read(env, Result, topic)
            if result is not None:
                self._on_round_result(env, result)

    def _on_round_result(self, env: Envelope, result: Result) -> None:
        if (why := self.rounds.not_received(env.round, result.dropped, self.node_id)) is not None:
            log.warning("%s: %s", self.node_id, why)
        if result.eliminated == self.node_id or self.node_id in result.invalid:
            self.status = Status.ELIMINATED
            log.info("%s: eliminated in round %d", self.node_id, env.round)
        if result.final and self.status is not Status.ELIMINATED:
            self.status = Status.DONE
        with self.rounds.clock.phase("ledger"):  # the round's block, if our PoQ place says we propose it
            self.proposer.on_result(env, result)
