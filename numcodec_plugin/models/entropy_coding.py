"""Entropy coding of quantised latents with ``constriction`` (memory-safe ANS, written in Rust).

CompressAI's C++ range decoder does not bounds-check its input: a corrupt stream can read past
the buffer and crash the process. constriction decodes any byte string without undefined
behaviour (garbage in, garbage symbols out), and the engine's symbol checksum then reports the
corruption. The probability models are the ones the network was trained with:

* the latent ``y``: a Gaussian per element, mean 0 (means are subtracted before rounding) and the
  hyperprior's scale, discretised to integer bins over ``[-SYMBOL_LIMIT, SYMBOL_LIMIT]``;
* the hyper-latent ``z``: CompressAI's factorised ``EntropyBottleneck`` density, one categorical
  table per channel, taken from its integer CDF tables (built on CPU by ``update()``).
"""

from __future__ import annotations

from dataclasses import dataclass

import constriction
import numpy as np

#: symbols of ``y`` are clipped to +-SYMBOL_LIMIT (far beyond any value the models produce)
SYMBOL_LIMIT = 1 << 15
SCALE_BOUND = 0.11  # CompressAI's GaussianConditional lower bound on scales

_GAUSSIAN = constriction.stream.model.QuantizedGaussian(-SYMBOL_LIMIT, SYMBOL_LIMIT)
_CATEGORICAL = constriction.stream.model.Categorical(perfect=False)


def encode_gaussian(symbols: np.ndarray, scales: np.ndarray) -> bytes:
    """Code integer ``symbols`` (already clipped by :func:`clip_symbols`) under N(0, scale)."""
    coder = constriction.stream.stack.AnsCoder()
    coder.encode_reverse(symbols.reshape(-1).astype(np.int32), _GAUSSIAN, np.zeros(symbols.size), _bounded(scales))
    return coder.get_compressed().tobytes()


def decode_gaussian(data: bytes, scales: np.ndarray) -> np.ndarray:
    """Inverse of :func:`encode_gaussian`; returns int32 symbols shaped like ``scales``."""
    coder = constriction.stream.stack.AnsCoder(_words(data))
    return coder.decode(_GAUSSIAN, np.zeros(scales.size), _bounded(scales)).reshape(scales.shape)


def clip_symbols(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), -SYMBOL_LIMIT, SYMBOL_LIMIT).astype(np.int32)


@dataclass(frozen=True)
class CategoricalTables:
    """Per-channel probability tables of a factorised density over integer offsets from ``low``."""

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
            pmf = np.diff(cdf[c, : length[c] + 1]).astype(np.float64)
            table[c, low[c] - start: low[c] - start + length[c]] = pmf
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
        coder = constriction.stream.stack.AnsCoder()
        coder.encode_reverse((symbols.reshape(-1) - self.start).astype(np.int32), _CATEGORICAL, self._rows(symbols.shape))
        return coder.get_compressed().tobytes()

    def decode(self, data: bytes, shape: tuple[int, int, int]) -> np.ndarray:
        coder = constriction.stream.stack.AnsCoder(_words(data))
        return (coder.decode(_CATEGORICAL, self._rows(shape)) + self.start).reshape(shape).astype(np.int32)


def _bounded(scales: np.ndarray) -> np.ndarray:
    return np.maximum(scales.reshape(-1).astype(np.float64), SCALE_BOUND)


def _words(data: bytes) -> np.ndarray:
    """constriction streams are 32-bit words; a length that is not a multiple of 4 is zero-padded."""
    padded = data + b"\0" * (-len(data) % 4)
    return np.frombuffer(padded, dtype="<u4").astype(np.uint32)
