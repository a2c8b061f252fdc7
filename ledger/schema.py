"""Every storage key of the ledger is built here."""

import struct

HEAD = b"meta:head"


def block_key(height: int) -> bytes:
    """Blocks by height; big-endian so LMDB's key order is height order."""
    return b"blk:" + struct.pack(">Q", height)


def hash_key(block_hash: str) -> bytes:
    return b"hash:" + bytes.fromhex(block_hash)


def encode_head(height: int, block_hash: str) -> bytes:
    return struct.pack(">Q", height) + bytes.fromhex(block_hash)


def decode_head(value: bytes) -> tuple[int, str]:
    return struct.unpack(">Q", value[:8])[0], value[8:40].hex()
