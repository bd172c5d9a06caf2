"""The error-bounded layer: a quantised residual on top of the learned reconstruction.

With ``max_error = E`` (DN, per band) the residual ``r = x - x_hat`` between the original and the
learned reconstruction (both as integers) is quantised with step ``2E + 1``::

    q = sign(r) * floor((|r| + E) / (2E + 1)),   x' = x_hat + q * (2E + 1),   |x' - x| <= E

and ``q`` is decorrelated by the reversible 5/3 wavelet (:mod:`numcodec_plugin.wavelet`), then
across bands (each band's subband minus an integer multiple of the earlier band that predicts
it best), and entropy-coded with zero-mean discretised Laplace laws whose scales are stored per
frame, band, subband and context class (one byte each; the class of a detail coefficient is the
tercile of its parent's magnitude, known to the decoder from the coarser subband). ``E = 0`` is lossless. Float32 chunks support ``E = 0`` only:
their residual is taken between the IEEE bit patterns mapped to ordered integers, so decoding is
bit-exact. Coefficients too wide for the coder's alphabet are split into a Laplace-coded high part
and uniformly coded low bits (``shift`` per frame, band and subband). The rare valid value that would land
exactly on the no-data value is stored verbatim in an exception list.

The decoder must reproduce ``x_hat`` bit for bit; a CRC-32 of it is stored and checked, so a
decoder on a device whose network output differs raises instead of breaking the bound. A second
CRC-32 over the bounded result catches damaged residual streams.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np

from numcodec_plugin import wavelet
from numcodec_plugin.errors import ConfigurationError, EntropyModelMismatchError
from numcodec_plugin.models.entropy_coding import (
    LaplaceDecoder,
    decode_uniform,
    encode_laplace,
    encode_uniform,
    laplace_scale,
    laplace_scale_index,
)

NO_PREDICTOR = 255
_HIGH_BITS = 15  # high parts stay within +-2**15, inside the coder's +-RESIDUAL_LIMIT alphabet


@dataclass(frozen=True)
class ResidualLayer:
    max_error: tuple[int, ...]  # per band, DN
    reconstruction_crc: int  # CRC-32 of x_hat's bytes
    result_crc: int  # CRC-32 of the bounded result's bytes (catches corrupt residual streams)
    scale_index: np.ndarray  # (frames, bands, subbands, CONTEXTS) uint8: Laplace scale 2 ** ((i - 96) / 16)
    shift: np.ndarray  # (frames, bands, subbands) uint8: low bits coded uniformly
    predictor: np.ndarray  # (frames, bands, subbands) uint8: earlier band predicting this one, or NO_PREDICTOR
    weight: np.ndarray  # (frames, bands, subbands) int8: prediction weight in sixteenths
    high: bytes
    low: bytes
    exceptions: bytes  # zlib of (int64 flat index, int64 ordered value) pairs, or b""


def check_max_error(max_error: float | tuple[float, ...] | list[float], dtype: np.dtype, bands: int) -> tuple[int, ...]:
    """Per-band integer bounds; refuse what cannot be guaranteed."""
    values = tuple(max_error) if isinstance(max_error, (tuple, list)) else (max_error,) * bands
    if len(values) != bands:
        raise ConfigurationError(f"max_error has {len(values)} values but the chunk has {bands} bands")
    if any(not float(v).is_integer() or v < 0 or v > 32767 for v in values):
        raise ConfigurationError(f"max_error must be whole DN between 0 and 32767, got {values}")
    if np.dtype(dtype).kind == "f" and any(values):
        raise ConfigurationError("float32 chunks support max_error=0 (bit-exact) only; store DN as uint16 for near-lossless bounds")
    return tuple(int(v) for v in values)


def to_ordered(values: np.ndarray) -> np.ndarray:
    """Integers as int64; float32 as their bit patterns mapped monotonically to int64."""
    if values.dtype.kind != "f":
        return values.astype(np.int64)
    bits = values.astype(np.float32).view(np.int32).astype(np.int64)
    return np.where(bits >= 0, bits, -1 - (bits & 0x7FFFFFFF))


def from_ordered(ordered: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if np.dtype(dtype).kind != "f":
        info = np.iinfo(dtype)
        return np.clip(ordered, info.min, info.max).astype(dtype)
    bits = np.where(ordered >= 0, ordered, (-1 - ordered) | 0x80000000)
    return bits.astype(np.uint32).view(np.float32)


CONTEXTS = 3  # classes of a detail coefficient by the magnitude of its parent


def _contexts(parent: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    """(frames, bands, y, x) context class of each coefficient of a subband of ``shape``.

    A detail coefficient's magnitude follows its parent's (same orientation, one level coarser, at
    half the resolution): classes are the terciles of the upsampled parent magnitudes per frame and
    band. Without a parent (LL and the coarsest details) every coefficient is class 0.
    """
    if parent is None or not np.prod(shape):
        return np.zeros(shape, np.int64)
    up = np.abs(parent).repeat(2, axis=-2).repeat(2, axis=-1)[..., :shape[-2], :shape[-1]]
    up = np.pad(up, ((0, 0), (0, 0), (0, shape[-2] - up.shape[-2]), (0, shape[-1] - up.shape[-1])), mode="edge")
    low, high = np.quantile(up.reshape(shape[:2] + (-1,)), [1 / 3, 2 / 3], axis=-1)
    return (up > low[..., None, None]).astype(np.int64) + (up > high[..., None, None])


def _scale_index(band: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """(frames, bands, CONTEXTS) byte indexes of the Laplace scales of one subband's high parts."""
    index = np.zeros(band.shape[:2] + (CONTEXTS,), np.uint8)
    for k in range(CONTEXTS):
        members = classes == k
        count = members.sum(axis=(-2, -1))
        mean_abs = np.where(members, np.abs(band), 0).sum(axis=(-2, -1)) / np.maximum(count, 1)
        index[..., k] = laplace_scale_index(mean_abs)
    return index


def _scales(index: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Per-coefficient Laplace scales from (frames, bands, CONTEXTS) indexes and the context classes."""
    per_class = laplace_scale(index)
    return np.take_along_axis(per_class, classes.reshape(classes.shape[:2] + (-1,)), axis=-1).reshape(classes.shape)


def _parent(index: int, subbands: list[np.ndarray]) -> np.ndarray | None:
    """The parent of subband ``index`` in :func:`wavelet.forward` order (three places earlier), if any."""
    return subbands[index - 3] if index >= 4 else None


def _split(band: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(shift, high, low) of one subband: high parts fit the Laplace coder, low bits go uniform."""
    widest = np.abs(band).max(axis=(-2, -1)) if band.size else np.zeros(band.shape[:2], np.int64)
    shift = np.maximum(0, np.ceil(np.log2(widest + 1)).astype(np.int64) - _HIGH_BITS).astype(np.uint8)
    high = band >> shift[..., None, None]
    return shift, high, band - (high << shift[..., None, None])


def _predict(subband: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Spectral prediction: each band minus ``(w * c_p + 8) >> 4`` of the earlier band ``p`` that helps most.

    Returns the prediction errors and, per (frame, band), the source band (``NO_PREDICTOR`` if none)
    and the integer weight ``w`` (sixteenths). Integer arithmetic, so :func:`_unpredict` inverts it.
    """
    frames, bands = subband.shape[:2]
    errors = subband.copy()
    source = np.full((frames, bands), NO_PREDICTOR, np.uint8)
    weight = np.zeros((frames, bands), np.int8)
    flat = subband.reshape(frames, bands, -1)
    for f in range(frames):
        floats = flat[f].astype(np.float64)
        gram = floats @ floats.T
        for b in range(1, bands):
            best = np.abs(flat[f, b]).sum()
            for p in range(b):
                if gram[p, p] == 0:
                    continue
                w = int(np.clip(np.rint(16 * gram[b, p] / gram[p, p]), -127, 127))
                candidate = flat[f, b] - ((w * flat[f, p] + 8) >> 4)
                cost = np.abs(candidate).sum()
                if cost < best:
                    best, source[f, b], weight[f, b] = cost, p, w
                    errors[f, b] = candidate.reshape(subband.shape[-2:])
    return errors, source, weight


def _unpredict(errors: np.ndarray, source: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_predict`, band by band in order."""
    subband = errors.copy()
    for f, b in zip(*np.nonzero(source != NO_PREDICTOR)):
        p = int(source[f, b])
        if p >= b:
            raise EntropyModelMismatchError("residual layer names a spectral predictor that is not an earlier band")
        subband[f, b] += (int(weight[f, b]) * subband[f, p] + 8) >> 4
    return subband


def encode_residual(original: np.ndarray, reconstruction: np.ndarray, mask: np.ndarray | None,
                    max_error: tuple[int, ...], nodata: float) -> ResidualLayer:
    """Residual layer for (frames, bands, y, x) ``original`` given the decoder's ``reconstruction``."""
    valid = np.ones(original.shape, bool) if mask is None else ~mask
    step = (2 * np.asarray(max_error, np.int64) + 1)[None, :, None, None]
    residual = np.where(valid, to_ordered(original) - to_ordered(reconstruction), 0)
    q = np.sign(residual) * ((np.abs(residual) + step // 2) // step)
    levels = wavelet.levels_for(*q.shape[-2:])
    shifts, highs, lows, scale_indexes, scales, sizes, sources, weights = [], [], [], [], [], [], [], []
    for i, coefficients in enumerate(wavelet.forward(q, levels)):
        band, source, weight = _predict(coefficients)
        sources.append(source)
        weights.append(weight)
        shift, high, low = _split(band)
        classes = _contexts(_parent(i, highs), high.shape)
        index = _scale_index(high, classes)
        shifts.append(shift)
        scale_indexes.append(index)
        highs.append(high)
        scales.append(_scales(index, classes).reshape(-1))
        size = np.broadcast_to((1 << shift.astype(np.int64))[..., None, None], band.shape)
        lows.append(low[size > 1])
        sizes.append(size[size > 1])
    low_symbols, low_sizes = np.concatenate(lows), np.concatenate(sizes)
    bounded = _bounded(reconstruction, q, step)
    exceptions = _exceptions(original, bounded, valid, nodata)
    result = _with_exceptions(bounded, exceptions)
    return ResidualLayer(
        max_error, zlib.crc32(np.ascontiguousarray(reconstruction).tobytes()), zlib.crc32(result.tobytes()),
        np.stack(scale_indexes, axis=-2), np.stack(shifts, axis=-1), np.stack(sources, axis=-1), np.stack(weights, axis=-1),
        encode_laplace(np.concatenate([h.reshape(-1) for h in highs]), np.concatenate(scales)),
        encode_uniform(low_symbols, low_sizes) if low_symbols.size else b"", exceptions,
    )


def _exceptions(original: np.ndarray, bounded: np.ndarray, valid: np.ndarray, nodata: float) -> bytes:
    """Valid positions whose bounded value equals the no-data value, with their exact values."""
    if original.dtype.kind == "f" or math.isnan(nodata):
        return b""
    where = np.flatnonzero(valid & (bounded == nodata))
    if not where.size:
        return b""
    pairs = np.stack([where.astype(np.int64), original.reshape(-1)[where].astype(np.int64)], axis=1)
    return zlib.compress(pairs.astype("<i8").tobytes(), 9)


def apply_residual(reconstruction: np.ndarray, layer: ResidualLayer) -> np.ndarray:
    """The bounded reconstruction; raises if ``reconstruction`` is not the encoder's."""
    if zlib.crc32(np.ascontiguousarray(reconstruction).tobytes()) != layer.reconstruction_crc:
        raise EntropyModelMismatchError(
            "the learned reconstruction here differs from the encoder's (device or library version), "
            "so the chunk's error bound cannot be guaranteed; decode it where the network output matches"
        )
    frames, bands, height, width = reconstruction.shape
    levels = wavelet.levels_for(height, width)
    shapes = wavelet.subband_shapes(height, width, levels)
    expected = (frames, bands, len(shapes))
    if any(a.shape != expected for a in (layer.shift, layer.predictor, layer.weight)) or \
            layer.scale_index.shape != expected + (CONTEXTS,):
        raise EntropyModelMismatchError("residual layer does not match the chunk's frames, bands and subbands")
    full = [(frames, bands) + shape for shape in shapes]
    decoder = LaplaceDecoder(layer.high)
    high_parts: list[np.ndarray] = []
    for i, shape in enumerate(full):
        classes = _contexts(_parent(i, high_parts), shape)
        high_parts.append(decoder.decode(_scales(layer.scale_index[..., i, :], classes)).astype(np.int64))
    highs = np.concatenate([h.reshape(-1) for h in high_parts])
    sizes = [np.broadcast_to((1 << layer.shift[..., i].astype(np.int64))[..., None, None], s) for i, s in enumerate(full)]
    coded_low = np.concatenate([size[size > 1] for size in sizes])
    lows = decode_uniform(layer.low, coded_low).astype(np.int64) if coded_low.size else coded_low
    subbands, offset, low_offset = [], 0, 0
    for i, (shape, size) in enumerate(zip(full, sizes)):
        count = int(np.prod(shape))
        band = highs[offset:offset + count].reshape(shape) << layer.shift[..., i].astype(np.int64)[..., None, None]
        offset += count
        wide = size > 1
        band[wide] += lows[low_offset:low_offset + int(wide.sum())]
        low_offset += int(wide.sum())
        subbands.append(_unpredict(band, layer.predictor[..., i], layer.weight[..., i]))
    q = wavelet.inverse(subbands, levels)
    step = (2 * np.asarray(layer.max_error, np.int64) + 1)[None, :, None, None]
    result = _with_exceptions(_bounded(reconstruction, q, step), layer.exceptions)
    if zlib.crc32(result.tobytes()) != layer.result_crc:
        raise EntropyModelMismatchError("the residual layer decodes to other values than were encoded (corrupt stream)")
    return result


def _bounded(reconstruction: np.ndarray, q: np.ndarray, step: np.ndarray) -> np.ndarray:
    """``x_hat + q * step`` in the dtype (clipped to its range)."""
    return np.ascontiguousarray(from_ordered(to_ordered(reconstruction) + q * step, reconstruction.dtype))


def _with_exceptions(result: np.ndarray, exceptions: bytes) -> np.ndarray:
    """``result`` with the exception list's exact values written in (in place)."""
    if exceptions:
        try:
            pairs = np.frombuffer(zlib.decompress(exceptions), "<i8").reshape(-1, 2)
        except (zlib.error, ValueError) as exc:
            raise EntropyModelMismatchError(f"corrupt exception list in the residual layer ({exc})") from exc
        if pairs.size and (pairs[:, 0].min() < 0 or pairs[:, 0].max() >= result.size):
            raise EntropyModelMismatchError("exception list points outside the chunk")
        result.reshape(-1)[pairs[:, 0]] = pairs[:, 1].astype(result.dtype)
    return result
