"""The binary model codec: exact round trips, and bad tensors rejected."""

import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from bpcv.codec import ENCODINGS, MAX_INFLATED, decode_model, encode_model, model_digest
from bpcv.errors import ConfigError, Rejected

arrays = hnp.arrays(
    np.float32, hnp.array_shapes(min_dims=1, max_dims=3, max_side=5), elements=st.floats(-1e6, 1e6, width=32)
)


@settings(max_examples=50, deadline=None)
@given(st.lists(arrays, min_size=1, max_size=4))
def test_float32_round_trip_is_exact(weights):
    blob = encode_model(weights)
    out = decode_model(blob, [w.shape for w in weights])
    assert all(np.array_equal(a, b) for a, b in zip(weights, out, strict=True))
    assert model_digest(blob) == model_digest(encode_model(out))


def test_float16_halves_the_payload_and_keeps_shapes():
    weights = [np.random.default_rng(0).normal(size=(784, 128)).astype(np.float32), np.zeros(128, np.float32)]
    blob32, blob16 = encode_model(weights), encode_model(weights, "float16")
    assert len(blob16) < 0.51 * len(blob32)
    out = decode_model(blob16, [(784, 128), (128,)])
    assert np.allclose(out[0], weights[0], atol=1e-2)


def test_wrong_shape_nan_and_truncation_are_rejected():
    good = [np.ones((3, 2), np.float32)]
    with pytest.raises(Rejected, match="wrong-shape"):
        decode_model(encode_model(good), [(2, 3)])
    with pytest.raises(Rejected, match="non-finite"):
        decode_model(encode_model([np.array([1.0, np.nan], np.float32)]))
    with pytest.raises(Rejected, match="non-finite"):
        decode_model(encode_model([np.array([np.inf], np.float32)]))
    with pytest.raises(Rejected, match="bad-model"):
        decode_model(encode_model(good)[:-1])
    with pytest.raises(Rejected, match="bad-model"):
        decode_model(b"JUNKJUNKJUNK")


@settings(max_examples=50, deadline=None)
@given(st.lists(arrays, min_size=1, max_size=4), st.sampled_from(ENCODINGS))
def test_every_encoding_round_trips_within_its_precision(weights, encoding):
    """float32 (compressed or not) is exact; float16 keeps ~3 digits; int8 is within half a step of its
    tensor's scale (max |w| / 127)."""
    if encoding.startswith("float16") and max(np.abs(w).max() for w in weights) > 65504:
        with pytest.raises(ConfigError, match="float16 cannot hold"):
            encode_model(weights, encoding)
        return
    out = decode_model(encode_model(weights, encoding), [w.shape for w in weights])
    for w, o in zip(weights, out, strict=True):
        if encoding.startswith("float32"):
            assert np.array_equal(w, o)
        elif encoding.startswith("float16"):
            assert np.allclose(w, o, rtol=1e-3, atol=1e-3)
        else:
            step = np.abs(w).max() / 127 if w.size else 0.0
            assert np.all(np.abs(w - o) <= step / 2 * (1 + 1e-5) + 1e-30)


def test_int8_quarters_the_payload_and_deflate_shrinks_what_repeats():
    rng = np.random.default_rng(0)
    weights = [rng.normal(size=(784, 128)).astype(np.float32), np.zeros(128, np.float32)]
    size = {e: len(encode_model(weights, e)) for e in ENCODINGS}
    assert size["int8"] < 0.26 * size["float32"]
    assert size["int8+deflate"] < size["int8"]
    sparse = [np.where(rng.random((784, 128)) < 0.9, 0, 1).astype(np.float32)]
    assert len(encode_model(sparse, "float32+deflate")) < 0.2 * len(encode_model(sparse))


def test_a_compressed_model_that_is_corrupt_truncated_or_a_bomb_is_rejected():
    blob = encode_model([np.ones((10, 10), np.float32)], "float32+deflate")
    assert blob[:4] == b"BPMZ"
    for bad in (blob[:-5], blob[:6] + b"\x00" * 20, b"BPMZ\x09" + blob[5:]):
        with pytest.raises(Rejected, match="bad-model"):
            decode_model(bad)
    bomb = b"BPMZ\x01" + zlib.compress(b"\0" * (MAX_INFLATED + 1))
    with pytest.raises(Rejected, match="inflates past"):
        decode_model(bomb)


def test_an_int8_scale_that_is_not_finite_is_rejected():
    blob = bytearray(encode_model([np.ones(4, np.float32)], "int8"))
    scale_at = 8 + 1 + 4  # header, then ndim and one dim, then the scale
    blob[scale_at : scale_at + 4] = struct.pack(">f", float("inf"))
    with pytest.raises(Rejected, match="non-finite"):
        decode_model(bytes(blob))
    with pytest.raises(ConfigError, match="encoding must be one of"):
        encode_model([np.ones(4, np.float32)], "int4")
