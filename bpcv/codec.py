"""Model tensors as binary: a shape/dtype header followed by raw little-endian arrays.

Layout (integers big-endian)::

    magic  4 bytes b"BPMT"
    ver    1 byte  1
    dtype  1 byte  1 = float32, 2 = float16 (wire type; decoded models are float32)
    count  2 bytes number of tensors
    per tensor: ndim (1 byte) + ndim x 4-byte dims
    data   the tensors' elements, C order, little-endian, concatenated

The digest of a model is SHA-256 over these exact bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bpcv.envelope import sha256_hex
from bpcv.errors import ConfigError, Rejected

MAGIC = b"BPMT"
VERSION = 1
DTYPES: dict[int, np.dtype] = {1: np.dtype("<f4"), 2: np.dtype("<f2")}
DTYPE_CODES = {"float32": 1, "float16": 2}
Shapes = Sequence[tuple[int, ...]]


def encode_model(weights: Sequence[np.ndarray], wire_dtype: str = "float32") -> bytes:
    """Encode a list of weight arrays; ``wire_dtype`` float16 halves the size."""
    code = DTYPE_CODES[wire_dtype]
    dtype = DTYPES[code]
    parts = [MAGIC, bytes([VERSION, code]), struct.pack(">H", len(weights))]
    for w in weights:
        shape = np.shape(w)
        parts.append(bytes([len(shape)]) + b"".join(struct.pack(">I", d) for d in shape))
    for w in weights:
        parts.append(np.ascontiguousarray(w, dtype=dtype).tobytes())
    return b"".join(parts)


def model_digest(blob: bytes) -> str:
    return sha256_hex(blob)


def decode_model(blob: bytes, expected_shapes: Shapes | None = None) -> list[np.ndarray]:
    """Decode, checking structure, shapes (when given) and that every value is finite.

    Raises Rejected with reason ``bad-model`` (structure), ``wrong-shape`` or ``non-finite``.
    """
    if len(blob) < 8 or blob[:4] != MAGIC or blob[4] != VERSION or blob[5] not in DTYPES:
        raise Rejected("bad-model", "not a BPMT model blob")
    dtype = DTYPES[blob[5]]
    (count,) = struct.unpack_from(">H", blob, 6)
    pos = 8
    shapes = []
    for _ in range(count):
        if pos >= len(blob):
            raise Rejected("bad-model", "truncated header")
        ndim = blob[pos]
        pos += 1
        if pos + 4 * ndim > len(blob):
            raise Rejected("bad-model", "truncated header")
        shapes.append(struct.unpack_from(f">{ndim}I", blob, pos))
        pos += 4 * ndim
    if expected_shapes is not None and [tuple(s) for s in shapes] != [tuple(s) for s in expected_shapes]:
        raise Rejected("wrong-shape", f"got {shapes}, expected {list(expected_shapes)}")
    sizes = [int(np.prod(s, dtype=np.int64)) for s in shapes]
    if pos + sum(sizes) * dtype.itemsize != len(blob):
        raise Rejected("bad-model", "data length does not match the header")
    out = []
    for shape, size in zip(shapes, sizes, strict=True):
        arr = np.frombuffer(blob, dtype=dtype, count=size, offset=pos).reshape(shape).astype(np.float32)
        pos += size * dtype.itemsize
        if not np.all(np.isfinite(arr)):
            raise Rejected("non-finite", f"tensor of shape {shape} holds NaN or Inf")
        out.append(arr)
    return out


def read_weights_file(path: str) -> bytes:
    """A model blob from a file (e.g. a run's ``final_model.bpmt``), checked to decode; ConfigError if not."""
    try:
        blob = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"initial weights {path}: cannot read it: {exc.strerror or exc}") from exc
    try:
        decode_model(blob)
    except Rejected as exc:
        raise ConfigError(f"initial weights {path}: not a model file (bpcv .bpmt): {exc}") from exc
    return blob
