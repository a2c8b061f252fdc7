"""An in-memory block store, for tests and throw-away replicas."""

from __future__ import annotations

from ledger.errors import UnknownParent
from ledger.store import BlockStore


class MemoryStore(BlockStore):
    """Blocks in a list."""

    def __init__(self) -> None:
        self._blocks: list[bytes] = []
        self._hashes: dict[str, int] = {}
        self._head: tuple[int, str] | None = None

    def head(self) -> tuple[int, str] | None:
        return self._head

    def get(self, height: int) -> bytes | None:
        return self._blocks[height] if 0 <= height < len(self._blocks) else None

    def height_of(self, block_hash: str) -> int | None:
        return self._hashes.get(block_hash)

    def append(self, height: int, block_hash: str, raw: bytes) -> None:
        if height != len(self._blocks):
            raise UnknownParent(f"block at height {height} does not extend head at {len(self._blocks) - 1}")
        self._blocks.append(bytes(raw))
        self._hashes[block_hash] = height
        self._head = (height, block_hash)
