"""The two wavelets of JPEG 2000 on (..., y, x) arrays: the reversible integer 5/3 (LeGall) and the
irreversible 9/7 (Cohen-Daubechies-Feauveau), both by lifting with symmetric extension.

The error-bounded layer decorrelates its quantised residual with the 5/3: the residual of a learned
reconstruction is spatially smooth where the network missed low frequencies, and white where it
missed texture; the subbands separate the two, and integer lifting is exactly invertible for any
length, odd ones included. The transform coder (:mod:`numcodec_plugin.transform_coding`) codes with
the 9/7, which compacts smooth imagery better at a given distortion; it computes in float64 with
one element-wise operation at a time in a fixed order, so every machine computes the same bits.
"""

from __future__ import annotations

import numpy as np

MAX_LEVELS = 3
#: lifting steps of the 9/7 (predict, update, predict, update) and its scaling of the two halves
_CDF97_STEPS = (-1.586134342059924, -0.052980118572961, 0.882911075530934, 0.443506852043971)
_CDF97_SCALE = 1.230174104914001


def levels_for(height: int, width: int) -> int:
    """Decomposition levels used for an image of this size (0 below 8 pixels on a side)."""
    return int(min(MAX_LEVELS, max(0, np.floor(np.log2(max(1, min(height, width)))) - 2)))


def _pair_sums(even: np.ndarray, odd_count: int) -> np.ndarray:
    """``even[n] + even[n + 1]`` for each odd sample ``n``, the last even sample mirrored past the end."""
    right = even[..., 1:odd_count + 1]
    if right.shape[-1] < odd_count:
        right = np.concatenate([right, even[..., -1:]], axis=-1)
    return even[..., :odd_count] + right


def _neighbour_sums(odd: np.ndarray, even_count: int) -> np.ndarray:
    """``odd[n - 1] + odd[n]`` for each even sample ``n``, mirrored at both ends (``odd`` not empty)."""
    left = np.concatenate([odd[..., :1], odd], axis=-1)[..., :even_count]
    current = np.concatenate([odd, odd[..., -1:]], axis=-1)[..., :even_count]
    return left + current


def _forward_1d(x: np.ndarray, irreversible: bool) -> tuple[np.ndarray, np.ndarray]:
    """Split the last axis into low (even) and high (odd) coefficients."""
    even, odd = x[..., 0::2], x[..., 1::2]
    if not odd.shape[-1]:
        return even, odd
    if not irreversible:
        high = odd - (_pair_sums(even, odd.shape[-1]) >> 1)
        return even + ((_neighbour_sums(high, even.shape[-1]) + 2) >> 2), high
    low, high = even.astype(np.float64), odd.astype(np.float64)
    for predict, update in zip(_CDF97_STEPS[0::2], _CDF97_STEPS[1::2]):
        high = high + predict * _pair_sums(low, high.shape[-1])
        low = low + update * _neighbour_sums(high, low.shape[-1])
    return low / _CDF97_SCALE, high * _CDF97_SCALE


def _inverse_1d(low: np.ndarray, high: np.ndarray, irreversible: bool) -> np.ndarray:
    if not high.shape[-1]:
        even, odd = low, high
    elif not irreversible:
        even = low - ((_neighbour_sums(high, low.shape[-1]) + 2) >> 2)
        odd = high + (_pair_sums(even, high.shape[-1]) >> 1)
    else:
        even, odd = low * _CDF97_SCALE, high / _CDF97_SCALE
        for predict, update in zip(_CDF97_STEPS[-2::-2], _CDF97_STEPS[::-2]):
            even = even - update * _neighbour_sums(odd, even.shape[-1])
            odd = odd - predict * _pair_sums(even, odd.shape[-1])
    out = np.empty(low.shape[:-1] + (low.shape[-1] + high.shape[-1],), dtype=np.result_type(even, odd))
    out[..., 0::2], out[..., 1::2] = even, odd
    return out


def forward(image: np.ndarray, levels: int, irreversible: bool = False) -> list[np.ndarray]:
    """Subbands ``[LL, (HL, LH, HH) of the coarsest level, ..., of the finest]`` of ``image``: int64
    by the 5/3, or float64 by the 9/7 where ``irreversible``."""
    details: list[np.ndarray] = []
    low = image.astype(np.float64 if irreversible else np.int64)
    for _ in range(levels):
        rows_low, rows_high = _forward_1d(low, irreversible)
        ll, lh = (np.swapaxes(b, -1, -2) for b in _forward_1d(np.swapaxes(rows_low, -1, -2), irreversible))
        hl, hh = (np.swapaxes(b, -1, -2) for b in _forward_1d(np.swapaxes(rows_high, -1, -2), irreversible))
        details = [hl, lh, hh] + details
        low = ll
    return [low] + details


def inverse(subbands: list[np.ndarray], levels: int, irreversible: bool = False) -> np.ndarray:
    """Inverse of :func:`forward` (exact for the 5/3; to float64 rounding for the 9/7)."""
    low = subbands[0]
    for level in range(levels):
        hl, lh, hh = subbands[1 + 3 * level: 4 + 3 * level]
        rows_low = np.swapaxes(_inverse_1d(np.swapaxes(low, -1, -2), np.swapaxes(lh, -1, -2), irreversible), -1, -2)
        rows_high = np.swapaxes(_inverse_1d(np.swapaxes(hl, -1, -2), np.swapaxes(hh, -1, -2), irreversible), -1, -2)
        low = _inverse_1d(rows_low, rows_high, irreversible)
    return low


def subband_shapes(height: int, width: int, levels: int) -> list[tuple[int, int]]:
    """(y, x) sizes of the subbands of :func:`forward`, in its order."""
    details: list[tuple[int, int]] = []
    h, w = height, width
    for _ in range(levels):
        hl, hh = ((h + 1) // 2, w // 2), (h // 2, w // 2)
        lh = (h // 2, (w + 1) // 2)
        details = [hl, lh, hh] + details
        h, w = (h + 1) // 2, (w + 1) // 2
    return [(h, w)] + details
