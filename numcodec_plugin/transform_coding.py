"""A classical transform coder for one tile: spectral KLT, 9/7 wavelet, dead-zone quantiser, subband coding.

Where the bundled network reconstructs a tile worse than a well-tuned classical coder does at the
same rate, the engine can code that chunk with this coder instead (the cheaper ``lambda * D + R``
wins, :func:`numcodec_plugin.engine.encode_many`). Per tile, the encoder:

1. takes the tile's band means (whole DN) and its spectral principal components (the KLT of its
   pixels), the basis stored as int8 rows (``BASIS_SCALE`` steps); the components are the inverse of
   that stored basis applied to the centred bands;
2. transforms each component with ``LEVELS`` levels of the irreversible 9/7 wavelet
   (:mod:`numcodec_plugin.wavelet`; it compacts smooth imagery better than the 5/3, docs/model-card.md);
3. quantises each subband with a dead-zone quantiser of step ``s = max(1, step / norm)`` (``norm``: the
   L2 norm of the subband's synthesis basis functions, so every subband adds the same distortion per
   unit of quantiser step): ``q = sign(c) floor(|c| / s + ROUNDING)``;
4. codes the quantised subbands with :mod:`numcodec_plugin.subband_coding` (Laplace laws per context
   class (wide contexts), tabled, no spectral prediction: the KLT already decorrelated the bands),
   with constriction (``klt-wavelet-v2``) or the compiled rANS coder (``rans``: ``klt-wavelet-v3``,
   which skips the classes of zeros; the same laws, so the same rate within a few bytes).

The decoder dequantises to ``sign(q) (|q| + RECONSTRUCTION) s``, inverts the wavelet and applies the
basis and means, all in float64 one element-wise operation at a time in a fixed order: every machine
computes the same values. The loops over elements are compiled (:mod:`numcodec_plugin.kernels`).

Only the components up to the last one with a non-zero coefficient are coded (at low rates the
weak ones quantise to nothing, and their basis rows would be most of the stream).

Stream layout (little-endian): step index u8 (step ``2 ** (i / 8)`` DN) | bands u8 | coded components
u8 (k) | means: zigzag varint * bands | basis i8*k*bands (rows: components) | varint length + raw
deflate (side information of the subbands: scale indexes, shifts) | varint length + high stream |
low stream (the rest).
"""

from __future__ import annotations

import struct
import zlib
from functools import lru_cache

import numpy as np

from numcodec_plugin import kernels, wavelet
from numcodec_plugin.bitstream import Reader, signed_varint, varint
from numcodec_plugin.errors import BitstreamError
from numcodec_plugin.lowpass import DN_PER_REFLECTANCE_SQUARED
from numcodec_plugin.subband_coding import CONTEXTS, NO_PREDICTOR, CodedSubbands, decode_subbands, encode_subbands, one_bits

LEVELS = 5
#: a basis entry is stored as round(v * BASIS_SCALE) in int8
BASIS_SCALE = 127
#: the quantiser's rounding offset (0.5 would be a uniform quantiser; lower widens the zero bin)
ROUNDING = 0.3
#: where in its bin a non-zero coefficient is reconstructed, in steps from the bin's low end's multiple
RECONSTRUCTION = 0.1
STEP_INDEX_BASE = 2 ** (1 / 8)
_HEADER = struct.Struct("<BBB")


def step_size(index: int) -> float:
    """The quantiser step (DN) a stored step index stands for: ``2 ** (index / 8)``."""
    return float(STEP_INDEX_BASE ** index)


def step_index(step: float) -> int:
    """The stored index (0..255) of the step nearest ``step`` DN on the index's geometric grid."""
    return int(np.clip(np.rint(np.log(max(step, 1.0)) / np.log(STEP_INDEX_BASE)), 0, 255))


@lru_cache(maxsize=16)
def subband_norms(height: int, width: int) -> tuple[float, ...]:
    """The L2 norm of one basis function of each subband of :func:`wavelet.forward` at ``LEVELS`` levels:
    the image a unit coefficient at the subband's centre synthesises."""
    shapes = wavelet.subband_shapes(height, width, LEVELS)
    norms = []
    for i, (h, w) in enumerate(shapes):
        subbands = [np.zeros((1, 1) + shape) for shape in shapes]
        subbands[i][0, 0, h // 2, w // 2] = 1.0
        norms.append(float(np.sqrt((wavelet.inverse(subbands, LEVELS, irreversible=True) ** 2).sum())))
    return tuple(norms)


def _subband_steps(step: float, height: int, width: int) -> list[float]:
    return [max(1.0, step / norm) for norm in subband_norms(height, width)]


def _basis(dn: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Whole-DN band means and the int8 KLT basis (rows: components, strongest first) of a tile."""
    pixels = dn.reshape(dn.shape[0], -1).astype(np.float64)
    means = np.rint(pixels.mean(axis=1)).astype(np.int64)
    eigenvalues, eigenvectors = np.linalg.eigh(np.cov(pixels))
    basis = eigenvectors[:, np.argsort(eigenvalues)[::-1]].T
    return means, np.clip(np.rint(basis * BASIS_SCALE), -127, 127).astype(np.int8)


def _synthesise(components: np.ndarray, means: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """Bands = stored basis (columns: components) applied to the components, plus the means: float64,
    one multiply and one add per component in order, the same bits on any machine; stored as float32."""
    weights = np.ascontiguousarray(basis, np.float64) / BASIS_SCALE  # (components, bands)
    return kernels.synthesise(np.ascontiguousarray(components), np.ascontiguousarray(means, np.int64), weights)


def encode(dn: np.ndarray, step: float, rans: bool = False,
           rate_lambda: float | None = None) -> tuple[bytes, list[np.ndarray], np.ndarray]:
    """Code a (bands, h, w) tile of DN (float) at quantiser step ``step`` DN (subbands by the rANS coder if
    ``rans``); returns the stream, the quantised subbands (their symbols make the tile's checksum) and the
    decoder's reconstruction (float32 DN). With ``rate_lambda`` (the ``lambda`` of ``lambda * D + R``,
    D the mean squared error in reflectance, R in bits per value), the quantiser decides its +-1s by
    rate and distortion (:func:`_quantise`)."""
    bands, height, width = dn.shape
    means, basis = _basis(dn)
    index = step_index(step)
    centred = dn.reshape(bands, -1).astype(np.float64) - means[:, None]
    try:
        components = np.linalg.inv(basis.astype(np.float64).T / BASIS_SCALE) @ centred  # encoder only: any rounding will do
    except np.linalg.LinAlgError:  # a degenerate stored basis (e.g. constant bands): fall back to the identity
        basis = (np.eye(bands) * BASIS_SCALE).astype(np.int8)
        components = centred
    subbands = wavelet.forward(components.reshape(1, bands, height, width), LEVELS, irreversible=True)
    symbols = _quantise(subbands, step_size(index), rate_lambda, (height, width))
    nonzero = np.flatnonzero(np.any([np.any(q[0] != 0, axis=(-2, -1)) for q in symbols], axis=0))
    kept = int(nonzero[-1]) + 1 if nonzero.size else 1
    symbols = [q[:, :kept] for q in symbols]
    coded = encode_subbands(symbols, predict=False, tabled=True, wide_contexts=True, rans=rans)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate: no zlib header and checksum (the chunk has a CRC)
    side = deflate.compress(coded.scale_index.tobytes() + coded.shift.tobytes()) + deflate.flush()
    data = (_HEADER.pack(index, bands, kept) + b"".join(signed_varint(int(m)) for m in means) + basis[:kept].tobytes()
            + varint(len(side)) + side + varint(len(coded.high)) + coded.high + coded.low)
    reconstruction = _reconstruct(symbols, index, means, basis[:kept], (height, width))
    return data, symbols, reconstruction


def _quantise(subbands: list[np.ndarray], step: float, rate_lambda: float | None,
              tile_shape: tuple[int, int]) -> list[np.ndarray]:
    """The int32 symbols of the (1, components, y, x) ``subbands`` at quantiser step ``step``: the dead-zone
    quantiser, then, with ``rate_lambda``, rate-distortion decisions in coding order.

    A coefficient ``c`` quantised to +-1 is reconstructed at ``(1 + RECONSTRUCTION) s``, 0 at 0; the +-1
    saves ``norm**2 (c**2 - (|c| - (1 + RECONSTRUCTION) s)**2)`` of squared error in DN (``norm``: the
    subband's synthesis norm; the KLT basis is orthonormal to the basis's int8 precision) and costs
    :func:`numcodec_plugin.subband_coding.one_bits` more bits than a 0 under its context class's law.
    It stays where ``rate_lambda`` times the saving (in reflectance squared) outweighs those bits, and
    becomes 0 elsewhere: mostly where its neighbours and parent are small, so that a 0 is cheap. The
    decoder is the same; at equal PSNR the stream is smaller."""
    norms = subband_norms(*tile_shape)
    symbols: list[np.ndarray] = []
    for i, (coefficients, s) in enumerate(zip(subbands, _subband_steps(step, *tile_shape))):
        q = kernels.quantise(coefficients[0], s, ROUNDING)[None]
        if rate_lambda is not None and i:
            magnitude = np.abs(coefficients)
            saved = norms[i] ** 2 * (magnitude ** 2 - (magnitude - (1 + RECONSTRUCTION) * s) ** 2)
            costly = (np.abs(q) == 1) & (rate_lambda * saved / DN_PER_REFLECTANCE_SQUARED < one_bits(i, symbols, q))
            q[costly] = 0
        symbols.append(q)
    return symbols


def _reconstruct(symbols: list[np.ndarray], index: int, means: np.ndarray, basis: np.ndarray,
                 tile_shape: tuple[int, int]) -> np.ndarray:
    """The tile (float32 DN) of the quantised subbands of the kept components, their basis rows and the means."""
    components = wavelet.inverse([q[0] for q in symbols], LEVELS, irreversible=True,
                                 steps=_subband_steps(step_size(index), *tile_shape), reconstruction=RECONSTRUCTION)
    return _synthesise(components, means, basis)


def decode(data: bytes, bands: int, tile_shape: tuple[int, int], rans: bool = False) -> tuple[np.ndarray, list[np.ndarray]]:
    """Inverse of :func:`encode` (with the same ``rans``): the (bands, h, w) float32 reconstruction (DN) and
    the quantised subbands."""
    r = Reader(memoryview(data))
    index, stored_bands, kept = r.unpack(_HEADER, "transform-coded tile header")
    if stored_bands != bands or not 1 <= kept <= bands:
        raise BitstreamError(f"corrupt chunk: transform-coded tile of {stored_bands} bands ({kept} coded) "
                             f"in a {bands}-band chunk")
    means = np.array([r.signed_varint("transform-coded tile means") for _ in range(bands)], np.int64)
    basis = np.frombuffer(r.take(kept * bands, "transform-coded tile basis"), np.int8).reshape(kept, bands)
    try:
        side = zlib.decompress(r.take(r.varint("transform-coded side information"), "transform-coded side information"), -15)
    except zlib.error as exc:
        raise BitstreamError(f"corrupt chunk: transform-coded tile's side information ({exc})") from exc
    high = bytes(r.take(r.varint("transform-coded stream"), "transform-coded stream"))
    low = bytes(r.take(len(data) - r.pos, "transform-coded low bits"))
    shape = (1, kept, 1 + 3 * LEVELS)
    if len(side) != int(np.prod(shape)) * (CONTEXTS + 1):
        raise BitstreamError("corrupt chunk: transform-coded tile's side information has the wrong size")
    scale_index = np.frombuffer(side, np.uint8, int(np.prod(shape)) * CONTEXTS).reshape(shape + (CONTEXTS,))
    shift = np.frombuffer(side, np.uint8, offset=int(np.prod(shape)) * CONTEXTS).reshape(shape)
    coded = CodedSubbands(scale_index, shift, np.full(shape, NO_PREDICTOR, np.uint8), np.zeros(shape, np.int8), high, low)
    symbols = decode_subbands(coded, [(1, kept) + s for s in wavelet.subband_shapes(*tile_shape, LEVELS)], tabled=True,
                             wide_contexts=True, rans=rans)
    return _reconstruct(symbols, index, means, basis, tile_shape), symbols
