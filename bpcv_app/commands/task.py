"""``bpcv task check FILE``: validate a task file offline, before it is signed and posted.

FILE is TOML with the task's fields (``bpcv.task.TaskSpec``); the model is a preset (``model =
"mlp:128"``) or ``model_file = "PATH"`` (a ``.json`` or ``.keras`` file, relative to the TOML). It
checks the schema, the model against the allow-list and the JSON size cap, then builds the model
(TensorFlow, loaded only here) for the parameter cap. Prints one summary line (exit 0) or the first
problem in one line (exit 2).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import tomllib

from bpcv.errors import ConfigError

# Datasets whose shape is known without loading them, so a check can build a preset and compare.
KNOWN_DATA: dict[str, tuple[tuple[int, ...], int]] = {"mnist": ((28, 28, 1), 10), "cifar10": ((32, 32, 3), 10)}


def load_task_file(path: Path) -> Any:
    """The TaskSpec a task TOML describes (``model_file`` read into ``model``); ConfigError naming why not."""
    from bpcv.model_spec import read_model_file
    from bpcv.task import TaskSpec

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
        body["model"] = read_model_file(model_path)
    try:
        return TaskSpec.from_body(body)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def task_summary(task: Any) -> str:
    """One line: the model kind, layers, parameters and bytes per update (float32); builds the model."""
    from bpcv.model_spec import check_keras_json, dp_refusal, is_keras_json
    from bpcv.models import build_keras_json, build_model, configure_tensorflow

    configure_tensorflow(1)
    known = KNOWN_DATA.get(task.dataset)
    if is_keras_json(task.model):
        info = check_keras_json(task.model)
        shape, classes = known if known and task.category == "classification" else (None, None)
        model = build_keras_json(task.model, shape, classes)
        dp = dp_refusal(info)
        kind = f"keras-json {info.class_name}, {len(model.layers)} layers, DP-SGD {'refused' if dp else 'ok'}"
    elif known is not None:
        model = build_model(task.model, known[0], known[1] if task.category == "classification" else 1)
        kind = f"preset {task.model} on {task.dataset}, {len(model.layers)} layers, DP-SGD ok"
    else:
        return f"ok: task {task.task_id}: preset {task.model} (parameters depend on the {task.dataset} data)"
    params = int(model.count_params())
    return (
        f"ok: task {task.task_id}: {kind}, {params:,} parameters, "
        f"{4 * params:,} bytes per update (float32), {task.category}, {task.rounds} rounds"
    )


def cmd_task_check(args: argparse.Namespace) -> int:
    path = Path(args.file)
    task = load_task_file(path)
    try:
        print(task_summary(task))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    task = sub.add_parser("task", help="task files: check one offline").add_subparsers(
        dest="task_command", required=True
    )
    check = task.add_parser("check", help="validate a task TOML (schema, model allow-list, sizes); exit 2 on a problem")
    check.add_argument("file", help="task TOML: TaskSpec fields; model = PRESET or model_file = PATH")
    check.set_defaults(func=cmd_task_check)
