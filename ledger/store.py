"""The block store interface. Backends: ``ledger.backends.memory`` and ``ledger.backends.lmdb``.

A store holds the main chain (blocks by height, a hash index and the head) and a side set of
valid blocks on losing fork branches, kept so that fork choice depends only on which blocks a
replica has seen, not on the order they came in (docs/PROTOCOL.md, Fork choice).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence

HashedBlock = tuple[str, bytes]  # (block hash, raw block)


class BlockStore(ABC):
    """Append-only storage of raw block bytes by height, plus side blocks; every write is atomic."""

    @abstractmethod
    def head(self) -> tuple[int, str] | None:
        """(height, hash) of the last block, or None when the store is empty."""

    @abstractmethod
    def get(self, height: int) -> bytes | None:
        """The raw main-chain block at ``height``, or None when there is none."""

    @abstractmethod
    def height_of(self, block_hash: str) -> int | None:
        """The height of the main-chain block with this hash, or None when unknown."""

    @abstractmethod
    def append(self, height: int, block_hash: str, raw: bytes) -> None:
        """Store a block as the new head, atomically: all of it or nothing.

        Raises UnknownParent when ``height`` is not head + 1.
        """

    @abstractmethod
    def get_side(self, block_hash: str) -> bytes | None:
        """A side block by hash, or None."""

    @abstractmethod
    def side_blocks(self) -> Iterator[HashedBlock]:
        """Every side block."""

    @abstractmethod
    def put_side(self, block_hash: str, raw: bytes) -> None:
        """Keep a valid block that is not on the main chain."""

    @abstractmethod
    def switch(self, fork_height: int, orphaned: Sequence[HashedBlock], branch: Sequence[HashedBlock]) -> None:
        """Atomically replace main blocks ``fork_height``.. (``orphaned``, which become side blocks) by ``branch``.

        Raises UnknownParent when ``orphaned`` is not exactly the main chain from ``fork_height`` on.
        """

    def close(self) -> None:  # noqa: B027 - optional hook, a no-op for stores holding no resources
        """Release resources (no-op by default)."""

    def __enter__(self) -> BlockStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
