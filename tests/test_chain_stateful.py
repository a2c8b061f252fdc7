"""Hypothesis stateful test of replicas under append / restart / tamper / fork sequences.

Three LMDB replicas receive blocks from a tree of valid blocks (PoQ winners, stand-ins at rank 1 and
equivocating twins) in any order, are closed and reopened, and have stored bytes flipped and restored.
After every step: height never decreases; every stored signature verifies (full re-verification);
each replica's main chain is exactly the best chain of the blocks it holds by the written fork rule
(so replicas holding the same blocks have the same chain, and agree on every common prefix).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import lmdb
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from ledger import schema
from ledger.block import Block
from ledger.errors import InvalidBlock, UnknownParent
from ledger.replica import Replica, verify_store
from tests.helpers import honest_scores, make_consortium, round_block

REPLICAS = 3


def block_tree():
    """Genesis plus nine blocks: three rivals at height 1, two children each for two of them, and so on."""
    c = make_consortium()
    scores = honest_scores(list(c.agents), bad="node-04")
    genesis_hash = Replica.open(None, c.genesis.raw).head_hash
    level1 = [
        round_block(c, 1, genesis_hash, 1, scores, True, rank=0, ts=1000.0),
        round_block(c, 1, genesis_hash, 1, scores, True, rank=1, ts=1000.0),
        round_block(c, 1, genesis_hash, 1, scores, True, rank=0, ts=1000.7),  # equivocating twin
    ]
    level2 = [round_block(c, 2, p.hash, 2, scores, False, rank=k) for p in level1[:2] for k in (0, 1)]
    level3 = [round_block(c, 3, level2[i].hash, 3, scores, False, rank=0) for i in (0, 3)]
    return c, level1 + level2 + level3


CONSORTIUM, BLOCKS = block_tree()
BY_HASH = {b.hash: b for b in BLOCKS}


def best_chain(held: set[str], genesis_hash: str) -> list[str]:
    """The reference fork rule: the longest path from genesis; at equal length, at the first block where
    two paths differ, the lower (proposer rank, block hash)."""
    children: dict[str, list[Block]] = {}
    for h in held:
        children.setdefault(BY_HASH[h].prev_hash, []).append(BY_HASH[h])

    def paths(parent: str) -> list[list[Block]]:
        below = [[child, *rest] for child in children.get(parent, []) for rest in paths(child.hash)]
        return below or [[]]

    best = min(paths(genesis_hash), key=lambda p: (-len(p), [(b.rank, b.hash) for b in p]))
    return [b.hash for b in best]


class ReplicaMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="bpcv-stateful-"))
        self.replicas = [Replica.open(self.tmp / f"r{i}", CONSORTIUM.genesis.raw) for i in range(REPLICAS)]
        self.heights = [0] * REPLICAS
        self.genesis_hash = self.replicas[0].block_at(0).hash

    def held(self, i: int) -> set[str]:
        replica = self.replicas[i]
        main = {replica.block_at(h).hash for h in range(1, replica.height + 1)}
        return main | {h for h, _ in replica.store.side_blocks()}

    @rule(i=st.integers(0, REPLICAS - 1), j=st.integers(0, len(BLOCKS) - 1))
    def deliver(self, i: int, j: int) -> None:
        try:
            self.replicas[i].append(BLOCKS[j].raw)
        except UnknownParent:
            pass  # its parent has not come yet: range sync would fetch it; the block is not stored

    @rule(i=st.integers(0, REPLICAS - 1))
    def restart(self, i: int) -> None:
        self.replicas[i].close()
        self.replicas[i] = Replica.open(self.tmp / f"r{i}", CONSORTIUM.genesis.raw)

    @rule(i=st.integers(0, REPLICAS - 1), where=st.floats(0, 1, exclude_max=True), bit=st.integers(0, 7))
    def tamper_and_restore(self, i: int, where: float, bit: int) -> None:
        replica = self.replicas[i]
        if replica.height == 0:
            return
        height = 1 + int(where * replica.height)
        path, key = self.tmp / f"r{i}", schema.block_key(height)
        replica.close()  # flip a bit on disk, as a failing disk would, below the store's interface
        with lmdb.open(str(path), subdir=True) as env:
            with env.begin() as txn:
                original = bytes(txn.get(key))
            flipped = bytearray(original)
            flipped[int(where * len(original))] ^= 1 << bit
            with env.begin(write=True) as txn:
                txn.put(key, bytes(flipped))
        with pytest.raises(InvalidBlock) as caught:  # reopening re-verifies the whole replica
            Replica.open(path, CONSORTIUM.genesis.raw)
        assert caught.value.height == height
        with lmdb.open(str(path), subdir=True) as env, env.begin(write=True) as txn:
            txn.put(key, original)
        self.replicas[i] = Replica.open(path, CONSORTIUM.genesis.raw)

    @invariant()
    def height_never_decreases(self) -> None:
        for i, replica in enumerate(self.replicas):
            assert replica.height >= self.heights[i]
            self.heights[i] = replica.height

    @invariant()
    def every_stored_block_verifies(self) -> None:
        for replica in self.replicas:
            report = verify_store(replica.store)
            assert report.head_hash == replica.head_hash

    @invariant()
    def main_chain_is_the_best_chain_of_the_blocks_held(self) -> None:
        chains = []
        for i, replica in enumerate(self.replicas):
            chain = [replica.block_at(h).hash for h in range(1, replica.height + 1)]
            assert chain == best_chain(self.held(i), self.genesis_hash)
            chains.append((self.held(i), chain))
        for (held_a, chain_a), (held_b, chain_b) in zip(chains, chains[1:], strict=False):
            if held_a == held_b:
                assert chain_a == chain_b

    def teardown(self) -> None:
        for replica in self.replicas:
            replica.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


ReplicaMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=30, deadline=None)
test_replica_machine = pytest.mark.slow(ReplicaMachine.TestCase)  # 40 runs x 30 steps on LMDB: CI stage 2
