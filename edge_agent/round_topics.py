"""Which of its task's round topics an agent listens to, and how it publishes its update and vote
(timed as the round's ``send`` phase: with QoS 1 the worker waits for the broker's acknowledgement).

Without validation committees (the paper) every update goes to every peer: the agent subscribes to every
per-round topic of its task. Without supervision (plain federated learning) an update goes to the
coordinator only. With committees it subscribes to the round's global model, manifest, votes and
results, and to the updates of only the k peers it is to score, each round as the global model names them
(``RoundState.peers``); the broker then sends each update to k scorers and the coordinator instead of to
everyone. Updates are published retained there, so a scorer that subscribes after its peer published (an
agent pool works through its agents one after another) still gets it, and each agent clears its previous
round's retained update when it publishes the next (an empty retained message deletes it).
"""

from __future__ import annotations

from bpcv.mqtt import Bus
from bpcv.task import TaskSpec
from bpcv.topics import Topics
from edge_agent.round_clock import RoundClock


class RoundTopics:
    """One agent's subscriptions to its task's round topics, and the topics of its update and vote."""

    def __init__(self, bus: Bus, topics: Topics, node_id: str, clock: RoundClock) -> None:
        self.bus, self.topics, self.node_id, self.clock = bus, topics, node_id, clock
        self.task: TaskSpec | None = None
        self.followed: list[str] = []  # the update topics of the peers scored this round
        self.retained: str | None = None  # our last update, published retained (committees)

    def start_task(self, task: TaskSpec) -> None:
        self.task, self.followed, self.retained = task, [], None
        if not task.committee and task.supervised:
            self.bus.subscribe(self.topics.round_wildcard(task.task_id))
            return
        for topic in self.topics.round_control(task.task_id):
            self.bus.subscribe(topic)

    def follow(self, round_no: int, peers: list[str] | None) -> None:
        """Listen to the updates of ``peers`` in ``round_no`` (None: every peer's, already subscribed), and no
        longer to those of the round before."""
        if self.task is None or peers is None:
            return
        for topic in self.followed:
            self.bus.unsubscribe(topic)
        self.followed = [self.topics.update(self.task.task_id, round_no, peer) for peer in peers]
        for topic in self.followed:
            self.bus.subscribe(topic)

    def publish_update(self, round_no: int, raw: bytes) -> None:
        """Our update of ``round_no``: retained with committees (and the previous one cleared)."""
        assert self.task is not None
        topic = self.topics.update(self.task.task_id, round_no, self.node_id)
        keep = bool(self.task.committee)
        with self.clock.phase("send"):
            if keep and self.retained not in (None, topic):
                self.bus.publish(self.retained, b"", retain=True, wait=None)
            self.bus.publish(topic, raw, retain=keep)
        self.retained = topic if keep else None

    def publish_vote(self, round_no: int, raw: bytes) -> None:
        assert self.task is not None
        with self.clock.phase("send"):
            self.bus.publish(self.topics.vote(self.task.task_id, round_no, self.node_id), raw)
