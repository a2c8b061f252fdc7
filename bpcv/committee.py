"""Validation committees, pure: who scores whom in a round, drawn from a block hash so anyone can
recompute it.

With a committee of k (the task's ``committee``; 0 = every peer, the paper), the round's validated nodes
(the manifest's) are put in an order drawn from ``seed`` (the hash of the chain's head block when the
coordinator froze the manifest), the task and the round, and each node scores the k nodes that follow it
in that order, wrapping round. So every node scores exactly k peers and is scored by exactly k peers,
validation costs N·k scorings and moves N·k updates instead of N·(N-1), and a node cannot choose its
judges: the order is fixed by a block that was on the chain before the round's votes existed.
docs/PROTOCOL.md, "Validation committees", says how replicas check it and what k costs in robustness.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

# A replica accepts a round whose seed is one of the last COMMITTEE_SEED_DEPTH block hashes below the round's
# block: the coordinator froze the manifest on its head, and the previous round's block may reach it late.
COMMITTEE_SEED_DEPTH = 3


def _draw(seed: str, task_id: str, round_no: int, node: str) -> bytes:
    return hashlib.sha256(f"bpcv-committee\x00{seed}\x00{task_id}\x00{round_no}\x00{node}".encode()).digest()


def assign(nodes: Sequence[str], k: int, seed: str, task_id: str, round_no: int) -> dict[str, list[str]]:
    """Who each of ``nodes`` scores: with ``k`` = 0, or k at least N - 1, every other node (the paper);
    otherwise the k nodes after it in the order drawn from ``seed``, the task and the round."""
    if k < 0:
        raise ValueError(f"a committee has k >= 0 members (0 = every peer), not {k}")
    unique = sorted(set(nodes))
    if k == 0 or k >= len(unique) - 1:
        return {n: [p for p in unique if p != n] for n in unique}
    order = sorted(unique, key=lambda n: (_draw(seed, task_id, round_no, n), n))
    size = len(order)
    return {n: sorted(order[(i + j) % size] for j in range(1, k + 1)) for i, n in enumerate(order)}


def scorers(assignment: dict[str, list[str]]) -> dict[str, list[str]]:
    """The inverse of an assignment: node -> the nodes that score it."""
    judged: dict[str, list[str]] = {n: [] for n in assignment}
    for voter, targets in sorted(assignment.items()):
        for target in targets:
            judged.setdefault(target, []).append(voter)
    return judged


def capture_probability(nodes: int, colluders: int, k: int) -> float:
    """The chance that an honest node's k judges include at least half colluders (enough to move a median
    of k scores), when ``colluders`` of the other ``nodes`` - 1 are drawn at random: hypergeometric."""
    if k <= 0 or k >= nodes - 1:
        k = nodes - 1
    others = nodes - 1
    need = math.ceil(k / 2)
    total = math.comb(others, k)
    return sum(math.comb(colluders, c) * math.comb(others - colluders, k - c) for c in range(need, k + 1)) / total
