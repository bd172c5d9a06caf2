"""The error-bounded layer: a quantised residual on top of the learned reconstruction.

With ``max_error = E`` (DN, per band) the residual ``r = x - x_hat`` between the original and the
learned reconstruction (both as integers) is quantised with step ``2E + 1``::

    q = sign(r) * floor((|r| + E) / (2E + 1)),   x' = x_hat + q * (2E + 1),   |x' - x| <= E

and ``q`` is decorrelated by the reversible 5/3 wavelet (:mod:`numcodec_plugin.wavelet`) and
coded by :mod:`numcodec_plugin.subband_coding` with spectral prediction (each band's subband minus
an integer multiple of the earlier band that predicts it best; Laplace laws per context class).
``E = 0`` is lossless. Float32 chunks support ``E = 0`` only: their residual is taken between the
IEEE bit patterns mapped to ordered integers, so decoding is bit-exact. The rare valid value that
would land exactly on the no-data value is stored verbatim in an exception list.

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
from numcodec_plugin.checksums import crc32
from numcodec_plugin.errors import ConfigurationError, EntropyModelMismatchError
from numcodec_plugin.subband_coding import CodedSubbands, decode_subbands, encode_subbands


@dataclass(frozen=True)
class ResidualLayer:
    max_error: tuple[int, ...]  # per band, DN
    reconstruction_crc: int  # CRC-32 of x_hat's bytes
    result_crc: int  # CRC-32 of the bounded result's bytes (catches corrupt residual streams)
    subbands: CodedSubbands  # the quantised residual's wavelet subbands, coded
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


def encode_residual(original: np.ndarray, reconstruction: np.ndarray, mask: np.ndarray | None,
                    max_error: tuple[int, ...], nodata: float) -> ResidualLayer:
    """Residual layer for (frames, bands, y, x) ``original`` given the decoder's ``reconstruction``."""
    valid = np.ones(original.shape, bool) if mask is None else ~mask
    step = (2 * np.asarray(max_error, np.int64) + 1)[None, :, None, None]
    residual = np.where(valid, to_ordered(original) - to_ordered(reconstruction), 0)
    q = np.sign(residual) * ((np.abs(residual) + step // 2) // step)
    coded = encode_subbands(wavelet.forward(q, wavelet.levels_for(*q.shape[-2:])))
    bounded = _bounded(reconstruction, q, step)
    exceptions = _exceptions(original, bounded, valid, nodata)
    result = _with_exceptions(bounded, exceptions)
    return ResidualLayer(max_error, crc32(np.ascontiguousarray(reconstruction)), crc32(np.ascontiguousarray(result)),
                         coded, exceptions)


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
    if crc32(np.ascontiguousarray(reconstruction)) != layer.reconstruction_crc:
        raise EntropyModelMismatchError(
            "the learned reconstruction here differs from the encoder's (device or library version), "
            "so the chunk's error bound cannot be guaranteed; decode it where the network output matches"
        )
    frames, bands, height, width = reconstruction.shape
    levels = wavelet.levels_for(height, width)
    subbands = decode_subbands(layer.subbands, [(frames, bands) + shape for shape in wavelet.subband_shapes(height, width, levels)])
    q = wavelet.inverse(subbands, levels)
    step = (2 * np.asarray(layer.max_error, np.int64) + 1)[None, :, None, None]
    result = _with_exceptions(_bounded(reconstruction, q, step), layer.exceptions)
    if crc32(np.ascontiguousarray(result)) != layer.result_crc:
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
