"""The receiving side of the envelope: every incoming message passes here before it is used.

Checks, in order: a rate limit per sender (by the sender its topic names, before any decoding, so
a flood costs no signature checks), size, structure, registered sender of an allowed role,
signature, that the sender matches the topic, the task and round expected (a message from another
round is a replay), and that the (sender, nonce) pair was not seen before. A rejection is one log
line and a counter.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Callable

from bpcv.envelope import DEFAULT_MAX_BYTES, Envelope, open_envelope
from bpcv.errors import Rejected
from bpcv.identity import Registry
from bpcv.messages import read_task
from bpcv.task import TaskSpec

log = logging.getLogger(__name__)
MAX_REMEMBERED_NONCES = 100_000
RATE_PER_SECOND = 20.0  # sustained messages per sender; a round needs a handful
RATE_BURST = 100.0
# A task is running at most its join timeout, join window and time limit after it was posted; this much
# more covers clock skew between devices and the coordinator's downtime before it resumes a checkpoint.
STALE_TASK_GRACE_S = 3600.0


class RateLimiter:
    """A token bucket per key: ``burst`` messages at once, refilled at ``rate`` per second."""

    def __init__(
        self, rate: float = RATE_PER_SECOND, burst: float = RATE_BURST, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate, self.burst, self.clock = rate, burst, clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, when)

    def allow(self, key: str) -> bool:
        now = self.clock()
        tokens, when = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - when) * self.rate)
        allowed = tokens >= 1.0
        self._buckets[key] = (tokens - 1.0 if allowed else tokens, now)
        return allowed


class Intake:
    """Opens incoming envelopes for one node and counts what it refuses."""

    def __init__(
        self, registry: Registry, owner: str, max_bytes: int = DEFAULT_MAX_BYTES, limiter: RateLimiter | None = None
    ) -> None:
        self.registry = registry
        self.owner = owner
        self.max_bytes = max_bytes
        self.limiter = limiter or RateLimiter()
        self.rejected: Counter[str] = Counter()
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()

    def open(
        self,
        raw: bytes,
        roles: tuple[str, ...],
        topic: str,
        *,
        task: str | None = None,
        round_no: int | None = None,
        topic_sender: str | None = None,
    ) -> Envelope | None:
        """The verified envelope, or None after logging and counting why it was refused."""
        try:
            if not self.limiter.allow(topic_sender or topic):
                raise Rejected("rate-limited", f"more than {self.limiter.rate:g}/s from {topic_sender or topic}")
            env = open_envelope(raw, self.registry, roles, self.max_bytes)
            if topic_sender is not None and env.sender != topic_sender:
                raise Rejected("sender-mismatch", f"{env.sender} published on {topic_sender}'s topic")
            if task is not None and env.task != task:
                raise Rejected("wrong-task", f"{env.task!r}, expected {task!r}")
            if round_no is not None and env.round != round_no:
                raise Rejected("wrong-round", f"{env.type} from {env.sender} for round {env.round}, now {round_no}")
            key = (env.sender, env.nonce)
            if key in self._seen:
                raise Rejected("replay", f"{env.type} from {env.sender} seen before")
            self._seen[key] = None
            if len(self._seen) > MAX_REMEMBERED_NONCES:
                self._seen.popitem(last=False)
            return env
        except Rejected as exc:
            self.reject(exc, topic)
            return None

    def open_task(self, raw: bytes, topic: str, refuse_stale: bool = True) -> tuple[Envelope, TaskSpec] | None:
        """A requester's signed task and its parsed spec, or None after logging and counting why not.
        ``refuse_stale``: a task that cannot still be running (``stale_task``) is refused as ``stale-task``."""
        env = self.open(raw, ("requester",), topic)
        if env is None:
            return None
        try:
            task = read_task(env)
            why = stale_task(env, task, time.time()) if refuse_stale else None
            if why is not None:
                raise Rejected("stale-task", why)
            return env, task
        except Rejected as exc:
            self.reject(exc, topic)
            return None

    def reject(self, exc: Rejected, topic: str) -> None:
        self.rejected[exc.reason] += 1
        log.warning("%s: rejected message on %s: %s", self.owner, topic, exc)


def stale_task(env: Envelope, task: TaskSpec, now: float) -> str | None:
    """Why the task ``env`` announces cannot still be running at ``now`` (wall-clock seconds), or None: a
    retained task message outlives its task on the broker, and a device that connects later must not
    join a task that ended long ago."""
    age = now - env.ts
    lifetime = task.join_timeout_s + task.join_window_s + task.time_limit_s
    if age <= lifetime + STALE_TASK_GRACE_S:
        return None
    return (
        f"task {task.task_id} was posted {age / 3600:.1f} h ago and runs at most {lifetime / 3600:.1f} h: "
        "a retained message left by an earlier task, ignored"
    )
