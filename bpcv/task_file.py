"""Task files: a TOML holding a task's fields (``bpcv.task.TaskSpec``), written by a requester and checked
offline (``bpcv task check``) before it is signed and posted.

The model is a preset (``model = "mlp:128"``) or ``model_file = "PATH"`` (a Keras ``.json`` or ``.keras``
file, relative to the TOML). A task on the devices' own data has ``dataset = "local"`` and a ``[data]``
table: the schema every device reads its file by (``bpcv.datasources.DataSchema``, docs/DATA.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tomllib

from bpcv.errors import ConfigError
from bpcv.model_spec import read_model_file
from bpcv.task import TaskSpec


def read_task_body(path: Path) -> dict[str, Any]:
    """The task fields a TOML file holds, ``model_file`` read into ``model``; ConfigError naming why not."""
    try:
        body = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it: {exc.strerror or exc}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    model_file = body.pop("model_file", None)
    if model_file is not None:
        if "model" in body:
            raise ConfigError(f"{path}: give either model or model_file, not both")
        if not isinstance(model_file, str):
            raise ConfigError(f"{path}: model_file must be a path string")
        model_path = path.parent / model_file
        if not model_path.is_file():
            raise ConfigError(f"{path}: model_file {model_file!r} not found (looked at {model_path})")
        try:
            body["model"] = read_model_file(model_path)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from exc
    return body


def load_task_file(path: Path, **fill: Any) -> TaskSpec:
    """The TaskSpec a task TOML describes; ``fill``: fields used where the file has none (a demo's task id)."""
    body = {**fill, **read_task_body(path)}
    try:
        return TaskSpec.from_body(body)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
