"""The aggregation server: runs a task's rounds over MQTT and records what happened.

Network callbacks only enqueue; the round loop pulls messages with deadlines, so an agent that
vanishes mid-round costs a deadline, never a hang.
"""

from __future__ import annotations

import json
import logging
import queue
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from bpcv.codec import decode_model, encode_model, model_digest
from bpcv.config import CoordinatorConfig, broker_address
from bpcv.data import load_dataset
from bpcv.envelope import Envelope, seal
from bpcv.errors import BpcvError, Rejected
from bpcv.exporter import exporter_for
from bpcv.identity import ROLES, Identity
from bpcv.intake import Intake
from bpcv.metrics import predict, score
from bpcv.models import build_model, configure_tensorflow
from bpcv.mqtt import Bus
from bpcv.poq import higher_is_better
from bpcv.sampler import Sample, Sampler
from bpcv.task import TaskSpec
from bpcv.topics import BROKER_BYTES, BROKER_BYTES_PREFIX, Topics
from coordinator.aggregate import fedavg
from coordinator.checkpoint import Checkpoint, RunState
from coordinator.timeseries import TimeSeries
from coordinator.rounds import RoundOutcome, decide_round
from ledger.errors import LedgerError, UnknownParent
from ledger.replica import Replica
from ledger.sync import blocks_from
from ledger.validate import vote_scores

log = logging.getLogger(__name__)
FINAL_LINGER_S = 2.0
RESEND_S = 8.0  # while a round waits, how often the coordinator asks again for what is missing


class Coordinator:
    """Serves tasks that name this node as their coordinator."""

    def __init__(self, config: CoordinatorConfig) -> None:
        self.config = config
        self.identity = Identity.load(Path(config.key))
        self.node_id = self.identity.node_id
        self.replica = Replica.open(config.chain_dir, Path(config.genesis).read_bytes())
        self.registry = self.replica.state.registry
        member = self.registry.get(self.node_id)
        if member is None or member.role != "coordinator":
            raise BpcvError(f"{self.node_id} is not registered as a coordinator on this chain")
        self.topics = Topics(config.base_topic)
        self.intake = Intake(self.registry, self.node_id)
        self.run_dir = Path(config.run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.checkpoint = Checkpoint(self.run_dir / "checkpoint")
        self.timeseries = TimeSeries(self.run_dir / "metrics.sqlite")
        self.exporter = exporter_for([config.prometheus])
        self._inbox: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.bus = Bus(
            self.node_id,
            broker_address(config),
            lambda t, p: self._inbox.put((t, p)),
            [
                self.topics.all_tasks(),
                self.topics.block(self.replica.state.chain_id),
                self.topics.all_sync_requests(self.replica.state.chain_id),
                self.topics.all_metrics(),
                BROKER_BYTES,
            ],
            status_topic=self.topics.status(self.node_id),
            persistent=True,
        )
        # per-task state
        self.task: TaskSpec | None = None
        self.round = 0
        self.joins: dict[str, tuple[float, int]] = {}
        self.roster: list[str] = []
        self.valid: dict[str, tuple[str, list[np.ndarray]]] = {}
        self.invalid: dict[str, str] = {}
        self.manifest: dict[str, str] = {}
        self.votes: dict[str, Envelope] = {}
        self.shapes: list[tuple[int, ...]] = []
        self.block_rejections: Counter[str] = Counter()
        self.left: dict[str, str] = {}  # node -> reason it left the task (e.g. privacy budget spent)
        self.dropped: set[str] = set()  # nodes that missed a round (crashed, lost the network)
        self.rejoined: list[str] = []  # dropped nodes that joined again, to go back to standby
        self.privacy: dict[str, dict[str, Any]] = {}  # node -> privacy claims at join + epsilon spent
        self._round_records: list[bytes] = []  # this round's reward/final records and result, as published

    # message pump
    def _pump(self, done: Callable[[], bool], timeout: float, resend: Callable[[], None] | None = None) -> bool:
        """Handle messages until ``done()`` or ``timeout`` seconds pass; returns ``done()``. While it waits,
        ``resend()`` runs every RESEND_S: asking again for what has not come (a lost message, a broker
        restart, a node that reconnected late)."""
        deadline = time.monotonic() + timeout
        next_resend = time.monotonic() + RESEND_S
        while not done():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if resend is not None and time.monotonic() >= next_resend:
                resend()
                next_resend = time.monotonic() + RESEND_S
            try:
                topic, payload = self._inbox.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                continue
            try:
                self._dispatch(topic, payload)
            except Exception:  # a bad message must never stop the coordinator
                log.exception("handling a message on %s failed", topic)
        return True

    def _dispatch(self, topic: str, payload: bytes) -> None:
        if topic.startswith(BROKER_BYTES_PREFIX):
            self._on_broker_bytes(topic, payload)
            return
        levels = self.topics.parse(topic)
        if levels[0] == "chain":
            self._on_chain(topic, levels, payload)
            return
        if levels[0] == "nodes" and len(levels) == 3 and levels[2] == "metrics":
            self._on_metrics(topic, levels[1], payload)
            return
        if self.task is None or levels[0] != "tasks" or len(levels) < 4 or levels[1] != self.task.task_id:
            return
        if levels[2] == "join":
            self._on_join(topic, levels[3], payload)
        elif levels[2] == "round" and len(levels) == 6:
            try:
                round_no = int(levels[3])
            except ValueError:
                self.intake.reject(Rejected("malformed", "round is not a number"), topic)
                return
            if levels[4] == "update":
                self._on_update(topic, round_no, levels[5], payload)
            elif levels[4] == "vote":
                self._on_vote(topic, round_no, levels[5], payload)

    def _on_chain(self, topic: str, levels: tuple[str, ...], payload: bytes) -> None:
        if len(levels) == 3 and levels[2] == "block":
            self._on_block(payload)
        elif len(levels) == 4 and levels[2] == "sync":
            self._on_sync_request(topic, levels[3], payload)

    def _on_metrics(self, topic: str, node: str, payload: bytes) -> None:
        """A node's psutil sample (its own, signed) into the run's time series."""
        env = self.intake.open(payload, ROLES, topic, topic_sender=node)
        if env is None or env.type != "metrics":
            return
        try:
            self.timeseries.add_sample(node, Sample.from_body(env.body))
        except ValueError as exc:
            self.intake.reject(Rejected("malformed", f"metrics of {node}: {exc}"), topic)

    def _on_broker_bytes(self, topic: str, payload: bytes) -> None:
        """The broker's cumulative traffic counter (published by the broker itself, not by a member)."""
        counter = topic[len(BROKER_BYTES_PREFIX) :]
        if counter in ("received", "sent") and payload.isdigit() and len(payload) < 20:
            self.timeseries.add_broker_bytes(time.time(), counter, int(payload))

    def _on_sync_request(self, topic: str, node: str, payload: bytes) -> None:
        """Answer a replica that is behind with the blocks it asks for (it re-verifies each one)."""
        env = self.intake.open(payload, ("agent", "coordinator", "requester", "admin"), topic, topic_sender=node)
        if env is None:
            return
        start = env.body.get("from")
        if not isinstance(start, int) or start < 1:
            self.intake.reject(Rejected("malformed", f"sync request from {node} without a valid 'from'"), topic)
            return
        blocks = blocks_from(self.replica, start)
        for raw in blocks:
            self.bus.publish(self.topics.sync_blocks(self.replica.state.chain_id, node), raw, wait=None)
        log.info("sync: sent %d blocks from height %d to %s", len(blocks), start, node)

    def _on_block(self, payload: bytes) -> None:
        try:
            self.replica.append(payload)
        except UnknownParent as exc:
            log.warning("block out of order: %s", exc)
            self.block_rejections["block-out-of-order"] += 1
        except LedgerError as exc:
            self.intake.reject(Rejected("invalid-block", str(exc)), "block")

    def _on_join(self, topic: str, node: str, payload: bytes) -> None:
        assert self.task is not None
        env = self.intake.open(payload, ("agent",), topic, task=self.task.task_id, topic_sender=node)
        if env is not None and env.type == "leave":
            self._on_leave(node, env)
            return
        if env is None:
            return
        if node in self.joins:
            if node in self.dropped and node not in self.rejoined:
                self.rejoined.append(node)
                log.info("%s joined again after dropping out: back to standby", node)
            return
        samples = env.body.get("num_samples")
        if not isinstance(samples, int) or samples < 1:
            self.intake.reject(Rejected("malformed", f"join of {node} without a positive sample count"), topic)
            return
        self.joins[node] = (time.monotonic(), samples)
        claims = env.body.get("privacy")
        self.privacy[node] = dict(claims) if isinstance(claims, dict) else {"mechanism": "unknown"}

    def _on_leave(self, node: str, env: Envelope) -> None:
        """A node stops contributing (e.g. its privacy budget is spent): leaving, not misbehaving."""
        reason = str(env.body.get("reason", "unspecified"))[:100]
        self.left[node] = reason
        self._record_epsilon(node, env.body.get("epsilon_spent"))
        log.info("%s left the task: %s", node, reason)

    def _record_epsilon(self, node: str, value: object) -> None:
        if isinstance(value, (int, float)) and node in self.privacy:
            self.privacy[node]["epsilon_spent"] = float(value)

    def _open_round_message(self, topic: str, round_no: int, node: str, payload: bytes) -> Envelope | None:
        """An agent's signed message for the current round, published on its own topic; else None."""
        assert self.task is not None
        env = self.intake.open(
            payload, ("agent",), topic, task=self.task.task_id, round_no=self.round, topic_sender=node
        )
        return env if env is not None and round_no == self.round else None

    def _on_update(self, topic: str, round_no: int, node: str, payload: bytes) -> None:
        env = self._open_round_message(topic, round_no, node, payload)
        if env is None:
            return
        if node not in self.roster:
            self.intake.reject(Rejected("not-in-roster", f"update from {node}"), topic)
            return
        if node in self.valid or node in self.invalid:
            self.intake.reject(Rejected("duplicate-update", node), topic)
            return
        try:
            if len(env.blobs) != 1 or model_digest(env.blobs[0]) != env.body.get("digest"):
                raise Rejected("digest-mismatch", f"update of {node}")
            weights = decode_model(env.blobs[0], self.shapes)
        except Rejected as exc:
            self.invalid[node] = exc.reason
            self.intake.reject(exc, topic)
            return
        self.valid[node] = (env.body["digest"], weights)
        self._record_epsilon(node, env.body.get("epsilon_spent"))

    def _on_vote(self, topic: str, round_no: int, node: str, payload: bytes) -> None:
        env = self._open_round_message(topic, round_no, node, payload)
        if env is None:
            return
        try:
            if node not in self.valid:
                raise Rejected("not-a-voter", f"{node} has no accepted update this round")
            if node in self.votes:
                raise Rejected("duplicate-vote", node)
            if not self.manifest:
                raise Rejected("early-vote", f"{node} voted before the manifest")
            scores = vote_scores(env, self.registry)
            digests = env.body.get("digests", {})
            for target in scores:
                if target == node or target not in self.manifest or digests.get(target) != self.manifest[target]:
                    raise Rejected("vote-off-manifest", f"{node} scored {target} outside the manifest")
        except Rejected as exc:
            self.intake.reject(exc, topic)
            return
        self.votes[node] = env

    # the task
    def serve(self) -> dict[str, Any]:
        """Connect, wait for a task naming this coordinator, run it, return its summary."""
        self.bus.connect()
        sampler = Sampler(self._publish_metrics)
        sampler.start()
        log.info(
            "%s: waiting for a task (chain %s, height %d)",
            self.node_id,
            self.replica.state.chain_id,
            self.replica.height,
        )
        try:
            while True:
                topic, payload = self._inbox.get()
                if topic.startswith(BROKER_BYTES_PREFIX) or self.topics.parse(topic)[0] in ("chain", "nodes"):
                    self._dispatch(topic, payload)  # blocks, sync requests, metrics, traffic: also between tasks
                    continue
                levels = self.topics.parse(topic)
                if levels[0] == "tasks" and len(levels) == 2 and payload:
                    opened = self.intake.open_task(payload, topic)
                    if opened is None:
                        continue
                    task = opened[1]
                    if task.coordinator != self.node_id or (self.config.task and task.task_id != self.config.task):
                        continue
                    saved = self.checkpoint.load()
                    if saved is not None and saved[0].task_id == task.task_id and not saved[0].stopped_because:
                        return self.run(task, resume=saved)
                    if any(t == task.task_id for t, _ in self.replica.state.rounds):
                        log.info("task %s is already on the chain; ignoring", task.task_id)
                        continue
                    return self.run(task)
        finally:
            sampler.stop()
            if self.exporter is not None:
                self.exporter.close()
            self.bus.close()

    def run(self, task: TaskSpec, resume: tuple[RunState, bytes] | None = None) -> dict[str, Any]:
        """Run every round of ``task`` (or the rest of it, from a checkpoint); write the final model and
        coordinator.json into the run folder."""
        self.task = task
        for topic in (
            self.topics.all_joins(task.task_id),
            self.topics.all_updates(task.task_id),
            self.topics.all_votes(task.task_id),
        ):
            self.bus.subscribe(topic)
        if resume is None:
            formed = self._form_roster(task)
            if isinstance(formed, str):
                return self._finish({"task": task.to_body(), "rounds": [], "nodes": {}, "error": formed}, None)
            state = formed
        else:
            state = resume[0]
            log.info("task %s: resuming after round %d (%s)", task.task_id, state.round, state.phase)
        self.joins = {n: (float(order), samples) for n, (order, samples) in state.joins.items()}
        self.roster, self.left, self.dropped, self.privacy = state.roster, state.left, set(state.dropped), state.privacy
        started = time.monotonic() - state.elapsed_s

        configure_tensorflow(2)
        dataset = load_dataset(task.dataset, self.config.data_path or None)
        model = build_model(task.model, dataset.input_shape, dataset.num_classes, seed=0)
        weights = [np.asarray(w, dtype=np.float32) for w in model.get_weights()]
        self.shapes = [tuple(w.shape) for w in weights]
        if resume is not None:
            weights = decode_model(resume[1], self.shapes)

        def evaluate(ws: list[np.ndarray]) -> float:
            model.set_weights(ws)
            return score(predict(model, dataset.x_test), dataset.y_test, task.metric)

        def save() -> None:
            state.elapsed_s = time.monotonic() - started
            state.dropped = sorted(self.dropped)
            self.checkpoint.save(state, encode_model(weights))

        save()
        if state.phase == "decided":  # the previous process published the result, then died
            self._round_records = [bytes.fromhex(h) for h in state.round_records]
            self.round = state.round
            self._close_round(state, weights, started)
            save()
        for round_no in range(state.round + 1, task.rounds + 1):
            if state.stopped_because:
                break
            for node in self.rejoined:
                self.dropped.discard(node)
                state.standby.append(node)
                state.status[node] = "standby"
            self.rejoined.clear()
            outcome, blob = self._run_round(round_no, weights, state.standby)
            if len(self.valid) < task.min_nodes:  # quorum lost: nothing of this round is committed
                state.aborted_round = self._abort(round_no, len(self.valid))
                state.stopped_because = state.aborted_round["reason"]
                state.final_digest = model_digest(blob)  # the last committed global model stays the model
                (self.run_dir / "final_model.bpmt").write_bytes(blob)
                save()
                break
            if outcome.aggregated:
                weights = fedavg(
                    [self.valid[n][1] for n in outcome.aggregated], [self.joins[n][1] for n in outcome.aggregated]
                )
            metric_value = evaluate(weights)
            state.pending_stop = self._stop_reason(task, round_no, metric_value, started, outcome)
            global_digest = model_digest(encode_model(weights))
            self._publish_result(round_no, outcome, metric_value, global_digest, state.pending_stop is not None)
            self._apply_outcome(state, outcome)
            state.round, state.phase = round_no, "decided"
            self.timeseries.add_event(time.time(), round_no, "decided", {task.metric: round(metric_value, 6)})
            state.round_records = [raw.hex() for raw in self._round_records]
            state.pending_row = self._row(task, round_no, outcome, metric_value)
            save()
            self._close_round(state, weights, started)
            save()
        summary: dict[str, Any] = {"task": task.to_body(), "rounds": state.rows}
        summary["stopped_because"] = state.stopped_because
        if state.aborted_round:
            summary["aborted_round"] = state.aborted_round
        summary[f"final_{task.metric}"] = state.rows[-1][task.metric] if state.rows else None
        summary["final_model_digest"] = state.final_digest
        summary["nodes"] = {
            n: {
                "status": state.status[n],
                "reward": state.rewards[n],
                "num_samples": self.joins[n][1],
                "left_because": self.left.get(n),
                "privacy": self.privacy.get(n, {}),
            }
            for n in sorted(state.status)
        }
        return self._finish(summary, started)

    def _form_roster(self, task: TaskSpec) -> RunState | str:
        """Wait for joins; the fastest ``task.nodes`` are active, the rest standby. Why not, if too few joined."""
        log.info("task %s: waiting for %d nodes to join", task.task_id, task.nodes)
        self._pump(lambda: len(self.joins) >= task.nodes, task.join_timeout_s)
        self._pump(lambda: False, task.join_window_s)
        by_speed = sorted(self.joins, key=lambda n: (self.joins[n][0], n))
        if len(by_speed) < max(2, task.min_nodes):
            error = f"only {len(by_speed)} nodes joined, {max(2, task.min_nodes)} needed"
            log.error("task %s: %s", task.task_id, error)
            return error
        roster = sorted(by_speed[: task.nodes])
        log.info("task %s: roster %s, standby %s", task.task_id, roster, by_speed[task.nodes :])
        return RunState(
            task_id=task.task_id,
            joins={n: [i, self.joins[n][1]] for i, n in enumerate(by_speed)},
            roster=roster,
            standby=by_speed[task.nodes :],
            status={n: "active" if n in roster else "standby" for n in by_speed},
            rewards={n: 0.0 for n in by_speed},
            privacy=self.privacy,
            left=self.left,
        )

    @staticmethod
    def _stop_reason(task: TaskSpec, round_no: int, value: float, started: float, outcome: RoundOutcome) -> str | None:
        """Why the task stops after this round, or None to go on."""
        if task.target is not None and (
            value >= task.target if higher_is_better(task.metric) else value <= task.target
        ):
            return "target"
        if time.monotonic() - started >= task.time_limit_s:
            return "time limit"
        if round_no == task.rounds:
            return "round limit"
        return "too few nodes" if len(outcome.next_roster) < 2 else None

    def _apply_outcome(self, state: RunState, outcome: RoundOutcome) -> None:
        """Statuses, standby queue, roster and rewards after a decided round."""
        state.standby = [n for n in state.standby if n not in outcome.admitted]
        self.dropped.update(n for n in outcome.dropped if n not in self.left)
        for node in outcome.dropped:
            state.status[node] = "left" if node in self.left else "dropped"
        for node in self.left:
            if state.status.get(node) == "standby":
                state.status[node] = "left"
        for node in list(outcome.invalid) + ([outcome.eliminated] if outcome.eliminated else []):
            state.status[node] = "eliminated"
        for node in outcome.admitted:
            state.status[node] = "active"
        for node, amount in outcome.rewards.items():
            state.rewards[node] = round(state.rewards[node] + amount, 6)
        self.roster = state.roster = outcome.next_roster

    def _row(self, task: TaskSpec, round_no: int, outcome: RoundOutcome, value: float) -> dict[str, Any]:
        return {
            "round": round_no,
            task.metric: round(value, 6),
            "eliminated": outcome.eliminated,
            "eliminated_reason": outcome.eliminated_reason,
            "invalid": outcome.invalid,
            "dropped": outcome.dropped,
            "left": sorted(n for n in outcome.dropped if n in self.left),
            "admitted": outcome.admitted,
            "aggregated": outcome.aggregated,
            "excluded": outcome.excluded,
            "ranking": outcome.ranking,
            "quality": {n: round(q, 6) for n, q in outcome.quality.items()},
            "proposer": outcome.proposer,
            "rewards": outcome.rewards,
        }

    def _close_round(self, state: RunState, weights: list[np.ndarray], started: float) -> None:
        """Wait for the decided round's block (asking again while it waits), record the row, and stop
        the task if this was its last round."""
        assert self.task is not None and state.pending_row is not None
        task, row, round_no = self.task, state.pending_row, state.round
        wait_s = task.block_timeout_s * (task.proposer_fallbacks + 1)
        if row["proposer"] is not None:
            self._wait_for_block(task.task_id, round_no, wait_s)
        block = self.replica.round_block(task.task_id, round_no)
        if block is None:
            log.warning("round %d: no valid block from the PoQ winner or its stand-ins within %.0fs", round_no, wait_s)
        row.update(
            {
                "block_proposer": block.proposer if block else None,
                "block_rank": block.rank if block else None,
                "on_chain": block is not None,
                "chain_height": self.replica.height,
                "elapsed_s": round(time.monotonic() - started, 2),
            }
        )
        state.rows.append(row)
        state.pending_row, state.phase = None, "done"
        self.timeseries.add_event(
            time.time(), round_no, "block" if block else "no-block", {"height": self.replica.height}
        )
        log.info(
            "round %d: %s %.4f | eliminated %s | admitted %s | proposer %s | chain height %d",
            round_no,
            task.metric,
            row[task.metric],
            row["eliminated"] or "-",
            ",".join(row["admitted"]) or "-",
            f"{block.proposer} (rank {block.rank})" if block else "-",
            self.replica.height,
        )
        if state.pending_stop:
            self._pump(lambda: False, FINAL_LINGER_S)  # late blocks of the last round: rivals, twins
            blob = encode_model(weights)
            (self.run_dir / "final_model.bpmt").write_bytes(blob)
            state.final_digest, state.stopped_because = model_digest(blob), state.pending_stop

    def _publish_metrics(self, sample: Sample) -> None:
        own = sample.with_ledger_cpu(self.replica.cpu_s)
        if self.exporter is not None:
            self.exporter.observe(self.node_id, own)
        self.bus.publish(self.topics.metrics(self.node_id), own.sealed(self.identity), qos=0)

    def _wait_for_block(self, task_id: str, round_no: int, timeout: float) -> bool:
        """Handle messages until the round's block is in this replica, or ``timeout``. While waiting, the
        round's records and result are published again (for a proposer that missed them) with a signed
        ``want-block`` (any replica holding the block publishes it again)."""

        def resend() -> None:
            topic = self.topics.result(task_id, round_no)
            for raw in self._round_records:
                self.bus.publish(topic, raw, wait=None)
            self.bus.publish(topic, seal(self.identity, "want-block", task_id, round_no, {}).raw, wait=None)

        return self._pump(lambda: self.replica.has_round(task_id, round_no), timeout, resend)

    def _publish_again(self, kind: str, body: dict[str, Any], missing: list[str], blobs: list[bytes]) -> None:
        """Re-seal the round's ``kind`` message asking ``missing`` nodes again (``resend_to``)."""
        assert self.task is not None
        if not missing:
            return
        log.info(
            "round %d: asking again for the %s of %s", self.round, "updates" if kind == "global" else "votes", missing
        )
        env = seal(self.identity, kind, self.task.task_id, self.round, {**body, "resend_to": missing}, blobs)
        topic = (self.topics.global_model if kind == "global" else self.topics.manifest)(self.task.task_id, self.round)
        self.bus.publish(topic, env.raw, wait=None)

    def _run_round(self, round_no: int, weights: list[np.ndarray], standby: list[str]) -> tuple[RoundOutcome, bytes]:
        """Global model out, updates in, manifest out, votes in; decide."""
        assert self.task is not None
        task = self.task
        self.round = round_no
        self.valid, self.invalid, self.manifest, self.votes = {}, {}, {}, {}
        blob = encode_model(weights)
        assignment = {n: [p for p in self.roster if p != n] for n in self.roster}
        body = {"roster": self.roster, "assignment": assignment, "model_digest": model_digest(blob)}
        env = seal(self.identity, "global", task.task_id, round_no, body, [blob])
        self.bus.publish(self.topics.global_model(task.task_id, round_no), env.raw)
        arrived = lambda n: n in self.valid or n in self.invalid or n in self.left  # noqa: E731
        self._pump(
            lambda: all(arrived(n) for n in self.roster),
            task.update_timeout_s,
            lambda: self._publish_again("global", body, [n for n in self.roster if not arrived(n)], [blob]),
        )
        for node in sorted(set(self.valid) & self.equivocators()):  # proven to sign two blocks at one height
            del self.valid[node]
            self.invalid[node] = "equivocation"
            self.intake.reject(Rejected("equivocation", f"update of {node}, who equivocated"), "update")
        self.manifest = {n: d for n, (d, _) in sorted(self.valid.items())}
        manifest = {"updates": self.manifest}
        env = seal(self.identity, "manifest", task.task_id, round_no, manifest)
        self.bus.publish(self.topics.manifest(task.task_id, round_no), env.raw)
        self._pump(
            lambda: all(n in self.votes for n in self.valid),
            task.vote_timeout_s,
            lambda: self._publish_again("manifest", manifest, [n for n in self.valid if n not in self.votes], []),
        )
        scores = {n: vote_scores(v, self.registry) for n, v in self.votes.items()}
        outcome = decide_round(
            self.roster,
            list(self.valid),
            self.invalid,
            scores,
            [n for n in standby if n not in self.left],
            task.metric,
            task.quality_rule,
            task.nodes,
            task.min_nodes,
            task.reward_per_round,
        )
        return outcome, blob

    def _abort(self, round_no: int, valid: int) -> dict[str, Any]:
        """End the task without committing ``round_no``: a signed ``abort`` on the round's result topic."""
        assert self.task is not None
        reason = f"quorum lost in round {round_no}: {valid} valid updates, {self.task.min_nodes} needed"
        env = seal(self.identity, "abort", self.task.task_id, round_no, {"reason": reason})
        self.bus.publish(self.topics.result(self.task.task_id, round_no), env.raw)
        log.error("task %s aborted: %s", self.task.task_id, reason)
        return {"round": round_no, "reason": reason, "valid_updates": valid}

    def equivocators(self) -> set[str]:
        """Nodes this replica saw sign two blocks at one height, and nodes the chain excluded for it."""
        return set(self.replica.equivocations) | self.replica.state.excluded

    def _publish_result(
        self, round_no: int, outcome: RoundOutcome, metric_value: float, global_digest: str, final: bool
    ) -> None:
        """The round's records (reward split; final model on the last round), then the result listing them."""
        assert self.task is not None
        task_id = self.task.task_id
        records = [seal(self.identity, "reward", task_id, round_no, {"rewards": outcome.rewards})]
        if final:
            body = {"model_digest": global_digest, "metric": self.task.metric, "value": round(metric_value, 6)}
            records.append(seal(self.identity, "final", task_id, round_no, body))
        result_body = asdict(outcome)
        del result_body["rewards"]  # recorded in the reward transaction
        result_body.update(
            {
                "quality": {n: round(q, 6) for n, q in outcome.quality.items()},
                "epsilon_spent": {n: self.privacy.get(n, {}).get("epsilon_spent") for n in self.valid},
                "votes": sorted(v.digest for v in self.votes.values()),
                "records": sorted(r.digest for r in records),
                "metric": self.task.metric,
                "value": round(metric_value, 6),
                "global_digest": global_digest,
                "final": final,
            }
        )
        topic = self.topics.result(task_id, round_no)
        self._round_records = [r.raw for r in records] + [
            seal(self.identity, "result", task_id, round_no, result_body).raw
        ]
        for raw in self._round_records:
            self.bus.publish(topic, raw)

    def _finish(self, summary: dict[str, Any], started: float | None) -> dict[str, Any]:
        summary["rejected"] = dict(self.intake.rejected + self.block_rejections)
        summary["chain"] = {
            "height": self.replica.height,
            "head_hash": self.replica.head_hash,
            "replica": str(Path(self.config.chain_dir).resolve()),
        }
        if started is not None:
            summary["duration_s"] = round(time.monotonic() - started, 2)
        path = self.run_dir / "coordinator.json"
        path.write_text(json.dumps(summary, indent=2))
        log.info("task summary written to %s", path)
        return summary

    def close(self) -> None:
        self.replica.close()
        self.checkpoint.close()
        self.timeseries.close()
