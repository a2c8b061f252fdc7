"""Run one or more agents in one OS process, sharing one TensorFlow worker thread.

TensorFlow costs ~600 MB per process, so a machine simulating dozens of devices hosts several agents
per process; each keeps its own key, MQTT client, data and replica. A real device runs a pool of one.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import threading
from collections.abc import Sequence

from bpcv.config import AgentConfig
from bpcv.exporter import exporter_for
from bpcv.models import configure_tensorflow
from bpcv.sampler import Sample, Sampler
from bpcv.task import TaskSpec
from edge_agent.agent import Agent, Job
from edge_agent.privacy.settings import PrivacySettings
from edge_agent.trainer import Trainer

log = logging.getLogger(__name__)


class AgentPool:
    """Agents of one process and the worker that runs their jobs in arrival order."""

    def __init__(self, configs: Sequence[AgentConfig], threads: int | None = None) -> None:
        configure_tensorflow(threads or max(1, (os.cpu_count() or 2) // 2))
        self.jobs: queue.Queue[Job] = queue.Queue()
        self._trainers: dict[tuple[str, tuple[int, ...], PrivacySettings | None], Trainer] = {}
        self.agents = [Agent(c, self.jobs, self.trainer_for) for c in configs]
        self.exporter = exporter_for([c.prometheus for c in configs])
        self._stop = threading.Event()

    def trainer_for(
        self, task: TaskSpec, input_shape: tuple[int, ...], num_classes: int, privacy: PrivacySettings | None
    ) -> Trainer:
        """One compiled model per task, input shape and privacy setting, shared by the pool's agents."""
        key = (task.task_id, input_shape, privacy)
        if key not in self._trainers:
            self._trainers[key] = Trainer(task, input_shape, num_classes, privacy)
        return self._trainers[key]

    def run(self) -> None:
        """Connect every agent and work until stopped (SIGTERM/SIGINT or ``stop()``)."""
        for agent in self.agents:
            agent.start()
        sampler = Sampler(self._publish_metrics)
        sampler.start()
        while not self._stop.is_set():
            try:
                fn, args = self.jobs.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                fn(*args)
            except Exception:  # one bad message must never stop the pool
                log.exception("job %s failed", getattr(fn, "__qualname__", fn))
        sampler.stop()
        for agent in self.agents:
            agent.stop()
        if self.exporter is not None:
            self.exporter.close()

    def _publish_metrics(self, sample: Sample) -> None:
        """One sample of this process, published by each of its agents on its own metrics topic (and
        served to Prometheus when configured)."""
        for agent in self.agents:
            own = agent.publish_metrics(sample)
            if self.exporter is not None:
                self.exporter.observe(agent.node_id, own)

    def stop(self, *_: object) -> None:
        self._stop.set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
