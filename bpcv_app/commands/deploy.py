"""``bpcv deploy bundle``: everything one edge device needs, in one folder."""

from __future__ import annotations

import argparse
from pathlib import Path


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
    from bpcv.datasources import DEVICE_FILE_SUFFIXES
    from bpcv.task import LOCAL

    dataset = args.dataset
    if not dataset and args.data and Path(args.data).suffix.lower() in DEVICE_FILE_SUFFIXES:
        dataset = LOCAL  # a device's own file: it answers tasks on local data, read against the task's schema
    overrides.update(dataset=dataset, prometheus=args.prometheus)
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


def register(sub: argparse._SubParsersAction) -> None:
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
    bun.add_argument(
        "--data",
        default=None,
        help="the data path on the device, made readable to the service: the device's own "
        "sensor log (.csv, .parquet, .npz: the agent answers local-data tasks) or a dataset's files",
    )
    bun.add_argument(
        "--dataset",
        default="",
        help="local, mnist, cifar10 (default: the config's; local for a --data .csv/.parquet/.npz; else mnist)",
    )
    bun.add_argument("--shard", type=int, default=None, help="this node's shard of a shared dataset")
    bun.add_argument("--num-shards", type=int, default=None)
    bun.add_argument("--prometheus", default="", help="HOST:PORT to serve /metrics on the device (default off)")
    bun.add_argument("--wheel", default="", help="a built bpcv_fl wheel (default: build one from this source tree)")
    bun.set_defaults(func=cmd_deploy_bundle)
