"""The coordinator's per-task checkpoint: everything a restarted coordinator needs to resume a task
from its last decided round, in one LMDB write transaction per save (a SIGKILL leaves the previous
checkpoint intact).

Phases: ``started`` (roster formed, no round decided), ``decided`` (round r's result published,
its block not yet seen), ``done`` (round r closed). A coordinator that resumes in ``decided``
publishes round r's result again and waits for its block; otherwise it starts round r + 1.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lmdb

from bpcv.errors import ConfigError

STATE_KEY, WEIGHTS_KEY = b"state", b"weights"


@dataclass
class RunState:
    """One task's progress on the coordinator (JSON-serialisable)."""

    task_id: str
    joins: dict[str, list[int]]  # node -> [join order, sample count]
    roster: list[str]
    standby: list[str]
    status: dict[str, str]
    rewards: dict[str, float]
    left: dict[str, str] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)
    privacy: dict[str, dict[str, Any]] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    round: int = 0
    phase: str = "started"
    pending_row: dict[str, Any] | None = None  # the decided round's row, before its block
    pending_stop: str | None = None  # why the task stops after the decided round, if it does
    round_records: list[str] = field(default_factory=list)  # hex of the decided round's records + result
    stopped_because: str | None = None
    final_digest: str | None = None
    aborted_round: dict[str, Any] | None = None
    elapsed_s: float = 0.0


class Checkpoint:
    """An LMDB environment in the run folder holding the latest RunState and global weights."""

    def __init__(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self._env = lmdb.open(str(path), map_size=1 << 30, subdir=True, metasync=True, sync=True)

    def save(self, state: RunState, weights: bytes) -> None:
        with self._env.begin(write=True) as txn:
            txn.put(STATE_KEY, json.dumps(asdict(state)).encode())
            txn.put(WEIGHTS_KEY, weights)

    def load(self) -> tuple[RunState, bytes] | None:
        with self._env.begin() as txn:
            raw, weights = txn.get(STATE_KEY), txn.get(WEIGHTS_KEY)
        if raw is None or weights is None:
            return None
        try:
            return RunState(**json.loads(bytes(raw))), bytes(weights)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"coordinator checkpoint unreadable: {exc}") from exc

    def close(self) -> None:
        self._env.close()
