"""The invariants the nemesis checks after each task, on every replica that took part (docs/RELIABILITY.md).

Each check returns the violations it found as sentences naming the replica, height, round or node, so a
log line says what broke; an empty list means the invariant held. They read the replicas with the
project's own verifier (``ledger.replica.verify_store``) and its audit (``ledger.audit.audit_task``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from ledger.audit import TaskAudit, audit_task
from ledger.backends.lmdb import LmdbStore
from ledger.errors import LedgerError
from ledger.replica import verify_store

EPSILON_SLACK = 1e-9
REWARD_UNIT = 1e-6  # each share is rounded down to 6 decimals (coordinator.rounds.split_reward)


def read_blocks(path: Path) -> tuple[dict[int, str], str | None]:
    """A replica's block hashes by height (sha256 of the stored bytes), and why it does not verify (or None)."""
    try:
        with LmdbStore(path, readonly=True) as store:
            verify_store(store)
            head = store.head()
            top = head[0] if head else -1
            return {h: hashlib.sha256(store.get(h) or b"").hexdigest() for h in range(top + 1)}, None
    except (LedgerError, OSError) as exc:
        return {}, f"replica {path} does not verify: {exc}"


def chain_violations(replicas: dict[str, Path]) -> list[str]:
    """Every replica verifies; no two different blocks at one height on any two replicas; every replica
    holds every block any replica committed (all came back and caught up to the same head)."""
    found: list[str] = []
    blocks: dict[str, dict[int, str]] = {}
    for name, path in replicas.items():
        chain, error = read_blocks(path)
        if error:
            found.append(f"{name}: {error}")
        else:
            blocks[name] = chain
    if not blocks:
        return found
    top = max(max(chain, default=-1) for chain in blocks.values())
    for height in range(top + 1):
        seen = {chain[height] for chain in blocks.values() if height in chain}
        if len(seen) > 1:
            holders = sorted(f"{n}:{c[height][:12]}" for n, c in blocks.items() if height in c)
            found.append(f"two blocks at height {height}: {', '.join(holders)}")
    for name, chain in blocks.items():
        if max(chain, default=-1) < top:
            found.append(f"{name}: replica stops at height {max(chain, default=-1)}, others reached {top}")
    return found


def task_violations(
    audit: TaskAudit, epsilon_budget: float | None, final_digest: str | None, paid: dict[str, float] | None = None
) -> list[str]:
    """On one verified replica: each round's rewards sum to the task's reward per round (less the rounding
    down of each share), or to nothing when nobody was rewarded; what the coordinator reports it paid each
    node (``paid``) is what the chain's reward records add up to; no node signs an ε above its budget or
    below one it signed before (a restart must not reset its account); the final model's digest the
    coordinator reported is on the chain."""
    found: list[str] = []
    on_chain: dict[str, float] = {}
    for r in audit.rounds:
        for node, amount in r.rewards.items():
            on_chain[node] = on_chain.get(node, 0.0) + amount
    for node, amount in sorted((paid or {}).items()):
        if abs(amount - on_chain.get(node, 0.0)) > REWARD_UNIT * max(1, len(audit.rounds)):
            found.append(f"{node}: the coordinator reports {amount} paid, the chain records {on_chain.get(node, 0.0)}")
    per_round = audit.spec.reward_per_round if audit.spec is not None else None
    if audit.spec is None:
        found.append(f"task {audit.task}: its task transaction is not on the chain")
    last_epsilon: dict[str, float] = {}
    for r in audit.rounds:
        total = sum(r.rewards.values())
        paid = [n for n, v in r.rewards.items() if v > 0]
        if per_round is not None and paid and not per_round - REWARD_UNIT * len(r.rewards) <= total <= per_round:
            found.append(f"round {r.round}: rewards sum to {total}, not {per_round}")
        if any(n not in r.result.ranking for n in r.rewards):
            found.append(f"round {r.round}: a reward to a node outside the ranking: {sorted(r.rewards)}")
        for node, eps in sorted(r.epsilon_signed.items()):
            if eps is None:
                continue
            if epsilon_budget is not None and eps > epsilon_budget + EPSILON_SLACK:
                found.append(f"round {r.round}: {node} signed epsilon {eps} over its budget {epsilon_budget}")
            if eps < last_epsilon.get(node, 0.0) - EPSILON_SLACK:
                found.append(f"round {r.round}: {node} signed epsilon {eps}, less than {last_epsilon[node]} before")
            last_epsilon[node] = eps
    if final_digest is not None and audit.final_model_digest != final_digest:
        found.append(f"final model {final_digest[:16]}… is not on the chain (chain has {audit.final_model_digest})")
    return found


def check_task(
    replicas: dict[str, Path],
    task: str,
    epsilon_budget: float | None,
    final_digest: str | None,
    paid: dict[str, float] | None = None,
) -> list[str]:
    """All the invariants of one task: the chain ones across replicas, the task ones on each that verifies
    (a violation every replica shares is reported once, with the replicas that show it)."""
    found = chain_violations(replicas)
    shown_by: dict[str, list[str]] = {}
    for name, path in replicas.items():
        try:
            audit = audit_task(path, task)
        except (LedgerError, OSError):
            continue  # already reported: it does not verify
        for violation in task_violations(audit, epsilon_budget, final_digest, paid):
            shown_by.setdefault(violation, []).append(name)
    return found + [f"{v} (on {', '.join(names)})" for v, names in shown_by.items()]
