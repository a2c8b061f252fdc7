"""One task on the coordinator, round by round: form the roster, then per round publish the global
model, collect updates, publish the manifest, collect votes, decide (``coordinator.rounds``), combine
(``coordinator.strategies``), publish the result and its records; stop on the target, the time limit or
the round limit, or abort when quorum is lost. A round's block is written while the next round runs: the
coordinator waits for it (asking again if it is late) only once that round's votes are in, before it
publishes that round's result, so the next block's proposer builds on it.

Every decided round is checkpointed (``coordinator.checkpoint``) so a restarted coordinator resumes
the task where it stopped.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bpcv.codec import decode_model, encode_model, model_digest
from bpcv.envelope import Envelope
from bpcv.errors import ConfigError, Rejected
from bpcv.messages import Abort, Final, GlobalModel, Manifest, Message, Result, Reward, WantBlock, seal_message
from bpcv.models import configure_tensorflow, fixed_weights
from bpcv.task import TaskSpec
from coordinator.checkpoint import NodeStatus, RunState
from coordinator.collector import RoundCollector
from coordinator.evaluation import TEST_SET, Evaluation, build_evaluation
from coordinator.root_update import root_trainer
from coordinator.rounds import RoundOutcome, decide_round, stop_reason
from coordinator.strategies import strategy_named
from coordinator.summary import NodeSummary, RoundRow, TaskSummary

if TYPE_CHECKING:
    from coordinator.server import Coordinator

log = logging.getLogger(__name__)
FINAL_LINGER_S = 2.0  # after the last round, how long late blocks (rivals, twins) are still taken in
Weights = list[np.ndarray]


class TaskRunner:
    """Runs ``task`` on ``server`` (its bus, chain node, checkpoint and time series)."""

    def __init__(
        self,
        server: Coordinator,
        task: TaskSpec,
        initial_weights: bytes | None = None,
    ) -> None:
        """``initial_weights``: the requester's model blob the first global model is, if the task carries one."""
        self.server = server
        self.task = task
        self.initial_weights = initial_weights
        self.collector = RoundCollector(task, server.intake, [])
        self.round_records: list[bytes] = []  # the decided round's reward/final records and result, as published
        self.round_votes: list[bytes] = []  # the votes its result lists, relayed while its block is late
        self.started = time.monotonic()
        self.evaluation = Evaluation(task, TEST_SET)  # replaced by run() once the model is built

    def _seal(self, message: Message, round_no: int, blobs: list[bytes] | tuple[bytes, ...] = ()) -> Envelope:
        return seal_message(self.server.identity, message, self.task.task_id, round_no, blobs)

    def run(self, resume: tuple[RunState, bytes] | None = None) -> TaskSummary:
        """Every round of the task (or the rest of it, from a checkpoint); writes the final model and
        coordinator.json into the run folder."""
        server, task, collector = self.server, self.task, self.collector
        server.collector = collector
        server.bus.subscribe(server.topics.all_updates(task.task_id))  # joins: the server's subscription
        server.bus.subscribe(server.topics.all_votes(task.task_id))
        for topic, levels, payload in server.take_early_joins(task.task_id):
            collector.handle(topic, levels, payload)
        if resume is None:
            state = self._form_roster()
            if isinstance(state, str):
                return self._finish(TaskSummary(task=task.to_body(), metric=task.metric, error=state), timed=False)
        else:
            state = resume[0]
            log.info("task %s: resuming after round %d (%s)", task.task_id, state.round, state.phase)
        joined = collector.joined
        joined.order = {n: (float(order), samples) for n, (order, samples) in state.joins.items()}
        joined.left, joined.dropped, joined.privacy = state.left, set(state.dropped), state.privacy
        self.started = time.monotonic() - state.elapsed_s

        configure_tensorflow(2)
        model, self.evaluation = build_evaluation(task, server.config.data_path)
        root = root_trainer(task, self.evaluation.x_test, self.evaluation.y_test, model.output_shape[-1])
        try:
            self.strategy = strategy_named(task.strategy, root)  # FLTrust's root set: part of the test data
        except ConfigError as exc:
            return self._finish(TaskSummary(task=task.to_body(), metric=task.metric, error=str(exc)), timed=False)
        weights = [np.asarray(w, dtype=np.float32) for w in model.get_weights()]
        collector.shapes, collector.fixed = [tuple(w.shape) for w in weights], fixed_weights(model)
        if resume is not None:
            weights = decode_model(resume[1], collector.shapes)
        elif self.initial_weights is not None:
            try:
                weights = decode_model(self.initial_weights, collector.shapes)
            except Rejected as exc:
                error = f"the task's initial weights do not fit its model: {exc}"
                log.error("task %s: %s", task.task_id, error)
                return self._finish(TaskSummary(task=task.to_body(), metric=task.metric, error=error), timed=False)
            log.info("task %s: starting from the requester's initial weights", task.task_id)

        def save() -> None:
            state.elapsed_s = time.monotonic() - self.started
            state.dropped = sorted(joined.dropped)
            server.checkpoint.save(state, encode_model(weights))

        save()
        if state.phase == "decided":  # the previous process published the result, then died
            self.round_records = [bytes.fromhex(h) for h in state.round_records]
            self.round_votes = [bytes.fromhex(h) for h in state.round_votes]
            self._close_round(state, weights)
            save()
        for round_no in range(state.round + 1, task.rounds + 1):
            if state.stopped_because:
                break
            for node in joined.rejoined:
                joined.dropped.discard(node)
                state.standby.append(node)
                state.status[node] = NodeStatus.STANDBY
            joined.rejoined.clear()
            outcome, blob = self._run_round(round_no, weights, state)
            if state.phase == "decided":  # the previous round's block: proposed while this round ran
                self._close_round(state, weights)
                save()
            if len(collector.inbox.valid) < task.min_nodes:  # quorum lost: nothing of this round is committed
                state.aborted_round = self._abort(round_no, len(collector.inbox.valid))
                state.stopped_because = state.aborted_round["reason"]
                state.final_digest = model_digest(blob)  # the last committed global model stays the model
                (server.run_dir / "final_model.bpmt").write_bytes(blob)
                save()
                break
            if outcome.aggregated:
                weights = self._combine(outcome, weights)
            metrics = self.evaluation.of_round(weights, outcome.aggregated, collector)
            metric_value = metrics.pop(task.metric)
            elapsed = time.monotonic() - self.started
            state.pending_stop = stop_reason(task, round_no, metric_value, outcome.next_roster, elapsed)
            stopping, global_digest = state.pending_stop is not None, model_digest(encode_model(weights))
            self._publish_result(round_no, outcome, (metric_value, metrics), global_digest, stopping)
            self._apply_outcome(state, outcome)
            state.round, state.phase = round_no, "decided"
            server.timeseries.add_event(time.time(), round_no, "decided", {task.metric: metric_value})
            state.round_records = [raw.hex() for raw in self.round_records]
            state.round_votes = [raw.hex() for raw in self.round_votes]
            left = sorted(n for n in outcome.dropped if n in joined.left)
            state.pending_row = RoundRow.decided(round_no, task.metric, metric_value, outcome, left, metrics)
            state.pending_row.elapsed_s = round(elapsed, 2)
            save()
            if state.pending_stop:  # else the block is waited for once the next round's votes are in
                self._close_round(state, weights)
                save()
        return self._finish(self._summary(state))

    def _form_roster(self) -> RunState | str:
        """Wait for joins; the fastest ``task.nodes`` are active, the rest standby. Why not, if too few joined."""
        task, joined = self.task, self.collector.joined
        log.info("task %s: waiting for %d nodes to join", task.task_id, task.nodes)
        self.server.pump(lambda: len(joined.order) >= task.nodes, task.join_timeout_s)
        self.server.pump(lambda: False, task.join_window_s)
        by_speed = sorted(joined.order, key=lambda n: (joined.order[n][0], n))
        if len(by_speed) < max(2, task.min_nodes):
            error = f"only {len(by_speed)} nodes joined, {max(2, task.min_nodes)} needed"
            log.error("task %s: %s", task.task_id, error)
            return error
        roster = sorted(by_speed[: task.nodes])
        log.info("task %s: roster %s, standby %s", task.task_id, roster, by_speed[task.nodes :])
        return RunState(
            task_id=task.task_id,
            joins={n: [i, joined.samples(n)] for i, n in enumerate(by_speed)},
            roster=roster,
            standby=by_speed[task.nodes :],
            status={n: NodeStatus.ACTIVE if n in roster else NodeStatus.STANDBY for n in by_speed},
            rewards={n: 0.0 for n in by_speed},
            privacy=joined.privacy,
            left=joined.left,
        )

    def _run_round(self, round_no: int, weights: Weights, state: RunState) -> tuple[RoundOutcome, bytes]:
        """Global model out, updates in, manifest out, votes in; decide."""
        server, task, collector = self.server, self.task, self.collector
        inbox = collector.begin_round(round_no, state.roster, server.replica.head_hash, weights)
        blob = encode_model(weights)
        roster = inbox.roster
        global_model = GlobalModel(roster, model_digest(blob), committee_seed=inbox.committee_seed)
        server.publish(
            server.topics.global_model(task.task_id, round_no), self._seal(global_model, round_no, [blob]).raw
        )
        server.timeseries.add_event(time.time(), round_no, "global-out")  # the round's stages: bpcv report
        server.pump(
            lambda: not collector.missing_updates(),
            task.update_timeout_s,
            lambda: self._ask_again(global_model, collector.stalled("update"), [blob]),
        )
        server.timeseries.add_event(time.time(), round_no, "updates-in")
        manifest = collector.close_updates(server.chain.equivocators())
        if task.supervised:  # else plain federated learning: no validation, straight to the aggregate
            server.publish(server.topics.manifest(task.task_id, round_no), self._seal(manifest, round_no).raw)
            server.pump(
                lambda: not collector.missing_votes(),
                task.vote_timeout_s,
                lambda: self._ask_again(manifest, collector.stalled("vote"), []),
            )
            server.timeseries.add_event(time.time(), round_no, "votes-in")
        outcome = decide_round(
            task=task,
            strategy=self.strategy,
            roster=roster,
            valid_updates=list(inbox.valid),
            invalid_updates=inbox.invalid,
            votes=inbox.scores,
            standby=[n for n in state.standby if n not in collector.joined.left],
            updates={n: weights for n, (_, weights) in inbox.valid.items()},
            dissented_before=state.dissenters,
            outlier_streaks=state.outlier_streaks,
        )
        return outcome, blob

    def _ask_again(self, message: GlobalModel | Manifest, missing: list[str], blobs: list[bytes]) -> None:
        """Re-seal the round's global model / manifest naming the ``missing`` nodes (``resend_to``)."""
        if not missing:
            return
        round_no, topics = self.collector.inbox.round, self.server.topics
        log.info("round %d: asking again for the %s of %s", round_no, "updates" if blobs else "votes", missing)
        topic = (topics.global_model if isinstance(message, GlobalModel) else topics.manifest)(
            self.task.task_id, round_no
        )
        again = self._seal(replace(message, resend_to=tuple(missing)), round_no, blobs)
        self.server.publish(topic, again.raw, wait=None)

    def _combine(self, outcome: RoundOutcome, global_weights: Weights) -> Weights:
        valid, joined = self.collector.inbox.valid, self.collector.joined
        nodes = outcome.aggregated
        return self.strategy.combine(
            [valid[n][1] for n in nodes],
            [joined.samples(n) for n in nodes],
            [outcome.quality.get(n, 1.0) for n in nodes],  # no quality without supervision
            global_weights,
        )

    def _apply_outcome(self, state: RunState, outcome: RoundOutcome) -> None:
        """Statuses, standby queue, roster and rewards after a decided round."""
        left = self.collector.joined.left
        state.standby = [n for n in state.standby if n not in outcome.admitted]
        self.collector.joined.dropped.update(n for n in outcome.dropped if n not in left)
        for node in outcome.dropped:
            state.status[node] = NodeStatus.LEFT if node in left else NodeStatus.DROPPED
        for node in left:
            if state.status.get(node) == NodeStatus.STANDBY:
                state.status[node] = NodeStatus.LEFT
        for node in list(outcome.invalid) + ([outcome.eliminated] if outcome.eliminated else []):
            state.status[node] = NodeStatus.ELIMINATED
        for node in outcome.admitted:
            state.status[node] = NodeStatus.ACTIVE
        for node, amount in outcome.rewards.items():
            state.rewards[node] = round(state.rewards[node] + amount, 6)
        state.roster = outcome.next_roster
        state.dissenters, state.outlier_streaks = outcome.dissenters, outcome.outlier_streaks

    def _publish_result(
        self,
        round_no: int,
        outcome: RoundOutcome,
        values: tuple[float | None, dict[str, float | None]],
        global_digest: str,
        final: bool,
    ) -> None:
        """The round's records (reward split; final model on the last round), then the result listing them.
        ``values``: the task's metric and any others (RMSE)."""
        task, inbox = self.task, self.collector.inbox
        metric_value, other_metrics = values
        records = [self._seal(Reward(outcome.rewards), round_no)]
        if final:
            records.append(self._seal(Final(global_digest, task.metric, metric_value), round_no))
        result = Result(
            votes=sorted(v.digest for v in inbox.votes.values()),
            records=sorted(r.digest for r in records),
            global_digest=global_digest,
            epsilon_spent={n: self.collector.joined.privacy.get(n, {}).get("epsilon_spent") for n in inbox.valid},
            metric=task.metric,
            value=metric_value,
            final=final,
            other_metrics=other_metrics,
            **inbox.committee_fields(),
            **outcome.result_fields(),
        )
        self.round_records = [r.raw for r in records] + [self._seal(result, round_no).raw]
        self.round_votes = [inbox.votes[n].raw for n in sorted(inbox.votes)]
        for raw in self.round_records:
            self.server.publish(self.server.topics.result(task.task_id, round_no), raw)

    def _close_round(self, state: RunState, weights: Weights) -> None:
        """Wait for the decided round's block (asking again), record the row, stop after the last round."""
        assert state.pending_row is not None
        server, task, row, round_no = self.server, self.task, state.pending_row, state.round
        replica = server.replica
        wait_s = task.block_timeout_s * (task.proposer_fallbacks + 1)
        if row.proposer is not None:
            self._wait_for_block(round_no, wait_s)
        block = replica.round_block(task.task_id, round_no)
        if block is None and task.supervised:  # the chain records the rewards: a round not on it pays nothing
            log.warning("round %d: no valid block within %.0fs; its rewards are not paid", round_no, wait_s)
            state.rewards.update({n: round(state.rewards[n] - v, 6) for n, v in row.rewards.items()})
        row.block_proposer, row.block_rank = (block.proposer, block.rank) if block else (None, None)
        row.on_chain, row.chain_height = block is not None, replica.height
        state.rows.append(row)
        state.pending_row, state.phase = None, "done"
        server.timeseries.add_event(time.time(), round_no, "block" if block else "no-block", {"height": replica.height})
        log.info(
            "round %d: %s %s | eliminated %s | admitted %s | proposer %s | chain height %d",
            round_no,
            task.metric,
            "-" if row.value is None else f"{row.value:.4f}",
            row.eliminated or "-",
            ",".join(row.admitted) or "-",
            f"{block.proposer} (rank {block.rank})" if block else "-",
            replica.height,
        )
        if state.pending_stop:
            server.pump(lambda: False, FINAL_LINGER_S)  # late blocks of the last round: rivals, twins
            blob = encode_model(weights)
            (server.run_dir / "final_model.bpmt").write_bytes(blob)
            state.final_digest, state.stopped_because = model_digest(blob), state.pending_stop

    def _wait_for_block(self, round_no: int, timeout: float) -> bool:
        """Handle messages until the round's block is in this replica, or ``timeout``; meanwhile publish the
        round's records again, and relay its votes (their voters' own envelopes), for a proposer that missed
        them (a broker that restarted has lost the retained votes), and a signed ``want-block`` for replicas."""
        server, task_id = self.server, self.task.task_id

        def resend() -> None:
            topic = server.topics.result(task_id, round_no)
            for raw in self.round_records + self.round_votes:
                server.publish(topic, raw, wait=None)
            server.publish(topic, self._seal(WantBlock(), round_no).raw, wait=None)

        return server.pump(lambda: server.replica.has_round(task_id, round_no), timeout, resend)

    def _abort(self, round_no: int, valid: int) -> dict[str, object]:
        """End the task without committing ``round_no``: a signed ``abort`` on the round's result topic."""
        reason = f"quorum lost in round {round_no}: {valid} valid updates, {self.task.min_nodes} needed"
        topic = self.server.topics.result(self.task.task_id, round_no)
        self.server.publish(topic, self._seal(Abort(reason), round_no).raw)
        log.error("task %s aborted: %s", self.task.task_id, reason)
        return {"round": round_no, "reason": reason, "valid_updates": valid}

    def _summary(self, state: RunState) -> TaskSummary:
        joined = self.collector.joined
        nodes = {
            n: NodeSummary(
                status=state.status[n],
                reward=state.rewards[n],
                num_samples=joined.samples(n),
                left_because=joined.left.get(n),
                privacy=joined.privacy.get(n, {}),
            )
            for n in sorted(state.status)
        }
        return TaskSummary(
            task=self.task.to_body(),
            metric=self.task.metric,
            rounds=state.rows,
            nodes=nodes,
            stopped_because=state.stopped_because,
            aborted_round=state.aborted_round,
            final_model_digest=state.final_digest,
            evaluated_on=self.evaluation.source,
        )

    def _finish(self, summary: TaskSummary, timed: bool = True) -> TaskSummary:
        server = self.server
        summary.rejected = dict(server.intake.rejected)
        if server.chain.outcomes["unknown-parent"]:
            summary.rejected["block-out-of-order"] = server.chain.outcomes["unknown-parent"]
        summary.chain = {
            "height": server.replica.height,
            "head_hash": server.replica.head_hash,
            "replica": str(Path(server.config.chain_dir).resolve()),
        }
        if timed:
            summary.duration_s = round(time.monotonic() - self.started, 2)
        path = server.run_dir / "coordinator.json"
        path.write_text(json.dumps(summary.to_json(), indent=2))
        log.info("task summary written to %s", path)
        server.collector = None
        return summary
