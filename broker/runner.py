"""Start the broker: mosquitto with the project's config when installed, otherwise the embedded broker."""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

from bpcv.errors import BpcvError, ConfigError
from bpcv.identity import Identity
from bpcv.mqtt import BrokerAddress, Bus
from bpcv.sampler import Sample, Sampler
from bpcv.topics import DEFAULT_BASE, Topics

log = logging.getLogger(__name__)
DEFAULT_MAX_PACKET = 64 * 1024 * 1024  # mosquitto's max_packet_size in our configs: models travel to peers


def mosquitto_binary() -> str | None:
    """Path of the mosquitto executable, if installed (Debian puts it in /usr/sbin)."""
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()), None
    )


def render_mosquitto_conf(host: str, port: int, max_packet: int = DEFAULT_MAX_PACKET) -> str:
    template = (Path(__file__).parent / "mosquitto.conf.template").read_text()
    return template.format(host=host, port=port, max_packet=max_packet)


BRIDGE = """
# Bridged to the central broker {url}: everything under {base}/ both ways (mosquitto's own bridge;
# over TLS when the central broker is, with the bridge's own certificate: docs/SCALE.md).
connection {name}
address {host}:{port}
topic {base}/# both 1
bridge_protocol_version mqttv311
try_private true
cleansession true
notifications false
restart_timeout 1 10
"""
BRIDGE_TLS = """# mosquitto started as root switches to this user, who can read the bridge's key (mode 0600)
user {owner}
bridge_cafile {ca}
bridge_certfile {cert}
bridge_keyfile {key}
bridge_tls_version tlsv1.2
bridge_insecure false
"""


def file_owner(path: str | Path) -> str:
    """The user owning ``path``: mosquitto started as root switches to it (a ``user`` line) so that it can
    read the keys there, which are mode 0600."""
    return pwd.getpwuid(os.stat(path).st_uid).pw_name


def render_bridge_conf(name: str, central: BrokerAddress, base_topic: str = DEFAULT_BASE) -> str:
    """The lines that bridge a site mosquitto to the central one, for every topic under ``base_topic``;
    over TLS when ``central`` has TLS files (the consortium CA and the bridge's certificate, whose CN
    the central ACL grants the whole base topic: ``bpcv broker init --bridge NAME``)."""
    lines = BRIDGE.format(url=central.url(), name=name, host=central.host, port=central.port, base=base_topic)
    if central.tls is not None:
        tls = central.tls
        lines += BRIDGE_TLS.format(owner=file_owner(tls.key), ca=tls.ca, cert=tls.cert, key=tls.key)
    return lines


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float = 15.0, alive: subprocess.Popen | None = None) -> None:
    """Block until something accepts TCP connections on host:port (or until the ``alive`` process exits)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alive is not None and alive.poll() is not None:
            return
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise ConfigError(f"no broker came up on {host}:{port} within {timeout:.0f}s")


def start_broker_process(
    kind: str,
    host: str,
    port: int,
    workdir: Path,
    metrics_key: Path | None = None,
    bridge_to: BrokerAddress | None = None,
) -> subprocess.Popen:
    """Start ``mosquitto`` (the plain loopback config), ``secure`` (mosquitto with the TLS config that
    ``bpcv broker init`` wrote in ``workdir``) or ``embedded`` as a child process; wait until it listens.
    With ``metrics_key`` the child is ``bpcv broker run``, which runs the broker and publishes its samples.
    ``bridge_to``: a plain mosquitto bridged to that central broker (a site broker)."""
    workdir.mkdir(parents=True, exist_ok=True)
    if kind not in ("mosquitto", "secure", "embedded"):
        raise ConfigError(f"unknown broker kind {kind!r}")
    binary = mosquitto_binary()
    if kind != "embedded" and binary is None:
        raise ConfigError("mosquitto is not installed (apt-get install mosquitto), use --broker embedded")
    conf = workdir / "mosquitto.conf"
    if kind == "mosquitto":
        bridge = render_bridge_conf(f"site-{port}", bridge_to) if bridge_to is not None else ""
        conf.write_text(render_mosquitto_conf(host, port) + bridge)
    elif kind == "secure" and not conf.is_file():
        raise ConfigError(f"{conf} missing: run `bpcv broker init {workdir}` first")
    if kind != "embedded" and metrics_key is None:
        command = [str(binary), "-c", str(conf)]
    else:
        command = [sys.executable, "-m", "bpcv_app.cli", "broker", "run", "--host", host, "--port", str(port)]
        command += ["--secure", str(workdir)] if kind == "secure" else [f"--{kind}"]
        command += ["--metrics-key", str(metrics_key)] if metrics_key is not None else []
    log_path = workdir / f"broker-{kind}.log"
    proc = _start_listening(command, log_path, host, port)
    if proc.poll() is not None and kind != "embedded" and (aside := set_aside_damaged_store(conf, log_path)):
        log.warning(
            "mosquitto could not read its persistence file (%s): moved it to %s and started with an empty "
            "store. Lost: retained task announcements and messages queued for absent nodes. Not lost: the "
            "chain (every node's LMDB replica) and the coordinator's checkpoint; running agents resubscribe "
            "when they reconnect, and a requester posts a task again for devices that connect later",
            _last_lines(log_path),
            aside,
        )
        proc = _start_listening(command, log_path, host, port)
    if proc.poll() is not None:
        raise ConfigError(f"{command[0]} exited with code {proc.returncode}: {_last_lines(log_path)}")
    return proc


def _start_listening(command: list[str], log_path: Path, host: str, port: int) -> subprocess.Popen:
    """``command`` as a child writing ``log_path``, once it listens on host:port or has exited."""
    with open(log_path, "wb") as log_file:  # the child keeps its own handle
        proc = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        wait_for_port(host, port, alive=proc)
    except ConfigError:
        proc.kill()
        raise
    return proc


def _last_lines(log_path: Path, n: int = 3) -> str:
    lines = log_path.read_text(errors="replace").strip().splitlines()
    return " | ".join(line.strip() for line in lines[-n:]) or "(no output)"


# mosquitto 2.0's last line when it cannot read its persistence file (zeroed, truncated, not its format)
DAMAGED_STORE = "Couldn't open database"


def persistence_file(conf: Path) -> Path | None:
    """The persistence file of a mosquitto.conf with ``persistence true`` (``persistence_location`` +
    ``persistence_file``, default ``mosquitto.db``), or None."""
    settings: dict[str, str] = {}
    for line in conf.read_text().splitlines():
        key, _, value = line.strip().partition(" ")
        if key and not key.startswith("#"):
            settings[key] = value.strip()
    if settings.get("persistence") != "true":
        return None
    return Path(settings.get("persistence_location", "") or ".") / settings.get("persistence_file", "mosquitto.db")


def set_aside_damaged_store(conf: Path, log_path: Path) -> Path | None:
    """When mosquitto's log says it could not read its persistence file, move the file aside (kept for
    a post-mortem) and return where it went; None when that was not why it stopped."""
    store = persistence_file(conf) if conf.is_file() else None
    if store is None or not store.is_file() or DAMAGED_STORE not in log_path.read_text(errors="replace"):
        return None
    aside = store.with_name(f"{store.name}.damaged-{time.strftime('%Y%m%dT%H%M%S')}")
    store.rename(aside)
    return aside


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM when the runner dies, even by SIGKILL (Linux)."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class BrokerMetrics:
    """The broker runner's sampler: psutil samples of the broker process (mosquitto, or the embedded
    broker's own process), signed with the broker's member key, on its metrics topic (QoS 0)."""

    def __init__(self, key_file: Path, address: BrokerAddress, base_topic: str = DEFAULT_BASE) -> None:
        self.identity = Identity.load(key_file)
        self.topic = Topics(base_topic).metrics(self.identity.node_id)
        self.bus = Bus(f"{self.identity.node_id}-metrics", address, lambda _t, _p: None)
        self.sampler: Sampler | None = None

    def start(self, pid: int) -> None:
        """Connect (in the background, once the broker listens) and sample process ``pid`` every second."""
        self.sampler = Sampler(self._publish, process=psutil.Process(pid))

        def connect_then_sample() -> None:
            try:
                self.bus.connect(timeout=60)
            except BpcvError as exc:
                log.error("broker metrics off: %s", exc)
                return
            assert self.sampler is not None
            self.sampler.start()

        threading.Thread(target=connect_then_sample, name="broker-metrics", daemon=True).start()

    def _publish(self, sample: Sample) -> None:
        self.bus.publish(self.topic, sample.sealed(self.identity), qos=0)

    def stop(self) -> None:
        if self.sampler is not None:
            self.sampler.stop()
            self.sampler = None
            self.bus.close()


def supervise(command: list[str], metrics: BrokerMetrics | None) -> int:
    """Run the broker ``command`` as a child until it exits, passing on SIGTERM/SIGINT, with ``metrics``
    sampling it; return its exit status."""
    proc = subprocess.Popen(command, preexec_fn=_die_with_parent)

    def forward(signum: int, _frame: object) -> None:
        if metrics is not None:
            metrics.stop()  # before the broker goes: no "disconnected" noise in the log
        proc.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    if metrics is not None:
        metrics.start(proc.pid)
    try:
        return proc.wait()
    finally:
        if metrics is not None:
            metrics.stop()
