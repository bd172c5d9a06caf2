"""Encode/decode throughput of a coder: median of repeats after a warm-up.

Throughput is in MB/s of raw input, MB = 10^6 bytes of the uint16 array (12 x 256 x 256 is
1.57 MB), for encoding and decoding alike.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from benchmarks.coders import Coder, Streams, coded_bits


@dataclass(frozen=True)
class Timing:
    """Speed of one coder on one image, with the warm-up's output for rate and distortion."""

    encode_mb_s: float
    decode_mb_s: float
    streams: Streams
    decoded: np.ndarray

    @property
    def bits(self) -> int:
        return coded_bits(self.streams)


def median_seconds(task: Callable[[], object], repeats: int) -> float:
    """Median wall-clock time of ``repeats`` calls of ``task``."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        task()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(coder: Coder, image: np.ndarray, repeats: int = 5) -> Timing:
    """Time ``coder`` on ``image``; one untimed encode and decode first (model loading, caches)."""
    return measure_together([coder], image, repeats)[0]


def measure_together(coders: Sequence[Coder], image: np.ndarray, repeats: int = 5) -> list[Timing]:
    """Time each of ``coders`` on ``image`` as :func:`measure` does, their calls taking turns (each
    repeat encodes with every coder, then each decode likewise): on a shared machine whose speed
    drifts, every coder meets the same drift, so their ratios hold better than from runs one after
    the other."""
    streams = [coder.encode(image) for coder in coders]
    decoded = [coder.decode(s) for coder, s in zip(coders, streams)]
    encode_s: list[list[float]] = [[] for _ in coders]
    decode_s: list[list[float]] = [[] for _ in coders]
    for _ in range(repeats):
        for coder, times in zip(coders, encode_s):
            start = time.perf_counter()
            coder.encode(image)
            times.append(time.perf_counter() - start)
    for _ in range(repeats):
        for coder, coded, times in zip(coders, streams, decode_s):
            start = time.perf_counter()
            coder.decode(coded)
            times.append(time.perf_counter() - start)
    megabytes = image.nbytes / 1e6
    return [Timing(megabytes / statistics.median(e), megabytes / statistics.median(d), s, x)
            for e, d, s, x in zip(encode_s, decode_s, streams, decoded)]
