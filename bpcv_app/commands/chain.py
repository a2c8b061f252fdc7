"""``bpcv chain``: genesis, show, verify, audit, follow and register on the proof-of-quality chain."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bpcv_app.commands.common import add_broker_arguments, broker_from_args


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
    from bpcv.errors import ConfigError
    from bpcv.identity import ROLES, Identity
    from bpcv.messages import Register, seal_message
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
        tx = seal_message(admin, Register(args.node, key.hex(), args.role))
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


def register(sub: argparse._SubParsersAction) -> None:
    from bpcv.topics import DEFAULT_BASE

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
