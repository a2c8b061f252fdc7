"""``bpcv demo``: a live task on this machine — broker, coordinator and agents as OS processes.

Makes identities and a consortium genesis, starts the broker (embedded by default), the coordinator
and agent pools, posts an MNIST task as the requester, prints one line per round, then re-verifies
every node's chain replica and writes ``summary.json`` into the run folder.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bpcv.config import AgentConfig, CoordinatorConfig, write_config
from bpcv.envelope import decode
from bpcv.errors import BpcvError, ConfigError
from bpcv.identity import Identity
from bpcv.mqtt import BrokerAddress, Bus, TlsFiles
from bpcv.task import TaskSpec
from bpcv.topics import Topics
from broker.runner import free_port, start_broker_process
from broker.secure import client_tls_files
from edge_agent.behaviours import BEHAVIOURS
from ledger.genesis import make_genesis

STANDBY_JOIN_DELAY_S = 3.0
MAX_COORDINATOR_RESTARTS = 3


def add_demo_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--agents", type=int, default=12, help="edge agents in all (default 12)")
    p.add_argument(
        "--standby", type=int, default=None, help="of which standby, answering later (default: agents // 6, at least 1)"
    )
    p.add_argument("--rounds", type=int, default=10, help="round limit (default 10)")
    p.add_argument("--target", type=float, default=None, help="stop early at this test accuracy")
    p.add_argument("--malicious", type=int, default=0, help="how many active agents misbehave")
    p.add_argument(
        "--behaviour",
        default="random-weights",
        help="what the malicious agents do (default random-weights); a comma list gives each its own, in "
        f"order (e.g. noisy,collude,collude). Known: {', '.join(b for b in BEHAVIOURS if b != 'honest')}",
    )
    p.add_argument("--out", default=None, help="run folder (default runs/demo-TIMESTAMP)")
    p.add_argument(
        "--broker",
        default="embedded",
        help="'embedded' (default, plain loopback, no auth), 'mosquitto' (same, real mosquitto), 'secure' "
        "(mosquitto with TLS, a client certificate per node and ACLs, from `bpcv broker init`), "
        "or mqtt://HOST:PORT of a running broker",
    )
    p.add_argument("--processes", type=int, default=2, help="agent processes; agents are spread over them")
    p.add_argument(
        "--external",
        type=int,
        default=0,
        help="the last N active agents run elsewhere (edge devices: `bpcv deploy bundle --config "
        "OUT/configs/NODE.toml`); the demo waits for them to come online (needs a broker they reach)",
    )
    p.add_argument("--model", default="mlp:128", help="model spec (default mlp:128)")
    p.add_argument("--epochs", type=int, default=3, help="local epochs per round (default 3)")
    p.add_argument("--partition", default="iid", help="'iid' or 'dirichlet:ALPHA'")
    p.add_argument("--quality-rule", default="mean", choices=["mean", "median"])
    p.add_argument("--min-nodes", type=int, default=None, help="never eliminate below this (default active // 2)")
    p.add_argument(
        "--dp",
        default="off",
        choices=["off", "laplace", "gaussian"],
        help="GD-DP mechanism for every agent (default off: see docs/DECISIONS.md, Privacy)",
    )
    p.add_argument("--epsilon", type=float, default=10.0, help="each agent's total privacy budget (default 10)")
    p.add_argument("--delta", type=float, default=-1.0, help="delta (default: 0 for Laplace, 1e-5 for Gaussian)")
    p.add_argument("--clip", type=float, default=0.0, help="clip norm (default: L1 100 Laplace, L2 1.0 Gaussian)")
    p.add_argument("--update-timeout", type=float, default=300.0, help="seconds to wait for updates per round")
    p.add_argument("--vote-timeout", type=float, default=120.0, help="seconds to wait for votes per round")
    p.add_argument(
        "--block-timeout",
        type=float,
        default=15.0,
        help="seconds the next-ranked node waits for the PoQ winner's block before standing in",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=1800.0, help="give up after this many seconds")


@dataclass(frozen=True)
class DemoOptions:
    agents: int
    standby: int
    rounds: int
    target: float | None
    malicious: int
    behaviour: str
    out: Path
    broker: str
    processes: int
    model: str
    epochs: int
    partition: str
    quality_rule: str
    min_nodes: int
    seed: int
    timeout: float
    update_timeout_s: float
    vote_timeout_s: float
    block_timeout_s: float
    dp: str = "off"
    epsilon: float = 10.0
    delta: float = -1.0
    clip: float = 0.0
    log_level: str = "INFO"
    external: int = 0

    @classmethod
    def from_args(cls, a: argparse.Namespace) -> DemoOptions:
        standby = a.standby if a.standby is not None else max(1, a.agents // 6)
        active = a.agents - standby
        if a.agents < 3 or active < 2 or standby < 0:
            raise ConfigError(
                f"--agents {a.agents} with --standby {standby}: need at least 2 active agents and 3 in all"
            )
        if not 0 <= a.malicious <= active:
            raise ConfigError(f"--malicious must be between 0 and the {active} active agents")
        if not 0 <= a.external <= active - a.malicious:
            raise ConfigError(f"--external must be between 0 and the {active - a.malicious} honest active agents")
        if a.external and a.broker in ("embedded", "mosquitto"):
            raise ConfigError("--external needs a broker the devices reach: --broker mqtt://HOST:PORT or secure")
        named = a.behaviour.split(",")
        unknown = [b for b in named if b not in BEHAVIOURS or b == "honest"]
        if unknown or (len(named) > 1 and len(named) != a.malicious):
            raise ConfigError(
                f"--behaviour {a.behaviour!r}: one of {[b for b in BEHAVIOURS if b != 'honest']}, "
                f"or a comma list of exactly --malicious ({a.malicious}) of them"
            )
        out = Path(a.out) if a.out else Path("runs") / time.strftime("demo-%Y%m%d-%H%M%S")
        if (out / "summary.json").exists() or (out / "nodes").exists():
            raise ConfigError(f"{out} already holds a run; choose another --out or delete it")
        min_nodes = a.min_nodes if a.min_nodes is not None else max(2, active // 2)
        return cls(
            a.agents,
            standby,
            a.rounds,
            a.target,
            a.malicious,
            a.behaviour,
            out,
            a.broker,
            max(1, min(a.processes, a.agents)),
            a.model,
            a.epochs,
            a.partition,
            a.quality_rule,
            min(min_nodes, active),
            a.seed,
            a.timeout,
            a.update_timeout,
            a.vote_timeout,
            a.block_timeout,
            a.dp,
            a.epsilon,
            a.delta,
            a.clip,
            a.log_level,
            a.external,
        )


def _tls_files(folder: Path | None, node: str) -> TlsFiles:
    """A node's TLS files for the broker `bpcv broker init` wrote in ``folder`` (empty without one)."""
    return client_tls_files(folder, node) if folder is not None else TlsFiles("")


@dataclass(frozen=True)
class DemoNode:
    node_id: str
    behaviour: str
    standby: bool
    config_path: Path
    replica: Path
    external: bool = False  # runs elsewhere (an edge device); its replica is not on this machine


class Demo:
    """One demo run: what it started and where it writes."""

    def __init__(self, opts: DemoOptions) -> None:
        self.opts = opts
        self.out = opts.out.resolve()
        self.procs: list[subprocess.Popen] = []
        self.broker_proc: subprocess.Popen | None = None
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.reported_dead: set[int] = set()
        self.coordinator_restarts = 0

    def say(self, text: str) -> None:
        print(text, flush=True)

    def setup(self) -> tuple[list[DemoNode], Path, BrokerAddress, Identity]:
        """Keys, genesis, broker and configs."""
        o = self.opts
        keys = self.out / "keys"
        admin, requester, coordinator, broker = (
            Identity.generate(n) for n in ("admin", "requester", "coordinator", "broker")
        )
        agent_ids = [f"node-{i + 1:02d}" for i in range(o.agents)]
        agents = {n: Identity.generate(n) for n in agent_ids}
        for ident in [admin, requester, coordinator, broker, *agents.values()]:
            ident.save(keys / f"{ident.node_id}.key")
        members = {
            admin.node_id: (admin.public_key, "admin"),
            requester.node_id: (requester.public_key, "requester"),
            coordinator.node_id: (coordinator.public_key, "coordinator"),
            broker.node_id: (broker.public_key, "broker"),
        }
        members.update({n: (i.public_key, "agent") for n, i in agents.items()})
        genesis = self.out / "genesis.bin"
        genesis.write_bytes(make_genesis(admin, "main", members, {"created_by": "bpcv demo"}).raw)

        tls_folder: Path | None = None
        if o.broker in ("embedded", "mosquitto"):
            address = BrokerAddress("127.0.0.1", free_port())
            self.broker_proc = start_broker_process(
                o.broker, address.host, address.port, self.out / "logs", keys / "broker.key"
            )
            self.say(f"broker: {o.broker} on {address.url()}")
        elif o.broker == "secure":
            from broker.secure import Roster, init_broker

            port, tls_folder = free_port(), self.out / "broker"
            roster = Roster(tuple(agent_ids), (coordinator.node_id,), (requester.node_id,), (broker.node_id,))
            init_broker(tls_folder, roster, port=port)
            self.broker_proc = start_broker_process("secure", "127.0.0.1", port, tls_folder, keys / "broker.key")
            address = BrokerAddress("127.0.0.1", port, _tls_files(tls_folder, requester.node_id))
            self.say(f"broker: mosquitto on {address.url()}, TLS with client certificates and ACLs ({tls_folder})")
        else:
            address = BrokerAddress.parse(o.broker)
            self.say(f"broker: external at {address.url()}")

        nodes_dir = self.out / "nodes"
        coordinator_tls = _tls_files(tls_folder, coordinator.node_id)
        write_config(
            CoordinatorConfig(
                key=str(keys / "coordinator.key"),
                genesis=str(genesis),
                chain_dir=str(nodes_dir / "coordinator" / "chain"),
                run_dir=str(self.out),
                broker=address.url(),
                tls_ca=coordinator_tls.ca,
                tls_cert=coordinator_tls.cert,
                tls_key=coordinator_tls.key,
            ),
            self.out / "configs" / "coordinator.toml",
        )
        active = o.agents - o.standby
        nodes = []
        for i, node_id in enumerate(agent_ids):
            standby = i >= active
            named = o.behaviour.split(",")
            behaviour = (named[i] if len(named) > 1 else named[0]) if i < o.malicious else "honest"
            node_tls = _tls_files(tls_folder, node_id)
            cfg = AgentConfig(
                key=str(keys / f"{node_id}.key"),
                genesis=str(genesis),
                chain_dir=str(nodes_dir / node_id / "chain"),
                broker=address.url(),
                tls_ca=node_tls.ca,
                tls_cert=node_tls.cert,
                tls_key=node_tls.key,
                dataset="mnist",
                shard=i,
                num_shards=o.agents,
                partition=o.partition,
                seed=o.seed,
                behaviour=behaviour,
                join_delay_s=STANDBY_JOIN_DELAY_S if standby else 0.0,
                dp=o.dp,
                epsilon=o.epsilon,
                delta=o.delta,
                clip=o.clip,
            )
            path = self.out / "configs" / f"{node_id}.toml"
            write_config(cfg, path)
            external = active - o.external <= i < active
            nodes.append(DemoNode(node_id, behaviour, standby, path, nodes_dir / node_id / "chain", external))
        return nodes, genesis, address, requester

    def spawn(self, name: str, args: list[str], replace: int | None = None) -> subprocess.Popen:
        """Start a child process logging to logs/NAME.log; ``replace``: restart procs[replace] (log appended)."""
        with open(self.out / "logs" / f"{name}.log", "ab" if replace is not None else "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "bpcv.cli", "--log-level", self.opts.log_level, *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        if replace is None:
            self.procs.append(proc)
        else:
            self.procs[replace] = proc
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
        if self.broker_proc is not None:
            self.broker_proc.terminate()
            try:
                self.broker_proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.broker_proc.kill()


def run_demo(opts: DemoOptions) -> int:
    """Run the demo; 0 when the task completed and every replica verifies with the same head."""
    demo = Demo(opts)
    demo.out.mkdir(parents=True, exist_ok=True)
    (demo.out / "logs").mkdir(exist_ok=True)
    started = time.monotonic()
    try:
        return _run(demo, started)
    finally:
        demo.stop_all()


def _run(demo: Demo, started: float) -> int:
    o = demo.opts
    nodes, _genesis, address, requester = demo.setup()
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
    for p in range(min(o.processes, len(local))):
        group = local[p :: o.processes]
        args = ["agent", "--threads", str(threads)]
        for node in group:
            args += ["--config", str(node.config_path)]
        demo.spawn(f"agents-{p + 1}", args)

    task = TaskSpec(
        task_id=f"mnist-{time.strftime('%H%M%S')}",
        coordinator="coordinator",
        rounds=o.rounds,
        target=o.target,
        nodes=active,
        min_nodes=o.min_nodes,
        model=o.model,
        local_epochs=o.epochs,
        quality_rule=o.quality_rule,
        join_window_s=STANDBY_JOIN_DELAY_S + 2.0,
        update_timeout_s=o.update_timeout_s,
        vote_timeout_s=o.vote_timeout_s,
        block_timeout_s=o.block_timeout_s,
    )
    bus = Bus(
        requester.node_id,
        address,
        lambda t, p: demo.messages.put((t, p)),
        [topics.all_status(), topics.all_results(task.task_id), topics.block(task.chain)],
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
    from coordinator.requester import post_task

    post_task(bus, requester, task, topics)
    demo.say(f"task {task.task_id} posted: MNIST, {o.model}, up to {o.rounds} rounds, {active} active nodes")
    pending: dict[str, Any] | None = None
    chain_height = 0
    while demo.procs[0].poll() is None or demo.procs[0].returncode < 0:
        message = _next_message(demo, started + o.timeout, lambda: f"demo timed out after {o.timeout:.0f}s")
        if message is None:
            continue
        levels, payload = topics.parse(message[0]), message[1]
        if levels[0] == "chain":
            from ledger.block import decode_block

            block = decode_block(payload)
            chain_height = max(chain_height, block.height)
            if pending is not None and block.round == pending["round"]:
                stand_in = f", standing in at PoQ rank {block.rank}" if block.rank else ""
                demo.say(_round_line(pending, chain_height, f"block #{block.height} by {block.proposer}{stand_in}"))
                pending = None
        elif levels[0] == "tasks" and levels[-1] == "result":
            env = decode(payload)
            if env.type == "abort":
                demo.say(f"round {env.round:>2} | ABORTED, nothing committed: {env.body.get('reason')}")
            if env.type != "result":  # the round's reward and final-model records share the topic
                continue
            if pending is not None:
                demo.say(_round_line(pending, chain_height, "no block"))
            pending = {"round": env.round, **env.body}
    if pending is not None:
        demo.say(_round_line(pending, chain_height, "no block yet"))
    bus.close()
    return _finish(demo, nodes, demo.procs[0].returncode, started)


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


def _round_line(body: dict[str, Any], height: int, block: str) -> str:
    removed = ([body["eliminated"]] if body.get("eliminated") else []) + sorted(body.get("invalid", {}))
    return (
        f"round {body['round']:>2} | {body['metric']} {body['value']:.4f} | eliminated {','.join(removed) or '-'}"
        f" | admitted {','.join(body.get('admitted', [])) or '-'} | chain height {height} ({block})"
    )


def _finish(demo: Demo, nodes: list[DemoNode], coordinator_rc: int, started: float) -> int:
    from ledger.errors import LedgerError
    from ledger.inspect import verify_replica

    demo.stop_all()
    coord_summary = json.loads((demo.out / "coordinator.json").read_text())
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
    metric = coord_summary["task"]["category"] == "classification" and "accuracy" or "mae"
    rounds = []
    for row in coord_summary["rounds"]:
        rounds.append(
            {
                "round": row["round"],
                metric: row[metric],
                "eliminated": ([row["eliminated"]] if row["eliminated"] else []) + sorted(row["invalid"]),
                "admitted": row["admitted"],
                "chain_height": row["chain_height"],
                "aggregated": row["aggregated"],
                "excluded": row["excluded"],
                "invalid": row["invalid"],
                "dropped": row["dropped"],
                "proposer": row["proposer"],
                "block_proposer": row["block_proposer"],
                "block_rank": row["block_rank"],
                "ranking": row["ranking"],
                "quality": row["quality"],
                "rewards": row["rewards"],
            }
        )
    coord_nodes = coord_summary.get("nodes", {})
    summary = {
        "task": coord_summary["task"],
        "rounds": rounds,
        f"final_{metric}": coord_summary.get(f"final_{metric}"),
        "stopped_because": coord_summary.get("stopped_because"),
        "aborted_round": coord_summary.get("aborted_round"),
        "final_model_digest": coord_summary.get("final_model_digest"),
        "replicas": [str(p) for p in replicas.values()],
        "chain": {"all_valid": all_valid, "same_head": len(heads) == 1, "heads": verified},
        "nodes": [
            {
                "id": n.node_id,
                "behaviour": n.behaviour,
                "external": n.external,
                "status": coord_nodes.get(n.node_id, {}).get("status", "absent"),
                "reward": coord_nodes.get(n.node_id, {}).get("reward", 0.0),
                "mechanism": coord_nodes.get(n.node_id, {}).get("privacy", {}).get("mechanism", "off"),
                "epsilon_budget": coord_nodes.get(n.node_id, {}).get("privacy", {}).get("epsilon_budget"),
                "epsilon_spent": coord_nodes.get(n.node_id, {}).get("privacy", {}).get("epsilon_spent"),
            }
            for n in nodes
        ],
        "rejected": coord_summary.get("rejected", {}),
        "error": coord_summary.get("error"),
        "duration_s": round(time.monotonic() - started, 1),
    }
    (demo.out / "summary.json").write_text(json.dumps(summary, indent=2))
    demo.say(
        f"\nfinal test {metric}: {summary[f'final_{metric}']} ({summary['stopped_because']}) "
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
