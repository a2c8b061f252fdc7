"""The aggregation server process: its broker connection, chain node and run folder; it waits for a
task that names it and runs it (``coordinator.task_runner``).

Network callbacks only enqueue; ``pump`` pulls messages with deadlines, so an agent that vanishes
mid-round costs a deadline, never a hang. Chain messages go to the chain node, metrics and the
broker's traffic counters to the run's time series, a task's messages to its collector.
"""

from __future__ import annotations

import logging
import queue
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from bpcv.config import CoordinatorConfig, broker_address
from bpcv.envelope import decode
from bpcv.errors import BpcvError, Rejected
from bpcv.exporter import exporter_for
from bpcv.identity import ROLES, Identity
from bpcv.intake import Intake, stale_task
from bpcv.messages import RoundTimes, Sample, read
from bpcv.mqtt import Bus
from bpcv.sampler import Sampler
from bpcv.topics import BROKER_BYTES, Topics, broker_counter
from coordinator.checkpoint import Checkpoint
from coordinator.collector import RoundCollector
from coordinator.summary import TaskSummary
from coordinator.task_runner import TaskRunner
from coordinator.timeseries import TimeSeries
from ledger.node import ChainNode
from ledger.replica import Replica

log = logging.getLogger(__name__)
EARLY_JOINS_KEPT = 4096  # joins to a task whose runner has not started yet (the oldest go first)
RESEND_S = 8.0  # while a round waits, how often the coordinator asks again for what is missing
RESEND_DEFER_S = 3 * RESEND_S  # how long at most asking again waits for the inbox to drain


class Coordinator:
    """Serves tasks that name this node as their coordinator."""

    def __init__(self, config: CoordinatorConfig) -> None:
        self.config = config
        self.identity = Identity.load(Path(config.key))
        replica = Replica.open(config.chain_dir, Path(config.genesis).read_bytes())
        member = replica.state.registry.get(self.identity.node_id)
        if member is None or member.role != "coordinator":
            replica.close()
            raise BpcvError(f"{self.identity.node_id} is not registered as a coordinator on this chain")
        self.topics = Topics(config.base_topic)
        self.intake = Intake(replica.state.registry, self.identity.node_id)
        self.chain = ChainNode(
            replica, self.topics, lambda: self.bus, identity=self.identity, intake=self.intake, answers_sync=True
        )
        self.run_dir = Path(config.run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.checkpoint = Checkpoint(self.run_dir / "checkpoint")
        self.timeseries = TimeSeries(self.run_dir / "metrics.sqlite")
        self.exporter = exporter_for([config.prometheus])
        self._inbox: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.bus = Bus(
            self.identity.node_id,
            broker_address(config),
            lambda t, p: self._inbox.put((t, p)),
            [
                self.topics.all_tasks(),
                self.topics.all_joins("+"),  # from the start: an agent may join before a task's runner starts
                self.topics.all_metrics(),
                *BROKER_BYTES,
                *self.chain.subscriptions(),
            ],
            status_topic=self.topics.status(self.identity.node_id),
            persistent=True,
        )
        self.collector: RoundCollector | None = None  # the running task's, while one runs
        self.early_joins: deque[tuple[str, list[str], bytes]] = deque(maxlen=EARLY_JOINS_KEPT)  # task not running yet

    @property
    def replica(self) -> Replica:
        return self.chain.replica

    # the message pump
    def pump(self, done: Callable[[], bool], timeout: float, resend: Callable[[], None] | None = None) -> bool:
        """Handle messages until ``done()`` or ``timeout`` seconds pass; returns ``done()``. While it waits,
        ``resend()`` runs every RESEND_S: asking again for what has not come (a lost message, a broker
        restart, a node that reconnected late). It waits until every message received is handled (what
        waits in the inbox has come, and asking a large fleet to send it again only adds to the queue: at
        N = 200 on two cores re-sent updates piled up faster than they were read), but never more than
        three intervals, so a steady stream of metrics cannot hold it off."""
        deadline = time.monotonic() + timeout
        next_resend = time.monotonic() + RESEND_S
        while not done():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            now = time.monotonic()
            if resend is not None and now >= next_resend and (self._inbox.empty() or now >= next_resend + RESEND_DEFER_S):
                resend()
                next_resend = time.monotonic() + RESEND_S
            try:
                topic, payload = self._inbox.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                continue
            self.handle(topic, payload)
        return True

    def handle(self, topic: str, payload: bytes) -> None:
        """One received message, by its topic. A bad message is logged and counted, never raised."""
        try:
            self._dispatch(topic, payload)
        except Exception:  # a bad message must never stop the coordinator
            log.exception("handling a message on %s failed", topic)

    def _dispatch(self, topic: str, payload: bytes) -> None:
        if (counter := broker_counter(topic)) is not None:
            self._on_broker_bytes(counter, payload)
            return
        levels = self.topics.parse(topic)
        if self.chain.handle(topic, levels, payload):
            return
        if levels[0] == "nodes" and len(levels) == 3 and levels[2] == "metrics":
            self._on_metrics(topic, levels[1], payload)
        elif levels[0] == "tasks" and len(levels) == 4 and levels[2] == "join" and not self._running(levels[1]):
            self.early_joins.append((topic, levels, payload))  # checked (signature, sender) when its task runs
        elif self.collector is not None:
            self.collector.handle(topic, levels, payload)

    def _running(self, task_id: str) -> bool:
        return self.collector is not None and self.collector.task.task_id == task_id

    def take_early_joins(self, task_id: str) -> list[tuple[str, list[str], bytes]]:
        """The joins to ``task_id`` that came before its runner started (topic, levels, payload)."""
        taken = [join for join in self.early_joins if join[1][1] == task_id]
        kept = [join for join in self.early_joins if join[1][1] != task_id]
        self.early_joins = deque(kept, maxlen=EARLY_JOINS_KEPT)
        return taken

    def _on_metrics(self, topic: str, node: str, payload: bytes) -> None:
        """A node's psutil sample or an agent's round breakdown (its own, signed) into the run's time series."""
        env = self.intake.open(payload, ROLES, topic, topic_sender=node)
        if env is None or env.type not in (Sample.KIND, RoundTimes.KIND):
            return
        try:
            if env.type == Sample.KIND:
                self.timeseries.add_sample(node, read(env, Sample))
            else:
                self.timeseries.add_round_times(node, read(env, RoundTimes))
        except Rejected as exc:
            self.intake.reject(exc, topic)

    def _on_broker_bytes(self, counter: str, payload: bytes) -> None:
        """The broker's cumulative traffic counter (published by the broker itself, not by a member)."""
        if counter in ("received", "sent") and payload.isdigit() and len(payload) < 20:
            self.timeseries.add_broker_bytes(time.time(), counter, int(payload))

    def publish(self, topic: str, raw: bytes, wait: float | None = 30.0) -> None:
        self.bus.publish(topic, raw, wait=wait)

    def _publish_metrics(self, sample: Sample) -> None:
        own = sample.of_replica(self.replica.cpu_s, self.replica.height)
        if self.exporter is not None:
            self.exporter.observe(self.identity.node_id, own)
        self.bus.publish(self.topics.metrics(self.identity.node_id), own.sealed(self.identity), qos=0)

    # the task
    def serve(self) -> TaskSummary:
        """Connect, wait for a task naming this coordinator, run it, return its summary."""
        self.bus.connect()
        sampler = Sampler(self._publish_metrics)
        sampler.start()
        log.info(
            "%s: waiting for a task (chain %s, height %d)",
            self.identity.node_id,
            self.replica.state.chain_id,
            self.replica.height,
        )
        try:
            runner = self.resume_from_checkpoint()
            if runner is not None:
                return runner()
            while True:
                topic, payload = self._inbox.get()
                levels = () if broker_counter(topic) is not None else self.topics.parse(topic)
                if not (levels and levels[0] == "tasks" and len(levels) == 2):
                    self.handle(topic, payload)  # blocks, sync requests, metrics, traffic: also between tasks
                    continue
                runner = self.runner_for(topic, payload)
                if runner is not None:
                    return runner()
        finally:
            sampler.stop()
            if self.exporter is not None:
                self.exporter.close()
            self.bus.close()

    def resume_from_checkpoint(self) -> Callable[[], TaskSummary] | None:
        """A task this coordinator was running when it stopped, resumed from its checkpoint without waiting
        for the broker's retained announcement (a restarted broker may have lost it): the announcement the
        checkpoint kept is checked again. While the coordinator runs a task it publishes the announcement
        again, retained, whenever it reconnects, so that agents restarting after a broker that lost its
        store find the task."""
        raw = self.checkpoint.load_announcement()
        if raw is None:
            return None
        try:
            task_id = decode(raw).task
        except Rejected as exc:
            log.warning(
                "%s: the checkpoint's task announcement is unreadable (%s); waiting for a task",
                self.identity.node_id,
                exc,
            )
            return None
        saved = self.checkpoint.load()
        if saved is not None and saved[0].task_id == task_id and saved[0].stopped_because:
            return None  # it ended
        runner = self.runner_for(self.topics.task(task_id), raw)  # resumed, or started again (no roster yet)
        if runner is not None:
            log.info("%s: task %s taken up again from the checkpoint", self.identity.node_id, task_id)
        return runner

    def runner_for(self, topic: str, payload: bytes) -> Callable[[], TaskSummary] | None:
        """What to run for a task announcement: the task resumed from this coordinator's checkpoint, or
        started afresh; None (with a log line) for one that is not ours, already on the chain, or stale."""
        if not payload:  # a withdrawn task
            return None
        opened = self.intake.open_task(payload, topic, refuse_stale=False)  # a checkpoint may resume it
        if opened is None:
            return None
        env, task = opened
        if task.coordinator != self.identity.node_id or (self.config.task and task.task_id != self.config.task):
            return None
        saved = self.checkpoint.load()
        if saved is not None and saved[0].task_id == task.task_id and not saved[0].stopped_because:
            self.bus.keep_retained(topic, payload)  # a broker that restarts empty gets it back
            return lambda: TaskRunner(self, task).run(resume=saved)
        if (why := stale_task(env, task, time.time())) is not None:
            log.warning("%s: %s", self.identity.node_id, why)
            return None
        if any(t == task.task_id for t, _ in self.replica.state.rounds):
            log.info("task %s is already on the chain; ignoring", task.task_id)
            return None
        initial = env.blobs[0] if len(env.blobs) == 1 else None  # the requester's weights
        self.checkpoint.save_announcement(payload)
        self.bus.keep_retained(topic, payload)
        return lambda: TaskRunner(self, task, initial_weights=initial).run()

    def close(self) -> None:
        self.replica.close()
        self.checkpoint.close()
        self.timeseries.close()
