"""The processes of a task and their identities: ``bpcv coordinator``, ``bpcv agent``, ``bpcv request``
(post a task as the data requester) and ``bpcv keys new``."""

from __future__ import annotations

import argparse
from pathlib import Path

from bpcv.errors import BpcvError
from bpcv.poq import DISSENT_RULES, ELIMINATION_POLICIES
from bpcv_app.commands.common import add_broker_arguments, broker_from_args


def cmd_coordinator(args: argparse.Namespace) -> int:
    from bpcv.config import CoordinatorConfig, load_config
    from coordinator.server import Coordinator

    coordinator = Coordinator(load_config(CoordinatorConfig, args.config))
    try:
        summary = coordinator.serve()
    finally:
        coordinator.close()
    return 1 if summary.error else 0


def cmd_agent(args: argparse.Namespace) -> int:
    from bpcv.config import AgentConfig, load_config
    from edge_agent.pool import AgentPool

    pool = AgentPool([load_config(AgentConfig, c) for c in args.config], threads=args.threads)
    pool.install_signal_handlers()
    pool.run()
    return 0


def cmd_request(args: argparse.Namespace) -> int:
    from bpcv.codec import read_weights_file
    from bpcv.identity import Identity
    from bpcv.model_spec import model_from_argument
    from bpcv.mqtt import Bus
    from bpcv.task import TaskSpec
    from bpcv.topics import Topics
    from coordinator.requester import post_task, withdraw_task

    requester = Identity.load(Path(args.key))
    topics = Topics(args.base_topic)
    if args.withdraw:
        bus = Bus(requester.node_id, broker_from_args(args), lambda t, p: None)
        bus.connect()
        try:
            withdraw_task(bus, args.task_id, topics)
        finally:
            bus.close()
        print(f"withdrew task {args.task_id}: {topics.task(args.task_id)} no longer holds it")
        return 0
    if not args.coordinator:
        raise BpcvError("bpcv request: --coordinator is required to post a task (the node id of its coordinator)")
    if args.task_file:  # the file's fields; the command line only names the task and its coordinator
        from bpcv.task_file import load_task_file

        fill = {"task_id": args.task_id, "coordinator": args.coordinator, "chain": args.chain}
        task = load_task_file(Path(args.task_file), **fill)
    else:
        task = TaskSpec(
            task_id=args.task_id,
            coordinator=args.coordinator,
            chain=args.chain,
            category=args.category,
            dataset=args.dataset,
            model=model_from_argument(args.model),
            rounds=args.rounds,
            time_limit_s=args.time_limit,
            target=args.target,
            reward_per_round=args.reward,
            nodes=args.nodes,
            min_nodes=args.min_nodes,
            local_epochs=args.epochs,
            quality_rule=args.quality_rule,
            elimination=args.elimination,
            accountable_voters=args.accountable_voters,
            dissent_rule=args.dissent_rule,
        )
    initial = read_weights_file(args.initial_weights) if args.initial_weights else None
    bus = Bus(requester.node_id, broker_from_args(args), lambda t, p: None)
    bus.connect()
    try:
        env = post_task(bus, requester, task, topics, initial)
    finally:
        bus.close()
    print(f"posted task {task.task_id} ({env.digest[:16]}…) on {topics.task(task.task_id)}")
    return 0


def cmd_keys_new(args: argparse.Namespace) -> int:
    from bpcv.identity import Identity

    out = Path(args.out)
    if out.exists() and not args.force:
        raise BpcvError(f"{out} exists; refusing to overwrite a key (use --force)")
    identity = Identity.generate(args.node_id)
    identity.save(out)
    print(f"{identity.node_id} {identity.public_key.hex()}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from bpcv.topics import DEFAULT_BASE

    coord = sub.add_parser("coordinator", help="run the aggregation server for tasks that name it")
    coord.add_argument("--config", required=True, help="coordinator TOML config")
    coord.set_defaults(func=cmd_coordinator)

    agent = sub.add_parser("agent", help="run one or more edge agents in this process")
    agent.add_argument("--config", required=True, action="append", help="agent TOML config (repeatable: a pool)")
    agent.add_argument("--threads", type=int, default=None, help="TensorFlow threads for this process")
    agent.set_defaults(func=cmd_agent)

    req = sub.add_parser("request", help="post a signed task as the data requester")
    req.add_argument("--key", required=True, help="requester key file")
    add_broker_arguments(req)
    req.add_argument("--base-topic", default=DEFAULT_BASE)
    req.add_argument("--task-id", required=True)
    req.add_argument("--coordinator", default="", help="node id of the aggregation server (required to post)")
    req.add_argument("--chain", default="main")
    req.add_argument(
        "--task-file",
        default="",
        help="a task TOML (bpcv task check; a local-data task's [data] schema, model_file): its fields are the "
        "task, the options below are not used; --task-id and --coordinator fill what the file leaves out",
    )
    req.add_argument("--category", default="classification", choices=["classification", "regression"])
    req.add_argument("--dataset", default="mnist")
    req.add_argument(
        "--model", default="mlp:128", help="a preset (mlp:H,..., cnn:C,...) or a Keras model: a .json or .keras file"
    )
    req.add_argument(
        "--initial-weights",
        default="",
        help="start from these weights (a .bpmt model file, e.g. an earlier run's final_model.bpmt), sent in the task",
    )
    req.add_argument("--rounds", type=int, default=10)
    req.add_argument("--time-limit", type=float, default=3600.0, help="seconds")
    req.add_argument("--target", type=float, default=None, help="stop when the global metric reaches this")
    req.add_argument("--reward", type=float, default=100.0, help="reward per round")
    req.add_argument("--nodes", type=int, default=10, help="active nodes per round")
    req.add_argument("--min-nodes", type=int, default=5)
    req.add_argument("--epochs", type=int, default=3, help="local epochs per round")
    req.add_argument("--quality-rule", default="median", choices=["mean", "median"], help="(the paper's: mean)")
    req.add_argument("--elimination", default="outlier", choices=ELIMINATION_POLICIES, help="(the paper's: lowest)")
    req.add_argument("--accountable-voters", action=argparse.BooleanOptionalAction, default=True)
    req.add_argument(
        "--dissent-rule", default="rank-aware", choices=DISSENT_RULES, help="(before it existed: distance)"
    )
    req.add_argument(
        "--withdraw", action="store_true", help="clear the retained announcement of --task-id (once it has ended)"
    )
    req.set_defaults(func=cmd_request)

    keys = sub.add_parser("keys", help="Ed25519 identities").add_subparsers(dest="keys_command", required=True)
    new = keys.add_parser("new", help="create a key file (mode 0600); prints the id and public key")
    new.add_argument("node_id")
    new.add_argument("--out", required=True)
    new.add_argument("--force", action="store_true")
    new.set_defaults(func=cmd_keys_new)
