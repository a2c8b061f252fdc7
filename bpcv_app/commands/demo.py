"""``bpcv demo``: a live task end to end on this machine."""

from __future__ import annotations

import argparse


def cmd_demo(args: argparse.Namespace) -> int:
    from bpcv_app.demo import run_demo
    from bpcv_app.demo_setup import DemoOptions

    return run_demo(DemoOptions.from_args(args))


def register(sub: argparse._SubParsersAction) -> None:
    from bpcv_app.demo_setup import add_demo_arguments

    demo = sub.add_parser("demo", help="run a live task end to end on this machine (broker, coordinator, agents)")
    add_demo_arguments(demo)
    demo.set_defaults(func=cmd_demo)
