"""Ledger exceptions: one root, specific subclasses whose messages name the height or hash."""

from bpcv.errors import BpcvError


class LedgerError(BpcvError):
    """Root of every ledger error."""


class InvalidBlock(LedgerError):
    """A block failed verification; ``height`` says where."""

    def __init__(self, height: int | None, reason: str) -> None:
        super().__init__(f"block at height {height}: {reason}" if height is not None else reason)
        self.height = height
        self.reason = reason


class UnknownParent(LedgerError):
    """A block does not extend the current head (out of order, or a fork)."""


class CorruptStore(LedgerError):
    """Stored bytes are missing or do not decode."""
