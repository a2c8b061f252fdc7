"""A fixed, data-independent wavelet feature map for images: the first layer of a scattering transform.

Each input channel is filtered by Morlet wavelets at ``scales`` dyadic scales and ``orientations``
angles (the filters of Bruna & Mallat's scattering networks, as kymatio defines them), and the
modulus of each complex response is taken; with a local average after it, these are the first-order
scattering coefficients. Tramer & Boneh ("Differentially Private Learning Needs Better Features",
2021) showed that a linear model on such features beats end-to-end DP-SGD on MNIST by a wide margin:
the features cost no privacy (nothing is learnt from data), and the trainable head that DP noise has
to reach is small.

The map is built from standard Keras layers with frozen weights, so a task's model stays data (a
preset name, or Keras JSON with the filters in its initial weights) and never code:

- a ``DepthwiseConv2D`` with ReLU holds, for every wavelet ``psi``, the four filters
  ``Re psi, -Re psi, Im psi, -Im psi`` (plus ``delta, -delta`` for the image itself);
- a 1x1 ``Conv2D`` adds each wavelet's four half-wave outputs, ``|Re z| + |Im z|``: the modulus in
  the L1 sense, a contraction like ``|z|`` itself, and ``ReLU(x) - ReLU(-x) = x`` for the image.

This module is pure numpy; ``bpcv.models`` builds the layers.
"""

from __future__ import annotations

import numpy as np

PHASES = 4  # Re, -Re, Im, -Im: one half-wave rectified output each


def _gabor(size: int, sigma: float, theta: float, xi: float, slant: float) -> np.ndarray:
    """A Gabor filter on a size x size grid centred on the middle pixel (kymatio's definition)."""
    r = size // 2
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1].astype(np.float64)
    rotation = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    curvature = rotation @ np.diag([1.0, slant**2]) @ rotation.T / (2 * sigma**2)
    quadratic = curvature[0, 0] * xx * xx + (curvature[0, 1] + curvature[1, 0]) * xx * yy + curvature[1, 1] * yy * yy
    phase = (xx * np.cos(theta) + yy * np.sin(theta)) * xi
    return np.exp(-quadratic + 1j * phase) * slant / (2 * np.pi * sigma**2)


def morlet(size: int, sigma: float, theta: float, xi: float, slant: float) -> np.ndarray:
    """A Morlet wavelet: a Gabor filter minus its envelope scaled to give zero mean."""
    wave = _gabor(size, sigma, theta, xi, slant)
    envelope = _gabor(size, sigma, theta, 0.0, slant)
    return wave - wave.sum() / envelope.sum() * envelope


def kernel_size(scales: int, orientations: int) -> int:
    """An odd width covering the largest wavelet's envelope along its long axis: 3 sigma / slant each
    side (the slant, 4 / orientations, narrows the envelope across the wave; at most 1)."""
    slant = min(1.0, 4 / orientations)
    return 2 * int(np.ceil(3 * 0.8 * 2 ** (scales - 1) / slant)) + 1


def morlet_bank(scales: int, orientations: int, size: int | None = None) -> np.ndarray:
    """Complex Morlet filters, shape (size, size, scales * orientations), scale-major: at scale j the
    width is 0.8 * 2**j and the centre frequency 3 pi / 4 / 2**j, with ``orientations`` angles over pi."""
    if scales < 1 or orientations < 1:
        raise ValueError(f"a wavelet bank needs at least one scale and one orientation, not {scales}x{orientations}")
    size = size or kernel_size(scales, orientations)
    filters = []
    for j in range(scales):
        for k in range(orientations):
            theta = (int(orientations - orientations / 2 - 1) - k) * np.pi / orientations
            filters.append(morlet(size, 0.8 * 2**j, theta, 3 * np.pi / 4 / 2**j, 4 / orientations))
    return np.stack(filters, axis=-1)


def feature_kernels(channels: int, scales: int, orientations: int) -> tuple[np.ndarray, np.ndarray]:
    """The frozen weights of the two layers, float32: the depthwise kernel (size, size, channels,
    PHASES * (1 + W)) and the 1x1 combining kernel (1, 1, channels * PHASES * (1 + W), channels * (1 + W)),
    for W = scales * orientations wavelets; per input channel, output 0 is the image and 1..W the moduli."""
    bank = morlet_bank(scales, orientations)
    size, wavelets = bank.shape[0], bank.shape[-1]
    delta = np.zeros((size, size), dtype=np.complex128)
    delta[size // 2, size // 2] = 1.0
    filters = np.concatenate([delta[..., None], bank], axis=-1)  # (size, size, 1 + W)
    per_filter = np.stack([filters.real, -filters.real, filters.imag, -filters.imag], axis=-1)
    multiplier = PHASES * (1 + wavelets)
    depthwise = np.broadcast_to(
        per_filter.reshape(size, size, 1, multiplier), (size, size, channels, multiplier)
    ).astype(np.float32)
    combine = np.zeros((channels * multiplier, channels * (1 + wavelets)), dtype=np.float32)
    for c in range(channels):
        for f in range(1 + wavelets):
            rows = c * multiplier + f * PHASES + np.arange(PHASES)
            # the image: ReLU(x) - ReLU(-x) = x; a wavelet: |Re z| + |Im z|
            combine[rows, c * (1 + wavelets) + f] = [1, -1, 0, 0] if f == 0 else [1, 1, 1, 1]
    return depthwise, combine[None, None]
