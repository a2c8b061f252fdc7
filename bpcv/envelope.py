"""The one signed envelope every message travels in.

Byte layout (all integers big-endian; full detail in docs/PROTOCOL.md)::

    magic   4 bytes  b"BPCV"
    version 1 byte   2 (1 is still read: envelopes stored in chains before version 2)
    hlen    4 bytes  length of the header
    header  hlen     canonical JSON: {"body","nonce","round","sender","task","ts","type"}
    nblobs  2 bytes
    blobs   nblobs x (4-byte length + bytes)      binary payloads, e.g. model tensors
    sig     64 bytes Ed25519 signature over b"BPCV-envelope-v2 sha256:" + SHA-256(every byte before it)
                     (version 1: over every byte before it)

Receivers verify the exact bytes they got; nothing is ever re-encoded before verification, so a
chain can store envelopes as received and anyone can re-check them later.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import time
from dataclasses import dataclass, field
from typing import Any

from bpcv.errors import Rejected
from bpcv.identity import Identity, Registry, verify_signature

MAGIC = b"BPCV"
VERSION = 2  # what seal writes
READ_VERSIONS = (1, 2)
# Version 2 signs a tagged SHA-256 of the signed bytes instead of the bytes themselves: Ed25519 hashes
# its whole message with SHA-512 in software (twice to sign): 1.9 ms to verify and 2.9 ms to sign a 407 kB update
# here, against 0.3 ms for SHA-256 and a 56-byte message (docs/DECISIONS.md). The tag cannot begin an
# envelope, so a version-2 signature is never a valid version-1 one.
DIGEST_SIGNATURE_TAG = b"BPCV-envelope-v2 sha256:"
SIGNATURE_BYTES = 64
DEFAULT_MAX_BYTES = 16 * 1024 * 1024
MAX_HEADER_BYTES = 4 * 1024 * 1024
MAX_BLOBS = 64
HEADER_FIELDS = ("body", "nonce", "round", "sender", "task", "ts", "type")


def canonical_json(value: Any) -> bytes:
    """Deterministic JSON: sorted keys, no spaces, ASCII only, NaN/Inf refused."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Envelope:
    """A decoded, not yet trusted, message. ``raw`` is the exact bytes received or sent."""

    type: str
    task: str
    round: int
    sender: str
    ts: float
    nonce: str
    body: dict[str, Any]
    blobs: tuple[bytes, ...] = ()
    raw: bytes = field(default=b"", repr=False)

    @property
    def digest(self) -> str:
        """SHA-256 (hex) of the whole envelope: how chains and manifests refer to it."""
        return sha256_hex(self.raw)

    @property
    def signature(self) -> bytes:
        return self.raw[-SIGNATURE_BYTES:]

    @property
    def signed_message(self) -> bytes:
        """What the signature covers (see ``signed_message``)."""
        return signed_message(memoryview(self.raw)[:-SIGNATURE_BYTES])


def signed_message(signed: bytes | memoryview) -> bytes:
    """The message the sender's Ed25519 signature covers, from the envelope's bytes before the signature:
    version 1 those bytes, version 2 the tag and their SHA-256."""
    if signed[4] == 1:
        return bytes(signed)
    return DIGEST_SIGNATURE_TAG + hashlib.sha256(signed).digest()


def seal(
    identity: Identity,
    type: str,
    task: str,
    round: int,
    body: dict[str, Any],
    blobs: tuple[bytes, ...] | list[bytes] = (),
    ts: float | None = None,
    nonce: str | None = None,
) -> Envelope:
    """Build and sign an envelope from ``identity``. ``ts`` and ``nonce`` default to now and 12 random
    bytes; fixed ones make reproducible bytes (test corpora, documented examples), never live messages."""
    header: dict[str, Any] = {
        "body": body,
        "nonce": os.urandom(12).hex() if nonce is None else nonce,
        "round": int(round),
        "sender": identity.node_id,
        "task": task,
        "ts": round_ts(time.time() if ts is None else ts),
        "type": type,
    }
    header_bytes = canonical_json(header)
    parts = [MAGIC, bytes([VERSION]), struct.pack(">I", len(header_bytes)), header_bytes]
    parts.append(struct.pack(">H", len(blobs)))
    for blob in blobs:
        parts += [struct.pack(">I", len(blob)), bytes(blob)]
    signed = b"".join(parts)
    raw = signed + identity.sign(signed_message(signed))
    return Envelope(type, task, int(round), identity.node_id, header["ts"], header["nonce"], body, tuple(blobs), raw)


def round_ts(ts: float) -> float:
    """Timestamps are kept to the millisecond so their JSON text is short and stable."""
    return round(float(ts), 3)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed (canonical JSON has no NaN or Infinity)")


def load_json(data: bytes) -> Any:
    """Parse received JSON strictly: NaN and Infinity are refused (ValueError)."""
    return json.loads(data, parse_constant=_refuse_constant)


def decode(raw: bytes, max_bytes: int = DEFAULT_MAX_BYTES) -> Envelope:
    """Parse ``raw`` into an Envelope, checking structure only (not the signature).

    Raises Rejected with reason ``oversize`` or ``malformed``.
    """
    if len(raw) > max_bytes:
        raise Rejected("oversize", f"{len(raw)} bytes > limit {max_bytes}")
    if len(raw) < 11 + SIGNATURE_BYTES or raw[:4] != MAGIC:
        raise Rejected("malformed", "not a BPCV envelope")
    if raw[4] not in READ_VERSIONS:
        raise Rejected("malformed", f"unsupported envelope version {raw[4]}")
    (hlen,) = struct.unpack_from(">I", raw, 5)
    pos = 9
    end_blobs = len(raw) - SIGNATURE_BYTES
    if hlen > MAX_HEADER_BYTES or pos + hlen + 2 > end_blobs:
        raise Rejected("malformed", "header length out of range")
    try:
        header = load_json(raw[pos : pos + hlen])
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as exc:
        raise Rejected("malformed", f"header is not JSON: {exc}") from exc
    pos += hlen
    if not isinstance(header, dict) or sorted(header) != list(HEADER_FIELDS):
        raise Rejected("malformed", "header fields wrong")
    if not (
        isinstance(header["type"], str)
        and isinstance(header["task"], str)
        and isinstance(header["sender"], str)
        and isinstance(header["nonce"], str)
        and isinstance(header["round"], int)
        and isinstance(header["ts"], (int, float))
        and isinstance(header["body"], dict)
    ):
        raise Rejected("malformed", "header field types wrong")
    (nblobs,) = struct.unpack_from(">H", raw, pos)
    pos += 2
    if nblobs > MAX_BLOBS:
        raise Rejected("malformed", f"{nblobs} blobs > {MAX_BLOBS}")
    blobs = []
    for _ in range(nblobs):
        if pos + 4 > end_blobs:
            raise Rejected("malformed", "truncated blob length")
        (blen,) = struct.unpack_from(">I", raw, pos)
        pos += 4
        if pos + blen > end_blobs:
            raise Rejected("malformed", "truncated blob")
        blobs.append(raw[pos : pos + blen])
        pos += blen
    if pos != end_blobs:
        raise Rejected("malformed", "trailing bytes before signature")
    return Envelope(
        header["type"],
        header["task"],
        header["round"],
        header["sender"],
        float(header["ts"]),
        header["nonce"],
        header["body"],
        tuple(blobs),
        bytes(raw),
    )


def verify(envelope: Envelope, registry: Registry, roles: tuple[str, ...] | None = None) -> None:
    """Check the sender is a registered member (of one of ``roles``) and the signature is theirs.

    Raises Rejected with reason ``unknown-sender``, ``wrong-role`` or ``bad-signature``.
    """
    member = registry.get(envelope.sender)
    if member is None:
        raise Rejected("unknown-sender", envelope.sender)
    if roles is not None and member.role not in roles:
        raise Rejected("wrong-role", f"{envelope.sender} is {member.role}, expected {'/'.join(roles)}")
    if not verify_signature(member.public_key, envelope.signed_message, envelope.signature):
        raise Rejected("bad-signature", f"{envelope.type} from {envelope.sender}")


def open_envelope(
    raw: bytes, registry: Registry, roles: tuple[str, ...] | None = None, max_bytes: int = DEFAULT_MAX_BYTES
) -> Envelope:
    """Decode and verify in one step: the only way received bytes become a trusted Envelope."""
    envelope = decode(raw, max_bytes)
    verify(envelope, registry, roles)
    return envelope
