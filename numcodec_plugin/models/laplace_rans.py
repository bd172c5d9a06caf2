"""The tabled Laplace laws in fixed point, coded by the compiled rANS coder: ``klt-wavelet-v3``'s subbands.

``klt-wavelet-v2`` codes its subbands under the tabled laws of
:func:`~numcodec_plugin.models.entropy_coding.laplace_table_probabilities` with constriction, one
coder call per scale byte after grouping the coefficients by byte, and decodes every coefficient,
zeros included. ``klt-wavelet-v3`` codes the same laws with the rANS coder of
:mod:`numcodec_plugin._kernels` (constriction's layout: 64-bit state, 32-bit words, 24-bit
probabilities), in raster order, each coefficient under the law its context class names as the
decoder goes (no grouping, no per-coefficient table), and scale byte 0 means "every coefficient of
this class is 0": nothing is coded for it, and the decoder writes zeros without touching the stream.

The fixed-point law of a byte (:func:`frequencies`) is integer arithmetic on the float64 law, which
is exact IEEE arithmetic: every machine builds the same tables, so the format does not depend on
the platform (``tests/test_laplace_rans.py`` pins a digest of all 256).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from numcodec_plugin import kernels
from numcodec_plugin.errors import BitstreamError
from numcodec_plugin.models.entropy_coding import LAPLACE_RADII, laplace_table_probabilities

#: the fixed point of the probabilities: every law's frequencies sum to 2 ** PRECISION
PRECISION = 24


def frequencies(index: int) -> np.ndarray:
    """The integer frequencies (sum ``2 ** PRECISION``, each at least 1) of scale byte ``index``'s law, in
    the coder's symbol order 0, -1, +1, ..., -R, +R, escape: the float law's cumulative sums floored
    in ``2 ** PRECISION - n`` units, plus one per symbol (so no symbol is impossible)."""
    probabilities = laplace_table_probabilities(index)
    n, radius = len(probabilities), int(LAPLACE_RADII[index])
    cumulative = np.floor(np.cumsum(probabilities) * float((1 << PRECISION) - n)).astype(np.int64)
    cumulative[-1] = (1 << PRECISION) - n
    natural = np.diff(cumulative, prepend=0) + 1
    zigzag = np.empty(n, np.int64)  # symbol -k sits at 2k - 1, +k at 2k, the escape last
    zigzag[0] = radius
    zigzag[1:-1:2] = radius - np.arange(1, radius + 1)
    zigzag[2:-1:2] = radius + np.arange(1, radius + 1)
    zigzag[-1] = n - 1
    return natural[zigzag]


@functools.cache
def one_bits() -> np.ndarray:
    """Per scale byte: the bits of a +-1 minus those of a 0 under its law, in fixed point (float64, 256)."""
    return np.array([np.log2(counts[0] / counts[1]) for counts in map(frequencies, range(256))])


@functools.cache
def tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(cdf, offsets, radii): the cumulative tables of all 256 laws in one uint32 vector, where each
    byte's table starts, and each byte's radius (built once per process, about 3 MB)."""
    laws = [np.concatenate([[0], np.cumsum(frequencies(i))]) for i in range(256)]
    offsets = np.cumsum([0] + [len(law) for law in laws[:-1]]).astype(np.int64)
    return np.concatenate(laws).astype(np.uint32), offsets, LAPLACE_RADII


def encode(pieces: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> bytes:
    """The stream of ``pieces``, in the order a :class:`Decoder` reads them: (values, classes, table) with
    int32 values and uint8 classes (planes, y, x), each value coded under the law of the scale byte
    ``table[plane, class]``; a byte of 0 codes nothing (its class must hold only zeros). Values stay
    within +-2**15 (beyond their law's radius they escape to 16 uniform bits)."""
    cdf, offsets, radii = tables()
    return kernels.rans_encode([(np.ascontiguousarray(v, np.int32), np.ascontiguousarray(c, np.uint8),
                                 np.ascontiguousarray(t, np.uint8)) for v, c, t in pieces], cdf, offsets, radii)


class Decoder:
    """Decodes an :func:`encode` stream piece by piece, so a later piece's classes may depend on the values
    of earlier ones; :meth:`finish` refuses a stream that was not exactly what the pieces coded."""

    def __init__(self, data: bytes) -> None:
        if len(data) % 4:
            raise BitstreamError(f"corrupt entropy-coded stream: {len(data)} bytes is not a whole rANS stream")
        self._coder = kernels.RansDecoder(np.frombuffer(data, "<u4").astype(np.uint32))

    def decode(self, classes: np.ndarray, table: np.ndarray) -> np.ndarray:
        """The next piece: int32 values of the (planes, y, x) uint8 ``classes`` under the (planes, classes) ``table``."""
        cdf, offsets, radii = tables()
        return self._coder.decode(np.ascontiguousarray(classes, np.uint8), np.ascontiguousarray(table, np.uint8),
                                  cdf, offsets, radii)

    def finish(self) -> None:
        """Raise :class:`BitstreamError` unless the stream ended exactly where the last piece did."""
        if not self._coder.finished():
            raise BitstreamError("corrupt entropy-coded stream: the rANS stream does not end where its symbols do")
