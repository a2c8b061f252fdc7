"""Every MQTT topic of the system is built here, under one configurable base (default ``bpcv/v1``)."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_BASE = "bpcv/v1"
# The broker's own cumulative traffic counters, "received" and "sent": mosquitto publishes them under
# $SYS/broker/bytes/ (and so does the embedded broker, broker/embedded.py), a standalone amqtt under
# $SYS/broker/load/bytes/.
BROKER_BYTES_PREFIXES = ("$SYS/broker/bytes/", "$SYS/broker/load/bytes/")
BROKER_BYTES = tuple(f"{prefix}+" for prefix in BROKER_BYTES_PREFIXES)
# What a received message is, for counting an agent's traffic (``Topics.traffic_kind``): a round's
# messages by their topic's kind, the chain's blocks and sync answers, task announcements and joins, and
# anything else under the base.
ROUND_KINDS = ("global", "update", "manifest", "vote", "result")  # the last level of a round's topics
TRAFFIC_KINDS = (*ROUND_KINDS, "block", "sync", "task", "join", "other")


def broker_counter(topic: str) -> str | None:
    """The counter's name ("received", "sent") when ``topic`` is one of the broker's traffic counters."""
    for prefix in BROKER_BYTES_PREFIXES:
        if topic.startswith(prefix):
            return topic[len(prefix) :]
    return None


@dataclass(frozen=True)
class Topics:
    """Topic builder for one base topic."""

    base: str = DEFAULT_BASE

    def task(self, task: str) -> str:
        """Retained task announcement published by the requester."""
        return f"{self.base}/tasks/{task}"

    def all_tasks(self) -> str:
        return f"{self.base}/tasks/+"

    def join(self, task: str, node: str) -> str:
        return f"{self.base}/tasks/{task}/join/{node}"

    def all_joins(self, task: str) -> str:
        return f"{self.base}/tasks/{task}/join/+"

    def global_model(self, task: str, round_no: int) -> str:
        return f"{self.base}/tasks/{task}/round/{round_no}/global"

    def update(self, task: str, round_no: int, node: str) -> str:
        return f"{self.base}/tasks/{task}/round/{round_no}/update/{node}"

    def manifest(self, task: str, round_no: int) -> str:
        return f"{self.base}/tasks/{task}/round/{round_no}/manifest"

    def vote(self, task: str, round_no: int, node: str) -> str:
        return f"{self.base}/tasks/{task}/round/{round_no}/vote/{node}"

    def result(self, task: str, round_no: int) -> str:
        return f"{self.base}/tasks/{task}/round/{round_no}/result"

    def all_results(self, task: str) -> str:
        return f"{self.base}/tasks/{task}/round/+/result"

    def all_updates(self, task: str) -> str:
        return f"{self.base}/tasks/{task}/round/+/update/+"

    def all_votes(self, task: str) -> str:
        return f"{self.base}/tasks/{task}/round/+/vote/+"

    def round_votes(self, task: str, round_no: int) -> str:
        """Every vote of one round (what the round's block proposer fetches)."""
        return f"{self.base}/tasks/{task}/round/{round_no}/vote/+"

    def round_control(self, task: str) -> list[str]:
        """The per-round topics every agent of a task listens to: global models, manifests, results."""
        rounds = f"{self.base}/tasks/{task}/round/+"
        return [f"{rounds}/global", f"{rounds}/manifest", f"{rounds}/result"]

    def block(self, chain: str) -> str:
        return f"{self.base}/chain/{chain}/block"

    def sync_request(self, chain: str, node: str) -> str:
        """Where ``node`` asks for blocks it is missing (signed request)."""
        return f"{self.base}/chain/{chain}/sync/{node}"

    def all_sync_requests(self, chain: str) -> str:
        return f"{self.base}/chain/{chain}/sync/+"

    def sync_blocks(self, chain: str, node: str) -> str:
        """Where the blocks answering ``node``'s request are sent, in height order."""
        return f"{self.base}/chain/{chain}/sync/{node}/blocks"

    def status(self, node: str) -> str:
        """Retained online/offline status, also the last will."""
        return f"{self.base}/nodes/{node}/status"

    def all_status(self) -> str:
        return f"{self.base}/nodes/+/status"

    def metrics(self, node: str) -> str:
        """psutil samples of the node's process (QoS 0, signed ``metrics`` envelopes)."""
        return f"{self.base}/nodes/{node}/metrics"

    def all_metrics(self) -> str:
        return f"{self.base}/nodes/+/metrics"

    def traffic_kind(self, topic: str) -> str:
        """Which of TRAFFIC_KINDS a message on ``topic`` is ("other" for a topic outside the base)."""
        try:
            levels = self.parse(topic)
        except ValueError:
            return "other"
        if levels[0] == "chain" and len(levels) >= 3:
            return "block" if levels[2] == "block" else "sync" if levels[2] == "sync" else "other"
        if levels[0] == "tasks":
            if len(levels) == 2:
                return "task"
            if len(levels) >= 5 and levels[2] == "round" and levels[4] in ROUND_KINDS:
                return levels[4]
            if len(levels) >= 3 and levels[2] == "join":
                return "join"
        return "other"

    def parse(self, topic: str) -> tuple[str, ...]:
        """The topic's levels below the base; raises ValueError for a topic outside it."""
        prefix = self.base + "/"
        if not topic.startswith(prefix):
            raise ValueError(f"topic {topic!r} is not under base {self.base!r}")
        return tuple(topic[len(prefix) :].split("/"))
