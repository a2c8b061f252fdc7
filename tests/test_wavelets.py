"""The wavelet feature map: its filters, the Keras layers that compute it, and DP training on top of it."""

import numpy as np
import pytest
import scipy.signal

from bpcv.errors import ConfigError
from bpcv.models import build_model
from bpcv.task import TaskSpec
from bpcv.wavelets import feature_kernels, morlet_bank


def test_every_wavelet_has_zero_mean_and_the_bank_its_documented_shape():
    bank = morlet_bank(2, 4)
    assert bank.shape == (11, 11, 8) and bank.dtype == np.complex128
    assert np.abs(bank.sum(axis=(0, 1))).max() < 1e-12  # Morlet: the envelope's DC removed
    assert np.abs(bank).sum(axis=(0, 1)).min() > 0.1  # and not by being zero
    depthwise, combine = feature_kernels(3, 2, 4)
    assert depthwise.shape == (11, 11, 3, 4 * 9) and combine.shape == (1, 1, 3 * 4 * 9, 3 * 9)


@pytest.mark.parametrize("angle", range(4))
def test_a_grating_excites_the_wavelet_of_its_own_orientation(angle):
    bank = morlet_bank(1, 4)
    theta = (int(4 - 4 / 2 - 1) - angle) * np.pi / 4  # the bank's k-th angle
    r = bank.shape[0] // 2
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    grating = np.cos(3 * np.pi / 4 * (xx * np.cos(theta) + yy * np.sin(theta)))  # at the wavelets' frequency
    centre = [abs((grating * bank[..., k]).sum()) for k in range(4)]
    assert int(np.argmax(centre)) == angle, centre


def test_the_keras_layers_compute_the_image_and_the_l1_modulus_of_each_response():
    """The model's frozen layers against a direct computation: channel 0 is the image, channel 1 + k is
    |Re(x * psi_k)| + |Im(x * psi_k)| (Keras convolves by cross-correlation with zero 'same' padding)."""
    import tensorflow as tf

    model = build_model("wavelet:1,4,1", (12, 12, 1), 3)
    features = tf.keras.Sequential(model.layers[:2])  # the depthwise filters and the 1x1 combination
    x = np.random.default_rng(0).normal(size=(12, 12)).astype(np.float32)
    got = features(x[None, :, :, None]).numpy()[0]
    bank = morlet_bank(1, 4)
    want = [x] + [
        np.abs(scipy.signal.correlate2d(x, bank[..., k].real, mode="same"))
        + np.abs(scipy.signal.correlate2d(x, bank[..., k].imag, mode="same"))
        for k in range(4)
    ]
    np.testing.assert_allclose(got, np.stack(want, axis=-1), rtol=1e-4, atol=1e-4)


def test_dp_training_moves_only_the_head_and_uses_ghost_clipping():
    from edge_agent.privacy.settings import PrivacySettings
    from edge_agent.trainer import Trainer

    task = TaskSpec(
        task_id="t", coordinator="c", model="wavelet:1,4,2", batch_size=8, learning_rate=0.5, local_epochs=1
    )
    trainer = Trainer(task, (8, 8, 1), 3, PrivacySettings("laplace", 5.0, 0.5))
    assert trainer.dp_path == "ghost"
    rng = np.random.default_rng(1)
    x, y = rng.random((40, 8, 8, 1)).astype(np.float32), rng.integers(0, 3, 40)
    before = trainer.model.get_weights()
    after, steps = trainer.train(before, x, y, seed=3)
    assert steps == 5 and len(after) == 4  # depthwise, 1x1, Dense kernel, Dense bias
    np.testing.assert_array_equal(after[0], before[0])
    np.testing.assert_array_equal(after[1], before[1])
    assert not np.allclose(after[2], before[2])


@pytest.mark.parametrize(
    ("spec", "shape", "message"),
    [("wavelet:2,4", (28, 28, 1), "wavelet:J,L,P"), ("wavelet:2,4,4", (30,), "needs image input")],
)
def test_a_wrong_wavelet_spec_or_input_is_a_clear_error(spec, shape, message):
    with pytest.raises(ConfigError, match=message):
        build_model(spec, shape, 10)
