"""Entropy coding of quantised symbols with ``constriction`` (memory-safe ANS, written in Rust).

CompressAI's C++ range decoder does not bounds-check its input: a corrupt stream can read past
the buffer and crash the process. constriction decodes any byte string without undefined
behaviour (garbage in, garbage symbols out, or an error we turn into :class:`BitstreamError`),
and the engine's symbol checksum then reports the corruption. The probability models:

* latent ``y``: a Gaussian per element, mean 0 (means are subtracted before rounding) and the
  hyperprior's scale, discretised to integer bins over ``[-LATENT_LIMIT, LATENT_LIMIT]``;
* hyper-latent ``z``: CompressAI's factorised ``EntropyBottleneck`` density, one categorical
  table per channel, taken from its integer CDF tables (built on CPU by ``update()``);
* residuals of the error-bounded layer: zero-mean discretised Laplace laws, plus uniform low bits.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import constriction
import numpy as np

from numcodec_plugin.errors import BitstreamError

#: latent symbols are clipped to +-LATENT_LIMIT (far beyond the values the models produce); every
#: symbol of the alphabet keeps a probability of at least 2**-24, so a narrow alphabet costs fewer bits
LATENT_LIMIT = 1 << 12
#: residual symbols of the error-bounded layer span +-RESIDUAL_LIMIT (uint16 differences fit)
RESIDUAL_LIMIT = 1 << 16
SCALE_BOUND = 0.11  # CompressAI's GaussianConditional lower bound on scales

_GAUSSIAN = constriction.stream.model.QuantizedGaussian(-LATENT_LIMIT, LATENT_LIMIT)
_LAPLACE = constriction.stream.model.QuantizedLaplace(-RESIDUAL_LIMIT, RESIDUAL_LIMIT)
_CATEGORICAL = constriction.stream.model.Categorical(perfect=False)
_UNIFORM = constriction.stream.model.Uniform()


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


def encode_gaussian(symbols: np.ndarray, scales: np.ndarray) -> bytes:
    """Code integer ``symbols`` (already clipped by :func:`clip_symbols`) under N(0, scale)."""
    return _encode(symbols, _GAUSSIAN, np.zeros(symbols.size), _bounded(scales))


def decode_gaussian(data: bytes, scales: np.ndarray) -> np.ndarray:
    """Inverse of :func:`encode_gaussian`; int32 symbols shaped like ``scales``."""
    return _decode(data, _GAUSSIAN, np.zeros(scales.size), _bounded(scales)).reshape(scales.shape)


def laplace_scale_index(mean_abs: np.ndarray) -> np.ndarray:
    """The byte that stores a Laplace scale: ``i = round(16 log2(mean |symbol|)) + 96``, clipped to 0..255."""
    return np.clip(np.rint(16 * np.log2(np.asarray(mean_abs, np.float64) + 1 / 64)) + 96, 0, 255).astype(np.uint8)


def laplace_scale(index: np.ndarray) -> np.ndarray:
    """The Laplace scale a stored byte stands for (inverse of :func:`laplace_scale_index`), at least 1/64."""
    return np.maximum(2.0 ** ((np.asarray(index, np.float64) - 96) / 16), 1 / 64)


def encode_laplace(symbols: np.ndarray, scales: np.ndarray) -> bytes:
    """Code integer symbols in +-RESIDUAL_LIMIT under zero-mean discretised Laplace laws of ``scales``."""
    return _encode(symbols, _LAPLACE, np.zeros(symbols.size), scales.reshape(-1).astype(np.float64))


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

    def clip(self, symbols: np.ndarray) -> np.ndarray:
        """Clip (N, C, H, W) symbols into each channel's table range."""
        shape = (1, -1, 1, 1)
        return np.clip(np.rint(symbols), self.low.reshape(shape), self.high.reshape(shape)).astype(np.int32)

    def _rows(self, shape: tuple[int, ...]) -> np.ndarray:
        channels = np.broadcast_to(np.arange(shape[0])[:, None, None], shape).reshape(-1)
        return self.probabilities[channels]

    def encode(self, symbols: np.ndarray) -> bytes:
        """Code one tile's (C, H, W) clipped symbols."""
        return _encode(symbols - self.start, _CATEGORICAL, self._rows(symbols.shape))

    def decode(self, data: bytes, shape: tuple[int, int, int]) -> np.ndarray:
        return (_decode(data, _CATEGORICAL, self._rows(shape)) + self.start).reshape(shape).astype(np.int32)
