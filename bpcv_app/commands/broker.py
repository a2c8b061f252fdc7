"""``bpcv broker run`` and ``bpcv broker init``: the MQTT broker."""

from __future__ import annotations

import argparse
from pathlib import Path

from bpcv.errors import BpcvError


def cmd_broker_init(args: argparse.Namespace) -> int:
    from broker.secure import Roster, init_broker

    agents = tuple(n for spec in args.agents for n in spec.split(",") if n)
    conf = init_broker(
        Path(args.dir),
        Roster(agents, tuple(args.coordinator), tuple(args.requester), tuple(args.broker_member), tuple(args.bridge)),
        args.host,
        args.port,
        tuple(args.server_name),
    )
    clients = len(agents) + len(args.coordinator) + len(args.requester) + len(args.broker_member) + len(args.bridge)
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

        print(f"embedded MQTT broker (amqtt) on {args.host}:{args.port} — demo/test broker, no auth", flush=True)
        if metrics is not None:
            metrics.start(os.getpid())
        run_embedded(args.host, args.port)
        return 0
    command = [str(mosquitto_binary()), "-c", str(conf)]
    if metrics is None:
        os.execv(command[0], command)  # nothing to do beside it: become mosquitto
    return supervise(command, metrics)


def register(sub: argparse._SubParsersAction) -> None:
    broker = sub.add_parser("broker", help="the MQTT broker").add_subparsers(dest="broker_command", required=True)
    run = broker.add_parser("run", help="start mosquitto with the project's config, or the embedded broker")
    kind = run.add_mutually_exclusive_group()
    kind.add_argument("--embedded", action="store_true", help="use the embedded broker (amqtt, in this process)")
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
    init.add_argument(
        "--bridge", action="append", default=[], help="a site broker's bridge id: a certificate, and the whole base topic"
    )
    init.add_argument("--host", default="127.0.0.1", help="the TLS listener's address (also in the certificate)")
    init.add_argument("--port", type=int, default=8883)
    init.add_argument("--server-name", action="append", default=[], help="more DNS names/IPs for the certificate")
    init.set_defaults(func=cmd_broker_init)
