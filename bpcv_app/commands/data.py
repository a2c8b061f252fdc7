"""``bpcv data check``: read one device's own data against a task's schema, offline, and say what the
device would train on (counts only) or the one line that is wrong."""

from __future__ import annotations

import argparse


def cmd_data_check(args: argparse.Namespace) -> int:
    from bpcv.datasources import describe, load_schema, prepare_local

    schema = load_schema(args.schema)
    data, shard = prepare_local(args.data, schema, args.val_fraction, args.seed)
    print(describe(data, shard, schema))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="a device's own data: check it against a task's schema").add_subparsers(
        dest="data_command", required=True
    )
    check = data.add_parser("check", help="read DATA as the schema says; print counts, or exit 2 with the problem")
    check.add_argument("--schema", required=True, help="a TOML file holding the task's data schema fields")
    check.add_argument("data", help="a .csv, .parquet or .npz file, or an image folder (one subfolder per class)")
    check.add_argument("--val-fraction", type=float, default=0.1, help="share of samples kept for validation")
    check.add_argument("--seed", type=int, default=0, help="this device's split seed")
    check.set_defaults(func=cmd_data_check)
