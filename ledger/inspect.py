"""Reading a replica for people: ``bpcv chain show`` and ``bpcv chain verify``."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

from bpcv.envelope import Envelope, decode
from bpcv.errors import Rejected
from bpcv.messages import KINDS, Evidence, Final, Genesis, Message, Register, Result, Reward, Vote, read, read_task
from bpcv.model_spec import describe
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
                yield "    " + describe_tx(decode(tx))


def describe_tx(env: Envelope) -> str:
    """One line for a transaction, from its typed body (or why the body is unreadable)."""
    who = f"by {env.sender}"
    try:
        if env.type == "task":
            t = read_task(env)
            return (
                f"task {who}: {t.category} on {t.dataset} with {describe(t.model)}, "
                f"{t.rounds} rounds, reward {t.reward_per_round}/round"
            )
        kind = KINDS.get(env.type)
        if kind is None:
            return f"{env.type} {who}"
        return f"{LABELS.get(env.type, env.type)} {who}: " + _describe(read(env, kind))
    except Rejected as exc:
        return f"{env.type} {who}: unreadable body ({exc})"


LABELS = {"final": "final model", "evidence": "equivocation evidence", "register": "registration"}


def _describe(m: Message) -> str:
    if isinstance(m, Genesis):
        return f"chain {m.chain}, {len(m.members)} members"
    if isinstance(m, Vote):
        return ", ".join(f"{n}={s:.4f}" for n, s in sorted(m.scores.items()))
    if isinstance(m, Result):
        return (
            f"{m.metric} {m.value}, ranking {m.ranking}, eliminated {m.eliminated}, admitted {m.admitted}"
            + (", FINAL" if m.final else "")
        )
    if isinstance(m, Reward):
        return ", ".join(f"{n} {v:.2f}" for n, v in sorted(m.rewards.items()))
    if isinstance(m, Final):
        return f"digest {m.model_digest[:16]}…, {m.metric} {m.value}"
    if isinstance(m, Evidence):
        return f"{m.accused} signed two blocks at one height"
    if isinstance(m, Register):
        return f"{m.node} as {m.role}"
    return m.KIND
