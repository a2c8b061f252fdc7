"""``bpcv report`` and ``bpcv monitor``: looking at a run afterwards, and at a fleet while it runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from bpcv_app.commands.common import add_broker_arguments, broker_from_args


def cmd_report(args: argparse.Namespace) -> int:
    from bpcv_app.report import write_report

    paths = write_report(Path(args.run_dir), Path(args.out) if args.out else None)
    for path in paths:
        print(path)
    return 0


def cmd_monitor(args: argparse.Namespace) -> int:
    import os

    from bpcv.errors import ConfigError
    from bpcv.mqtt import Bus
    from bpcv_app.monitor import run_monitor
    from ledger.replica import Replica

    genesis = Path(args.genesis)
    if not genesis.is_file():
        raise ConfigError(f"--genesis {genesis}: no such file (the consortium's genesis.bin)")
    replica = Replica.open(args.chain or None, genesis.read_bytes())  # members: genesis, plus registered ones
    address = broker_from_args(args)

    def bus(on_message, subscriptions):  # noqa: ANN001, ANN202 - paho callback, topic list
        return Bus(f"monitor-{os.getpid()}", address, on_message, subscriptions)

    run_monitor(bus, replica.state.registry, args.base_topic, args.duration or None, live=not args.once)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    report = sub.add_parser("report", help="figures and a Markdown summary of a run folder")
    report.add_argument("run_dir", help="the run folder (bpcv demo --out, or the coordinator's run_dir)")
    report.add_argument("--out", default="", help="where to write (default RUN_DIR/report)")
    report.set_defaults(func=cmd_report)

    mon = sub.add_parser("monitor", help="live terminal view of the fleet and the running round, from the broker")
    add_broker_arguments(mon)
    mon.add_argument("--genesis", required=True, help="the consortium's genesis.bin (signatures are checked)")
    mon.add_argument("--chain", default="", help="a replica folder, to also know members registered later")
    mon.add_argument("--base-topic", default="bpcv/v1")
    mon.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (default: Ctrl-C)")
    mon.add_argument("--once", action="store_true", help="no live screen: print the table once, at the end")
    mon.set_defaults(func=cmd_monitor)
