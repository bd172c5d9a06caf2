"""Entropy coding of wavelet subbands: what the error-bounded layer and the transform coder share.

A list of integer subbands, (frames, bands, y, x) each in :func:`numcodec_plugin.wavelet.forward`
order, is coded as follows:

1. optionally, spectral prediction: each band's subband minus ``(w c_p + 8) >> 4`` of the earlier
   band ``p`` that predicts it best (``w`` in sixteenths, chosen by the encoder and stored; integer
   arithmetic, so exactly invertible);
2. each subband's coefficients are split into a high part within the coder's alphabet and low bits
   (``shift`` per frame, band and subband; 0 unless a coefficient exceeds 2**15);
3. the high parts are coded with constriction's ANS coder under zero-mean discretised Laplace laws,
   one per context class: the tercile of the parent coefficient's magnitude (same orientation, one
   level coarser; optionally with its neighbours and the coefficient's coded siblings), which the
   decoder knows from the subbands it decoded before. Each scale is one byte per
   frame, band, subband and class (``2^((i - 96) / 16)``); the low bits are coded uniformly.
   With ``rans`` the same laws are coded by the compiled rANS coder instead
   (:mod:`numcodec_plugin.models.laplace_rans`), and byte 0 marks a class with only zeros, not coded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from numcodec_plugin import kernels
from numcodec_plugin.errors import EntropyModelMismatchError
from numcodec_plugin.models import laplace_rans
from numcodec_plugin.models.entropy_coding import (
    LaplaceDecoder,
    LaplaceTableDecoder,
    decode_uniform,
    encode_laplace,
    encode_laplace_table,
    encode_uniform,
    laplace_scale,
    laplace_scale_index,
)

NO_PREDICTOR = 255
_HIGH_BITS = 15  # high parts stay within +-2**15, inside the coder's +-RESIDUAL_LIMIT alphabet


@dataclass(frozen=True)
class CodedSubbands:
    """The coded subbands: per (frame, band, subband) side information, and the two streams."""

    scale_index: np.ndarray  # (frames, bands, subbands, CONTEXTS) uint8: Laplace scale 2 ** ((i - 96) / 16)
    shift: np.ndarray  # (frames, bands, subbands) uint8: low bits coded uniformly
    predictor: np.ndarray  # (frames, bands, subbands) uint8: earlier band predicting this one, or NO_PREDICTOR
    weight: np.ndarray  # (frames, bands, subbands) int8: prediction weight in sixteenths
    high: bytes
    low: bytes


CONTEXTS = 3  # classes of a detail coefficient by the magnitude of its parent


def _contexts(index: int, coded: list[np.ndarray], shape: tuple[int, ...], wide: bool) -> np.ndarray:
    """(frames, bands, y, x) uint8 context class of each coefficient of subband ``index``, of ``shape``,
    from the subbands ``coded`` before it.

    A detail coefficient's magnitude follows its parent's (same orientation, one level coarser, at
    half the resolution): classes are the terciles (``np.quantile``'s), per frame and band, of the
    upsampled parent magnitudes; with ``wide``, of the parent's 3 x 3 neighbourhood sum of magnitudes
    plus nine times those of the coefficients at the same place in the level's orientations coded
    before (HL for LH, HL and LH for HH), integers throughout (compiled:
    :func:`numcodec_plugin.kernels.context_classes`). Where neither exists (LL; HL of the coarsest
    level) every coefficient is class 0.
    """
    parent = coded[index - 3] if index >= 4 else None
    siblings = coded[1 + 3 * ((index - 1) // 3):index] if wide and index else []
    if (parent is None and not siblings) or not np.prod(shape):
        return np.zeros(shape, np.uint8)
    classes = kernels.context_classes(None if parent is None else _planes(parent), [_planes(s) for s in siblings],
                                       shape[-2], shape[-1], wide)
    return classes.reshape(shape)


def _planes(band: np.ndarray, dtype: type = np.int32) -> np.ndarray:
    """A (frames, bands, y, x) subband (or its classes) as C-contiguous (frames * bands, y, x) planes."""
    return np.ascontiguousarray(band.reshape((int(np.prod(band.shape[:-2])),) + band.shape[-2:]), dtype)


def _scale_index(band: np.ndarray, classes: np.ndarray, zero_byte: bool = False) -> np.ndarray:
    """(frames, bands, CONTEXTS) byte indexes of the Laplace scales of one subband's high parts; with
    ``zero_byte``, 0 for the classes with no non-zero coefficient and at least 1 for the others."""
    sums, counts = kernels.class_magnitudes(_planes(band), _planes(classes, np.uint8), CONTEXTS)
    index = laplace_scale_index(sums / np.maximum(counts, 1))
    if zero_byte:
        index = np.where(sums > 0, np.maximum(index, 1), 0).astype(np.uint8)
    return index.reshape(band.shape[:2] + (CONTEXTS,))


def one_bits(index: int, coded: list[np.ndarray], band: np.ndarray) -> np.ndarray:
    """The bits a coefficient of subband ``index`` costs as +-1 beyond what it costs as 0: per coefficient
    of the int32 (frames, bands, y, x) ``band``, under the tabled law of its wide context class
    (from the subbands ``coded`` before it, as :func:`encode_subbands` classes it with
    ``tabled=True, wide_contexts=True``) and of the class's scale as ``band`` stands. The law's fixed
    point is the rANS coder's (:func:`numcodec_plugin.models.laplace_rans.frequencies`); v2's float
    laws differ from it by far less than a bit. An encoder weighs these bits against the distortion
    a +-1 saves (:func:`numcodec_plugin.transform_coding.encode`)."""
    classes = _contexts(index, coded, band.shape, True)
    scale_index = _scale_index(band, classes)
    return laplace_rans.one_bits()[_coefficient_index(scale_index, classes)]


def _coefficient_index(index: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Per-coefficient Laplace scale bytes from (frames, bands, CONTEXTS) bytes and the context classes."""
    table = np.ascontiguousarray(index.reshape(-1, CONTEXTS), np.uint8)
    return kernels.class_entries(table, _planes(classes, np.uint8)).reshape(classes.shape)


def _split(band: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(shift, high, low) of one integer subband: int32 high parts that fit the Laplace coder, low bits
    that go uniform (None where every shift is 0, the usual case: the subband is its own high part)."""
    widest = kernels.largest_magnitudes(_planes(band, band.dtype)).reshape(band.shape[:2])
    shift = np.maximum(0, np.ceil(np.log2(widest + 1)).astype(np.int64) - _HIGH_BITS).astype(np.uint8)
    if not shift.any():
        return shift, band.astype(np.int32, copy=False), None
    high = band >> shift[..., None, None]
    return shift, high.astype(np.int32), band - (high << shift[..., None, None])


def _low_sizes(shift: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The (frames, bands, y, x) alphabet size ``2 ** shift`` of each coefficient's low bits."""
    return np.broadcast_to((1 << shift.astype(np.int64))[..., None, None], shape)


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
    """Inverse of :func:`_predict`, band by band in order (``errors`` itself where no band is predicted)."""
    if (source == NO_PREDICTOR).all():
        return errors
    subband = errors.copy()
    for f, b in zip(*np.nonzero(source != NO_PREDICTOR)):
        p = int(source[f, b])
        if p >= b:
            raise EntropyModelMismatchError("coded subbands name a spectral predictor that is not an earlier band")
        subband[f, b] += (int(weight[f, b]) * subband[f, p] + 8) >> 4
    return subband


def encode_subbands(subbands: list[np.ndarray], predict: bool = True, tabled: bool = False,
                    wide_contexts: bool = False, rans: bool = False) -> CodedSubbands:
    """Code int64 ``subbands`` (the module docstring's steps; spectral prediction only if ``predict``).

    ``tabled`` codes the high parts with :func:`~numcodec_plugin.models.entropy_coding.encode_laplace_table`
    (one law per scale byte, no per-symbol floor over the whole alphabet) instead of
    :func:`~numcodec_plugin.models.entropy_coding.encode_laplace`; ``wide_contexts`` classes them by
    their parent's neighbourhood and their siblings too (:func:`_contexts`). ``klt-wavelet-v2`` uses
    both (about 26 and 1 points of its BD-rate against JPEG 2000 in the model card's development history), the
    error-bounded layer neither (its chunk formats predate them). ``rans`` (``klt-wavelet-v3``, with
    both) codes the same tabled laws with :mod:`numcodec_plugin.models.laplace_rans`: scale byte 0 marks
    a class of zeros, which costs nothing to decode."""
    shifts, highs, lows, scale_indexes, coefficient_indexes, sizes, sources, weights = [], [], [], [], [], [], [], []
    pieces = []
    for i, coefficients in enumerate(subbands):
        if predict:
            band, source, weight = _predict(coefficients)
        else:
            band = coefficients
            source = np.full(coefficients.shape[:2], NO_PREDICTOR, np.uint8)
            weight = np.zeros(coefficients.shape[:2], np.int8)
        sources.append(source)
        weights.append(weight)
        shift, high, low = _split(band)
        classes = _contexts(i, highs, high.shape, wide_contexts)
        index = _scale_index(high, classes, zero_byte=rans)
        shifts.append(shift)
        scale_indexes.append(index)
        highs.append(high)
        if rans:
            pieces.append((_planes(high), _planes(classes, np.uint8), index.reshape(-1, CONTEXTS)))
        else:
            coefficient_indexes.append(_coefficient_index(index, classes))
        if low is not None:
            size = _low_sizes(shift, band.shape)
            lows.append(low[size > 1])
            sizes.append(size[size > 1])
    if rans:
        high_stream = laplace_rans.encode(pieces)
    elif tabled:
        high_stream = encode_laplace_table(list(zip(highs, coefficient_indexes)))
    else:
        high_stream = encode_laplace(np.concatenate([h.reshape(-1) for h in highs]),
                                     np.concatenate([laplace_scale(i).reshape(-1) for i in coefficient_indexes]))
    return CodedSubbands(np.stack(scale_indexes, axis=-2), np.stack(shifts, axis=-1), np.stack(sources, axis=-1),
                         np.stack(weights, axis=-1), high_stream,
                         encode_uniform(np.concatenate(lows), np.concatenate(sizes)) if lows else b"")


def decode_subbands(coded: CodedSubbands, shapes: list[tuple[int, int, int, int]], tabled: bool = False,
                    wide_contexts: bool = False, rans: bool = False) -> list[np.ndarray]:
    """Inverse of :func:`encode_subbands` (with the same options), for subbands of the (frames, bands, y, x)
    ``shapes``: int32 (int64 where a subband has low bits)."""
    expected = shapes[0][:2] + (len(shapes),)
    if any(a.shape != expected for a in (coded.shift, coded.predictor, coded.weight)) or \
            coded.scale_index.shape != expected + (CONTEXTS,):
        raise EntropyModelMismatchError("coded subbands do not match the frames, bands and subbands expected")
    high_parts: list[np.ndarray] = []
    if rans:
        rans_decoder = laplace_rans.Decoder(coded.high)
        for i, shape in enumerate(shapes):
            classes = _contexts(i, high_parts, shape, wide_contexts)
            table = np.ascontiguousarray(coded.scale_index[..., i, :]).reshape(-1, CONTEXTS)
            high_parts.append(rans_decoder.decode(_planes(classes, np.uint8), table).reshape(shape))
        rans_decoder.finish()
    else:
        decoder = LaplaceTableDecoder(coded.high) if tabled else LaplaceDecoder(coded.high)
        for i, shape in enumerate(shapes):
            index = _coefficient_index(coded.scale_index[..., i, :], _contexts(i, high_parts, shape, wide_contexts))
            high_parts.append(decoder.decode(index if tabled else laplace_scale(index)).astype(np.int32))
    sizes = {i: _low_sizes(coded.shift[..., i], s) for i, s in enumerate(shapes) if coded.shift[..., i].any()}
    coded_low = [size[size > 1] for size in sizes.values()]
    lows = decode_uniform(coded.low, np.concatenate(coded_low)).astype(np.int64) if coded_low else np.zeros(0, np.int64)
    subbands, low_offset = [], 0
    for i, high in enumerate(high_parts):
        band = high
        if i in sizes:
            band = high.astype(np.int64) << coded.shift[..., i].astype(np.int64)[..., None, None]
            wide = sizes[i] > 1
            band[wide] += lows[low_offset:low_offset + int(wide.sum())]
            low_offset += int(wide.sum())
        subbands.append(_unpredict(band, coded.predictor[..., i], coded.weight[..., i]))
    return subbands
