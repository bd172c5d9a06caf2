"""Reversible integer 5/3 (LeGall) wavelet, the lossless transform of JPEG 2000, on (..., y, x) arrays.

Used by the error-bounded layer to decorrelate its quantised residual before entropy coding:
the residual of a learned reconstruction is spatially smooth where the network missed low
frequencies, and white where it missed texture; the subbands separate the two. Integer lifting
with symmetric extension is exactly invertible for any length, odd ones included.
"""

from __future__ import annotations

import numpy as np

MAX_LEVELS = 3


def levels_for(height: int, width: int) -> int:
    """Decomposition levels used for an image of this size (0 below 8 pixels on a side)."""
    return int(min(MAX_LEVELS, max(0, np.floor(np.log2(max(1, min(height, width)))) - 2)))


def _forward_1d(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split the last axis into low (even) and high (odd) integer coefficients."""
    even, odd = x[..., 0::2], x[..., 1::2]
    right = even[..., 1:odd.shape[-1] + 1]
    if right.shape[-1] < odd.shape[-1]:  # even length: mirror the last even sample
        right = np.concatenate([right, even[..., -1:]], axis=-1)
    high = odd - ((even[..., :odd.shape[-1]] + right) >> 1)
    left = np.concatenate([high[..., :1], high], axis=-1)[..., :even.shape[-1]]
    current = np.concatenate([high, high[..., -1:]], axis=-1)[..., :even.shape[-1]] if high.shape[-1] else high
    low = even + ((left + current + 2) >> 2) if high.shape[-1] else even
    return low, high


def _inverse_1d(low: np.ndarray, high: np.ndarray) -> np.ndarray:
    if high.shape[-1]:
        left = np.concatenate([high[..., :1], high], axis=-1)[..., :low.shape[-1]]
        current = np.concatenate([high, high[..., -1:]], axis=-1)[..., :low.shape[-1]]
        even = low - ((left + current + 2) >> 2)
    else:
        even = low
    right = even[..., 1:high.shape[-1] + 1]
    if right.shape[-1] < high.shape[-1]:
        right = np.concatenate([right, even[..., -1:]], axis=-1)
    odd = high + ((even[..., :high.shape[-1]] + right) >> 1)
    out = np.empty(low.shape[:-1] + (low.shape[-1] + high.shape[-1],), dtype=low.dtype)
    out[..., 0::2], out[..., 1::2] = even, odd
    return out


def forward(image: np.ndarray, levels: int) -> list[np.ndarray]:
    """Subbands ``[LL, (HL, LH, HH) of the coarsest level, ..., of the finest]`` of int64 ``image``."""
    details: list[np.ndarray] = []
    low = image.astype(np.int64)
    for _ in range(levels):
        rows_low, rows_high = _forward_1d(low)
        ll, lh = (np.swapaxes(b, -1, -2) for b in _forward_1d(np.swapaxes(rows_low, -1, -2)))
        hl, hh = (np.swapaxes(b, -1, -2) for b in _forward_1d(np.swapaxes(rows_high, -1, -2)))
        details = [hl, lh, hh] + details
        low = ll
    return [low] + details


def inverse(subbands: list[np.ndarray], levels: int) -> np.ndarray:
    """Inverse of :func:`forward`."""
    low = subbands[0]
    for level in range(levels):
        hl, lh, hh = subbands[1 + 3 * level: 4 + 3 * level]
        rows_low = np.swapaxes(_inverse_1d(np.swapaxes(low, -1, -2), np.swapaxes(lh, -1, -2)), -1, -2)
        rows_high = np.swapaxes(_inverse_1d(np.swapaxes(hl, -1, -2), np.swapaxes(hh, -1, -2)), -1, -2)
        low = _inverse_1d(rows_low, rows_high)
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
