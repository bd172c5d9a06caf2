"""The reversible 5/3 wavelet is exactly invertible for any size; the 9/7 to float rounding."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from numcodec_plugin import wavelet


@settings(max_examples=200, deadline=None)
@given(height=st.integers(1, 70), width=st.integers(1, 70), seed=st.integers(0, 1000), span=st.sampled_from([1, 70000, 2**33]))
def test_forward_inverse_is_identity(height: int, width: int, seed: int, span: int) -> None:
    image = np.random.default_rng(seed).integers(-span, span + 1, (2, 3, height, width))
    levels = wavelet.levels_for(height, width)
    bands = wavelet.forward(image, levels)
    assert [b.shape[-2:] for b in bands] == wavelet.subband_shapes(height, width, levels)
    np.testing.assert_array_equal(wavelet.inverse(bands, levels), image)


def test_smooth_images_compact_into_the_low_band() -> None:
    y, x = np.mgrid[:64, :64]
    bands = wavelet.forward((1000 + 3 * y + 2 * x)[None, None], 3)
    # away from the mirrored right/bottom edge, the details of a linear ramp vanish
    assert all(np.abs(b[..., :-1, :-1]).max() <= 1 for b in bands[1:])


@settings(max_examples=100, deadline=None)
@given(height=st.integers(1, 70), width=st.integers(1, 70), seed=st.integers(0, 1000))
def test_the_irreversible_wavelet_inverts_to_float_rounding(height: int, width: int, seed: int) -> None:
    image = np.random.default_rng(seed).normal(0.0, 5000.0, (2, 3, height, width))
    levels = wavelet.levels_for(height, width)
    bands = wavelet.forward(image, levels, irreversible=True)
    assert [b.shape[-2:] for b in bands] == wavelet.subband_shapes(height, width, levels)
    np.testing.assert_allclose(wavelet.inverse(bands, levels, irreversible=True), image, atol=1e-8)


def test_the_irreversible_wavelet_compacts_a_smooth_image_better_than_the_reversible() -> None:
    """A quadratic surface: the 9/7's four vanishing moments leave almost nothing in its details,
    the 5/3's two leave the curvature."""
    y, x = np.mgrid[:64, :64].astype(np.float64)
    image = 64 * (1000 + 0.05 * (y - 20) ** 2 + 0.03 * (x - 40) ** 2)[None, None]  # fine, so rounding is small

    def detail_energy(bands: list[np.ndarray]) -> float:
        return sum(float((b[..., 2:-2, 2:-2] ** 2).sum()) for b in bands[1:])
    assert detail_energy(wavelet.forward(image, 3, irreversible=True)) < 0.01 * detail_energy(
        wavelet.forward(np.rint(image).astype(np.int64), 3))
