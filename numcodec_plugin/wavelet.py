"""The two wavelets of JPEG 2000 on (..., y, x) arrays: the reversible integer 5/3 (LeGall) and the
irreversible 9/7 (Cohen-Daubechies-Feauveau), both by lifting with symmetric extension.

The error-bounded layer decorrelates its quantised residual with the 5/3: the residual of a learned
reconstruction is spatially smooth where the network missed low frequencies, and white where it
missed texture; the subbands separate the two, and integer lifting is exactly invertible for any
length, odd ones included. The transform coder (:mod:`numcodec_plugin.transform_coding`) codes with
the 9/7, which compacts smooth imagery better at a given distortion; its lifting is compiled
(:func:`numcodec_plugin.kernels.forward97`) and computes in float64 with one IEEE operation at a
time in a fixed order, so every machine computes the same bits.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from numcodec_plugin import kernels

MAX_LEVELS = 3


def levels_for(height: int, width: int) -> int:
    """Decomposition levels used for an image of this size (0 below 8 pixels on a side)."""
    return int(min(MAX_LEVELS, max(0, np.floor(np.log2(max(1, min(height, width)))) - 2)))


def _cut(ndim: int, axis: int, start: int | None, stop: int | None, step: int | None = None) -> tuple[slice, ...]:
    """The index of ``start:stop:step`` along ``axis`` of an array of ``ndim`` dimensions."""
    index = [slice(None)] * ndim
    index[axis] = slice(start, stop, step)
    return tuple(index)


def _sized(x: np.ndarray, axis: int, length: int, dtype: np.dtype | None = None) -> np.ndarray:
    """An empty array shaped like ``x`` but ``length`` long along ``axis``."""
    shape = list(x.shape)
    shape[axis] = length
    return np.empty(shape, dtype or x.dtype)


def _pair_sums(even: np.ndarray, odd_count: int, axis: int) -> np.ndarray:
    """``even[n] + even[n + 1]`` along ``axis`` for each odd sample ``n``, the last even sample mirrored past the end."""
    out, inner, d = _sized(even, axis, odd_count), min(odd_count, even.shape[axis] - 1), even.ndim
    np.add(even[_cut(d, axis, 0, inner)], even[_cut(d, axis, 1, inner + 1)], out=out[_cut(d, axis, 0, inner)])
    if inner < odd_count:
        np.add(even[_cut(d, axis, -1, None)], even[_cut(d, axis, -1, None)], out=out[_cut(d, axis, -1, None)])
    return out


def _neighbour_sums(odd: np.ndarray, even_count: int, axis: int) -> np.ndarray:
    """``odd[n - 1] + odd[n]`` along ``axis`` for each even sample ``n``, mirrored at both ends (``odd`` not empty)."""
    out, count, d = _sized(odd, axis, even_count), odd.shape[axis], odd.ndim
    np.add(odd[_cut(d, axis, 0, 1)], odd[_cut(d, axis, 0, 1)], out=out[_cut(d, axis, 0, 1)])
    np.add(odd[_cut(d, axis, 0, count - 1)], odd[_cut(d, axis, 1, count)], out=out[_cut(d, axis, 1, count)])
    if even_count > count:
        np.add(odd[_cut(d, axis, -1, None)], odd[_cut(d, axis, -1, None)], out=out[_cut(d, axis, -1, None)])
    return out


def _forward_1d(x: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Split ``axis`` into low (even) and high (odd) coefficients of the 5/3."""
    even, odd = x[_cut(x.ndim, axis, 0, None, 2)], x[_cut(x.ndim, axis, 1, None, 2)]
    if not odd.shape[axis]:
        return even, odd
    high = odd - (_pair_sums(even, odd.shape[axis], axis) >> 1)
    return even + ((_neighbour_sums(high, even.shape[axis], axis) + 2) >> 2), high


def _inverse_1d(low: np.ndarray, high: np.ndarray, axis: int) -> np.ndarray:
    if not high.shape[axis]:
        even, odd = low, high
    else:
        even = low - ((_neighbour_sums(high, low.shape[axis], axis) + 2) >> 2)
        odd = high + (_pair_sums(even, high.shape[axis], axis) >> 1)
    out = _sized(low, axis, low.shape[axis] + high.shape[axis], np.result_type(even, odd))
    out[_cut(out.ndim, axis, 0, None, 2)], out[_cut(out.ndim, axis, 1, None, 2)] = even, odd
    return out


def _planes(image: np.ndarray, dtype: type = np.float64) -> np.ndarray:
    """(..., y, x) ``image`` as C-contiguous (planes, y, x) of ``dtype``, the layout of the compiled 9/7."""
    return np.ascontiguousarray(image.reshape((int(np.prod(image.shape[:-2])),) + image.shape[-2:]), dtype)


def forward(image: np.ndarray, levels: int, irreversible: bool = False) -> list[np.ndarray]:
    """Subbands ``[LL, (HL, LH, HH) of the coarsest level, ..., of the finest]`` of ``image``: int64
    by the 5/3, or float64 by the 9/7 where ``irreversible``."""
    details: list[np.ndarray] = []
    if irreversible:
        low = _planes(image)
        for _ in range(levels):
            ll, hl, lh, hh = kernels.forward97(low)
            details = [hl, lh, hh] + details
            low = ll
        return [band.reshape(image.shape[:-2] + band.shape[-2:]) for band in [low] + details]
    low = image.astype(np.int64)
    for _ in range(levels):
        rows_low, rows_high = _forward_1d(low, -1)
        ll, lh = _forward_1d(rows_low, -2)
        hl, hh = _forward_1d(rows_high, -2)
        details = [hl, lh, hh] + details
        low = ll
    return [low] + details


def inverse(subbands: list[np.ndarray], levels: int, irreversible: bool = False,
            steps: Sequence[float] | None = None, reconstruction: float = 0.0) -> np.ndarray:
    """Inverse of :func:`forward` (exact for the 5/3, in int64; to float64 rounding for the 9/7).

    With ``steps`` (one per subband; 9/7 only), ``subbands`` are int32 quantiser symbols ``q``, taken as
    the coefficients ``sign(q) (|q| + reconstruction) step`` (:func:`numcodec_plugin.kernels.dequantise`),
    dequantised as the lifting reads them."""
    low = subbands[0]
    if irreversible:
        leading = low.shape[:-2]
        if steps is None:
            planes = [_planes(band) for band in subbands]
            low = planes[0]
        else:
            planes = [_planes(band, np.int32) for band in subbands]
            low = kernels.dequantise(planes[0], steps[0], reconstruction)
        for level in range(levels):
            details = slice(1 + 3 * level, 4 + 3 * level)
            low = kernels.inverse97(low, *planes[details], steps=None if steps is None else steps[details],
                                    reconstruction=reconstruction)
        return low.reshape(leading + low.shape[-2:])
    low = low.astype(np.int64, copy=False)
    for level in range(levels):
        hl, lh, hh = (band.astype(np.int64, copy=False) for band in subbands[1 + 3 * level: 4 + 3 * level])
        rows_low = _inverse_1d(low, lh, -2)
        rows_high = _inverse_1d(hl, hh, -2)
        low = _inverse_1d(rows_low, rows_high, -1)
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
