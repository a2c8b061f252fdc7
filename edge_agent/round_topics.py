"""Which of its task's round topics an agent listens to, and how it publishes its update and vote
(timed as the round's ``send`` phase: with QoS 1 the worker waits for the broker's acknowledgement).

Every agent listens to its task's global models, manifests and results. Without validation committees
(the paper) every update goes to every peer: the agent also subscribes to every update of the task.
Without supervision (plain federated learning) an update goes to the coordinator only. With committees
it subscribes to the updates of only the k peers it is to score, each round as the global model names
them (``RoundState.peers``); the broker then sends each update to k scorers and the coordinator instead
of to everyone.

Votes go to the coordinator and to the round's block proposer only: an agent subscribes to a round's
votes when its proof-of-quality place says it is to propose that round's block (``fetch_votes``), and
no longer once the round after the next starts (the coordinator starts the next round while the block
is written). Votes are published retained so that the proposer, which learns its place from the result
after every vote was sent, still gets them; with committees updates are
retained too (an agent pool subscribes for its agents one after another, after some peers published).
Each agent clears its previous round's retained update when it publishes the next, and a retained vote
when it publishes the vote of the round after the next (a stand-in proposer may fetch a round's votes
while the next round runs); an empty retained message deletes it, and receivers ignore it.
"""

from __future__ import annotations

from bpcv.mqtt import Bus
from bpcv.task import TaskSpec
from bpcv.topics import Topics
from edge_agent.round_clock import RoundClock

# How many of an agent's own rounds of each kind stay retained on the broker: a round's votes until its
# block is written, which may be while the next round runs.
RETAINED_KEPT = {"update": 1, "vote": 2}


class RoundTopics:
    """One agent's subscriptions to its task's round topics, and the topics of its update and vote."""

    def __init__(self, bus: Bus, topics: Topics, node_id: str, clock: RoundClock) -> None:
        self.bus, self.topics, self.node_id, self.clock = bus, topics, node_id, clock
        self.task: TaskSpec | None = None
        self.followed: list[str] = []  # the update topics of the peers scored this round
        self.vote_rounds: set[int] = set()  # the rounds whose votes we listen to, to propose their block
        self.retained: dict[str, list[str]] = {}  # "update"/"vote" -> the topics of ours still retained, oldest first

    def start_task(self, task: TaskSpec) -> None:
        self._stop_votes_before(None)
        self.task, self.followed, self.retained = task, [], {}
        for topic in self.topics.round_control(task.task_id):
            self.bus.subscribe(topic)
        if not task.committee and task.supervised:
            self.bus.subscribe(self.topics.all_updates(task.task_id))

    def follow(self, round_no: int, peers: list[str] | None) -> None:
        """Listen to the updates of ``peers`` in ``round_no`` (None: every peer's, already subscribed), and no
        longer to those of the rounds before, or to the votes of the rounds before the last (its block may
        still be ours to propose)."""
        if self.task is None:
            return
        self._stop_votes_before(round_no - 1)
        if peers is None:
            return
        for topic in self.followed:
            self.bus.unsubscribe(topic)
        self.followed = [self.topics.update(self.task.task_id, round_no, peer) for peer in peers]
        for topic in self.followed:
            self.bus.subscribe(topic)

    def fetch_votes(self, round_no: int) -> None:
        """Listen to every vote of ``round_no`` (its block is ours to propose); the broker sends the retained ones."""
        if self.task is not None and round_no not in self.vote_rounds:
            self.vote_rounds.add(round_no)
            self.bus.subscribe(self.topics.round_votes(self.task.task_id, round_no))

    def _stop_votes_before(self, round_no: int | None) -> None:
        """No longer listen to the votes of the rounds before ``round_no`` (None: of any round)."""
        for old in [r for r in self.vote_rounds if round_no is None or r < round_no]:
            assert self.task is not None
            self.bus.unsubscribe(self.topics.round_votes(self.task.task_id, old))
            self.vote_rounds.discard(old)

    def publish_update(self, round_no: int, raw: bytes) -> None:
        """Our update of ``round_no``: retained with committees (and the previous one cleared)."""
        assert self.task is not None
        self._publish("update", self._own("update", round_no), raw, bool(self.task.committee))

    def publish_vote(self, round_no: int, raw: bytes) -> None:
        """Our vote of ``round_no``: retained (and the one before the previous cleared) for the round's block
        proposer."""
        self._publish("vote", self._own("vote", round_no), raw, True)

    def publish_again(self, kind: str, round_no: int, raw: bytes) -> None:
        """Our ``kind`` ("update" or "vote") of ``round_no`` again, the same bytes, without waiting; retained
        again if it is still one of our retained ones (a broker that restarted empty has lost it)."""
        topic = self._own(kind, round_no)
        self.bus.publish(topic, raw, retain=topic in self.retained.get(kind, []), wait=None)

    def _own(self, kind: str, round_no: int) -> str:
        """The topic of our ``kind`` ("update" or "vote") of ``round_no``."""
        assert self.task is not None
        topic_of = self.topics.update if kind == "update" else self.topics.vote
        return topic_of(self.task.task_id, round_no, self.node_id)

    def _publish(self, kind: str, topic: str, raw: bytes, keep: bool) -> None:
        with self.clock.phase("send"):
            kept = [t for t in self.retained.pop(kind, []) if t != topic]
            while len(kept) >= RETAINED_KEPT[kind]:
                self.bus.publish(kept.pop(0), b"", retain=True, wait=None)
            self.bus.publish(topic, raw, retain=keep)
        self.retained[kind] = [*kept, topic] if keep else kept
