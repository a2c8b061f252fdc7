"""Every storage key of the ledger is built here."""

import struct

HEAD = b"meta:head"
SIDE_PREFIX = b"side:"


def block_key(height: int) -> bytes:
    """Main-chain blocks by height; big-endian so LMDB's key order is height order."""
    return b"blk:" + struct.pack(">Q", height)


def hash_key(block_hash: str) -> bytes:
    """Main-chain block hash -> its height (8 bytes, big-endian)."""
    return b"hash:" + bytes.fromhex(block_hash)


def side_key(block_hash: str) -> bytes:
    """Valid blocks off the main chain (a losing fork branch), by hash."""
    return SIDE_PREFIX + bytes.fromhex(block_hash)


def encode_head(height: int, block_hash: str) -> bytes:
    return struct.pack(">Q", height) + bytes.fromhex(block_hash)


def decode_head(value: bytes) -> tuple[int, str]:
    return struct.unpack(">Q", value[:8])[0], value[8:40].hex()
