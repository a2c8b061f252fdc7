"""What a device has spent on each task, kept on disk: a restarted agent must not forget the privacy
its earlier updates already cost.

One JSON file per node, beside its chain replica (``privacy-spent-NODE.json``): for every task, the
mechanism, noise multiplier, sampling rate and delta it trained under, and the DP steps taken. It is
written (atomically: a temporary file, fsync, rename) after each round's training and before the update
is published. An agent that joins a task again resumes from the steps recorded. It refuses to train
when the file cannot be read, or when the task's record was made under other privacy settings: it
cannot know what it has spent.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from bpcv.errors import BpcvError
from edge_agent.privacy.accountant import PrivacyAccountant

SETTINGS = ("mechanism", "noise_multiplier", "sampling_rate", "delta")


def spent_file(chain_dir: str, node_id: str) -> Path:
    """Where ``node_id`` keeps its record: beside its chain replica."""
    return Path(chain_dir).resolve().parent / f"privacy-spent-{node_id}.json"


def _read(path: Path) -> dict[str, dict]:
    if not path.exists():
        return {}
    try:
        records = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise BpcvError(f"privacy record {path} is unreadable ({exc}); not training without knowing what was spent")
    if not isinstance(records, dict) or not all(isinstance(r, dict) for r in records.values()):
        raise BpcvError(f"privacy record {path} is not a map of task records; not training without it")
    return records


def resume(path: Path, task_id: str, accountant: PrivacyAccountant) -> None:
    """Set ``accountant.steps`` to what this device already spent on ``task_id``; BpcvError if the record
    is unreadable or was made under other settings."""
    record = _read(path).get(task_id)
    if record is None:
        return
    mine = {k: getattr(accountant, k) for k in SETTINGS}
    theirs = {k: record.get(k) for k in SETTINGS}
    if mine != theirs or not isinstance(record.get("steps"), int) or record["steps"] < 0:
        raise BpcvError(
            f"task {task_id}: this device already trained on it under {theirs} ({record.get('steps')} steps, "
            f"{path}); its privacy settings are now {mine}: restore them to go on"
        )
    accountant.steps = record["steps"]


def record(path: Path, task_id: str, accountant: PrivacyAccountant) -> None:
    """Store the steps ``accountant`` has spent on ``task_id`` (atomically)."""
    records = _read(path)
    records[task_id] = {**{k: getattr(accountant, k) for k in SETTINGS}, "steps": accountant.steps}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w") as f:
        json.dump(records, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
