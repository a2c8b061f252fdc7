"""``bpcv demo``: a live task on this machine — broker, coordinator and agents as OS processes.

``bpcv_app.demo_setup`` makes identities and a consortium genesis, starts the broker (embedded by
default), writes the configs and spawns the coordinator and agent pools; this module posts an MNIST
(or CIFAR-10) task as the requester, prints one line per round, then re-verifies every node's chain
replica and writes ``summary.json`` into the run folder.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from bpcv.envelope import decode
from bpcv.errors import BpcvError
from bpcv.intake import Intake
from bpcv.messages import Abort, Result, read
from bpcv.model_spec import describe
from bpcv.mqtt import Bus
from bpcv.task import TaskSpec
from bpcv.topics import Topics
from bpcv_app.demo_setup import STANDBY_JOIN_DELAY_S, Demo, DemoNode, DemoOptions
from bpcv_app.monitor import FleetView, MonitorClient
from coordinator.summary import TaskSummary

MAX_COORDINATOR_RESTARTS = 3
REPLICA_CATCH_UP_S = 30.0  # after the task: how long the agents may take to append the blocks they have


def run_demo(opts: DemoOptions) -> int:
    """Run the demo; 0 when the task completed and every replica verifies with the same head."""
    demo = Demo(opts)
    demo.out.mkdir(parents=True, exist_ok=True)
    (demo.out / "logs").mkdir(exist_ok=True)
    started = time.monotonic()
    # SIGTERM (a service manager, a script's kill) stops the broker, coordinator and agents too, as Ctrl-C
    # does: without this, Python dies at once and leaves them running
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    try:
        return _run(demo, started)
    finally:
        demo.stop_all()
        signal.signal(signal.SIGTERM, previous)


def _run(demo: Demo, started: float) -> int:
    o = demo.opts
    nodes, genesis, address, requester = demo.setup()
    topics = Topics()
    active = o.agents - o.standby
    demo.say(f"run folder: {demo.out}")
    demo.say(
        f"{o.agents} agents ({active} active, {o.standby} standby"
        + (f", {o.malicious} malicious: {o.behaviour}" if o.malicious else "")
        + (f", GD-DP {o.dp} with epsilon budget {o.epsilon} each" if o.dp != "off" else ", no DP")
        + f") in {o.processes} processes"
    )
    demo.spawn("coordinator", ["coordinator", "--config", str(demo.out / "configs" / "coordinator.toml")])
    threads = max(1, (os.cpu_count() or 2) // o.processes)
    local = [n for n in nodes if not n.external]
    for node in nodes:
        if node.external:
            demo.say(
                f"{node.node_id} runs elsewhere: bpcv deploy bundle --config {node.config_path} --broker URL "
                f"--out bundle-{node.node_id}, then install it on the device"
            )
    # contiguous groups: the malicious agents come first, so a colluding group shares one process (the
    # memory its members pool their updates in, edge_agent/behaviours.py)
    per_process = -(-len(local) // max(1, min(o.processes, len(local))))
    for p in range(min(o.processes, len(local))):
        group = local[p * per_process : (p + 1) * per_process]
        args = ["agent", "--threads", str(threads)]
        for node in group:
            args += ["--config", str(node.config_path)]
        demo.spawn(f"agents-{p + 1}", args)

    task = demo_task(o)
    bus = Bus(
        requester.node_id,
        address,
        lambda t, p: demo.messages.put((t, p)),
        [topics.all_status(), topics.all_results(task.task_id), topics.block(task.chain), topics.all_metrics()],
    )
    bus.connect()
    online: set[str] = set()
    expected = {n.node_id for n in nodes} | {"coordinator"}
    demo.say("waiting for agents and coordinator to come online (TensorFlow loads in each process)…")
    wait_s = o.timeout if o.external else 180.0  # devices may take minutes to be flashed and installed
    deadline = time.monotonic() + wait_s
    while not expected <= online:
        message = _next_message(demo, deadline, lambda: f"not online after {wait_s:.0f}s: {sorted(expected - online)}")
        if message is None:
            continue
        levels, payload = topics.parse(message[0]), message[1]
        if levels[0] == "nodes" and payload == b"online":
            online.add(levels[1])
    from coordinator.requester import post_task, withdraw_task

    post_task(bus, requester, task, topics, o.initial_weights)
    data = f"each device's own file in {o.data.path}" if o.data else DATASET_NAMES[o.dataset]
    demo.say(
        f"task {task.task_id} posted: {data}, {describe(task.model)}, up to {task.rounds} rounds, {active} active nodes"
    )
    pending: tuple[int, Result] | None = None  # the latest round's result, until its block is seen
    decided: set[int] = set()
    chain_height = 0
    from ledger.replica import Replica

    # the nodes' signed metrics samples carry their replicas' heights, read as `bpcv monitor` reads them
    fleet = MonitorClient(FleetView(topics), Intake(Replica.open(None, genesis.read_bytes()).state.registry, "demo"))
    while demo.procs[0].poll() is None or demo.procs[0].returncode < 0:
        message = _next_message(demo, started + o.timeout, lambda: f"demo timed out after {o.timeout:.0f}s")
        if message is None:
            continue
        levels, payload = topics.parse(message[0]), message[1]
        if levels[0] == "nodes":
            fleet.handle(message[0], payload, time.monotonic())
        elif levels[0] == "chain":
            from ledger.block import decode_block

            block = decode_block(payload)
            chain_height = max(chain_height, block.height)
            if pending is not None and block.round == pending[0]:
                stand_in = f", standing in at PoQ rank {block.rank}" if block.rank else ""
                demo.say(_round_line(pending, chain_height, f"block #{block.height} by {block.proposer}{stand_in}"))
                pending = None
        elif levels[0] == "tasks" and levels[-1] == "result":
            env = decode(payload)
            if env.type == Abort.KIND:
                demo.say(f"round {env.round:>2} | ABORTED, nothing committed: {read(env, Abort).reason}")
            if env.type != Result.KIND or env.round in decided:  # records share the topic; a restarted
                continue  # coordinator publishes its last decided round's result again
            decided.add(env.round)
            if pending is not None:
                demo.say(_round_line(pending, chain_height, "no block"))
            pending = (env.round, read(env, Result))
    if pending is not None:
        demo.say(_round_line(pending, chain_height, "no block yet"))
    try:  # a device that connects later must not find the ended task
        withdraw_task(bus, task.task_id, topics)
    except RuntimeError as exc:  # the broker is away: agents refuse a task too old to be running anyway
        demo.say(f"warning: {exc}; its retained announcement stays on the broker")
    _await_replicas(demo, fleet, {n.node_id for n in local}, chain_height, topics)
    bus.close()
    return _finish(demo, nodes, demo.procs[0].returncode, started)


def _await_replicas(demo: Demo, fleet: MonitorClient, nodes: set[str], height: int, topics: Topics) -> None:
    """Before the agents are stopped, let every replica still reporting reach the chain's height: a node
    busy when the last blocks came (training an update the round no longer waited for) has them queued,
    and stopping it then would leave its replica behind. Bounded; a replica still behind is reported
    by the verification that follows."""
    deadline = time.monotonic() + REPLICA_CATCH_UP_S
    if behind := fleet.view.behind(nodes, height, time.monotonic()):
        demo.say(f"waiting for {', '.join(behind)} to append the chain up to height {height}…")
    while fleet.view.behind(nodes, height, time.monotonic()) and time.monotonic() < deadline:
        try:
            topic, payload = demo.messages.get(timeout=0.5)
        except queue.Empty:
            continue
        if topics.parse(topic)[0] == "nodes":
            fleet.handle(topic, payload, time.monotonic())


def _next_message(demo: Demo, deadline: float, why: Callable[[], str]) -> tuple[str, bytes] | None:
    """The next message within half a second, or None; raises once ``deadline`` (monotonic) has passed."""
    if time.monotonic() > deadline:
        raise BpcvError(f"{why()} (see {demo.out / 'logs'})")
    _check_alive(demo)
    try:
        return demo.messages.get(timeout=0.5)
    except queue.Empty:
        return None


def _check_alive(demo: Demo) -> None:
    """The coordinator killed by a signal is restarted (it resumes from its checkpoint), as a service
    manager would; exiting with an error ends the demo. An agent process dying is reported, and the
    task goes on."""
    for i, proc in enumerate(demo.procs):
        if proc.poll() is None or proc.returncode == 0 or i in demo.reported_dead:
            continue
        if i == 0 and proc.returncode < 0 and demo.coordinator_restarts < MAX_COORDINATOR_RESTARTS:
            demo.coordinator_restarts += 1
            demo.say(f"  ! the coordinator was killed (signal {-proc.returncode}); restarting it: it resumes")
            demo.spawn("coordinator", ["coordinator", "--config", str(demo.out / "configs" / "coordinator.toml")], 0)
            continue
        if i == 0:
            raise BpcvError(f"the coordinator exited with code {proc.returncode} (see {demo.out / 'logs'})")
        demo.reported_dead.add(i)
        demo.say(f"  ! agent process {i} exited with code {proc.returncode}; the task goes on without it")


# The MNIST demo's model and training, sized for DP: a frozen wavelet feature map and a linear head
# (6,130 parameters, 1,450 of them trainable), a few large batches per round (docs/PRIVACY.md).
MNIST_DEMO = {"model": "wavelet:2,4,7", "local_epochs": 1, "batch_size": 512, "learning_rate": 2.0}
# CIFAR-10 (32x32x3) with the same training: pooling 8 tiles the 32x32 feature maps exactly (4x4 cells;
# 20,314 parameters, 4,330 of them trainable).
DATASET_DEFAULTS = {"mnist": MNIST_DEMO, "cifar10": {**MNIST_DEMO, "model": "wavelet:2,4,8"}}
DATASET_NAMES = {"mnist": "MNIST", "cifar10": "CIFAR-10"}


def demo_task(o: DemoOptions) -> TaskSpec:
    """The demo's task: MNIST or CIFAR-10 with the demo's defaults (DATASET_DEFAULTS, the rest TaskSpec's),
    or the --data folder's task file; the options given on the command line win."""
    chosen = {
        "rounds": o.rounds,
        "model": o.model,
        "local_epochs": o.epochs,
        "batch_size": o.batch,
        "learning_rate": o.lr,
        "lr_decay": o.lr_decay,
        "time_limit_s": o.time_limit_s,
    }
    fixed = {
        "target": o.target,
        "nodes": o.agents - o.standby,
        "min_nodes": o.min_nodes,
        "quality_rule": o.quality_rule,
        "strategy": o.strategy,
        "elimination": o.elimination,
        "accountable_voters": o.accountable_voters,
        "dissent_rule": o.dissent_rule,
        "update_encoding": o.update_encoding,
        "committee": o.committee,
        "supervised": o.supervised,
        "join_window_s": STANDBY_JOIN_DELAY_S + 2.0,
        "update_timeout_s": o.update_timeout_s,
        "vote_timeout_s": o.vote_timeout_s,
        "block_timeout_s": o.block_timeout_s,
    }
    given = {k: v for k, v in chosen.items() if v is not None}  # the rest: TaskSpec's or the task file's
    stamp = time.strftime("%H%M%S")
    if o.data is None:
        defaults = DATASET_DEFAULTS[o.dataset]
        return TaskSpec(
            task_id=f"{o.dataset}-{stamp}",
            coordinator="coordinator",
            dataset=o.dataset,
            **{**defaults, **given},
            **fixed,
        )
    task = replace(o.data.task(f"data-{stamp}", "coordinator"), **given, **fixed)
    task.validate()
    return task


def _round_line(decided: tuple[int, Result], height: int, block: str) -> str:
    round_no, result = decided
    removed = ([result.eliminated] if result.eliminated else []) + sorted(result.invalid)
    values = {result.metric: result.value, **result.other_metrics}
    shown = " ".join(f"{m} {'-' if v is None else format(v, '.4f')}" for m, v in values.items())
    return (
        f"round {round_no:>2} | {shown} | eliminated {','.join(removed) or '-'}"
        f" | admitted {','.join(result.admitted) or '-'} | chain height {height} ({block})"
    )


def _finish(demo: Demo, nodes: list[DemoNode], coordinator_rc: int, started: float) -> int:
    from ledger.errors import LedgerError
    from ledger.inspect import verify_replica

    demo.stop_all()
    coord = TaskSummary.from_json(json.loads((demo.out / "coordinator.json").read_text()))
    replicas = {"coordinator": demo.out / "nodes" / "coordinator" / "chain"}
    replicas.update({n.node_id: n.replica for n in nodes if not n.external})
    verified: dict[str, dict[str, Any]] = {}
    for node_id, path in replicas.items():
        try:
            report = verify_replica(path)
            verified[node_id] = {"valid": True, "height": report.height, "head_hash": report.head_hash}
        except (LedgerError, OSError) as exc:
            verified[node_id] = {"valid": False, "error": str(exc)}
    heads = {v.get("head_hash") for v in verified.values()}
    all_valid = all(v["valid"] for v in verified.values())
    metric = coord.metric
    rounds = [
        {
            "round": row.round,
            metric: row.value,
            **row.other_metrics,
            "eliminated": ([row.eliminated] if row.eliminated else []) + sorted(row.invalid),
            "eliminated_reason": row.eliminated_reason,
            "dissenters": row.dissenters,
            "admitted": row.admitted,
            "chain_height": row.chain_height,
            "aggregated": row.aggregated,
            "excluded": row.excluded,
            "invalid": row.invalid,
            "dropped": row.dropped,
            "proposer": row.proposer,
            "block_proposer": row.block_proposer,
            "block_rank": row.block_rank,
            "ranking": row.ranking,
            "quality": row.quality,
            "rewards": row.rewards,
        }
        for row in coord.rounds
    ]

    def node_entry(node: DemoNode) -> dict[str, Any]:
        info = coord.nodes.get(node.node_id)
        privacy = info.privacy if info else {}
        return {
            "id": node.node_id,
            "behaviour": node.behaviour,
            "external": node.external,
            "status": info.status if info else "absent",
            "reward": info.reward if info else 0.0,
            "mechanism": privacy.get("mechanism", "off"),
            "epsilon_budget": privacy.get("epsilon_budget"),
            "epsilon_spent": privacy.get("epsilon_spent"),
        }

    summary = {
        "task": coord.task,
        "rounds": rounds,
        f"final_{metric}": coord.final_value,
        "evaluated_on": coord.evaluated_on,
        "stopped_because": coord.stopped_because,
        "aborted_round": coord.aborted_round,
        "final_model_digest": coord.final_model_digest,
        "replicas": [str(p) for p in replicas.values()],
        "chain": {"all_valid": all_valid, "same_head": len(heads) == 1, "heads": verified},
        "nodes": [node_entry(n) for n in nodes],
        "rejected": coord.rejected,
        "error": coord.error,
        "duration_s": round(time.monotonic() - started, 1),
    }
    (demo.out / "summary.json").write_text(json.dumps(summary, indent=2))
    demo.say(
        f"\nfinal {metric}: {summary[f'final_{metric}']} on the {coord.evaluated_on} ({summary['stopped_because']}) "
        f"in {summary['duration_s']}s"
    )
    for n in summary["nodes"]:
        privacy = (
            f" | {n['mechanism']} epsilon {n['epsilon_spent']:.3f} of {n['epsilon_budget']}"
            if n["mechanism"] not in ("off", None) and n["epsilon_spent"] is not None
            else ""
        )
        demo.say(f"  {n['id']:<8} {n['behaviour']:<15} {n['status']:<10} reward {n['reward']:.2f}{privacy}")
    ok = all_valid and len(heads) == 1 and coordinator_rc == 0 and not summary["error"]
    head = next(iter(heads)) if len(heads) == 1 else None
    demo.say(
        f"chain: {len(replicas)} replicas, {'all valid' if all_valid else 'INVALID replica(s)'}, "
        f"{'same head ' + str(head)[:16] + '…' if head else 'heads DIFFER'}"
    )
    demo.say(f"summary: {demo.out / 'summary.json'}   figures: bpcv report {demo.out}")
    return 0 if ok else 1
