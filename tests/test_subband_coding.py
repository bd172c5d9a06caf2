"""Subband coding round trips exactly: values beyond the coders' +-2**15 alphabet split into high parts
and uniformly coded low bits (the error-bounded layer's lossless residuals), spectral prediction, and
the rANS path's int32 symbols."""

from __future__ import annotations

import numpy as np
import pytest

from numcodec_plugin import subband_coding, wavelet


def _subbands(scale: float, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    image = np.rint(rng.laplace(0.0, scale, (2, 3, 40, 52))).astype(np.int64)
    image[:, 1] += image[:, 0] // 2  # a band the one before predicts
    return wavelet.forward(image, 3)


@pytest.mark.parametrize("scale", [3.0, 2.0 ** 18])
def test_wide_values_split_into_low_bits_and_come_back(scale: float) -> None:
    subbands = _subbands(scale, 1)
    coded = subband_coding.encode_subbands(subbands)
    assert bool(coded.shift.any()) == (scale > 2 ** 15)
    decoded = subband_coding.decode_subbands(coded, [s.shape for s in subbands])
    for got, expected in zip(decoded, subbands):
        np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(wavelet.inverse(decoded, 3), wavelet.inverse(subbands, 3))


def test_the_rans_path_round_trips_int32_symbols() -> None:
    subbands = [s.astype(np.int32) for s in _subbands(3.0, 2)]
    coded = subband_coding.encode_subbands(subbands, predict=False, tabled=True, wide_contexts=True, rans=True)
    decoded = subband_coding.decode_subbands(coded, [s.shape for s in subbands], tabled=True, wide_contexts=True, rans=True)
    for got, expected in zip(decoded, subbands):
        assert got.dtype == np.int32
        np.testing.assert_array_equal(got, expected)
