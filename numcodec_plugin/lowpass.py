"""The low-pass correction layer: a coarse per-band grid that removes a tile's large-scale error.

Much of the bundled network's error is spatially smooth: on the validation tiles at quality 1 the
means of its error over 64 x 64 pixel blocks carry 28% of the error's energy and over 8 x 8 blocks
72% (at quality 8: 6% and 15%; ``benchmarks/lowpass_gain.py`` measures it). Such error
costs a grid of block means far fewer bits than the learned latent needs for the same gain. So, per
tile, the encoder:

1. measures the mean error of the reconstruction (DN, valid pixels only) in square blocks of
   ``block`` pixels, per band;
2. quantises the means with the step that is rate-distortion optimal for that block size at the
   model's Lagrange multiplier ``lam`` (:func:`quantiser_step`);
3. predicts each quantised mean from its neighbours (JPEG-LS's median edge detector) and
   entropy-codes the prediction residuals under a zero-mean discretised Laplace law per band;
4. keeps the block size (or no layer at all) with the lowest cost ``lam * D + R``, where ``D`` is
   the mean squared error in reflectance units (DN / 10000) after the correction and ``R`` the
   layer's bits per pixel per band (estimated from the symbols' information content,
   :func:`~numcodec_plugin.models.entropy_coding.laplace_bits`; only the kept grid is coded): the same
   trade-off the network was trained for.

The decoder interpolates the grid bilinearly between block centres (held constant beyond the outer
centres) and subtracts it. :func:`correction_field` is that interpolation, in float64 with
element-wise operations only, so encoder and decoder compute the same field bit for bit on any
machine (the error-bounded layer's CRC of the reconstruction depends on it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from numcodec_plugin.models.entropy_coding import (
    RESIDUAL_LIMIT,
    decode_laplace_rows,
    encode_laplace_rows,
    laplace_bits,
    laplace_scale_index,
)

#: candidate block sides in pixels, coarse to fine; a block size must divide the tile's height and width
BLOCK_SIZES = (128, 64, 32, 16, 8, 4)
#: reflectance is DN / 10000: squared errors in DN are divided by this to give the unit of ``lam``
DN_PER_REFLECTANCE_SQUARED = 1e8
#: bytes a correction adds to its tile besides the coded symbols and scale bytes: block, step, length varint (approx.)
_FIXED_BYTES = 4
#: bytes an entropy-coded stream has beyond its symbols' information content (its last 32-bit words, approx.)
_STREAM_BYTES = 4


@dataclass(frozen=True)
class LowpassCorrection:
    """One tile's coded correction grid."""

    block_log2: int  # block side 2 ** block_log2 pixels
    step_index: int  # quantiser step 2 ** (step_index / 8) DN
    scale_index: tuple[int, ...]  # per band: Laplace scale of the symbols (entropy_coding.laplace_scale)
    symbols: bytes  # the (bands, rows, columns) grid's prediction residuals, Laplace-coded

    @property
    def block(self) -> int:
        return 1 << self.block_log2

    @property
    def step(self) -> float:
        return step_size(self.step_index)


def step_size(index: int) -> float:
    """The quantiser step (DN) a stored step index stands for."""
    return 2.0 ** (index / 8)


def quantiser_step(lam: float, block: int) -> float:
    """The step (DN) that minimises ``lam * D + R`` for block means of ``block`` x ``block`` pixels.

    Quantising a block mean with step s adds about s**2 / 12 DN**2 to each of its ``block**2``
    samples and saves about log2(s) bits per block; setting the derivative to zero gives
    s**2 = 6e8 / (lam * block**2 * ln 2).
    """
    return math.sqrt(6 * DN_PER_REFLECTANCE_SQUARED / (lam * block * block * math.log(2)))


def _step_index(step: float) -> int:
    return int(np.clip(round(8 * math.log2(step)), 0, 255))


def _bilinear_weights(positions: np.ndarray, cells: int, block: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For pixels at ``positions``: the two grid cells each lies between and the second one's weight."""
    position = np.clip((positions + 0.5) / block - 0.5, 0, cells - 1)
    first = np.floor(position).astype(np.int64)
    return first, np.minimum(first + 1, cells - 1), position - first


def upsample(grid: np.ndarray, block: int, rows: np.ndarray | None = None, columns: np.ndarray | None = None) -> np.ndarray:
    """The bilinear field of a (bands, r, c) grid of ``block``-pixel cells, float64, at the pixel ``rows``
    and ``columns`` given (default all: (bands, r * block, c * block))."""
    cells_r, cells_c = grid.shape[-2:]
    rows = np.arange(cells_r * block) if rows is None else rows
    columns = np.arange(cells_c * block) if columns is None else columns
    r0, r1, wr = _bilinear_weights(rows, cells_r, block)
    c0, c1, wc = _bilinear_weights(columns, cells_c, block)
    grid = grid.astype(np.float64)
    by_rows = _gather(grid, r0, -2) * (1 - wr)[:, None] + _gather(grid, r1, -2) * wr[:, None]
    field = _gather(by_rows, c0, -1)
    field *= 1 - wc
    second = _gather(by_rows, c1, -1)
    second *= wc
    field += second  # in place: the same operations as a * (1 - wc) + b * wc, without two more full-size arrays
    return field


def _gather(values: np.ndarray, index: np.ndarray, axis: int) -> np.ndarray:
    """``np.take(values, index, axis)`` for a non-decreasing ``index`` (the cells of increasing pixel
    positions), as a repeat of each cell: the same values, with a copy per cell instead of a lookup
    per pixel (the stage table of ``benchmarks/codec_speed.py`` times the field)."""
    return np.repeat(values, np.bincount(index, minlength=values.shape[axis]), axis=axis)


def correction_field(correction: LowpassCorrection, bands: int, tile_shape: tuple[int, int]) -> np.ndarray:
    """The (bands, th, tw) float32 field (DN) that the decoder subtracts from the tile."""
    block = correction.block
    if len(correction.scale_index) != bands or tile_shape[0] % block or tile_shape[1] % block:
        raise ValueError(f"low-pass correction with {len(correction.scale_index)} bands and {block}-pixel "
                         f"blocks does not fit a {bands}-band {tile_shape[0]}x{tile_shape[1]} tile")
    grid = _decode_grid(correction, (bands, tile_shape[0] // block, tile_shape[1] // block))
    return upsample(grid, block).astype(np.float32)


def _median_prediction(left: np.ndarray, up: np.ndarray, up_left: np.ndarray) -> np.ndarray:
    """JPEG-LS's median edge detector: min or max of the neighbours across an edge, else the plane."""
    low, high = np.minimum(left, up), np.maximum(left, up)
    return np.where(up_left >= high, low, np.where(up_left <= low, high, left + up - up_left))


def prediction_residuals(grid: np.ndarray) -> np.ndarray:
    """(bands, rows, columns) integers minus their median prediction from the cells left, above and
    above-left (zero outside the grid); what is entropy-coded."""
    padded = np.pad(grid, ((0, 0), (1, 0), (1, 0)))
    return grid - _median_prediction(padded[:, 1:, :-1], padded[:, :-1, 1:], padded[:, :-1, :-1])


def from_prediction_residuals(residuals: np.ndarray) -> np.ndarray:
    """Inverse of :func:`prediction_residuals`, one anti-diagonal of cells at a time (each depends only
    on earlier ones)."""
    bands, rows, columns = residuals.shape
    padded = np.zeros((bands, rows + 1, columns + 1), dtype=np.int64)
    for diagonal in range(rows + columns - 1):
        r = np.arange(max(0, diagonal - columns + 1), min(rows, diagonal + 1))
        c = diagonal - r
        predicted = _median_prediction(padded[:, r + 1, c], padded[:, r, c + 1], padded[:, r, c])
        padded[:, r + 1, c + 1] = predicted + residuals[:, r, c]
    return padded[:, 1:, 1:]


def _decode_grid(correction: LowpassCorrection, shape: tuple[int, int, int]) -> np.ndarray:
    residuals = decode_laplace_rows(correction.symbols, np.asarray(correction.scale_index), shape).astype(np.int64)
    return from_prediction_residuals(residuals) * correction.step


@dataclass(frozen=True)
class _QuantisedGrid:
    """A candidate correction before entropy coding: the fit ranks candidates by estimated size."""

    block: int
    step_index: int
    residuals: np.ndarray  # (bands, rows, columns) prediction residuals, what is coded
    scale_index: np.ndarray  # (bands,) uint8
    field_grid: np.ndarray  # (bands, rows, columns) DN: the grid the decoder will get

    def estimated_bytes(self) -> float:
        """The bytes this correction would add to its tile (symbols estimated, the rest counted)."""
        return laplace_bits(self.residuals, self.scale_index) / 8 + _STREAM_BYTES + len(self.scale_index) + _FIXED_BYTES

    def coded(self) -> LowpassCorrection:
        return LowpassCorrection(self.block.bit_length() - 1, self.step_index, tuple(int(i) for i in self.scale_index),
                                 encode_laplace_rows(self.residuals, self.scale_index))


def _quantised(block_means: np.ndarray, block: int, lam: float) -> _QuantisedGrid:
    """The candidate correction for these block means at the step that suits ``lam``."""
    step_index = _step_index(quantiser_step(lam, block))
    step = step_size(step_index)
    grid = np.rint(block_means / step).astype(np.int64)
    unclipped = prediction_residuals(grid)
    residuals = np.clip(unclipped, -RESIDUAL_LIMIT, RESIDUAL_LIMIT)
    if (residuals != unclipped).any():  # rare: the decoder's grid then differs from the rounded means
        grid = from_prediction_residuals(residuals)
    scale_index = laplace_scale_index(np.abs(residuals).mean(axis=(1, 2)))
    return _QuantisedGrid(block, step_index, residuals, scale_index, grid * step)


def _block_sums(values: np.ndarray, block: int) -> np.ndarray:
    """Sums of (..., y, x) ``values`` over ``block`` x ``block`` squares, float64.

    An average pooling, times ``block**2`` (a power of two, so exactly the pooled sum): faster than
    NumPy's reduction over two strided axes, and it lets other tile threads run (torch releases the
    GIL); the stage table of ``benchmarks/codec_speed.py`` times the fit. Encoder-only: the decoder
    never sums blocks.
    """
    *lead, height, width = values.shape
    planes = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float64)).reshape(1, -1, height, width)
    sums = torch.nn.functional.avg_pool2d(planes, block) * float(block * block)
    return sums.reshape(*lead, height // block, width // block).numpy()


def _means(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    return np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)


@lru_cache(maxsize=64)
def _interpolation_block_sums(cells: int, block: int) -> np.ndarray:
    """(cells, cells) matrix along one axis: entry [i, j] is the sum, over the pixels of block i, of
    cell j's weight in the bilinear interpolation of :func:`upsample`."""
    positions = np.arange(cells * block)
    first, second, weight = _bilinear_weights(positions, cells, block)
    matrix = np.zeros((cells, cells))
    np.add.at(matrix, (positions // block, first), 1 - weight)
    np.add.at(matrix, (positions // block, second), weight)
    return matrix


def _interpolated_block_means(grid: np.ndarray, block: int, weight: np.ndarray) -> np.ndarray:
    """Block means, over the pixels that count (``weight`` 1), of the bilinear field of a (bands, r, c) ``grid``.

    With every pixel counting the interpolation is separable, so the means are two small matrix
    products instead of a full-resolution field (encoder-only, like the whole fit).
    """
    if weight.all():
        rows = _interpolation_block_sums(grid.shape[-2], block)
        columns = _interpolation_block_sums(grid.shape[-1], block)
        return rows @ grid @ columns.T / (block * block)
    return _means(_block_sums(upsample(grid, block) * weight, block), _block_sums(weight, block))


#: the encoder estimates each candidate's distortion on every SAMPLE_STRIDE-th row and column
SAMPLE_STRIDE = 4


def fit(error: np.ndarray, valid: np.ndarray, lam: float) -> LowpassCorrection | None:
    """The correction that minimises ``lam * D + R`` for one tile, or None where none pays.

    ``error``: (bands, th, tw) reconstruction minus original, DN; ``valid``: (th, tw) bool, the
    pixels that count. Block means come from one pass over the tile (finest blocks, then summed);
    each candidate's distortion is estimated on a regular subsample of the pixels (the field is
    smooth, so this ranks candidates as the full tile would at a sixteenth of the work). Block sizes
    are tried coarse to fine and the search stops once the cost rises; the chosen size's grid is
    then refined once towards the least-squares fit of the interpolated field.
    """
    bands, height, width = error.shape
    blocks = [b for b in BLOCK_SIZES if height % b == 0 and width % b == 0]
    if not blocks or not valid.any():
        return None
    weight = valid.astype(np.float64)
    finest = blocks[-1]
    sums, counts = _block_sums(error if valid.all() else error * weight, finest), _block_sums(weight, finest)
    rows, columns = np.arange(0, height, SAMPLE_STRIDE), np.arange(0, width, SAMPLE_STRIDE)
    sample = error[:, rows][:, :, columns]
    sample_weight = weight[rows][:, columns]
    samples = max(1.0, float(sample_weight.sum()) * bands)
    rate_per_byte = 8.0 / (float(weight.sum()) * bands)

    def cost(remaining: np.ndarray, extra_bytes: int) -> float:
        squared = float(np.sum(remaining * remaining * sample_weight)) / samples
        return lam * squared / DN_PER_REFLECTANCE_SQUARED + extra_bytes * rate_per_byte

    def candidate(means: np.ndarray, block: int) -> tuple[_QuantisedGrid, float]:
        grid = _quantised(means, block, lam)
        return grid, cost(sample - upsample(grid.field_grid, block, rows, columns), grid.estimated_bytes())

    best, best_cost, best_means = None, cost(sample, 1), None
    for block in blocks:
        factor = block // finest
        means = _means(_block_sums(sums, factor), _block_sums(counts, factor))
        grid, grid_cost = candidate(means, block)
        if grid_cost < best_cost:
            best, best_cost, best_means = grid, grid_cost, means
        elif best is not None:
            break
    if best is None:
        return None
    # Block means, interpolated, blur the field; one correction step towards the least-squares grid
    # (adding back what the interpolation loses of each block's mean) recovers part of that.
    block = best.block
    refined, refined_cost = candidate(2 * best_means - _interpolated_block_means(best_means, block, weight), block)
    return (refined if refined_cost < best_cost else best).coded()
