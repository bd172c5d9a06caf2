"""The codec speed benchmark's side-by-side decode table times every 256 x 256 chunk of its crop."""

from __future__ import annotations

import numpy as np

from benchmarks import codec_speed


def test_the_parallel_decode_row_counts_the_chunks_of_the_crop(s2_scene: np.ndarray) -> None:
    (row,) = codec_speed.parallel_rows(np.ascontiguousarray(s2_scene[:, :512, :768]), "klt-wavelet-v3", 1.0, 2, 1)
    chunks, quality, serial, threads, parallel, speed_up = row
    assert (chunks, quality, threads) == ("6 x 12x256x256", "1", "2")
    assert float(serial) > 0 and float(parallel) > 0
    assert abs(float(speed_up[:-1]) - float(serial) / float(parallel)) < 0.05 * float(speed_up[:-1]) + 0.02
