"""The spectral correction layer: a per-tile linear map of the bands that removes what the network mixes.

After the DC offsets and the low-pass layer, much of the bundled network's remaining error in a
tile is a linear function of the reconstructed bands themselves: it shrinks and mixes the spectral
components it codes coarsely. ``benchmarks/spectral_gain.py`` measured it on the validation tiles
before this layer existed: a least-squares map per tile would gain 0.45-0.8 dB at every quality,
-14% BD-rate with its coefficients' cost counted. So, per tile, the encoder:

1. takes the reconstruction ``R`` the decoder will have after the other corrections, rounded to
   whole DN, and fits its error ``R - x`` over the valid pixels by least squares as
   ``A (R - c) + b``, where ``c`` is the model's band means rounded (a constant: the decoder needs no
   statistic of ``R``);
2. quantises ``A`` to integers ``K`` in steps of ``2**-a`` and ``b`` to whole DN, and Laplace-codes
   the rows of ``K`` and ``b`` with a scale byte per row;
3. keeps the step ``a`` (or no correction) of lowest ``lam * D + R``, with ``D`` computed from the
   moments of the fit (:func:`fit`) and ``R`` the symbols' bits plus the bytes the layer adds, the
   trade-off of the low-pass layer and of the network's training.

The decoder computes ``R - rint(K (R - c) / 2**a) - b``. Every term is an integer below 2**53
(``|K| <= 2**15``, ``R`` clipped to +-2**16 so ``|R - c| < 2**17``, 12 terms), so float64 holds the products and sums exactly
in any summation order: every machine decodes the same values (the error-bounded layer's CRC of the
reconstruction depends on it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from numcodec_plugin import kernels
from numcodec_plugin.lowpass import DN_PER_REFLECTANCE_SQUARED
from numcodec_plugin.models.entropy_coding import (
    decode_laplace_rows,
    encode_laplace_rows,
    laplace_bits,
    laplace_scale_index,
)

#: candidate coefficient steps are 2**-a for these a
STEP_EXPONENTS = tuple(range(4, 13))
COEFFICIENT_LIMIT = 2 ** 15
#: bytes a correction adds to its tile besides the coded symbols and scale bytes: step, length varint, stream end (approx.)
FIXED_BYTES = 1 + 2 + 4
#: reconstructions are clipped to +-VALUE_LIMIT DN before the map, which keeps every product exact
VALUE_LIMIT = 2 ** 16


@dataclass(frozen=True)
class SpectralCorrection:
    """One tile's coded spectral map."""

    step_log2: int  # coefficients in steps of 2 ** -step_log2
    scale_index: tuple[int, ...]  # per row (bands rows of K, then b): Laplace scale of the symbols
    symbols: bytes  # the (bands + 1, bands) rows of K and b, Laplace-coded

    def coefficients(self, bands: int) -> tuple[np.ndarray, np.ndarray]:
        """(K, b): the (bands, bands) integer weights and the (bands,) offsets in DN, as float64."""
        rows = decode_laplace_rows(self.symbols, np.asarray(self.scale_index), (bands + 1, bands)).astype(np.float64)
        return rows[:bands], rows[bands]


def centre_of(mean: tuple[float, ...] | np.ndarray) -> np.ndarray:
    """The constant ``c`` of a model: its band means rounded to whole DN."""
    return np.rint(np.asarray(mean, dtype=np.float64))


def _whole_dn(reconstruction: np.ndarray) -> np.ndarray:
    """The reconstruction rounded to whole DN and clipped to +-VALUE_LIMIT, float64 (a new array)."""
    rounded = reconstruction.astype(np.float64)
    np.rint(rounded, out=rounded)
    return np.clip(rounded, -VALUE_LIMIT, VALUE_LIMIT, out=rounded)


def apply(correction: SpectralCorrection, reconstruction: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """The (bands, th, tw) reconstruction (DN) after ``correction``: whole DN, float64.

    ``R - rint(K (R - c) / 2**a) - b`` with ``R`` the reconstruction rounded to whole DN and clipped to
    +-VALUE_LIMIT, one pixel at a time (compiled: :func:`numcodec_plugin.kernels.spectral_map`);
    whole numbers throughout, so exact in float64."""
    weights, offsets = correction.coefficients(reconstruction.shape[0])
    return kernels.spectral_map(_floats(reconstruction), np.ascontiguousarray(weights),
                                 np.ascontiguousarray(offsets), 2.0 ** -correction.step_log2,
                                 np.ascontiguousarray(centre, np.float64), float(VALUE_LIMIT))


def _floats(values: np.ndarray) -> np.ndarray:
    """``values`` as C-contiguous float32 or float64 (as they are if they are either)."""
    return np.ascontiguousarray(values, values.dtype if values.dtype in (np.float32, np.float64) else np.float64)


def fit(reconstruction: np.ndarray, original: np.ndarray, valid: np.ndarray, centre: np.ndarray,
        lam: float) -> SpectralCorrection | None:
    """The correction that minimises ``lam * D + R`` for one tile, or None where none pays.

    ``reconstruction``, ``original``: (bands, th, tw) DN, the decoder's reconstruction before this
    layer and the values it stands for; ``valid``: (th, tw) bool, the pixels that count. The fit and
    every candidate's distortion use all valid pixels, through their moments: a regular subsample
    would alias with the synthesis's period-8 error pattern (its stride-2 transposed convolutions)
    and fit one phase of it. A candidate map ``M`` (the quantised ``K / 2**a`` and ``b``) leaves the
    squared error ``|e|^2 - 2 tr(M E) + tr(M G M^T)`` plus about 1/12 DN^2 per value for rounding its
    output, with ``G`` and ``E`` the moments of the design ``[R - c; 1]`` and the error ``e = R - x``.
    """
    bands = reconstruction.shape[0]
    count = int(valid.sum())
    if count <= 4 * (bands + 1):
        return None
    rounded, original = _whole_dn(reconstruction), np.asarray(original, dtype=np.float64)
    if count == valid.size:  # no copies where every pixel counts, the usual tile
        rounded, original = rounded.reshape(bands, -1), original.reshape(bands, -1)
    else:
        rounded, original = rounded[:, valid], original[:, valid]
    error = rounded - original
    centred = np.subtract(rounded, centre[:, None], out=rounded)
    # the moments of the design [R - c; 1] and its cross moments with the error, without stacking it
    gram = np.empty((bands + 1, bands + 1))
    gram[:bands, :bands] = centred @ centred.T
    gram[:bands, bands] = gram[bands, :bands] = centred.sum(axis=1)
    gram[bands, bands] = count
    cross = np.vstack([centred @ error.T, error.sum(axis=1)[None]])  # (bands + 1, bands)
    try:
        coefficients = np.linalg.solve(gram, cross).T  # (bands, bands + 1)
    except np.linalg.LinAlgError:  # e.g. a constant tile: its DC offsets already did all a map could
        return None
    values = count * bands
    squared = float(np.vdot(error, error))

    def cost(mapping: np.ndarray | None, bits: float) -> float:
        remaining = squared
        if mapping is not None:
            remaining += (-2 * float(np.sum(mapping * cross.T)) + float(np.sum((mapping @ gram) * mapping))
                          + values / 12)
        return lam * remaining / values / DN_PER_REFLECTANCE_SQUARED + bits / values

    best, best_cost = None, cost(None, 8.0)  # the byte that says "none"
    for step_log2 in STEP_EXPONENTS:
        weights = np.clip(np.rint(coefficients[:, :bands] * 2.0 ** step_log2), -COEFFICIENT_LIMIT, COEFFICIENT_LIMIT)
        offsets = np.clip(np.rint(coefficients[:, bands]), -COEFFICIENT_LIMIT, COEFFICIENT_LIMIT)
        symbols = np.vstack([weights, offsets[None]]).astype(np.int64)
        scale_index = laplace_scale_index(np.abs(symbols).mean(axis=1))
        bits = laplace_bits(symbols, scale_index) + 8 * (len(scale_index) + FIXED_BYTES)
        mapping = np.hstack([weights * 2.0 ** -step_log2, offsets[:, None]])
        candidate = cost(mapping, bits)
        if candidate < best_cost:
            best, best_cost = (step_log2, symbols, scale_index), candidate
    if best is None:
        return None
    step_log2, symbols, scale_index = best
    return SpectralCorrection(step_log2, tuple(int(i) for i in scale_index), encode_laplace_rows(symbols, scale_index))
