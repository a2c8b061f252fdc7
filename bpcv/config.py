"""Node configuration files (TOML): load with a clear error naming the bad key, write for bundles and demos."""

from __future__ import annotations

from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

import tomllib

from bpcv.errors import ConfigError
from bpcv.mqtt import BrokerAddress, TlsFiles
from bpcv.topics import DEFAULT_BASE

T = TypeVar("T")
PATH_KEYS = ("key", "genesis", "chain_dir", "run_dir", "data_path", "tls_ca", "tls_cert", "tls_key")


def broker_address(config: AgentConfig | CoordinatorConfig) -> BrokerAddress:
    """The broker a node's config names, with its TLS files when the URL is mqtts://."""
    tls = TlsFiles(config.tls_ca, config.tls_cert, config.tls_key) if config.tls_ca else None
    return BrokerAddress.parse(config.broker, tls)


@dataclass(frozen=True, kw_only=True)
class AgentConfig:
    """One edge agent: its key, where the broker is, its data and chain replica."""

    key: str
    genesis: str
    chain_dir: str
    broker: str = "mqtt://127.0.0.1:1883"
    tls_ca: str = ""  # with an mqtts:// broker: the consortium CA, and this node's certificate and key
    tls_cert: str = ""
    tls_key: str = ""
    base_topic: str = DEFAULT_BASE
    dataset: str = "mnist"
    data_path: str = ""
    shard: int = 0
    num_shards: int = 1
    partition: str = "iid"
    seed: int = 0
    val_fraction: float = 0.1
    behaviour: str = "honest"
    join_delay_s: float = 0.0
    dp: str = "off"  # GD-DP mechanism: laplace | gaussian | off
    epsilon: float = 10.0  # this agent's total privacy budget for a task
    delta: float = -1.0  # < 0: the mechanism's default (1e-5; 0 asks Laplace for pure epsilon-DP)
    noise_multiplier: float = 0.0  # 0: calibrated from the budget over the task's planned rounds
    clip: float = 0.0  # 0: the mechanism's default (L1 20 for Laplace, L2 3 for Gaussian)
    prometheus: str = ""  # HOST:PORT: serve this process's samples for Prometheus on /metrics (off when empty)


@dataclass(frozen=True, kw_only=True)
class CoordinatorConfig:
    """The aggregation server: its key, broker, chain replica and where it writes runs."""

    key: str
    genesis: str
    chain_dir: str
    run_dir: str
    broker: str = "mqtt://127.0.0.1:1883"
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    base_topic: str = DEFAULT_BASE
    task: str = ""
    data_path: str = ""
    exit_after_task: bool = True
    prometheus: str = ""  # HOST:PORT: serve this process's samples for Prometheus on /metrics (off when empty)


def load_config(cls: type[T], path: Path | str) -> T:
    """Read ``path`` into ``cls``; relative paths inside are taken relative to the file's folder."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config {path} is not valid TOML: {exc}") from exc
    known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(f"config {path}: unknown key(s) {unknown}; known: {sorted(known)}")
    missing = sorted(n for n, f in known.items() if f.default is MISSING and n not in raw)
    if missing:
        raise ConfigError(f"config {path}: missing key(s) {missing}")
    values: dict[str, Any] = {}
    for name, value in raw.items():
        default = known[name].default
        expected = str if default is MISSING else type(default)
        if expected is float and isinstance(value, int):
            value = float(value)
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise ConfigError(f"config {path}: {name} must be {expected.__name__}, not {value!r}")
        if name in PATH_KEYS and value:
            value = str((path.parent / value).resolve())
        values[name] = value
    return cls(**values)


def write_config(obj: Any, path: Path) -> None:
    """Write a config dataclass as flat TOML."""
    lines = []
    for f in fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, (int, float)):
            text = repr(value)
        else:
            text = '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
        lines.append(f"{f.name} = {text}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
