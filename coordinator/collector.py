"""What arrives for one task at the coordinator: joins and leaves, then each round's updates and votes.

Pure bookkeeping over received envelopes (no broker, no clock of its own): the coordinator's message
pump hands every task message to ``handle``, and the round loop asks what has arrived. Each bad
message is refused by the intake with a counted reason; nothing here raises on bad input.

Rules for a round's messages:
- an update is accepted from a roster node, once, with a digest matching its one blob and tensors of
  the model's shapes (finite); otherwise the node's update is *invalid* with the reason;
- when the task eliminates (policy other than ``none``), an update must also be a contribution: one that
  changes weights the task never trains (``fixed-weights-changed``) or is the round's global model sent
  back untrained (``no-training``, compared as the update encoding carries it) is invalid too. Under
  ``none`` (the baselines as published) a well-formed update is never refused for what it holds;
- a vote is accepted after the manifest, once, from a node whose update was accepted, scoring only
  manifest entries by their manifest digest (never itself).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bpcv.codec import decode_model, encode_model, model_digest
from bpcv.committee import assign
from bpcv.envelope import Envelope
from bpcv.errors import Rejected
from bpcv.intake import Intake
from bpcv.messages import Join, Leave, Manifest, Update, Vote, read
from bpcv.poq import vote_scores
from bpcv.task import TaskSpec

log = logging.getLogger(__name__)


@dataclass
class RoundInbox:
    """One round's updates and votes as they arrive."""

    round: int
    roster: list[str]
    valid: dict[str, tuple[str, list[np.ndarray]]] = field(default_factory=dict)  # node -> (digest, weights)
    invalid: dict[str, str] = field(default_factory=dict)  # node -> why its update was refused
    manifest: dict[str, str] = field(default_factory=dict)  # node -> digest, once published
    committee_seed: str | None = None  # with validation committees: the block hash that drew them
    assignment: dict[str, list[str]] = field(default_factory=dict)  # voter -> the peers it is to score
    votes: dict[str, Envelope] = field(default_factory=dict)
    scores: dict[str, dict[str, float]] = field(default_factory=dict)  # voter -> target -> score
    val_scores: dict[str, dict[str, float]] = field(default_factory=dict)  # node -> its score of the global model
    reference: list[np.ndarray] | None = None  # the global model as an unchanged update carries it (contribution check)
    looked: dict[str, int] = field(default_factory=dict)  # "update"/"vote" -> how many were missing at the last look

    def committee_fields(self) -> dict[str, Any]:
        """The round result's record of the committees (none when every node scored every peer)."""
        if self.committee_seed is None:
            return {}
        return {"committee_seed": self.committee_seed, "validated": sorted(self.roster)}


@dataclass
class Joined:
    """The nodes that answered the task, and what became of them outside the rounds."""

    order: dict[str, tuple[float, int]] = field(default_factory=dict)  # node -> (when it joined, samples)
    privacy: dict[str, dict[str, Any]] = field(default_factory=dict)  # node -> claims at join + epsilon spent
    left: dict[str, str] = field(default_factory=dict)  # node -> why it left (e.g. privacy budget spent)
    dropped: set[str] = field(default_factory=set)  # nodes that missed a round (crashed, lost the network)
    rejoined: list[str] = field(default_factory=list)  # dropped nodes that joined again, back to standby

    def samples(self, node: str) -> int:
        return self.order[node][1]

    def record_epsilon(self, node: str, value: float | None) -> None:
        if value is not None and node in self.privacy:
            self.privacy[node]["epsilon_spent"] = value


class RoundCollector:
    """Collects one task's joins, leaves, updates and votes for the coordinator."""

    def __init__(
        self, task: TaskSpec, intake: Intake, shapes: list[tuple[int, ...]], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.task = task
        self.intake = intake
        self.shapes = shapes
        self.fixed: list[bool] = []  # per tensor: never trained (bpcv.models.fixed_weights); none known: []
        self.clock = clock
        self.joined = Joined()
        self.inbox = RoundInbox(0, [])

    def begin_round(
        self, round_no: int, roster: list[str], head_hash: str = "", global_weights: list[np.ndarray] | None = None
    ) -> RoundInbox:
        """Start collecting round ``round_no`` from ``roster``; who scores whom: every peer, or the task's
        committees drawn over the roster from ``head_hash`` (the chain head's). With the round's
        ``global_weights``, updates that are no contribution are refused (when the task eliminates)."""
        inbox = self.inbox = RoundInbox(round_no, list(roster))
        if global_weights is not None and self.task.elimination != "none":
            inbox.reference = decode_model(encode_model(global_weights, self.task.update_encoding), self.shapes)
        inbox.committee_seed = head_hash if self.task.committee else None
        inbox.assignment = assign(inbox.roster, self.task.committee, head_hash, self.task.task_id, round_no)
        return inbox

    def arrived(self, node: str) -> bool:
        """Whether ``node``'s update is in (valid or not), or it left the task."""
        return node in self.inbox.valid or node in self.inbox.invalid or node in self.joined.left

    def missing_updates(self) -> list[str]:
        return [n for n in self.inbox.roster if not self.arrived(n)]

    def missing_votes(self) -> list[str]:
        return [n for n in self.inbox.valid if n not in self.inbox.votes]

    def stalled(self, kind: str) -> list[str]:
        """The nodes whose ``kind`` ("update" or "vote") of the round has not come, if none came since the last
        look (the first look only notes them), else []: the coordinator asks again nodes that stopped, not a
        fleet still sending (at N = 200 on two cores the re-sent updates piled up faster than they were read)."""
        missing = self.missing_updates() if kind == "update" else self.missing_votes()
        before = self.inbox.looked.get(kind, len(missing) + 1)
        self.inbox.looked[kind] = len(missing)
        return missing if len(missing) >= before else []

    def close_updates(self, equivocators: set[str]) -> Manifest:
        """Freeze the manifest: the accepted updates, less those of nodes proven to have equivocated."""
        for node in sorted(set(self.inbox.valid) & equivocators):
            del self.inbox.valid[node]
            self.inbox.invalid[node] = "equivocation"
            self.intake.reject(Rejected("equivocation", f"update of {node}, who equivocated"), "update")
        inbox = self.inbox
        inbox.manifest = {n: d for n, (d, _) in sorted(inbox.valid.items())}
        return Manifest(inbox.manifest)

    def handle(self, topic: str, levels: tuple[str, ...], payload: bytes) -> None:
        """A message on one of this task's topics (``levels`` below the base topic)."""
        if len(levels) < 4 or levels[0] != "tasks" or levels[1] != self.task.task_id:
            return
        if levels[2] == "join" and len(levels) == 4:
            self._on_join(topic, levels[3], payload)
        elif levels[2] == "round" and len(levels) == 6 and payload:  # empty: an agent cleared its retained one
            try:
                round_no = int(levels[3])
            except ValueError:
                self.intake.reject(Rejected("malformed", "round is not a number"), topic)
                return
            if levels[4] == "update":
                self._on_update(topic, round_no, levels[5], payload)
            elif levels[4] == "vote":
                self._on_vote(topic, round_no, levels[5], payload)

    def _on_join(self, topic: str, node: str, payload: bytes) -> None:
        env = self.intake.open(payload, ("agent",), topic, task=self.task.task_id, topic_sender=node)
        if env is None:
            return
        try:
            if env.type == Leave.KIND:
                self._on_leave(node, read(env, Leave))
                return
            join = read(env, Join)
        except Rejected as exc:
            self.intake.reject(exc, topic)
            return
        joined = self.joined
        if node in joined.order:
            if node in joined.dropped and node not in joined.rejoined:
                joined.rejoined.append(node)
                log.info("%s joined again after dropping out: back to standby", node)
            return
        joined.order[node] = (self.clock(), join.num_samples)
        joined.privacy[node] = dict(join.privacy)

    def _on_leave(self, node: str, leave: Leave) -> None:
        """A node stops contributing (e.g. its privacy budget is spent): leaving, not misbehaving."""
        self.joined.left[node] = leave.reason
        self.joined.record_epsilon(node, leave.epsilon_spent)
        log.info("%s left the task: %s", node, leave.reason)

    def _open_round_message(self, topic: str, round_no: int, node: str, payload: bytes) -> Envelope | None:
        """An agent's signed message for the current round, published on its own topic; else None."""
        env = self.intake.open(
            payload, ("agent",), topic, task=self.task.task_id, round_no=self.inbox.round, topic_sender=node
        )
        return env if env is not None and round_no == self.inbox.round else None

    def _on_update(self, topic: str, round_no: int, node: str, payload: bytes) -> None:
        inbox = self.inbox
        env = self._open_round_message(topic, round_no, node, payload)
        if env is None:
            return
        if node not in inbox.roster:
            self.intake.reject(Rejected("not-in-roster", f"update from {node}"), topic)
            return
        if node in inbox.valid or node in inbox.invalid:
            self.intake.reject(Rejected("duplicate-update", node), topic)
            return
        try:
            update = read(env, Update)
            if len(env.blobs) != 1 or model_digest(env.blobs[0]) != update.digest:
                raise Rejected("digest-mismatch", f"update of {node}")
            weights = decode_model(env.blobs[0], self.shapes)
            if inbox.reference is not None:
                check_contribution(weights, inbox.reference, self.fixed)
        except Rejected as exc:
            inbox.invalid[node] = exc.reason
            self.intake.reject(exc, topic)
            return
        inbox.valid[node] = (update.digest, weights)
        if update.val_scores is not None:
            inbox.val_scores[node] = update.val_scores
        self.joined.record_epsilon(node, update.epsilon_spent)

    def _on_vote(self, topic: str, round_no: int, node: str, payload: bytes) -> None:
        inbox = self.inbox
        env = self._open_round_message(topic, round_no, node, payload)
        if env is None:
            return
        try:
            if node not in inbox.valid:
                raise Rejected("not-a-voter", f"{node} has no accepted update this round")
            if node in inbox.votes:
                raise Rejected("duplicate-vote", node)
            if not inbox.manifest:
                raise Rejected("early-vote", f"{node} voted before the manifest")
            vote = read(env, Vote)
            scores = vote_scores(vote, self.intake.registry)
            for target in scores:
                if target == node or target not in inbox.manifest or vote.digests.get(target) != inbox.manifest[target]:
                    raise Rejected("vote-off-manifest", f"{node} scored {target} outside the manifest")
                if target not in inbox.assignment.get(node, ()):
                    raise Rejected("vote-off-committee", f"{node} scored {target}, who is not in its committee")
        except Rejected as exc:
            self.intake.reject(exc, topic)
            return
        inbox.votes[node] = env
        inbox.scores[node] = scores


def check_contribution(weights: list[np.ndarray], reference: list[np.ndarray], fixed: list[bool]) -> None:
    """Rejected unless ``weights`` are a contribution to the round whose global model, as an unchanged
    update carries it, is ``reference``: they keep every ``fixed`` tensor and change some other one."""
    changed = [not np.array_equal(w, r) for w, r in zip(weights, reference, strict=True)]
    moved = [i for i, (c, f) in enumerate(zip(changed, fixed)) if c and f]
    if moved:
        raise Rejected(
            "fixed-weights-changed", f"tensors {moved} are never trained, yet differ from the global model's"
        )
    if not any(changed):
        raise Rejected("no-training", "the update is the round's global model, unchanged")
