"""The ``bpcv`` command. Heavy modules (TensorFlow, the agent, the coordinator) load only when used."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from bpcv.errors import BpcvError

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper()), format=LOG_FORMAT, stream=sys.stderr)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)


def cmd_demo(args: argparse.Namespace) -> int:
    from bpcv.demo import DemoOptions, run_demo

    return run_demo(DemoOptions.from_args(args))


def add_broker_arguments(parser: argparse.ArgumentParser, default: str | None = "mqtt://127.0.0.1:1883") -> None:
    parser.add_argument("--broker", default=default, help="mqtt://HOST:PORT, or mqtts://HOST:PORT with the TLS files")
    parser.add_argument("--tls-ca", default="", help="the consortium CA certificate (mqtts)")
    parser.add_argument("--tls-cert", default="", help="this node's client certificate (mqtts)")
    parser.add_argument("--tls-key", default="", help="this node's client key (mqtts)")


def broker_from_args(args: argparse.Namespace):  # noqa: ANN201 - BrokerAddress, imported lazily
    from bpcv.mqtt import BrokerAddress, TlsFiles

    tls = TlsFiles(args.tls_ca, args.tls_cert, args.tls_key) if args.tls_ca else None
    return BrokerAddress.parse(args.broker, tls)


def cmd_broker_init(args: argparse.Namespace) -> int:
    from broker.secure import Roster, init_broker

    agents = tuple(n for spec in args.agents for n in spec.split(",") if n)
    conf = init_broker(
        Path(args.dir),
        Roster(agents, tuple(args.coordinator), tuple(args.requester), tuple(args.broker_member)),
        args.host,
        args.port,
        tuple(args.server_name),
    )
    clients = len(agents) + len(args.coordinator) + len(args.requester) + len(args.broker_member)
    print(f"CA, server and {clients} client certificates, ACL")
    print(f"and {conf} written. Start it:  mosquitto -c {conf}   (or: bpcv broker run --secure {args.dir})")
    print(f'Nodes connect with broker = "mqtts://{args.host}:{args.port}", tls_ca = "{args.dir}/ca.crt",')
    print(f'tls_cert / tls_key = "{args.dir}/clients/NODE.crt" / "…/NODE.key" (keep ca.key offline)')
    return 0


def cmd_broker_run(args: argparse.Namespace) -> int:
    """Run the broker; with ``--metrics-key``, this process stays as its runner and publishes signed psutil
    samples of the broker process on the key's metrics topic."""
    import os
    import tempfile

    from bpcv.mqtt import BrokerAddress, TlsFiles
    from broker.runner import BrokerMetrics, mosquitto_binary, render_mosquitto_conf, supervise
    from broker.secure import client_tls_files, listener_of

    metrics = None
    if args.metrics_key:
        from bpcv.identity import Identity

        member = Identity.load(Path(args.metrics_key)).node_id
        host, port = listener_of(Path(args.secure) / "mosquitto.conf") if args.secure else (args.host, args.port)
        connect_host = "localhost" if host in ("0.0.0.0", "::", "") else host  # the server certificate names both
        tls = client_tls_files(Path(args.secure), member) if args.secure else None
        url = f"{'mqtts' if tls else 'mqtt'}://{connect_host}:{port}"
        metrics = BrokerMetrics(Path(args.metrics_key), BrokerAddress.parse(url, tls or TlsFiles("")), args.base_topic)
    if args.secure:
        conf = Path(args.secure) / "mosquitto.conf"
        if mosquitto_binary() is None or not conf.is_file():
            raise BpcvError(f"need mosquitto installed and {conf} (from `bpcv broker init`)")
        print(f"mosquitto with the locked-down config {conf} (TLS, client certificates, ACL)", flush=True)
    elif args.mosquitto or (not args.embedded and mosquitto_binary() is not None):
        if mosquitto_binary() is None:
            raise BpcvError("mosquitto is not installed (apt-get install mosquitto); try --embedded")
        conf = Path(tempfile.mkdtemp(prefix="bpcv-mosquitto-")) / "mosquitto.conf"
        conf.write_text(render_mosquitto_conf(args.host, args.port))
        print(f"mosquitto on {args.host}:{args.port} (config {conf}) — loopback demo listener, no auth", flush=True)
    else:
        from broker.embedded import run_embedded

        print(f"embedded MQTT broker on {args.host}:{args.port} — demo/test broker, no auth", flush=True)
        if metrics is not None:
            metrics.start(os.getpid())
        run_embedded(args.host, args.port)
        return 0
    command = [str(mosquitto_binary()), "-c", str(conf)]
    if metrics is None:
        os.execv(command[0], command)  # nothing to do beside it: become mosquitto
    return supervise(command, metrics)


def cmd_report(args: argparse.Namespace) -> int:
    from bpcv.report import write_report

    paths = write_report(Path(args.run_dir), Path(args.out) if args.out else None)
    for path in paths:
        print(path)
    return 0


def cmd_monitor(args: argparse.Namespace) -> int:
    import os

    from bpcv.errors import ConfigError
    from bpcv.monitor import run_monitor
    from bpcv.mqtt import Bus
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


def cmd_deploy_bundle(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from bpcv.config import AgentConfig, load_config
    from bpcv.errors import ConfigError
    from deploy.bundle import make_bundle

    if args.config:
        config = load_config(AgentConfig, args.config)
    else:
        missing = [f"--{n}" for n in ("key", "genesis", "broker") if not getattr(args, n)]
        if missing:
            raise ConfigError(f"without --config, give {', '.join(missing)}")
        config = AgentConfig(key=args.key, genesis=args.genesis, chain_dir="", broker=args.broker)
    overrides = {"broker": args.broker, "tls_ca": args.tls_ca, "tls_cert": args.tls_cert, "tls_key": args.tls_key}
    overrides.update(dataset=args.dataset, prometheus=args.prometheus)
    config = replace(config, **{k: v for k, v in overrides.items() if v})
    if args.shard is not None:
        config = replace(config, shard=args.shard, num_shards=args.num_shards or config.num_shards)
    for name in ("key", "genesis", "tls_ca", "tls_cert", "tls_key"):
        value = getattr(config, name)
        if value and not Path(value).is_file():
            raise ConfigError(f"{name} {value}: no such file")
    files = make_bundle(config, Path(args.out), args.data, Path(args.wheel) if args.wheel else None)
    node = (Path(args.out) / "NODE").read_text().strip()
    print(f"bundle for {node} written: {len(files)} files in {args.out}")
    print(f"  on the device:   sudo sh {args.out}/install.sh   (copy the folder there first)")
    print(f"  first boot:      {args.out}/first-boot/user-data (cloud-init) or first-boot/firstrun.sh (Pi Imager)")
    return 0


def cmd_coordinator(args: argparse.Namespace) -> int:
    from bpcv.config import CoordinatorConfig, load_config
    from coordinator.server import Coordinator

    coordinator = Coordinator(load_config(CoordinatorConfig, args.config))
    try:
        summary = coordinator.serve()
    finally:
        coordinator.close()
    return 1 if summary.get("error") else 0


def cmd_agent(args: argparse.Namespace) -> int:
    from bpcv.config import AgentConfig, load_config
    from edge_agent.pool import AgentPool

    pool = AgentPool([load_config(AgentConfig, c) for c in args.config], threads=args.threads)
    pool.install_signal_handlers()
    pool.run()
    return 0


def cmd_request(args: argparse.Namespace) -> int:
    from bpcv.identity import Identity
    from bpcv.mqtt import Bus
    from bpcv.task import TaskSpec
    from bpcv.topics import Topics
    from coordinator.requester import post_task

    requester = Identity.load(Path(args.key))
    task = TaskSpec(
        task_id=args.task_id,
        coordinator=args.coordinator,
        chain=args.chain,
        category=args.category,
        dataset=args.dataset,
        model=args.model,
        rounds=args.rounds,
        time_limit_s=args.time_limit,
        target=args.target,
        reward_per_round=args.reward,
        nodes=args.nodes,
        min_nodes=args.min_nodes,
        local_epochs=args.epochs,
        quality_rule=args.quality_rule,
    )
    topics = Topics(args.base_topic)
    bus = Bus(requester.node_id, broker_from_args(args), lambda t, p: None)
    bus.connect()
    try:
        env = post_task(bus, requester, task, topics)
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


def cmd_chain_genesis(args: argparse.Namespace) -> int:
    from bpcv.errors import ConfigError
    from bpcv.identity import ROLES, Identity
    from ledger.genesis import make_genesis

    admin = Identity.load(Path(args.admin_key))
    members: dict[str, tuple[bytes, str]] = {admin.node_id: (admin.public_key, "admin")}
    for spec in args.member:
        try:
            node_id, role, key_hex = spec.split(":")
            key = bytes.fromhex(key_hex)
        except ValueError as exc:
            raise ConfigError(f"--member {spec!r}: expected ID:ROLE:PUBLIC_KEY_HEX") from exc
        if role not in ROLES or len(key) != 32:
            raise ConfigError(f"--member {spec!r}: role must be one of {ROLES} and the key 32 bytes")
        members[node_id] = (key, role)
    block = make_genesis(admin, args.chain, members)
    Path(args.out).write_bytes(block.raw)
    print(f"genesis {block.hash} with {len(members)} members written to {args.out}")
    return 0


def cmd_chain_show(args: argparse.Namespace) -> int:
    from ledger.inspect import describe_blocks

    for line in describe_blocks(args.dir):
        print(line)
    return 0


def cmd_chain_verify(args: argparse.Namespace) -> int:
    from ledger.errors import InvalidBlock
    from ledger.inspect import verify_replica

    try:
        report = verify_replica(args.dir)
    except InvalidBlock as exc:
        print(f"INVALID {args.dir}: {exc}", file=sys.stderr)
        return 2
    print(
        f"OK {args.dir}: {report.blocks} blocks, height {report.height}, head {report.head_hash}, "
        f"genesis {report.genesis_hash}"
    )
    return 0


def cmd_chain_audit(args: argparse.Namespace) -> int:
    from ledger.audit import audit_task, format_audit
    from ledger.errors import InvalidBlock

    try:
        report = audit_task(args.dir, args.task)
    except InvalidBlock as exc:
        print(f"refusing to audit {args.dir}: the replica does not verify: {exc}", file=sys.stderr)
        return 2
    for line in format_audit(report):
        print(line)
    return 0


def cmd_chain_follow(args: argparse.Namespace) -> int:
    import threading

    from bpcv.identity import check_node_id
    from bpcv.topics import Topics
    from ledger.follow import follow
    from ledger.replica import Replica

    replica = Replica.open(args.dir, Path(args.genesis).read_bytes())
    try:
        counts = follow(
            replica,
            broker_from_args(args),
            Topics(args.base_topic),
            check_node_id(args.client_id),
            threading.Event(),
            args.seconds,
        )
    finally:
        height, head = replica.height, replica.head_hash
        replica.close()
    print(f"height {height}, head {head}; blocks: {dict(counts) or 'none'}")
    return 0


def cmd_chain_register(args: argparse.Namespace) -> int:
    from bpcv.envelope import seal
    from bpcv.errors import ConfigError
    from bpcv.identity import ROLES, Identity
    from ledger.block import build_block
    from ledger.replica import Replica

    admin = Identity.load(Path(args.admin_key))
    try:
        key = bytes.fromhex(args.public_key)
    except ValueError as exc:
        raise ConfigError(f"--public-key {args.public_key!r} is not hex") from exc
    if args.role not in ROLES or args.role == "admin":
        raise ConfigError(f"--role must be one of {[r for r in ROLES if r != 'admin']}")
    replica = Replica.open(args.dir, Path(args.genesis).read_bytes())
    try:
        tx = seal(admin, "register", "", 0, {"node": args.node, "key": key.hex(), "role": args.role})
        block = build_block(admin, replica.height + 1, replica.head_hash, "", 0, [tx.raw])
        replica.append(block.raw)
    finally:
        replica.close()
    print(f"registered {args.node} as {args.role} in block {block.height} ({block.hash[:16]}…)")
    if args.broker:
        from bpcv.mqtt import Bus
        from bpcv.topics import Topics

        bus = Bus(admin.node_id, broker_from_args(args), lambda _t, _p: None)
        bus.connect()
        bus.publish(Topics(args.base_topic).block(replica.state.chain_id), block.raw)
        bus.close()
        print(f"published to {args.broker}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from bpcv.topics import DEFAULT_BASE

    parser = argparse.ArgumentParser(
        prog="bpcv",
        description="BPCV-FL: mutual-supervised federated learning "
        "for IoT data sharing, recorded on a proof-of-quality chain.",
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="run a live task end to end on this machine (broker, coordinator, agents)")
    from bpcv.demo import add_demo_arguments

    add_demo_arguments(demo)
    demo.set_defaults(func=cmd_demo)

    broker = sub.add_parser("broker", help="the MQTT broker").add_subparsers(dest="broker_command", required=True)
    run = broker.add_parser("run", help="start mosquitto with the project's config, or the embedded broker")
    kind = run.add_mutually_exclusive_group()
    kind.add_argument("--embedded", action="store_true", help="use the embedded Python broker")
    kind.add_argument("--mosquitto", action="store_true", help="require mosquitto")
    run.add_argument("--host", default="127.0.0.1", help="listen address (default loopback)")
    run.add_argument("--port", type=int, default=1883)
    kind.add_argument("--secure", metavar="DIR", help="run mosquitto with the config `bpcv broker init DIR` wrote")
    run.add_argument(
        "--metrics-key",
        default="",
        help="a member key (role broker): stay as the broker's runner and publish signed psutil samples of the "
        "broker process every second (with --secure, its client certificate is DIR/clients/ID.crt)",
    )
    run.add_argument("--base-topic", default="bpcv/v1", help="topic base of the metrics (default bpcv/v1)")
    run.set_defaults(func=cmd_broker_run)
    init = broker.add_parser("init", help="CA, certificates per node, ACL and a TLS mosquitto.conf for a fleet")
    init.add_argument("dir", help="folder to write (refuses to replace an existing CA)")
    init.add_argument("--agents", action="append", default=[], help="agent ids, comma-separated (repeatable)")
    init.add_argument("--coordinator", action="append", default=[], help="coordinator id (repeatable)")
    init.add_argument("--requester", action="append", default=[], help="requester id (repeatable)")
    init.add_argument(
        "--broker-member", action="append", default=[], help="the broker runner's member id, for its metrics"
    )
    init.add_argument("--host", default="127.0.0.1", help="the TLS listener's address (also in the certificate)")
    init.add_argument("--port", type=int, default=8883)
    init.add_argument("--server-name", action="append", default=[], help="more DNS names/IPs for the certificate")
    init.set_defaults(func=cmd_broker_init)

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

    dep = sub.add_parser("deploy", help="edge devices").add_subparsers(dest="deploy_command", required=True)
    bun = dep.add_parser("bundle", help="a device bundle: config, key, credentials, wheel, systemd unit, installer")
    bun.add_argument("--out", required=True, help="new folder to write the bundle into")
    bun.add_argument("--config", default="", help="an agent config to start from (e.g. runs/X/configs/node-03.toml)")
    bun.add_argument("--key", default="", help="the node's key file (without --config)")
    bun.add_argument("--genesis", default="", help="the consortium's genesis.bin (without --config)")
    bun.add_argument("--broker", default="", help="the broker as the device reaches it: mqtt(s)://HOST:PORT")
    bun.add_argument("--tls-ca", default="", help="the consortium CA (mqtts)")
    bun.add_argument("--tls-cert", default="", help="the node's client certificate (mqtts)")
    bun.add_argument("--tls-key", default="", help="the node's client key (mqtts)")
    bun.add_argument("--data", default=None, help="the data path on the device (made readable to the service)")
    bun.add_argument("--dataset", default="", help="mnist, cifar10, ... (default: the config's, else mnist)")
    bun.add_argument("--shard", type=int, default=None, help="this node's shard of a shared dataset")
    bun.add_argument("--num-shards", type=int, default=None)
    bun.add_argument("--prometheus", default="", help="HOST:PORT to serve /metrics on the device (default off)")
    bun.add_argument("--wheel", default="", help="a built bpcv_fl wheel (default: build one from this source tree)")
    bun.set_defaults(func=cmd_deploy_bundle)

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
    req.add_argument("--coordinator", required=True, help="node id of the aggregation server")
    req.add_argument("--chain", default="main")
    req.add_argument("--category", default="classification", choices=["classification", "regression"])
    req.add_argument("--dataset", default="mnist")
    req.add_argument("--model", default="mlp:128")
    req.add_argument("--rounds", type=int, default=10)
    req.add_argument("--time-limit", type=float, default=3600.0, help="seconds")
    req.add_argument("--target", type=float, default=None, help="stop when the global metric reaches this")
    req.add_argument("--reward", type=float, default=100.0, help="reward per round")
    req.add_argument("--nodes", type=int, default=10, help="active nodes per round")
    req.add_argument("--min-nodes", type=int, default=5)
    req.add_argument("--epochs", type=int, default=3, help="local epochs per round")
    req.add_argument("--quality-rule", default="mean", choices=["mean", "median"])
    req.set_defaults(func=cmd_request)

    keys = sub.add_parser("keys", help="Ed25519 identities").add_subparsers(dest="keys_command", required=True)
    new = keys.add_parser("new", help="create a key file (mode 0600); prints the id and public key")
    new.add_argument("node_id")
    new.add_argument("--out", required=True)
    new.add_argument("--force", action="store_true")
    new.set_defaults(func=cmd_keys_new)

    chain = sub.add_parser("chain", help="the proof-of-quality chain").add_subparsers(
        dest="chain_command", required=True
    )
    gen = chain.add_parser("genesis", help="write a consortium genesis block")
    gen.add_argument("--admin-key", required=True)
    gen.add_argument("--chain", default="main")
    gen.add_argument("--member", action="append", default=[], help="ID:ROLE:PUBLIC_KEY_HEX (repeatable)")
    gen.add_argument("--out", required=True)
    gen.set_defaults(func=cmd_chain_genesis)
    show = chain.add_parser("show", help="print a replica's blocks for people")
    show.add_argument("dir", help="replica folder (LMDB)")
    show.set_defaults(func=cmd_chain_show)
    verify = chain.add_parser("verify", help="re-verify a whole replica (exit 0 valid, 2 invalid)")
    verify.add_argument("dir", help="replica folder (LMDB)")
    verify.set_defaults(func=cmd_chain_verify)
    audit = chain.add_parser("audit", help="who voted what on whom, rankings, eliminations, rewards, privacy")
    audit.add_argument("dir", help="replica folder (LMDB)")
    audit.add_argument("--task", required=True, help="task id")
    audit.set_defaults(func=cmd_chain_audit)
    fol = chain.add_parser("follow", help="keep a replica that verifies and appends the chain's live blocks")
    fol.add_argument("dir", help="replica folder (LMDB; created if missing)")
    fol.add_argument("--genesis", required=True, help="the consortium's genesis block file")
    add_broker_arguments(fol)
    fol.add_argument("--base-topic", default=DEFAULT_BASE)
    fol.add_argument("--client-id", default="follower")
    fol.add_argument("--seconds", type=float, default=None, help="stop after this long (default: until Ctrl-C)")
    fol.set_defaults(func=cmd_chain_follow)
    reg = chain.add_parser("register", help="admit a new member: an admin-signed registration block")
    reg.add_argument("dir", help="the admin's replica folder (LMDB)")
    reg.add_argument("--genesis", required=True)
    reg.add_argument("--admin-key", required=True)
    reg.add_argument("--node", required=True, help="the new member's id")
    reg.add_argument("--role", default="agent")
    reg.add_argument("--public-key", required=True, help="its Ed25519 public key, hex (from `bpcv keys new`)")
    add_broker_arguments(reg, default=None)  # with --broker: also publish the block on the chain topic
    reg.add_argument("--base-topic", default=DEFAULT_BASE)
    reg.set_defaults(func=cmd_chain_register)
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
