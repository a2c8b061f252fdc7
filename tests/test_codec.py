"""The binary model codec: exact round trips, and bad tensors rejected."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from bpcv.codec import decode_model, encode_model, model_digest
from bpcv.errors import Rejected

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
