"""Model tensors as binary: a shape/dtype header followed by raw little-endian arrays.

Layout (integers big-endian)::

    magic  4 bytes b"BPMT"
    ver    1 byte  1
    dtype  1 byte  1 = float32, 2 = float16, 3 = int8 (wire type; decoded models are float32)
    count  2 bytes number of tensors
    per tensor: ndim (1 byte) + ndim x 4-byte dims
    scales int8 only: count x 4-byte float32, one per tensor (a value is its int8 times its tensor's scale)
    data   the tensors' elements, C order, little-endian, concatenated

A compressed model is ``b"BPMZ"``, a version byte (1), then the zlib (deflate) stream of such a blob.
An encoding names the wire type and, after ``+deflate``, the compression: ``float32`` (the default),
``float16``, ``int8``, ``int8+deflate``, ... The digest of a model is SHA-256 over the exact bytes that
travel, compressed or not.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bpcv.envelope import sha256_hex
from bpcv.errors import ConfigError, Rejected

MAGIC, ZMAGIC = b"BPMT", b"BPMZ"
VERSION = 1
INT8 = 3
DTYPES: dict[int, np.dtype] = {1: np.dtype("<f4"), 2: np.dtype("<f2"), INT8: np.dtype("i1")}
DTYPE_CODES = {"float32": 1, "float16": 2, "int8": INT8}
ENCODINGS = tuple(f"{d}{z}" for d in DTYPE_CODES for z in ("", "+deflate"))
FLOAT16_MAX = float(np.finfo(np.float16).max)
MAX_INFLATED = 64 * 2**20  # a compressed model inflating past this is refused (a zip bomb)
Shapes = Sequence[tuple[int, ...]]


def check_encoding(encoding: str) -> None:
    if encoding not in ENCODINGS:
        raise ConfigError(f"model encoding must be one of {ENCODINGS}, not {encoding!r}")


def encode_model(weights: Sequence[np.ndarray], encoding: str = "float32") -> bytes:
    """Encode a list of weight arrays: ``float16`` halves the size, ``int8`` (a scale per tensor) quarters
    it; ``+deflate`` compresses the result."""
    check_encoding(encoding)
    wire, _, compression = encoding.partition("+")
    code = DTYPE_CODES[wire]
    parts = [MAGIC, bytes([VERSION, code]), struct.pack(">H", len(weights))]
    for w in weights:
        shape = np.shape(w)
        parts.append(bytes([len(shape)]) + b"".join(struct.pack(">I", d) for d in shape))
    arrays = [np.asarray(w, dtype=np.float32) for w in weights]
    if wire == "float16" and any(a.size and np.abs(a).max() > FLOAT16_MAX for a in arrays):
        raise ConfigError(f"float16 cannot hold weights beyond {FLOAT16_MAX}: encode them as float32 or int8")
    if code == INT8:
        scales = [float(np.max(np.abs(a))) / 127.0 if a.size else 0.0 for a in arrays]
        parts.append(b"".join(struct.pack(">f", scale) for scale in scales))
        arrays = [
            np.round(a / scale) if scale > 0 else np.zeros_like(a) for a, scale in zip(arrays, scales, strict=True)
        ]
    for a in arrays:
        parts.append(np.ascontiguousarray(a, dtype=DTYPES[code]).tobytes())
    blob = b"".join(parts)
    return ZMAGIC + bytes([VERSION]) + zlib.compress(blob, 6) if compression else blob


def _inflate(blob: bytes) -> bytes:
    if len(blob) < 5 or blob[4] != VERSION:
        raise Rejected("bad-model", "not a compressed BPMZ model blob")
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(blob[5:], MAX_INFLATED)
    except zlib.error as exc:
        raise Rejected("bad-model", f"compressed model does not inflate: {exc}") from exc
    if inflater.unconsumed_tail or not inflater.eof:
        raise Rejected("bad-model", f"compressed model is truncated or inflates past {MAX_INFLATED} bytes")
    return out


def model_digest(blob: bytes) -> str:
    return sha256_hex(blob)


def decode_model(blob: bytes, expected_shapes: Shapes | None = None) -> list[np.ndarray]:
    """Decode, checking structure, shapes (when given) and that every value is finite.

    Raises Rejected with reason ``bad-model`` (structure), ``wrong-shape`` or ``non-finite``.
    """
    if blob[:4] == ZMAGIC:
        blob = _inflate(blob)
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
    scales = [1.0] * count
    if blob[5] == INT8:
        if pos + 4 * count > len(blob):
            raise Rejected("bad-model", "truncated header")
        scales = list(struct.unpack_from(f">{count}f", blob, pos))
        pos += 4 * count
    if pos + sum(sizes) * dtype.itemsize != len(blob):
        raise Rejected("bad-model", "data length does not match the header")
    out = []
    for shape, size, scale in zip(shapes, sizes, scales, strict=True):
        arr = np.frombuffer(blob, dtype=dtype, count=size, offset=pos).reshape(shape).astype(np.float32)
        if blob[5] == INT8:
            arr = arr * np.float32(scale)
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
