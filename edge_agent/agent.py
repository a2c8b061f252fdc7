"""One edge agent: the data contributor's side of the protocol.

Network callbacks only enqueue; every handler here runs on the pool's worker thread, one message at
a time, so training and scoring never block the MQTT network loop.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bpcv.codec import decode_model, encode_model, model_digest
from bpcv.config import AgentConfig, broker_address
from bpcv.data import Shard, load_dataset, make_shard
from bpcv.envelope import Envelope, seal
from bpcv.errors import BpcvError, Rejected
from bpcv.identity import Identity
from bpcv.intake import Intake
from bpcv.mqtt import Bus
from bpcv.sampler import Sample
from bpcv.poq import higher_is_better
from bpcv.task import TaskSpec
from bpcv.topics import Topics
from edge_agent import behaviours
from edge_agent.privacy.plan import PrivacyPlan, plan_privacy
from edge_agent.trainer import PrivacySettings, Trainer
from ledger.block import Block, block_height, build_block
from ledger.errors import LedgerError, UnknownParent
from ledger.replica import Replica
from ledger.validate import eligible_proposers

log = logging.getLogger(__name__)
Job = tuple[Callable[..., object], tuple[Any, ...]]
TrainerProvider = Callable[[TaskSpec, tuple[int, ...], int, PrivacySettings | None], Trainer]
PENDING_VOTE_WAIT_S = 10.0
SYNC_INTERVAL_S = 5.0
SYNC_OVERLAP = 4  # a sync asks for a few blocks below the head too, so a fork below it is seen
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
            broker_address(config),
            self._enqueue,
            [
                self.topics.all_tasks(),
                self.topics.block(self.replica.state.chain_id),
                self.topics.sync_blocks(self.replica.state.chain_id, self.node_id),
            ],
            status_topic=self.topics.status(self.node_id),
            persistent=True,
        )
        self.rng = np.random.default_rng(zlib.crc32(self.node_id.encode()) + config.seed)
        self.task: TaskSpec | None = None
        self.task_raw = b""
        self.status = "idle"
        self.round = 0
        self.roster: list[str] = []
        self.assignment: dict[str, list[str]] = {}
        self.updates: dict[int, dict[str, tuple[str, bytes]]] = {}  # round -> node -> (digest, blob)
        # round -> digest -> raw envelope, for every transaction a round block may need (votes, records)
        self.round_txs: dict[int, dict[str, bytes]] = {}
        self.pending_manifest: Envelope | None = None
        self.pending_results: dict[int, tuple[Envelope, int]] = {}  # round -> (result, my PoQ rank)
        self.sent: dict[tuple[str, int], bytes] = {}  # (update|vote, round) -> what we published, to re-send
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

    def publish_metrics(self, sample: Sample) -> Sample:
        """One psutil sample of this agent's process with its own ledger CPU, signed, on its metrics topic
        (QoS 0); returns that sample."""
        own = sample.with_ledger_cpu(self.replica.cpu_s)
        self.bus.publish(self.topics.metrics(self.node_id), own.sealed(self.identity), qos=0)
        return own

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
        if round_no < self.round:
            self.intake.reject(Rejected("wrong-round", f"global model for old round {round_no}"), topic)
            return
        env = self._from_coordinator(topic, round_no, payload)
        if env is None:
            return
        if round_no == self.round:  # asked again: our update was lost on the way
            self._send_again("update", env)
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
        self.round_txs = {r: v for r, v in self.round_txs.items() if r >= round_no}
        self.sent = {k: v for k, v in self.sent.items() if k[1] >= round_no}
        self.pending_results = {r: p for r, p in self.pending_results.items() if r >= round_no - 1}
        self.pending_manifest = None
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
        self.sent[("update", round_no)] = update.raw
        self.bus.publish(self.topics.update(self.task.task_id, round_no, self.node_id), update.raw)
        log.info(
            "%s: round %d update sent (%d bytes, epsilon spent %s)",
            self.node_id,
            round_no,
            len(update.raw),
            body["epsilon_spent"],
        )

    def _send_again(self, kind: str, request: Envelope) -> None:
        """Publish our ``kind`` message of the request's round again, the same bytes, when it names us."""
        assert self.task is not None
        raw = self.sent.get((kind, request.round))
        if raw is None or self.node_id not in request.body.get("resend_to", []):
            return
        topic = (self.topics.update if kind == "update" else self.topics.vote)(
            self.task.task_id, request.round, self.node_id
        )
        self.bus.publish(topic, raw, wait=None)
        log.info("%s: round %d %s sent again (the coordinator asked)", self.node_id, request.round, kind)

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
        if ("vote", round_no) in self.sent:  # asked again: our vote was lost on the way
            self._send_again("vote", env)
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
        self.round_txs.setdefault(self.round, {})[vote.digest] = vote.raw
        self.sent[("vote", self.round)] = vote.raw
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
        self._keep_round_tx(round_no, env.digest, payload)

    def _keep_round_tx(self, round_no: int, digest: str, raw: bytes) -> None:
        self.round_txs.setdefault(round_no, {})[digest] = raw
        if round_no in self.pending_results:
            self._try_propose(round_no, final=False)

    def on_result(self, topic: str, round_no: int, _sender: str | None, payload: bytes) -> None:
        env = self._from_coordinator(topic, round_no, payload)
        if env is None:
            return
        if env.type in ("reward", "final"):  # the round's records, published just before its result
            self._keep_round_tx(round_no, env.digest, payload)
            return
        if env.type == "want-block":  # the coordinator lacks the round's block: whoever holds it sends it
            block = self.replica.round_block(env.task, round_no)
            if block is not None:
                self.bus.publish(self.topics.block(self.replica.state.chain_id), block.raw, wait=None)
            return
        if env.type == "abort":  # the coordinator ended the task without committing this round
            log.warning("%s: task aborted in round %d: %s", self.node_id, round_no, env.body.get("reason"))
            self.status = "done" if self.status != "eliminated" else self.status
            return
        if env.type != "result":
            return
        assert self.task is not None
        body = env.body
        if body.get("eliminated") == self.node_id or self.node_id in body.get("invalid", {}):
            self.status = "eliminated"
            log.info("%s: eliminated in round %d", self.node_id, round_no)
        if body.get("final"):
            self.status = "done" if self.status != "eliminated" else self.status
        eligible = eligible_proposers(list(body.get("ranking", [])), self.replica.state.excluded)
        if self.node_id not in eligible[: self.task.proposer_fallbacks + 1]:
            return
        rank = eligible.index(self.node_id)
        if rank == 0:
            self._start_proposal(env, rank)
        else:  # stand in for a silent proposer after ``rank`` timeouts, unless the block came meanwhile
            self._later(rank * self.task.block_timeout_s, self._start_proposal, env, rank)

    def _start_proposal(self, result: Envelope, rank: int) -> None:
        assert self.task is not None
        if self.replica.has_round(self.task.task_id, result.round):
            return
        self.pending_results[result.round] = (result, rank)
        self._now_or_later(lambda final: self._try_propose(result.round, final))

    def _try_propose(self, round_no: int, final: bool) -> bool:
        """As the node at PoQ place ``rank``, pack the round's transactions into the next block.
        Returns False while it is still waiting for the listed votes and records."""
        assert self.task is not None
        if round_no not in self.pending_results:
            return True
        if self.replica.has_round(self.task.task_id, round_no):
            del self.pending_results[round_no]
            return True
        result, rank = self.pending_results[round_no]
        votes, records = list(result.body.get("votes", [])), list(result.body.get("records", []))
        have = self.round_txs.get(round_no, {})
        missing = [d for d in votes + records if d not in have]
        if missing and not final:
            return False
        del self.pending_results[round_no]
        if missing:
            log.error(
                "%s: cannot propose round %d: %d listed transactions never arrived",
                self.node_id,
                round_no,
                len(missing),
            )
            return True
        if rank == 0 and self.behaviour == "dies-at-proposal":
            log.warning("%s: dying at proposal time (behaviour dies-at-proposal)", self.node_id)
            os.kill(os.getpid(), signal.SIGKILL)
        txs = [] if self.task.task_id in self.replica.state.tasks else [self.task_raw]
        txs += [have[d] for d in sorted(votes)] + [result.raw] + [have[d] for d in sorted(records)]
        txs += [
            seal(self.identity, "evidence", self.task.task_id, round_no, e.evidence_body()).raw
            for e in self.replica.pending_evidence()
        ]
        self._propose(round_no, rank, txs)
        return True

    def _propose(self, round_no: int, rank: int, txs: list[bytes]) -> None:
        """Sign a block of ``txs`` on this replica's head, append it here and publish it."""
        assert self.task is not None
        block = build_block(
            self.identity, self.replica.height + 1, self.replica.head_hash, self.task.task_id, round_no, txs, rank=rank
        )
        try:
            self.replica.append(block.raw)
        except LedgerError as exc:
            log.error("%s: own block for round %d does not validate: %s", self.node_id, round_no, exc)
            return
        topic = self.topics.block(self.replica.state.chain_id)
        self.bus.publish(topic, block.raw)
        log.info("%s: proposed block %d for round %d (PoQ rank %d)", self.node_id, block.height, round_no, rank)
        if self.behaviour == "equivocate":
            twin = build_block(
                self.identity, block.height, block.prev_hash, block.task, round_no, txs, ts=block.ts + 0.001, rank=rank
            )
            self.bus.publish(topic, twin.raw)
            log.warning("%s: equivocated: a second block %s… at height %d", self.node_id, twin.hash[:12], twin.height)

    def _repropose_orphans(self, orphaned: tuple[Block, ...]) -> None:
        """Blocks of mine that a fork switch left off the main chain, for rounds it lacks: propose again."""
        for block in orphaned:
            if block.proposer == self.node_id and not self.replica.has_round(block.task, block.round):
                self._propose(block.round, block.rank, list(block.txs))

    # the chain
    def request_sync(self) -> None:
        """Ask for the blocks after this replica's head (at most once every SYNC_INTERVAL_S)."""
        now = time.monotonic()
        if now - self._last_sync_request < SYNC_INTERVAL_S:
            return
        self._last_sync_request = now
        chain = self.replica.state.chain_id
        start = max(1, self.replica.height + 1 - SYNC_OVERLAP)
        env = seal(self.identity, "sync", "", 0, {"from": start})
        self.bus.publish(self.topics.sync_request(chain, self.node_id), env.raw, wait=None)
        log.info("%s: asked for blocks from height %d", self.node_id, start)

    def on_block(self, payload: bytes, synced: bool = False) -> None:
        """Verify and append a block. A block beyond the head means this replica is behind: it is kept
        (bounded) until the gap is filled by range sync, and then appended in order."""
        try:
            appended = self.replica.append(payload)
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
        if appended is not None:
            log.debug("%s: block %d %s%s", self.node_id, appended.block.height, appended.status, " (sync)" * synced)
            self._repropose_orphans(appended.orphaned)
            next_block = self._future_blocks.pop(self.replica.height + 1, None)
            self._future_blocks = {h: b for h, b in self._future_blocks.items() if h > self.replica.height}
            if next_block is not None:
                self.on_block(next_block, synced=True)
