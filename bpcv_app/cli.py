"""The ``bpcv`` command: the parser and ``main``. Each command group lives in ``bpcv_app.commands``;
heavy modules (TensorFlow, the agent, the coordinator) load only when a command runs."""

from __future__ import annotations

import argparse
import logging
import sys

from bpcv.errors import BpcvError
from bpcv_app.commands import broker, chain, data, demo, deploy, nodes, observe, task

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper()), format=LOG_FORMAT, stream=sys.stderr)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bpcv",
        description="BPCV-FL: mutual-supervised federated learning "
        "for IoT data sharing, recorded on a proof-of-quality chain.",
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # in this order in --help: demo; broker; report, monitor; deploy; coordinator, agent, request, keys; chain
    for group in (demo, broker, observe, deploy, nodes, chain, data, task):
        group.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.log_level)
    try:
        return int(args.func(args) or 0)
    except BpcvError as exc:
        print(f"bpcv: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # output piped into e.g. `head`, which stopped reading
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
