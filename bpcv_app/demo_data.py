"""``bpcv demo --data NAME|DIR``: a live task on each device's own data instead of MNIST shards.

A data folder holds one file per device (``node-*.csv``, ``.parquet`` or ``.npz``, or ``node-*/`` image
folders), ``task.toml`` (the task's fields: ``dataset = "local"``, its category, a ``[data]`` schema, the
model as ``model`` or ``model_file``) and optionally ``test.*``, the requester's own test file (the
coordinator's metric; without one it is the agents' validation mean). ``NAME`` is a packaged sensor set
(``bpcv data list``), written out as such a folder in the run folder first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bpcv.datasources import DEVICE_FILE_SUFFIXES
from bpcv.errors import ConfigError
from bpcv.task import TaskSpec
from bpcv.task_file import load_task_file


@dataclass(frozen=True)
class DataFolder:
    """One device file (or image folder) per agent, the task file, and the requester's test file if any."""

    path: Path
    devices: tuple[Path, ...]
    test: Path | None

    def task(self, task_id: str, coordinator: str) -> TaskSpec:
        """The folder's task file as a task; it must be a task on the devices' own data."""
        task = load_task_file(self.path / "task.toml", task_id=task_id, coordinator=coordinator)
        if task.schema is None:
            raise ConfigError(f'{self.path / "task.toml"}: a data folder\'s task needs dataset = "local" and [data]')
        return task


def open_data_folder(path: Path) -> DataFolder:
    """Check a data folder's layout (not yet its files: each agent reads its own when the task comes)."""
    if not path.is_dir():
        raise ConfigError(f"--data {path}: not a folder and not a packaged data set (see bpcv data list)")
    if not (path / "task.toml").is_file():
        raise ConfigError(f"--data {path}: no task.toml (the task's fields and its [data] schema)")
    devices = tuple(p for p in sorted(path.glob("node-*")) if p.is_dir() or p.suffix.lower() in DEVICE_FILE_SUFFIXES)
    if len(devices) < 2:
        raise ConfigError(f"--data {path}: {len(devices)} device files (node-*.csv, ...); a task needs at least 2")
    tests = [p for p in sorted(path.glob("test*")) if p.is_dir() or p.suffix.lower() in DEVICE_FILE_SUFFIXES]
    if len(tests) > 1:
        raise ConfigError(f"--data {path}: more than one test file: {[p.name for p in tests]}")
    return DataFolder(path.resolve(), tuple(d.resolve() for d in devices), tests[0].resolve() if tests else None)


def resolve_data(argument: str, out: Path) -> DataFolder:
    """``--data``: a packaged set's name (written out under the run folder) or a data folder."""
    if Path(argument).exists():
        return open_data_folder(Path(argument))
    from bpcv.packaged import PACKAGED_SETS, materialize

    if argument not in PACKAGED_SETS:
        raise ConfigError(f"--data {argument}: no such folder, and not a packaged set ({', '.join(PACKAGED_SETS)})")
    return open_data_folder(materialize(argument, out / "data"))
