"""The coordinator's per-task checkpoint: everything a restarted coordinator needs to resume a task
from its last decided round, in one LMDB write transaction per save (a SIGKILL leaves the previous
checkpoint intact).

Phases: ``started`` (roster formed, no round decided), ``decided`` (round r's result published,
its block not yet seen), ``done`` (round r closed). A coordinator that resumes in ``decided``
publishes round r's result again and waits for its block; otherwise it starts round r + 1.
"""

from __future__ import annotations

import enum
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lmdb

from bpcv.errors import ConfigError
from coordinator.summary import RoundRow

STATE_KEY, WEIGHTS_KEY, TASK_KEY = b"state", b"weights", b"task"


class NodeStatus(str, enum.Enum):
    """A node's standing in the task as the coordinator sees it (the value is what coordinator.json shows)."""

    ACTIVE = "active"  # in the roster
    STANDBY = "standby"  # joined, waiting to be admitted
    ELIMINATED = "eliminated"  # removed: lowest quality, or an invalid update
    DROPPED = "dropped"  # missed a round (crashed, lost the network); back to standby if it joins again
    LEFT = "left"  # said it stops contributing (privacy budget spent)

    def __str__(self) -> str:
        return self.value


@dataclass
class RunState:
    """One task's progress on the coordinator (JSON-serialisable)."""

    task_id: str
    joins: dict[str, list[int]]  # node -> [join order, sample count]
    roster: list[str]
    standby: list[str]
    status: dict[str, NodeStatus]
    rewards: dict[str, float]
    left: dict[str, str] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)
    privacy: dict[str, dict[str, Any]] = field(default_factory=dict)
    rows: list[RoundRow] = field(default_factory=list)
    round: int = 0
    phase: str = "started"
    pending_row: RoundRow | None = None  # the decided round's row, before its block
    pending_stop: str | None = None  # why the task stops after the decided round, if it does
    round_records: list[str] = field(default_factory=list)  # hex of the decided round's records + result
    round_votes: list[str] = field(default_factory=list)  # hex of the votes its result lists (relayed if late)
    stopped_because: str | None = None
    final_digest: str | None = None
    aborted_round: dict[str, Any] | None = None
    elapsed_s: float = 0.0
    dissenters: list[str] = field(default_factory=list)  # the last decided round's dissenting voters
    outlier_streaks: dict[str, int] = field(default_factory=dict)  # its outliers: rounds running each was one

    def to_json(self) -> bytes:
        out = asdict(self)
        out["rows"] = [r.to_json() for r in self.rows]
        out["pending_row"] = self.pending_row.to_json() if self.pending_row else None
        return json.dumps(out).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> RunState:
        """Raises TypeError/ValueError/KeyError for a state this version cannot read."""
        data = json.loads(raw)
        data["rows"] = [RoundRow.from_json(r) for r in data["rows"]]
        data["pending_row"] = RoundRow.from_json(data["pending_row"]) if data["pending_row"] else None
        data["status"] = {n: NodeStatus(v) for n, v in data["status"].items()}
        if "outliers" in data:  # a state saved before streaks: its outliers had been outliers one round at least
            data["outlier_streaks"] = dict.fromkeys(data.pop("outliers"), 1)
        return cls(**data)


class Checkpoint:
    """An LMDB environment in the run folder holding the latest RunState and global weights."""

    def __init__(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self._env = lmdb.open(str(path), map_size=1 << 30, subdir=True, metasync=True, sync=True)

    def save(self, state: RunState, weights: bytes) -> None:
        with self._env.begin(write=True) as txn:
            txn.put(STATE_KEY, state.to_json())
            txn.put(WEIGHTS_KEY, weights)

    def save_announcement(self, raw: bytes) -> None:
        """The requester's signed task announcement, kept so that a restart resumes the task even when the
        broker lost its retained copy (a broker killed before it saved its store)."""
        with self._env.begin(write=True) as txn:
            txn.put(TASK_KEY, raw)

    def load_announcement(self) -> bytes | None:
        with self._env.begin() as txn:
            raw = txn.get(TASK_KEY)
        return bytes(raw) if raw is not None else None

    def load(self) -> tuple[RunState, bytes] | None:
        with self._env.begin() as txn:
            raw, weights = txn.get(STATE_KEY), txn.get(WEIGHTS_KEY)
        if raw is None or weights is None:
            return None
        try:
            return RunState.from_json(bytes(raw)), bytes(weights)
        except (TypeError, ValueError, KeyError) as exc:
            raise ConfigError(f"coordinator checkpoint unreadable: {exc}") from exc

    def close(self) -> None:
        self._env.close()
