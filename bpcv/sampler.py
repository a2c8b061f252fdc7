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
import threading
import time
from collections.abc import Callable

import psutil

from bpcv.messages import Sample

__all__ = ["Sample", "Sampler", "board_temperature"]

log = logging.getLogger(__name__)
DEFAULT_INTERVAL_S = 1.0


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
