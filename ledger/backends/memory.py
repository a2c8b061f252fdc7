"""An in-memory block store, for tests and throw-away replicas."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from ledger.errors import UnknownParent
from ledger.store import BlockStore, HashedBlock


class MemoryStore(BlockStore):
    """Blocks in a list, side blocks in a dict."""

    def __init__(self) -> None:
        self._blocks: list[HashedBlock] = []
        self._hashes: dict[str, int] = {}
        self._side: dict[str, bytes] = {}

    def head(self) -> tuple[int, str] | None:
        return (len(self._blocks) - 1, self._blocks[-1][0]) if self._blocks else None

    def get(self, height: int) -> bytes | None:
        return self._blocks[height][1] if 0 <= height < len(self._blocks) else None

    def height_of(self, block_hash: str) -> int | None:
        return self._hashes.get(block_hash)

    def append(self, height: int, block_hash: str, raw: bytes) -> None:
        if height != len(self._blocks):
            raise UnknownParent(f"block at height {height} does not extend head at {len(self._blocks) - 1}")
        self._blocks.append((block_hash, bytes(raw)))
        self._hashes[block_hash] = height
        self._side.pop(block_hash, None)

    def get_side(self, block_hash: str) -> bytes | None:
        return self._side.get(block_hash)

    def side_blocks(self) -> Iterator[HashedBlock]:
        return iter(list(self._side.items()))

    def put_side(self, block_hash: str, raw: bytes) -> None:
        if block_hash not in self._hashes:
            self._side[block_hash] = bytes(raw)

    def switch(self, fork_height: int, orphaned: Sequence[HashedBlock], branch: Sequence[HashedBlock]) -> None:
        if [h for h, _ in self._blocks[fork_height:]] != [h for h, _ in orphaned] or fork_height < 1:
            raise UnknownParent(f"the main chain from height {fork_height} is not the blocks to be orphaned")
        for block_hash, raw in orphaned:
            del self._hashes[block_hash]
            self._side[block_hash] = raw
        del self._blocks[fork_height:]
        for block_hash, raw in branch:
            self.append(len(self._blocks), block_hash, raw)
