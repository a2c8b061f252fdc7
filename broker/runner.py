"""Start the broker: mosquitto with the project's config when installed, otherwise the embedded broker."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from bpcv.errors import ConfigError
from broker.embedded import DEFAULT_MAX_PACKET


def mosquitto_binary() -> str | None:
    """Path of the mosquitto executable, if installed (Debian puts it in /usr/sbin)."""
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()), None
    )


def render_mosquitto_conf(host: str, port: int, max_packet: int = DEFAULT_MAX_PACKET) -> str:
    template = (Path(__file__).parent / "mosquitto.conf.template").read_text()
    return template.format(host=host, port=port, max_packet=max_packet)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float = 15.0) -> None:
    """Block until something accepts TCP connections on host:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise ConfigError(f"no broker came up on {host}:{port} within {timeout:.0f}s")


def start_broker_process(kind: str, host: str, port: int, workdir: Path) -> subprocess.Popen:
    """Start ``mosquitto`` (the plain loopback config), ``secure`` (mosquitto with the TLS config that
    ``bpcv broker init`` wrote in ``workdir``) or ``embedded`` as a child process; wait until it listens."""
    workdir.mkdir(parents=True, exist_ok=True)
    if kind in ("mosquitto", "secure"):
        binary = mosquitto_binary()
        if binary is None:
            raise ConfigError("mosquitto is not installed (apt-get install mosquitto), use --broker embedded")
        conf = workdir / "mosquitto.conf"
        if kind == "mosquitto":
            conf.write_text(render_mosquitto_conf(host, port))
        elif not conf.is_file():
            raise ConfigError(f"{conf} missing: run `bpcv broker init {workdir}` first")
        command = [binary, "-c", str(conf)]
    elif kind == "embedded":
        command = [sys.executable, "-m", "bpcv.cli", "broker", "run", "--embedded", "--host", host, "--port", str(port)]
    else:
        raise ConfigError(f"unknown broker kind {kind!r}")
    with open(workdir / f"broker-{kind}.log", "wb") as log:  # the child keeps its own handle
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port(host, port)
    except ConfigError:
        proc.kill()
        raise
    return proc
