"""Where an agent's time goes, round by round: the breakdown ``bpcv report`` shows.

Every handler of an agent runs on its pool's one worker thread, one job at a time (``agent``), so the
wall time of a job belongs to that agent and to whatever phase it is in. A round's window runs from
one global model to the next; in it the clock adds up the seconds of each phase (exclusive: a phase
inside another is taken out of the outer one) and the window's length. The window minus the busy
seconds is waiting: for peers' updates and stragglers, for the broker, and in a pool for the other
agents' jobs. MQTT's own I/O runs on paho's threads, outside this breakdown (its CPU is in the
process's psutil samples). The clock also adds up the payload bytes of the messages the agent handled
in the window, by kind (``bpcv.topics.TRAFFIC_KINDS``): what one device receives a round.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from bpcv.messages import RoundTimes


class RoundClock:
    """Seconds per phase of one agent's rounds; ``begin`` closes a round's window and returns its times."""

    def __init__(self, now: Callable[[], float] = time.perf_counter) -> None:
        self._now = now
        self._round = 0
        self._opened = 0.0
        self._seconds: defaultdict[str, float] = defaultdict(float)
        self._stack: list[str] = []  # the phases in progress; only the innermost one is counting
        self._since = 0.0  # when the innermost phase last started counting
        self._received: defaultdict[str, int] = defaultdict(int)

    def _charge(self, now: float) -> None:
        """Add the time since ``_since`` to the innermost phase in progress, and count on from ``now``."""
        if self._stack:
            self._seconds[self._stack[-1]] += now - self._since
        self._since = now

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Count the time inside to ``name`` (and not to the phase it interrupts)."""
        self._charge(self._now())
        self._stack.append(name)
        try:
            yield
        finally:
            self._charge(self._now())
            self._stack.pop()

    def run(self, fn: Callable[..., object], *args: object) -> None:
        """A job of the agent: its time is protocol work unless a phase inside says otherwise."""
        with self.phase("protocol"):
            fn(*args)

    def handled(self, kind: str, nbytes: int, fn: Callable[..., object], *args: object) -> None:
        """The job of a received message of traffic kind ``kind`` and ``nbytes`` (its payload): ``run``, then
        its bytes count to the window it ended in (a global model that opens a round, in that round)."""
        try:
            self.run(fn, *args)
        finally:
            self._received[kind] += nbytes

    def begin(self, round_no: int) -> RoundTimes | None:
        """Round ``round_no`` starts: the times of the round before (None before the first), counting
        from zero again. Call it inside a job: the job's time so far goes to the round it closes."""
        now = self._now()
        self._charge(now)  # the job in progress: what it did so far belongs to the closing round
        closed = None
        if self._round:
            seconds = {p: round(s, 4) for p, s in sorted(self._seconds.items()) if s > 0}
            closed = RoundTimes(
                self._round, round(now - self._opened, 4), seconds, dict(sorted(self._received.items()))
            )
        self._round, self._opened = round_no, now
        self._seconds.clear()
        self._received.clear()
        return closed
