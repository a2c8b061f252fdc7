"""Reading a replica for people: ``bpcv chain show`` and ``bpcv chain verify``."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

from bpcv.envelope import decode
from ledger.backends.lmdb import LmdbStore
from ledger.block import decode_block
from ledger.replica import VerifyReport, verify_store


def verify_replica(path: Path | str) -> VerifyReport:
    """Re-verify the replica at ``path`` from genesis. Raises InvalidBlock naming the first bad height."""
    with LmdbStore(path, readonly=True) as store:
        return verify_store(store)


def describe_blocks(path: Path | str) -> Iterator[str]:
    """Human-readable lines for every block of the replica at ``path`` (no verification)."""
    with LmdbStore(path, readonly=True) as store:
        head = store.head()
        if head is None:
            yield "(empty replica)"
            return
        for height in range(head[0] + 1):
            raw = store.get(height)
            block = decode_block(raw or b"")
            when = dt.datetime.fromtimestamp(block.ts, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
            title = "genesis" if height == 0 else f"task {block.task} round {block.round}" if block.task else "members"
            proposer = block.proposer + (f" (rank {block.rank})" if block.rank else "")
            yield f"#{height} {block.hash[:16]}… {title} | proposer {proposer} | {when} | {len(block.txs)} tx"
            for tx in block.txs:
                env = decode(tx)
                yield "    " + _describe_tx(env.type, env.sender, env.body)


def _describe_tx(kind: str, sender: str, body: dict) -> str:
    if kind == "genesis":
        return f"genesis by {sender}: chain {body.get('chain')}, {len(body.get('members', {}))} members"
    if kind == "task":
        return (
            f"task by {sender}: {body.get('category')} on {body.get('dataset')} with {body.get('model')}, "
            f"{body.get('rounds')} rounds, reward {body.get('reward_per_round')}/round"
        )
    if kind == "vote":
        scores = ", ".join(f"{n}={s:.4f}" for n, s in sorted(body.get("scores", {}).items()))
        return f"vote by {sender}: {scores}"
    if kind == "result":
        return (
            f"result by {sender}: {body.get('metric')} {body.get('value')}, ranking {body.get('ranking')}, "
            f"eliminated {body.get('eliminated')}, admitted {body.get('admitted')}"
            + (", FINAL" if body.get("final") else "")
        )
    if kind == "reward":
        return f"reward by {sender}: " + ", ".join(f"{n} {v:.2f}" for n, v in sorted(body.get("rewards", {}).items()))
    if kind == "final":
        digest = str(body.get("model_digest"))[:16]
        return f"final model by {sender}: digest {digest}…, {body.get('metric')} {body.get('value')}"
    if kind == "evidence":
        return f"equivocation evidence by {sender}: {body.get('accused')} signed two blocks at one height"
    if kind == "register":
        return f"registration by {sender}: {body.get('node')} as {body.get('role')}"
    return f"{kind} by {sender}"
