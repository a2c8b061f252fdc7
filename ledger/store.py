"""The block store interface. Backends: ``ledger.backends.memory`` and ``ledger.backends.lmdb``."""

from __future__ import annotations

from abc import ABC, abstractmethod


class BlockStore(ABC):
    """Append-only storage of raw block bytes by height."""

    @abstractmethod
    def head(self) -> tuple[int, str] | None:
        """(height, hash) of the last block, or None when the store is empty."""

    @abstractmethod
    def get(self, height: int) -> bytes | None:
        """The raw block at ``height``, or None when there is none."""

    @abstractmethod
    def height_of(self, block_hash: str) -> int | None:
        """The height of the block with this hash, or None when unknown."""

    @abstractmethod
    def append(self, height: int, block_hash: str, raw: bytes) -> None:
        """Store a block as the new head, atomically: all of it or nothing.

        Raises UnknownParent when ``height`` is not head + 1.
        """

    def close(self) -> None:  # noqa: B027 - optional hook, a no-op for stores holding no resources
        """Release resources (no-op by default)."""

    def __enter__(self) -> BlockStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
