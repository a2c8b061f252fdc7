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

from bpcv.errors import ConfigError
from bpcv.task_file import load_task_file

# Datasets whose shape is known without loading them, so a check can build a preset and compare.
KNOWN_DATA: dict[str, tuple[tuple[int, ...], int]] = {"mnist": ((28, 28, 1), 10), "cifar10": ((32, 32, 3), 10)}


def task_summary(task: Any) -> str:
    """One line: the model kind, layers, parameters and bytes per update (float32); builds the model."""
    from bpcv.model_spec import check_keras_json, dp_refusal, is_keras_json
    from bpcv.models import build_keras_json, build_model, configure_tensorflow

    configure_tensorflow(1)
    known = KNOWN_DATA.get(task.dataset)
    if known is not None and task.category == "regression":
        known = (known[0], 1)
    schema = task.schema
    if schema is not None and schema.input_shape() is not None:
        known = (schema.input_shape(), schema.outputs)
    if is_keras_json(task.model):
        info = check_keras_json(task.model)
        shape, classes = known if known else (None, None)
        model = build_keras_json(task.model, shape, classes)
        dp = dp_refusal(info)
        kind = f"keras-json {info.class_name}, {len(model.layers)} layers, DP-SGD {'refused' if dp else 'ok'}"
    elif known is not None:
        model = build_model(task.model, known[0], known[1])
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
    task = load_task_file(path, task_id="check", coordinator="coordinator")  # a data folder's task file has neither
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
