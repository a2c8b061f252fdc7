"""A chain replica: a block store plus the validated state; every block is re-verified before it is stored.

Fork choice (docs/PROTOCOL.md): of two valid branches from a common block, the longer one wins; at
equal length, the one whose first block has the lower proposer rank, then the lower block hash.
A block on the losing branch is kept as a side block, so the main chain is a function of the set
of blocks a replica has, whatever order they came in; the height never goes down.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from bpcv.identity import verify_signature
from bpcv.messages import Evidence
from ledger.backends.lmdb import LmdbStore
from ledger.backends.memory import MemoryStore
from ledger.block import Block, decode_block
from ledger.errors import CorruptStore, InvalidBlock, LedgerError, UnknownParent
from ledger.store import BlockStore
from ledger.validate import BlockEffects, ChainState, apply_block, unapply_block, validate_block, validate_genesis

log = logging.getLogger(__name__)
UNDO_DEPTH = 16  # forks this close to the head are switched without replaying the chain from genesis


@dataclass(frozen=True)
class VerifyReport:
    height: int
    head_hash: str
    genesis_hash: str
    blocks: int


@dataclass(frozen=True)
class Appended:
    """What ``Replica.append`` did with a new valid block."""

    block: Block
    status: str  # "head": extends the main chain; "side": kept on a losing branch; "reorg": its branch won
    orphaned: tuple[Block, ...] = ()  # main-chain blocks a reorg moved to the side


@dataclass(frozen=True)
class Equivocation:
    """Two different blocks signed by one proposer at one height on one parent."""

    accused: str
    first: Block
    second: Block

    def evidence(self) -> Evidence:
        """The body of an ``evidence`` transaction (checked by ``ledger.validate.validate_evidence``)."""
        return Evidence(
            self.accused,
            [self.first.header_bytes.hex(), self.second.header_bytes.hex()],
            [self.first.signature.hex(), self.second.signature.hex()],
        )


def _decode(raw: bytes | None, height: int | None) -> Block:
    if raw is None:
        raise InvalidBlock(height, "missing from the store")
    try:
        return decode_block(raw)
    except CorruptStore as exc:
        raise InvalidBlock(height, str(exc)) from exc


def replay(store: BlockStore, upto: int | None = None) -> ChainState:
    """Re-verify stored blocks 0..``upto`` (default: the head); raises InvalidBlock naming the first bad height."""
    head = store.head()
    if head is None:
        raise InvalidBlock(None, "the replica is empty (no genesis)")
    state = validate_genesis(_decode(store.get(0), 0))
    last = head[0] if upto is None else upto
    for height in range(1, last + 1):
        block = _decode(store.get(height), height)
        apply_block(state, block, validate_block(block, state))
    if upto is None and state.head_hash != head[1]:
        raise InvalidBlock(head[0], "the stored head hash does not match the last block")
    return state


def verify_store(store: BlockStore) -> VerifyReport:
    """Full verification of a store's main chain, for ``bpcv chain verify``."""
    state = replay(store)
    genesis = decode_block(store.get(0) or b"")
    return VerifyReport(state.height, state.head_hash, genesis.hash, state.height + 1)


def preferred(branch: list[Block], main: list[Block]) -> bool:
    """Fork choice between two branches from one common block: does ``branch`` beat ``main``?"""
    if len(branch) != len(main):
        return len(branch) > len(main)
    return (branch[0].rank, branch[0].hash) < (main[0].rank, main[0].hash)


class Replica:
    """One node's copy of the chain."""

    def __init__(self, store: BlockStore, genesis_raw: bytes | None = None) -> None:
        self.store = store
        self.equivocations: dict[str, Equivocation] = {}
        self.cpu_s = 0.0  # CPU seconds spent in append (decode, verify, store), for monitoring
        self._undo: deque[tuple[Block, BlockEffects]] = deque(maxlen=UNDO_DEPTH)  # the latest main blocks
        if store.head() is None:
            if genesis_raw is None:
                raise LedgerError("empty replica and no genesis given")
            genesis = decode_block(genesis_raw)
            self.state = validate_genesis(genesis)
            store.append(0, genesis.hash, genesis.raw)
        else:
            self.state = replay(store)
            if genesis_raw is not None and decode_block(genesis_raw).hash != decode_block(store.get(0) or b"").hash:
                raise LedgerError("the stored chain has another genesis than the one configured")

    @classmethod
    def open(cls, path: Path | str | None, genesis_raw: bytes | None = None) -> Replica:
        """An LMDB replica at ``path``, or an in-memory one when ``path`` is None. A replica that does not
        verify raises (InvalidBlock naming the height) and leaves its store closed."""
        store = LmdbStore(path) if path is not None else MemoryStore()
        try:
            return cls(store, genesis_raw)
        except BaseException:
            store.close()
            raise

    @property
    def height(self) -> int:
        return self.state.height

    @property
    def head_hash(self) -> str:
        return self.state.head_hash

    def has_round(self, task: str, round_no: int) -> bool:
        return (task, round_no) in self.state.rounds

    def block_at(self, height: int) -> Block:
        return _decode(self.store.get(height), height)

    def round_block(self, task: str, round_no: int) -> Block | None:
        """The main-chain block recording ``round_no`` of ``task`` (searched from the head down)."""
        if not self.has_round(task, round_no):
            return None
        for height in range(self.height, 0, -1):
            block = self.block_at(height)
            if (block.task, block.round) == (task, round_no):
                return block
        return None

    def knows(self, block_hash: str) -> bool:
        return self.store.height_of(block_hash) is not None or self.store.get_side(block_hash) is not None

    def append(self, raw: bytes) -> Appended | None:
        """Verify and store a block; None for a block already held.

        Raises InvalidBlock for a bad block, UnknownParent for one whose parent this replica lacks.
        """
        started = time.thread_time()
        try:
            return self._append(raw)
        finally:
            self.cpu_s += time.thread_time() - started

    def _append(self, raw: bytes) -> Appended | None:
        try:
            block = decode_block(raw)
        except CorruptStore as exc:
            raise InvalidBlock(None, str(exc)) from exc
        if self.knows(block.hash):
            return None
        if block.prev_hash == self.state.head_hash:
            effects = validate_block(block, self.state)
            self.store.append(block.height, block.hash, block.raw)
            apply_block(self.state, block, effects)
            self._undo.append((block, effects))
            return Appended(block, "head")
        return self._append_fork(block)

    def _append_fork(self, block: Block) -> Appended:
        branch = [block]
        while (parent := self.store.get_side(branch[0].prev_hash)) is not None:
            branch.insert(0, decode_block(parent))
        fork_height = self.store.height_of(branch[0].prev_hash)
        if fork_height is None:
            raise UnknownParent(f"block at height {block.height}: parent {block.prev_hash[:16]}… is unknown here")
        self._check_equivocation(block)
        state = self._state_at(fork_height)
        applied = []
        for b in branch:
            effects = validate_block(b, state)
            apply_block(state, b, effects)
            applied.append((b, effects))
        main = [self.block_at(h) for h in range(fork_height + 1, self.height + 1)]
        if not preferred(branch, main):
            self.store.put_side(block.hash, block.raw)
            log.info("block %d (%s…) kept on a side branch", block.height, block.hash[:12])
            return Appended(block, "side")
        self.store.switch(fork_height + 1, [(b.hash, b.raw) for b in main], [(b.hash, b.raw) for b in branch])
        self.state.registry.replace_with(state.registry)
        state.registry = self.state.registry  # holders of the registry object keep seeing the chain's members
        self.state = state
        kept = [u for u in self._undo if u[0].height <= fork_height]
        self._undo = deque(kept + applied, maxlen=UNDO_DEPTH)
        log.warning("fork: switched to a branch from height %d, %d block(s) orphaned", fork_height + 1, len(main))
        return Appended(block, "reorg", tuple(main))

    def _state_at(self, height: int) -> ChainState:
        """The chain state after main block ``height``: stepped back from the head when the undo log
        reaches that far, else replayed from genesis."""
        if self.height - height > len(self._undo):
            return replay(self.store, upto=height)
        state = self.state.copy()
        for block, effects in reversed(self._undo):
            if block.height <= height:
                break
            unapply_block(state, block, effects)
        return state

    def _check_equivocation(self, block: Block) -> None:
        """Record proof when ``block`` and a block we hold have one proposer, one height, one parent."""
        siblings = [decode_block(raw) for _, raw in self.store.side_blocks()]
        main_at = self.store.get(block.height)
        if main_at is not None:
            siblings.append(decode_block(main_at))
        member = self.state.registry.get(block.proposer)
        for other in siblings:
            if (
                member is not None
                and other.proposer == block.proposer
                and other.prev_hash == block.prev_hash
                and other.hash != block.hash
                and verify_signature(member.public_key, block.header_bytes, block.signature)
                and verify_signature(member.public_key, other.header_bytes, other.signature)
            ):
                self.equivocations.setdefault(block.proposer, Equivocation(block.proposer, other, block))
                log.warning("equivocation: %s signed two blocks at height %d", block.proposer, block.height)

    def pending_evidence(self) -> list[Equivocation]:
        """Equivocations seen here whose proposer the chain has not excluded yet."""
        return [e for n, e in sorted(self.equivocations.items()) if n not in self.state.excluded]

    def close(self) -> None:
        self.store.close()
