"""A chain replica: a block store plus the validated state; every block is re-verified before it is stored."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ledger.backends.lmdb import LmdbStore
from ledger.backends.memory import MemoryStore
from ledger.block import Block, decode_block
from ledger.errors import CorruptStore, InvalidBlock, LedgerError, UnknownParent
from ledger.store import BlockStore
from ledger.validate import ChainState, apply_round_block, validate_genesis, validate_round_block

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VerifyReport:
    height: int
    head_hash: str
    genesis_hash: str
    blocks: int


def _decode_at(store: BlockStore, height: int) -> Block:
    raw = store.get(height)
    if raw is None:
        raise InvalidBlock(height, "missing from the store")
    try:
        return decode_block(raw)
    except CorruptStore as exc:
        raise InvalidBlock(height, str(exc)) from exc


def replay(store: BlockStore) -> ChainState:
    """Re-verify every stored block from genesis; raises InvalidBlock naming the first bad height."""
    head = store.head()
    if head is None:
        raise InvalidBlock(None, "the replica is empty (no genesis)")
    state = validate_genesis(_decode_at(store, 0))
    for height in range(1, head[0] + 1):
        block = _decode_at(store, height)
        task, _ = validate_round_block(block, state)
        apply_round_block(state, block, task)
    if state.head_hash != head[1]:
        raise InvalidBlock(head[0], "the stored head hash does not match the last block")
    return state


def verify_store(store: BlockStore) -> VerifyReport:
    """Full verification of a store, for ``bpcv chain verify``."""
    state = replay(store)
    genesis = decode_block(store.get(0) or b"")
    return VerifyReport(state.height, state.head_hash, genesis.hash, state.height + 1)


class Replica:
    """One node's copy of the chain."""

    def __init__(self, store: BlockStore, genesis_raw: bytes | None = None) -> None:
        self.store = store
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
        """An LMDB replica at ``path``, or an in-memory one when ``path`` is None."""
        return cls(LmdbStore(path) if path is not None else MemoryStore(), genesis_raw)

    @property
    def height(self) -> int:
        return self.state.height

    @property
    def head_hash(self) -> str:
        return self.state.head_hash

    def has_round(self, task: str, round_no: int) -> bool:
        return (task, round_no) in self.state.rounds

    def append(self, raw: bytes) -> Block | None:
        """Verify and store a block. Returns None for a block already held (a duplicate).

        Raises InvalidBlock for a bad block, UnknownParent for one that does not extend the head.
        """
        try:
            block = decode_block(raw)
        except CorruptStore as exc:
            raise InvalidBlock(None, str(exc)) from exc
        if self.store.height_of(block.hash) is not None:
            return None
        if block.height != self.state.height + 1:
            raise UnknownParent(f"block at height {block.height} does not extend head {self.state.height}")
        task, _ = validate_round_block(block, self.state)
        self.store.append(block.height, block.hash, block.raw)
        apply_round_block(self.state, block, task)
        return block

    def blocks(self) -> Iterator[Block]:
        for height in range(self.state.height + 1):
            yield _decode_at(self.store, height)

    def close(self) -> None:
        self.store.close()
