"""The nemesis's fault injectors, over real processes and existing tools: mosquitto (killed and restarted
on its port, its persistence store kept), socat as the TCP proxy each device reaches the broker through
(killed to cut, started again to heal), POSIX signals (SIGKILL, SIGSTOP/SIGCONT), an MQTT client that
publishes again messages it saw (duplicates), and a size-limited tmpfs under one replica that is filled
(disk full). Each fault is one call that injects it and, after its hold, undoes it; ``Nemesis.step``
draws the next one from a seeded generator and logs it.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from bpcv.mqtt import BrokerAddress, Bus
from broker.runner import start_broker_process, wait_for_port

ROOT = Path(__file__).resolve().parents[2]


class Proxy:
    """socat forwarding a local port to the broker; ``cut`` kills it with every connection it carries."""

    def __init__(self, broker: BrokerAddress, port: int) -> None:
        self.broker, self.port = broker, port
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def heal(self) -> None:
        if self.proc is not None:
            return
        listen = f"TCP-LISTEN:{self.port},fork,reuseaddr,bind=127.0.0.1"
        target = f"TCP:{self.broker.host}:{self.broker.port}"
        self.proc = subprocess.Popen(["socat", listen, target], start_new_session=True, stderr=subprocess.DEVNULL)
        wait_for_port("127.0.0.1", self.port, alive=self.proc)

    def freeze(self, sig: int) -> None:
        """SIGSTOP: a silent partition (bytes are no longer forwarded, and no reset tells either side);
        SIGCONT ends it."""
        if self.proc is not None:
            subprocess.run(["pkill", f"-{signal.Signals(sig).name[3:]}", "-s", str(self.proc.pid)], check=False)

    def cut(self) -> None:
        if self.proc is None:
            return
        subprocess.run(["pkill", "-KILL", "-s", str(self.proc.pid)], check=False)  # socat and its forks
        self.proc.wait(timeout=10)
        self.proc = None


class Broker:
    """mosquitto on a fixed port; killed with SIGKILL and started again with the same folder (its store)."""

    def __init__(self, port: int, folder: Path) -> None:
        self.address, self.folder = BrokerAddress("127.0.0.1", port), folder
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        if self.proc is None:
            self.proc = start_broker_process("mosquitto", "127.0.0.1", self.address.port, self.folder)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None


class Agent:
    """One device's agent as its own OS process, reaching the broker through its own proxy."""

    def __init__(self, node: str, config: Path, proxy: Proxy, log: Path) -> None:
        self.node, self.config, self.proxy, self.log = node, config, proxy, log
        self.proc: subprocess.Popen | None = None
        self.paused = False

    def start(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        with open(self.log, "ab") as log:
            cmd = [sys.executable, "-m", "bpcv_app.cli", "agent", "--threads", "1", "--config", str(self.config)]
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, cwd=ROOT)
        self.paused = False

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.paused = sig == signal.SIGSTOP

    def stop(self) -> None:
        if self.proc is None:
            return
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


class Tap:
    """An MQTT client on the broker that sees every message: it notes the latest round whose global model
    was published, and keeps the last messages to publish them again (duplicates)."""

    def __init__(self, broker: BrokerAddress, keep: int = 50) -> None:
        self.seen: deque[tuple[str, bytes]] = deque(maxlen=keep)
        self.round = 0
        self.bus = Bus("nemesis-tap", broker, self._on_message, ["bpcv/#"])

    def _on_message(self, topic: str, payload: bytes) -> None:
        levels = topic.split("/")
        if len(levels) == 7 and levels[4] == "round" and levels[6] == "global" and levels[5].isdigit():
            self.round = max(self.round, int(levels[5]))
        self.seen.append((topic, payload))

    def replay(self, n: int, rng: random.Random) -> int:
        picked = rng.sample(list(self.seen), min(n, len(self.seen)))
        return sum(bool(self.bus.publish(topic, payload, wait=5.0)) for topic, payload in picked)


class Disk:
    """A size-limited tmpfs mounted on one replica's folder; ``fill`` takes every free byte, ``free`` gives
    them back. Needs the right to mount (root with CAP_SYS_ADMIN); ``usable`` says whether it has it."""

    def __init__(self, folder: Path, size_mb: int = 8) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(folder)],
            capture_output=True,
            text=True,
            check=False,
        )
        self.usable, self.why = done.returncode == 0, done.stderr.strip()
        self.filler = folder / "nemesis-filler"

    def fill(self) -> None:
        with open(self.filler, "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:  # ENOSPC: the disk is full
                pass

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)

    def unmount(self) -> None:
        if self.usable:
            self.free()
            subprocess.run(["umount", str(self.folder)], check=False)


def coordinator_process(config: Path) -> psutil.Process | None:
    """The running coordinator process of a task, found by its config path on the command line."""
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if "coordinator" in cmdline and str(config) in cmdline:
            return proc
    return None


@dataclass
class Cluster:
    """Everything one task runs on that the nemesis can hurt."""

    broker: Broker
    coordinator_proxy: Proxy  # the coordinator, the requester and the standby agents reach the broker through it
    agents: list[Agent]
    coordinator_config: Path
    tap: Tap
    disk: Disk | None  # under the last agent's replica, when mounting is allowed
    coordinator_kills: int = 0

    def recover(self) -> None:
        """Undo every fault: broker up, proxies healed, paused processes resumed, dead agents restarted."""
        self.broker.start()
        for proxy in [self.coordinator_proxy, *(a.proxy for a in self.agents)]:
            proxy.freeze(signal.SIGCONT)
            proxy.heal()
        for agent in self.agents:
            agent.signal(signal.SIGCONT)
            agent.start()
        coord = coordinator_process(self.coordinator_config)
        if coord is not None:
            coord.send_signal(signal.SIGCONT)
        if self.disk is not None:
            self.disk.free()


COORDINATOR_GONE = {"target": "coordinator", "skipped": "not running"}  # between a kill and the demo's restart
MAX_COORDINATOR_KILLS = 2  # per task: the demo restarts a killed coordinator at most 3 times


@dataclass
class Nemesis:
    """Draws faults from a seeded generator, injects each, holds it, undoes it, and logs it."""

    cluster: Cluster
    rng: random.Random
    log: Callable[[dict], None]
    counts: dict[str, int] = field(default_factory=dict)

    def kinds(self) -> dict[str, Callable[[], dict]]:
        c = self.cluster
        kinds = {
            "agent-kill": self.agent_kill,
            "agent-pause": self.agent_pause,
            "partition": self.partition,
            "silent-partition": self.silent_partition,
            "connection-drop": self.connection_drop,
            "coordinator-partition": self.coordinator_partition,
            "coordinator-pause": self.coordinator_pause,
            "broker-kill": self.broker_kill,
            "duplicate": self.duplicate,
        }
        if c.coordinator_kills < MAX_COORDINATOR_KILLS and coordinator_process(c.coordinator_config) is not None:
            kinds["coordinator-kill"] = self.coordinator_kill
        if c.disk is not None and c.disk.usable:
            kinds["disk-full"] = self.disk_full
        return kinds

    def step(self, stop: threading.Event) -> None:
        """Inject one fault (its hold is cut short when ``stop`` is set), then wait a random gap."""
        kinds = self.kinds()
        kind = self.rng.choice(sorted(kinds))
        self._stop = stop
        try:
            details = kinds[kind]()
        except psutil.Error as exc:  # the coordinator exited between being found and being signalled
            details = {"skipped": str(exc)}
        if "skipped" not in details:  # e.g. the coordinator between a kill and its restart
            self.counts[kind] = self.counts.get(kind, 0) + 1
        self.log({"fault": kind, **details})
        stop.wait(self.rng.uniform(0.3, 2.0))

    def _hold(self, low: float, high: float) -> float:
        seconds = round(self.rng.uniform(low, high), 1)
        self._stop.wait(seconds)
        return seconds

    def agent_kill(self) -> dict:
        agent = self.rng.choice(self.cluster.agents)
        if agent.proc is not None and agent.proc.poll() is None:
            agent.proc.kill()
            agent.proc.wait(timeout=10)
        held = self._hold(1, 8)
        agent.start()
        return {"target": agent.node, "down_s": held}

    def agent_pause(self) -> dict:
        agent = self.rng.choice(self.cluster.agents)
        agent.signal(signal.SIGSTOP)
        held = self._hold(1, 10)
        agent.signal(signal.SIGCONT)
        return {"target": agent.node, "paused_s": held}

    def partition(self) -> dict:
        """k of the agents cut off from the broker at once (k >= a majority sometimes: the coordinator then
        sees only a minority)."""
        agents = self.rng.sample(self.cluster.agents, self.rng.randint(1, len(self.cluster.agents)))
        for agent in agents:
            agent.proxy.cut()
        held = self._hold(2, 15)
        for agent in agents:
            agent.proxy.heal()
        return {"target": sorted(a.node for a in agents), "cut_s": held}

    def silent_partition(self) -> dict:
        """k agents' links go silent: their proxies stop forwarding without closing anything, as a Wi-Fi
        link that drops packets does; the MQTT keepalive is what notices."""
        agents = self.rng.sample(self.cluster.agents, self.rng.randint(1, len(self.cluster.agents)))
        for agent in agents:
            agent.proxy.freeze(signal.SIGSTOP)
        held = self._hold(3, 20)
        for agent in agents:
            agent.proxy.freeze(signal.SIGCONT)
        return {"target": sorted(a.node for a in agents), "silent_s": held}

    def connection_drop(self) -> dict:
        """One agent's connection reset: whatever was in flight on it is lost."""
        agent = self.rng.choice(self.cluster.agents)
        agent.proxy.cut()
        agent.proxy.heal()
        return {"target": agent.node}

    def coordinator_partition(self) -> dict:
        self.cluster.coordinator_proxy.cut()
        held = self._hold(2, 12)
        self.cluster.coordinator_proxy.heal()
        return {"target": "coordinator", "cut_s": held}

    def coordinator_pause(self) -> dict:
        proc = coordinator_process(self.cluster.coordinator_config)
        if proc is None:
            return dict(COORDINATOR_GONE)
        proc.send_signal(signal.SIGSTOP)
        held = self._hold(1, 8)
        proc.send_signal(signal.SIGCONT)
        return {"target": "coordinator", "paused_s": held}

    def coordinator_kill(self) -> dict:
        proc = coordinator_process(self.cluster.coordinator_config)
        if proc is None:
            return dict(COORDINATOR_GONE)
        proc.kill()
        self.cluster.coordinator_kills += 1
        return {"target": "coordinator", "restarted_by": "the demo"}

    def broker_kill(self) -> dict:
        self.cluster.broker.kill()
        held = self._hold(1, 6)
        self.cluster.broker.start()
        return {"target": "mosquitto", "down_s": held}

    def duplicate(self) -> dict:
        sent = self.cluster.tap.replay(self.rng.randint(1, 8), self.rng)
        return {"target": "broker", "republished": sent}

    def disk_full(self) -> dict:
        disk = self.cluster.disk
        assert disk is not None
        disk.fill()
        held = self._hold(3, 12)
        disk.free()
        return {"target": os.path.basename(os.path.dirname(disk.folder)), "full_s": held}
