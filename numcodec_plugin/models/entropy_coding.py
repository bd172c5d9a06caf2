"""Entropy coding of quantised symbols with ``constriction`` (memory-safe ANS, written in Rust).

CompressAI's C++ range decoder does not bounds-check its input: a corrupt stream can read past
the buffer and crash the process. constriction decodes any byte string without undefined
behaviour (garbage in, garbage symbols out, or an error we turn into :class:`BitstreamError`),
and the engine's symbol checksum then reports the corruption. The probability models:

* latent ``y``: a Gaussian per element, mean 0 (means are subtracted before rounding) and the
  hyperprior's scale. Format 4 (:class:`ScaleTable`) rounds each scale up to one of 64 fixed
  scales and codes the symbols of each table scale together against one precomputed categorical
  law, three times faster to decode (``benchmarks/codec_speed.py``'s stage table) than formats 1-3,
  which discretise a Gaussian per element over
  ``[-LATENT_LIMIT, LATENT_LIMIT]`` (:func:`decode_gaussian`, kept to read such chunks);
* hyper-latent ``z``: CompressAI's factorised ``EntropyBottleneck`` density, one categorical
  table per channel, taken from its integer CDF tables (built on CPU by ``update()``), each
  channel's symbols coded against its table in one call;
* residuals of the error-bounded layer: zero-mean discretised Laplace laws, plus uniform low bits;
* subbands of ``klt-wavelet-v2``: the same Laplace laws, tabled: one categorical law per scale byte,
  the symbols of each byte coded together (:func:`encode_laplace_table`), as format 4 does for latents
  (``klt-wavelet-v3`` codes the same laws with the compiled rANS coder of :mod:`numcodec_plugin.models.laplace_rans`).
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import constriction
import numpy as np

from numcodec_plugin.kernels import group_by_entry, grouped_bins, grouped_values
from numcodec_plugin.errors import BitstreamError

#: latent symbols are clipped to +-LATENT_LIMIT (far beyond the values the models produce); every
#: symbol of the alphabet keeps a probability of at least 2**-24, so a narrow alphabet costs fewer bits
LATENT_LIMIT = 1 << 12
#: residual symbols of the error-bounded layer span +-RESIDUAL_LIMIT (uint16 differences fit)
RESIDUAL_LIMIT = 1 << 16
SCALE_BOUND = 0.11  # CompressAI's GaussianConditional lower bound on scales

_GAUSSIAN = constriction.stream.model.QuantizedGaussian(-LATENT_LIMIT, LATENT_LIMIT)
_LAPLACE = constriction.stream.model.QuantizedLaplace(-RESIDUAL_LIMIT, RESIDUAL_LIMIT)
_UNIFORM = constriction.stream.model.Uniform()
_PRECISION_BITS = 24  # constriction's default fixed-point precision of model probabilities


def _encode(symbols: np.ndarray, model, *params: np.ndarray) -> bytes:
    coder = constriction.stream.stack.AnsCoder()
    coder.encode_reverse(symbols.reshape(-1).astype(np.int32), model, *params)
    return coder.get_compressed().tobytes()


def _decoder(data: bytes) -> constriction.stream.stack.AnsCoder:
    with _stream_errors():
        words = np.frombuffer(data + b"\0" * (-len(data) % 4), dtype="<u4").astype(np.uint32)
        return constriction.stream.stack.AnsCoder(words)


def _decode(data: bytes, model, *params: np.ndarray) -> np.ndarray:
    """Decode with ``model``; any failure on a damaged stream becomes a :class:`BitstreamError`."""
    coder = _decoder(data)
    with _stream_errors():
        return coder.decode(model, *params)


@contextlib.contextmanager
def _stream_errors() -> Iterator[None]:
    try:
        yield
    except BaseException as exc:  # constriction may panic (pyo3's PanicException is a BaseException)
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        raise BitstreamError(f"corrupt entropy-coded stream ({type(exc).__name__}: {exc})") from exc


def clip_symbols(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), -LATENT_LIMIT, LATENT_LIMIT).astype(np.int32)


def _bounded(scales: np.ndarray) -> np.ndarray:
    return np.maximum(scales.reshape(-1).astype(np.float64), SCALE_BOUND)


def encode_latent(symbols: np.ndarray, scales: np.ndarray) -> bytes:
    """Code integer latent ``symbols`` (clipped by :func:`clip_symbols`) under N(0, scale), as format 4 does."""
    return ScaleTable.standard().encode(symbols, scales)


def decode_latent(data: bytes, scales: np.ndarray, scale_table: bool) -> np.ndarray:
    """int32 latent symbols shaped like ``scales``, from a format 4 stream (``scale_table``) or an older one."""
    return ScaleTable.standard().decode(data, scales) if scale_table else decode_gaussian(data, scales)


def decode_gaussian(data: bytes, scales: np.ndarray) -> np.ndarray:
    """The latent symbols of a format 1-3 stream: zero-mean Gaussians of ``scales`` (at least
    :data:`SCALE_BOUND`), discretised per element; int32 symbols shaped like ``scales``."""
    return _decode(data, _GAUSSIAN, np.zeros(scales.size), _bounded(scales)).reshape(scales.shape)


#: the fixed scales of :class:`ScaleTable`: SCALE_TABLE_SIZE values from SCALE_BOUND to SCALE_TABLE_TOP, geometric
SCALE_TABLE_SIZE = 64
SCALE_TABLE_TOP = 256.0
#: each table scale s codes symbols in [-ceil(SCALE_TABLE_REACH * s), +ceil(...)]; the rest escape
SCALE_TABLE_REACH = 12.0
#: probability of the escape symbol (about 16 bits), after which the value follows under a uniform law
ESCAPE_PROBABILITY = 2.0 ** -16


@dataclass(frozen=True, eq=False)
class ScaleTable:
    """Latent coding of format 4: zero-mean Gaussians against a fixed table of scales.

    Each element's scale is rounded up to the next table scale (CompressAI's convention; on
    synthetic Gaussian latents the table's ratio of 1.13 costs about 0.2% of the rate against exact
    scales, and on real chunks the narrow alphabets more than make up for it). The symbols whose scale rounds to the
    same table entry are coded together, in raster order, against that entry's categorical law:
    the Gaussian's mass in each integer bin of ``[-radius, radius]`` and an escape symbol. Table
    entries go from the smallest scale up; escaped values follow, in the same order, under a
    uniform law over ``[-LATENT_LIMIT, LATENT_LIMIT]``. One call per table entry instead of one
    discretised Gaussian per element is what makes it fast. The laws are computed from
    ``math.erfc`` in float64 and quantised by constriction to 24-bit probabilities, so a last-bit
    difference of ``erfc`` between platforms changes a table only if it crosses a rounding step.
    """

    scales: np.ndarray  # (SCALE_TABLE_SIZE,) float64, ascending
    radii: np.ndarray  # (SCALE_TABLE_SIZE,) int32
    laws: tuple  # constriction Categorical models, one per scale

    @classmethod
    @functools.cache
    def standard(cls) -> ScaleTable:
        """The table of format 4 (built once per process)."""
        ratio = (SCALE_TABLE_TOP / SCALE_BOUND) ** (1.0 / (SCALE_TABLE_SIZE - 1))
        scales = SCALE_BOUND * ratio ** np.arange(SCALE_TABLE_SIZE, dtype=np.float64)
        radii = np.ceil(SCALE_TABLE_REACH * scales).astype(np.int32)
        return cls(scales, radii, tuple(_escaping_law(s, int(r)) for s, r in zip(scales, radii)))

    def entries(self, scales: np.ndarray) -> np.ndarray:
        """Index (uint8) of the table scale each of ``scales`` codes with: the smallest table scale at
        least as large, the top one at most. A logarithm guesses it and one exact comparison each way
        settles it, so the result is ``searchsorted``'s on every platform (tested), without its binary
        search per element."""
        values = np.fmax(scales.reshape(-1), SCALE_BOUND).astype(scales.dtype)  # NaN becomes the bound too
        top = len(self.scales) - 1
        per_step = 1.0 / math.log(self.scales[1] / self.scales[0])
        guess = np.ceil(np.log(values / values.dtype.type(self.scales[0])) * values.dtype.type(per_step))
        guess = np.clip(guess, 0, top).astype(np.int16)
        guess += (guess < top) & (self.scales[guess] < values)
        guess -= (guess > 0) & (self.scales[guess - 1] >= values)
        return guess.astype(np.uint8)

    def bits(self, symbols: np.ndarray, scales: np.ndarray) -> np.ndarray:
        """About the bits :meth:`encode` spends on each of ``symbols`` (clipped) under ``scales`` (shaped
        alike): its information content under its entry's law, at most the coder's precision, and an
        escaped symbol's uniform code besides. What :mod:`numcodec_plugin.training.entropy_tables`
        chooses scale factors by."""
        entries = self.entries(scales).reshape(scales.shape).astype(np.int64)
        radius = self.radii[entries]
        escaped = np.abs(symbols) > radius
        index = np.where(escaped, 2 * radius + 1, symbols + radius)
        return self._information[entries, index] + escaped * math.log2(2 * LATENT_LIMIT + 1)

    @functools.cached_property
    def _information(self) -> np.ndarray:
        """(entries, widest alphabet) bits of each symbol of each entry's law (padded)."""
        table = np.full((len(self.scales), 2 * int(self.radii.max()) + 2), float(_PRECISION_BITS))
        for entry, (scale, radius) in enumerate(zip(self.scales, self.radii)):
            probabilities = _escaping_probabilities(float(scale), int(radius))
            table[entry, :len(probabilities)] = np.minimum(-np.log2(np.maximum(probabilities, 2.0 ** -_PRECISION_BITS)),
                                                           _PRECISION_BITS)
        return table

    def encode(self, symbols: np.ndarray, scales: np.ndarray) -> bytes:
        """Code integer ``symbols`` (clipped by :func:`clip_symbols`) under N(0, scale), scales shaped alike."""
        coder = constriction.stream.stack.AnsCoder()
        _push_grouped(coder, symbols.reshape(-1), self.entries(scales), self.radii, self.laws.__getitem__, LATENT_LIMIT)
        return coder.get_compressed().tobytes()

    def decode(self, data: bytes, scales: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`encode`: int32 symbols shaped like ``scales``."""
        coder = _decoder(data)
        return _pop_grouped(coder, self.entries(scales), self.radii, self.laws.__getitem__, LATENT_LIMIT).reshape(scales.shape)


def _grouped(entries: np.ndarray, radii: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The raster positions of uint8 ``entries`` sorted by entry (stable) and the count of each entry
    of the table of ``radii`` (a compiled counting sort: :func:`numcodec_plugin.kernels.group_by_entry`)."""
    order, counts = group_by_entry(np.ascontiguousarray(entries, np.uint8))
    if counts[len(radii):].any():
        raise ValueError(f"entries beyond the {len(radii)} of the table")
    return order, counts[:len(radii)]


def _push_grouped(coder: constriction.stream.stack.AnsCoder, values: np.ndarray, entries: np.ndarray,
                  radii: np.ndarray, law: Callable[[int], object], limit: int) -> None:
    """Push integer ``values`` onto the ANS stack ``coder``, each under the categorical ``law(entry)`` of its
    ``entries`` element (uint8) over ``[-radius, radius]`` of that entry, and an escape symbol.

    :func:`_pop_grouped` reads them back in this order: entry by entry from the smallest up, in raster
    order within one (one coder call per entry, which is what makes it fast); then the escaped values
    under a uniform law over ``[-limit, limit]``."""
    order, counts = _grouped(entries, radii)
    indices, escaped = grouped_bins(np.ascontiguousarray(values, np.int64), order, counts, radii)
    if escaped.size:
        outliers = escaped + limit
        coder.encode_reverse(outliers.astype(np.int32), _UNIFORM, np.full(outliers.size, 2 * limit + 1, np.int32))
    ends = np.cumsum(counts)
    for entry in reversed(np.flatnonzero(counts)):
        coder.encode_reverse(indices[ends[entry] - counts[entry]:ends[entry]], law(int(entry)))


def _pop_grouped(coder: constriction.stream.stack.AnsCoder, entries: np.ndarray, radii: np.ndarray,
                 law: Callable[[int], object], limit: int) -> np.ndarray:
    """Inverse of :func:`_push_grouped`: the int32 values of ``entries`` (flat), in raster order."""
    order, counts = _grouped(entries, radii)
    with _stream_errors():
        pieces = [coder.decode(law(int(entry)), int(counts[entry])) for entry in np.flatnonzero(counts)]
        indices = np.concatenate(pieces).astype(np.int32) if pieces else np.zeros(0, np.int32)
        symbols, escaped = grouped_values(indices, counts, radii, order)
        if escaped.size:
            sizes = np.full(escaped.size, 2 * limit + 1, np.int32)
            symbols[escaped] = coder.decode(_UNIFORM, sizes).astype(np.int64) - limit
    return symbols


def _escaping_probabilities(scale: float, radius: int) -> np.ndarray:
    """Probabilities of bins -radius..radius of N(0, scale), then of the escape symbol."""
    edges = (np.arange(-radius, radius + 2, dtype=np.float64) - 0.5) / (scale * math.sqrt(2.0))
    tail = np.array([0.5 * math.erfc(e) for e in edges])  # P(X > edge), exact in the far tails
    probabilities = np.append(np.maximum(tail[:-1] - tail[1:], 0.0) * (1 - ESCAPE_PROBABILITY), ESCAPE_PROBABILITY)
    return probabilities / probabilities.sum()


def _escaping_law(scale: float, radius: int):
    """Categorical law over bins -radius..radius of N(0, scale), then the escape symbol."""
    return constriction.stream.model.Categorical(_escaping_probabilities(scale, radius), perfect=False)


def laplace_scale_index(mean_abs: np.ndarray) -> np.ndarray:
    """The byte that stores a Laplace scale: ``i = round(16 log2(mean |symbol|)) + 96``, clipped to 0..255."""
    return np.clip(np.rint(16 * np.log2(np.asarray(mean_abs, np.float64) + 1 / 64)) + 96, 0, 255).astype(np.uint8)


def laplace_scale(index: np.ndarray) -> np.ndarray:
    """The Laplace scale a stored byte stands for (inverse of :func:`laplace_scale_index`), at least 1/64."""
    return np.maximum(2.0 ** ((np.asarray(index, np.float64) - 96) / 16), 1 / 64)


def encode_laplace(symbols: np.ndarray, scales: np.ndarray) -> bytes:
    """Code integer symbols in +-RESIDUAL_LIMIT under zero-mean discretised Laplace laws of ``scales``."""
    return _encode(symbols, _LAPLACE, np.zeros(symbols.size), scales.reshape(-1).astype(np.float64))


def encode_laplace_rows(symbols: np.ndarray, scale_index: np.ndarray) -> bytes:
    """Code (rows, ...) integer ``symbols`` under the Laplace scale of each row's stored byte."""
    scales = np.broadcast_to(laplace_scale(scale_index).reshape((-1,) + (1,) * (symbols.ndim - 1)), symbols.shape)
    return encode_laplace(symbols, np.ascontiguousarray(scales))


def decode_laplace_rows(data: bytes, scale_index: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of :func:`encode_laplace_rows`: int32 symbols of ``shape``."""
    scales = np.broadcast_to(laplace_scale(scale_index).reshape((-1,) + (1,) * (len(shape) - 1)), shape)
    return LaplaceDecoder(data).decode(np.ascontiguousarray(scales))


def laplace_bits(symbols: np.ndarray, scale_index: np.ndarray) -> float:
    """About the bits :func:`encode_laplace` spends on (bands, ...) integer ``symbols`` with one stored
    scale byte per band: their information content under the discretised Laplace laws
    (P(0) = 1 - e^(-1/2b), P(k) = e^(-(|k|-1/2)/b) (1 - e^(-1/b)) / 2), at most the coder's
    probability precision per symbol, plus what the alphabet's floor of 2^-24 per symbol costs. The coded
    stream is a few bytes and under 1% longer (its 32-bit words, the probabilities' fixed point); the
    low-pass fit ranks its candidates with this and codes only the one it keeps."""
    nats_per_unit = (1 / laplace_scale(np.asarray(scale_index)))[:, None]
    magnitudes = np.abs(symbols).reshape(len(nats_per_unit), -1)
    bits_zero = -np.log2(-np.expm1(-0.5 * nats_per_unit))
    bits_one = -np.log2(-0.5 * np.expm1(-nats_per_unit)) + 0.5 * nats_per_unit / math.log(2)
    bits = np.where(magnitudes == 0, bits_zero, bits_one + (magnitudes - 1) * nats_per_unit / math.log(2))
    # The probability every other symbol of the +-RESIDUAL_LIMIT alphabet keeps is taken from the likely ones.
    leak = -math.log2(1 - 2 * RESIDUAL_LIMIT * 2.0 ** -_PRECISION_BITS)
    return float(np.minimum(bits, _PRECISION_BITS).sum() + leak * bits.size)


class LaplaceDecoder:
    """Decodes a stream of :func:`encode_laplace` piece by piece, in the order it was encoded, so the
    scales of a later piece may depend on the symbols of earlier ones (context modelling)."""

    def __init__(self, data: bytes) -> None:
        self._coder = _decoder(data)

    def decode(self, scales: np.ndarray) -> np.ndarray:
        """The next ``scales.size`` symbols, shaped like ``scales``."""
        with _stream_errors():
            symbols = self._coder.decode(_LAPLACE, np.zeros(scales.size), scales.reshape(-1).astype(np.float64))
        return symbols.reshape(scales.shape)


#: the tabled Laplace law of scale b spans [-ceil(LAPLACE_REACH * b), +ceil(...)] (at least +-1); the rest escape
LAPLACE_REACH = 16.0
LAPLACE_RADII = np.maximum(1, np.ceil(LAPLACE_REACH * laplace_scale(np.arange(256)))).astype(np.int32)


def _laplace_decay(index: int) -> float:
    """``exp(-1 / b)`` of the Laplace scale ``b`` of byte ``index``, rounded to 40 bits, so that a
    last-bit difference of ``math.exp`` between platforms cannot change a table (a test pins them)."""
    return round(math.exp(-1.0 / float(laplace_scale(index))) * 2.0 ** 40) / 2.0 ** 40


def laplace_table_probabilities(index: int) -> np.ndarray:
    """The probabilities of the tabled law of scale byte ``index``: the discretised Laplace of
    :func:`laplace_bits` (``d = exp(-1/b)``: P(0) = 1 - sqrt(d), P(+-k) = (1 - d) sqrt(d) d^(k-1) / 2)
    on ``[-radius, radius]``, then an escape symbol of probability ``ESCAPE_PROBABILITY``. Built from
    multiplications and one square root, exact in IEEE arithmetic, so every platform builds the same law."""
    decay, radius = _laplace_decay(index), int(LAPLACE_RADII[index])
    root = math.sqrt(decay)
    side = 0.5 * (1 - decay) * root * np.cumprod(np.concatenate([[1.0], np.full(radius - 1, decay)]))
    bins = np.concatenate([side[::-1], [1 - root], side]) * (1 - ESCAPE_PROBABILITY)
    return np.append(bins, ESCAPE_PROBABILITY)


@functools.lru_cache(maxsize=256)
def laplace_table_law(index: int):
    """The constriction law of :func:`laplace_table_probabilities` (``klt-wavelet-v2``'s subbands)."""
    return constriction.stream.model.Categorical(laplace_table_probabilities(index), perfect=False)


def encode_laplace_table(pieces: Sequence[tuple[np.ndarray, np.ndarray]]) -> bytes:
    """Code integer symbols in +-RESIDUAL_LIMIT under the tabled Laplace laws of their scale bytes.

    ``pieces`` are (symbols, uint8 scale bytes shaped alike) in the order a :class:`LaplaceTableDecoder`
    reads them, so a later piece's scales may depend on an earlier piece's symbols. Where
    :func:`encode_laplace` codes each symbol under its own law over the whole +-RESIDUAL_LIMIT
    alphabet (every symbol keeps at least 2^-24, which costs 0.011 bit per symbol, most of the rate
    of a coarsely quantised tile), each scale byte here has one law over a few scales' reach,
    coded for all of its symbols in one call."""
    coder = constriction.stream.stack.AnsCoder()
    for symbols, scale_index in reversed(pieces):
        _push_grouped(coder, symbols.reshape(-1), scale_index.reshape(-1), LAPLACE_RADII, laplace_table_law,
                      RESIDUAL_LIMIT)
    return coder.get_compressed().tobytes()


class LaplaceTableDecoder:
    """Decodes a stream of :func:`encode_laplace_table` piece by piece, in the order it was encoded."""

    def __init__(self, data: bytes) -> None:
        self._coder = _decoder(data)

    def decode(self, scale_index: np.ndarray) -> np.ndarray:
        """The next piece: int32 symbols shaped like its uint8 ``scale_index``."""
        return _pop_grouped(self._coder, scale_index.reshape(-1), LAPLACE_RADII, laplace_table_law,
                            RESIDUAL_LIMIT).reshape(scale_index.shape)


def encode_uniform(symbols: np.ndarray, sizes: np.ndarray) -> bytes:
    """Code symbols ``0 <= s < size`` (2 <= size < 2**24) under uniform laws."""
    return _encode(symbols, _UNIFORM, sizes.reshape(-1).astype(np.int32))


def decode_uniform(data: bytes, sizes: np.ndarray) -> np.ndarray:
    return _decode(data, _UNIFORM, sizes.reshape(-1).astype(np.int32)).reshape(sizes.shape)


@dataclass(frozen=True)
class CategoricalTables:
    """Per-channel probability tables of a factorised density over integer symbols from ``start``."""

    low: np.ndarray  # (C,) smallest symbol of each channel
    high: np.ndarray  # (C,) largest symbol of each channel
    start: int  # the common table starts at this symbol
    probabilities: np.ndarray  # (C, K) float64

    @classmethod
    def from_entropy_bottleneck(cls, bottleneck) -> "CategoricalTables":
        """Tables from CompressAI's integer CDFs (``_quantized_cdf``, ``_offset``, ``_cdf_length``)."""
        cdf = bottleneck._quantized_cdf.cpu().numpy().astype(np.int64)
        offset = bottleneck._offset.cpu().numpy().astype(np.int64)
        length = bottleneck._cdf_length.cpu().numpy().astype(np.int64) - 2  # drop the tail bin and the end
        low, high = offset, offset + length - 1
        start, width = int(low.min()), int((high - low.min()).max()) + 1
        table = np.zeros((len(cdf), width))
        for c in range(len(cdf)):
            table[c, low[c] - start: low[c] - start + length[c]] = np.diff(cdf[c, : length[c] + 1])
        table /= table.sum(axis=1, keepdims=True)
        return cls(low, high, start, table)

    def symbol_counts(self, symbols: np.ndarray) -> np.ndarray:
        """(C, K) how often each symbol of the table occurs in each channel of clipped (C, ...) ``symbols``."""
        return np.stack([np.bincount(channel.reshape(-1) - self.start, minlength=self.probabilities.shape[1])
                         for channel in symbols])

    @property
    def packed_size(self) -> int:
        """Entries of :meth:`packed`: each channel's table over its own range only."""
        return int((self.high - self.low + 1).sum())

    def packed(self, probabilities: np.ndarray) -> np.ndarray:
        """(C, K) ``probabilities`` on this table's layout as one vector, each channel's range in turn."""
        return np.concatenate([row[lo - self.start: hi - self.start + 1]
                               for row, lo, hi in zip(probabilities, self.low, self.high)])

    def with_packed(self, packed: np.ndarray) -> "CategoricalTables":
        """Tables on the same symbol ranges with the probabilities of a :meth:`packed` vector."""
        if len(packed) != self.packed_size:
            raise ValueError(f"{len(packed)} packed probabilities for tables of {self.packed_size}")
        table = np.zeros_like(self.probabilities)
        ends = np.cumsum(self.high - self.low + 1)
        for c, (row, lo) in enumerate(zip(np.split(np.asarray(packed, np.float64), ends[:-1]), self.low)):
            table[c, lo - self.start: lo - self.start + len(row)] = row
        table /= table.sum(axis=1, keepdims=True)
        return CategoricalTables(self.low, self.high, self.start, table)

    def clip(self, symbols: np.ndarray) -> np.ndarray:
        """Clip (N, C, H, W) symbols into each channel's table range."""
        shape = (1, -1, 1, 1)
        return np.clip(np.rint(symbols), self.low.reshape(shape), self.high.reshape(shape)).astype(np.int32)

    @functools.cached_property
    def _laws(self) -> tuple:
        """One constriction model per channel (quantised once, not once per symbol)."""
        return tuple(constriction.stream.model.Categorical(row, perfect=False) for row in self.probabilities)

    def encode(self, symbols: np.ndarray) -> bytes:
        """Code one tile's (C, H, W) clipped symbols, channel after channel."""
        coder = constriction.stream.stack.AnsCoder()
        for channel in reversed(range(symbols.shape[0])):
            coder.encode_reverse((symbols[channel] - self.start).reshape(-1).astype(np.int32), self._laws[channel])
        return coder.get_compressed().tobytes()

    def decode(self, data: bytes, shape: tuple[int, int, int]) -> np.ndarray:
        coder = _decoder(data)
        count = shape[1] * shape[2]
        with _stream_errors():
            channels = [coder.decode(self._laws[channel], count) for channel in range(shape[0])]
        return (np.stack(channels) + self.start).reshape(shape).astype(np.int32)
