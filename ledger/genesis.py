"""The consortium genesis: the admin-signed list of members (keys and roles) and chain parameters."""

from __future__ import annotations

from typing import Any

from bpcv.identity import Identity
from bpcv.messages import Genesis, seal_message
from ledger.block import ZERO_HASH, Block, build_block


def make_genesis(
    admin: Identity, chain_id: str, members: dict[str, tuple[bytes, str]], params: dict[str, Any] | None = None
) -> Block:
    """Genesis block for ``members`` (``id -> (public key, role)``); the admin must be among them."""
    genesis = Genesis(
        chain_id,
        {node: {"key": key.hex(), "role": role} for node, (key, role) in sorted(members.items())},
        params or {},
    )
    tx = seal_message(admin, genesis)
    return build_block(admin, 0, ZERO_HASH, "", 0, [tx.raw])
