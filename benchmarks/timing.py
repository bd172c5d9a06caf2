"""Encode/decode throughput of a coder: median of repeats after a warm-up.

Throughput is in MB/s of raw input, MB = 10^6 bytes of the uint16 array (12 x 256 x 256 is
1.57 MB), for encoding and decoding alike.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
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
    streams = coder.encode(image)
    decoded = coder.decode(streams)
    megabytes = image.nbytes / 1e6
    encode_s = median_seconds(lambda: coder.encode(image), repeats)
    decode_s = median_seconds(lambda: coder.decode(streams), repeats)
    return Timing(megabytes / encode_s, megabytes / decode_s, streams, decoded)
