"""The consortium genesis: the admin-signed list of members (keys and roles) and chain parameters."""

from __future__ import annotations

from typing import Any

from bpcv.envelope import seal
from bpcv.identity import Identity
from ledger.block import ZERO_HASH, Block, build_block


def make_genesis(
    admin: Identity, chain_id: str, members: dict[str, tuple[bytes, str]], params: dict[str, Any] | None = None
) -> Block:
    """Genesis block for ``members`` (``id -> (public key, role)``); the admin must be among them."""
    body = {
        "chain": chain_id,
        "members": {node: {"key": key.hex(), "role": role} for node, (key, role) in sorted(members.items())},
        "params": params or {},
    }
    tx = seal(admin, "genesis", "", 0, body)
    return build_block(admin, 0, ZERO_HASH, "", 0, [tx.raw])
