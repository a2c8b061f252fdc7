"""psutil sampling of this process, once a second by default, for the node's metrics topic.

A sample is this process's CPU (percent of one core since the previous sample) and resident memory,
the machine's cumulative network bytes (psutil has no per-process counters; reports take deltas),
the board's hottest temperature sensor where ``psutil.sensors_temperatures()`` has one (a
Raspberry Pi's ``cpu_thermal``), else None, the process id (agents of one pool process share it,
so reports can tell one process from many) and ``ledger_cpu_s``: the CPU seconds the node has
spent so far verifying and storing blocks (its replica's own count; 0 for a process without a
replica). Sampling runs on its own daemon thread.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import psutil

from bpcv.envelope import seal
from bpcv.identity import Identity

log = logging.getLogger(__name__)
DEFAULT_INTERVAL_S = 1.0
FIELDS = ("ts", "pid", "cpu_percent", "rss_bytes", "net_sent", "net_recv", "temperature_c", "ledger_cpu_s")


@dataclass(frozen=True)
class Sample:
    ts: float
    pid: int
    cpu_percent: float
    rss_bytes: int
    net_sent: int
    net_recv: int
    temperature_c: float | None
    ledger_cpu_s: float = 0.0

    def to_body(self) -> dict[str, Any]:
        return asdict(self)

    def with_ledger_cpu(self, seconds: float) -> Sample:
        """This sample as one node's: with its replica's ledger CPU seconds."""
        return replace(self, ledger_cpu_s=round(seconds, 4))

    def sealed(self, identity: Identity) -> bytes:
        """The signed ``metrics`` envelope of this sample, as ``identity`` publishes it."""
        return seal(identity, "metrics", "", 0, self.to_body()).raw

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> Sample:
        """A sample from a received body; ValueError naming the bad field."""
        if sorted(body) != sorted(FIELDS):
            raise ValueError(f"metrics fields {sorted(body)}, expected {sorted(FIELDS)}")
        for name in FIELDS:
            value = body[name]
            if value is None and name == "temperature_c":
                continue
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
                raise ValueError(f"metrics field {name} is not a finite non-negative number: {value!r}")
        if not isinstance(body["pid"], int):
            raise ValueError(f"metrics field pid is not an integer: {body['pid']!r}")
        return cls(**body)


def board_temperature() -> float | None:
    """The hottest current reading of the board's temperature sensors, or None without any."""
    read = getattr(psutil, "sensors_temperatures", None)
    try:
        sensors = read() if read is not None else {}
    except (OSError, RuntimeError):
        return None
    readings = [t.current for entries in sensors.values() for t in entries if t.current is not None]
    return round(max(readings), 1) if readings else None


class Sampler:
    """Reads this process every ``interval`` seconds and hands each Sample to ``publish``."""

    def __init__(
        self,
        publish: Callable[[Sample], None],
        interval: float = DEFAULT_INTERVAL_S,
        process: psutil.Process | None = None,
    ) -> None:
        self.publish = publish
        self.interval = interval
        self.process = process or psutil.Process()
        self.process.cpu_percent(None)  # the first call primes the CPU counter
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self) -> Sample:
        net = psutil.net_io_counters()
        return Sample(
            ts=round(time.time(), 3),
            pid=self.process.pid,
            cpu_percent=round(self.process.cpu_percent(None), 2),
            rss_bytes=self.process.memory_info().rss,
            net_sent=net.bytes_sent if net else 0,
            net_recv=net.bytes_recv if net else 0,
            temperature_c=board_temperature(),
        )

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="psutil-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.publish(self.sample())
            except Exception:  # a sampling or publishing hiccup must not stop the node
                log.exception("metrics sample failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2 * self.interval)
