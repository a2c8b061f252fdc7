"""Block format and Merkle root.

Byte layout (integers big-endian; see docs/PROTOCOL.md)::

    magic   4 bytes  b"BPBK"
    version 1 byte   1
    hlen    4 bytes
    header  hlen     canonical JSON, keys: height merkle_root prev_hash proposer rank round task ts tx_count
    ntx     4 bytes
    txs     ntx x (4-byte length + a signed envelope, byte for byte as its sender signed it)
    sig     64 bytes Ed25519 signature by the proposer over the header bytes

The block hash is SHA-256 over the header bytes, which commit to the transactions through the
Merkle root (leaf = SHA-256(0x00 || tx), node = SHA-256(0x01 || left || right), an odd node is
carried up unchanged, the root of no transactions is SHA-256 of nothing).
"""

from __future__ import annotations

import hashlib
import math
import struct
import time
from dataclasses import dataclass, field
from typing import Any

from bpcv.envelope import SIGNATURE_BYTES, canonical_json, load_json, round_ts
from bpcv.identity import Identity
from ledger.errors import CorruptStore

MAGIC = b"BPBK"
VERSION = 1
ZERO_HASH = "00" * 32
HEADER_FIELDS = ("height", "merkle_root", "prev_hash", "proposer", "rank", "round", "task", "ts", "tx_count")


def merkle_root(txs: list[bytes]) -> str:
    """Hex Merkle root of the transactions, with leaf/node domain separation."""
    level = [hashlib.sha256(b"\x00" + tx).digest() for tx in txs]
    if not level:
        return hashlib.sha256(b"").hexdigest()
    while len(level) > 1:
        nxt = [hashlib.sha256(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0].hex()


@dataclass(frozen=True)
class Block:
    """A decoded block. ``header_bytes`` are the exact signed bytes."""

    height: int
    prev_hash: str
    task: str
    round: int
    proposer: str
    rank: int
    ts: float
    merkle_root: str
    txs: tuple[bytes, ...]
    header_bytes: bytes = field(repr=False)
    signature: bytes = field(repr=False)
    raw: bytes = field(repr=False)

    @property
    def hash(self) -> str:
        return hashlib.sha256(self.header_bytes).hexdigest()


def build_block(
    proposer: Identity,
    height: int,
    prev_hash: str,
    task: str,
    round_no: int,
    txs: list[bytes],
    ts: float | None = None,
    rank: int = 0,
) -> Block:
    """Assemble and sign a block. ``rank`` is the proposer's place in the round's PoQ ranking (0: the winner)."""
    header: dict[str, Any] = {
        "height": height,
        "merkle_root": merkle_root(txs),
        "prev_hash": prev_hash,
        "proposer": proposer.node_id,
        "rank": rank,
        "round": round_no,
        "task": task,
        "ts": round_ts(time.time() if ts is None else ts),
        "tx_count": len(txs),
    }
    header_bytes = canonical_json(header)
    signature = proposer.sign(header_bytes)
    parts = [MAGIC, bytes([VERSION]), struct.pack(">I", len(header_bytes)), header_bytes, struct.pack(">I", len(txs))]
    for tx in txs:
        parts += [struct.pack(">I", len(tx)), tx]
    parts.append(signature)
    raw = b"".join(parts)
    return Block(
        height,
        prev_hash,
        task,
        round_no,
        proposer.node_id,
        rank,
        header["ts"],
        header["merkle_root"],
        tuple(txs),
        header_bytes,
        signature,
        raw,
    )


def decode_header(header_bytes: bytes) -> dict[str, Any]:
    """The fields of a block header; raises CorruptStore when they are not exactly HEADER_FIELDS."""
    try:
        header = load_json(header_bytes)
    except ValueError as exc:
        raise CorruptStore(f"block header does not decode: {exc}") from exc
    if not isinstance(header, dict) or sorted(header) != list(HEADER_FIELDS):
        raise CorruptStore("block header fields wrong")
    return header


def _check_header_types(header: dict[str, Any]) -> None:
    """Every header field has the JSON type producers write: no conversion of ``"1"`` or ``0.7``."""
    for name in ("height", "round", "rank", "tx_count"):
        value = header[name]
        if type(value) is not int or value < 0:
            raise CorruptStore(f"block header field {name} is not an integer >= 0: {value!r:.40}")
    for name in ("merkle_root", "prev_hash", "proposer", "task"):
        if not isinstance(header[name], str):
            raise CorruptStore(f"block header field {name} is not a string")
    ts = header["ts"]
    if type(ts) not in (int, float) or not math.isfinite(ts):
        raise CorruptStore(f"block header field ts is not a finite number: {ts!r:.40}")


def decode_block(raw: bytes) -> Block:
    """Parse a block's bytes; raises CorruptStore naming what does not parse."""
    try:
        if raw[:4] != MAGIC or raw[4] != VERSION:
            raise CorruptStore("not a BPBK block")
        (hlen,) = struct.unpack_from(">I", raw, 5)
        pos = 9
        header_bytes = raw[pos : pos + hlen]
        header = decode_header(header_bytes)
        pos += hlen
        (ntx,) = struct.unpack_from(">I", raw, pos)
        pos += 4
        txs = []
        for _ in range(ntx):
            (tlen,) = struct.unpack_from(">I", raw, pos)
            pos += 4
            if pos + tlen > len(raw) - SIGNATURE_BYTES:
                raise CorruptStore("truncated transaction")
            txs.append(raw[pos : pos + tlen])
            pos += tlen
        if pos != len(raw) - SIGNATURE_BYTES:
            raise CorruptStore("block length does not match its contents")
        _check_header_types(header)
        if header["tx_count"] != ntx:
            raise CorruptStore(f"block header tx_count {header['tx_count']} but {ntx} transactions")
        signature = raw[pos:]
        return Block(
            header["height"],
            header["prev_hash"],
            header["task"],
            header["round"],
            header["proposer"],
            header["rank"],
            float(header["ts"]),
            header["merkle_root"],
            tuple(txs),
            bytes(header_bytes),
            bytes(signature),
            bytes(raw),
        )
    except (struct.error, IndexError, ValueError, UnicodeDecodeError, TypeError, KeyError, OverflowError) as exc:
        raise CorruptStore(f"block does not decode: {exc}") from exc  # OverflowError: int() of a header's 1e400


def block_height(raw: bytes) -> int | None:
    """The height a block claims, or None if it does not decode (the block is still verified later)."""
    try:
        return decode_block(raw).height
    except CorruptStore:
        return None
