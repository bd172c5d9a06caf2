"""The quantiser step law of ``klt-wavelet-v2`` and its rate-distortion curve beside JPEG 2000 (+ KLT).

Codes the benchmark tiles (default: the validation split) with
:func:`numcodec_plugin.transform_coding.encode` over a grid of steps; prints, per quality of the
bundled models, the step whose mean ``lambda * D + R`` is lowest and that step times ``sqrt(lambda)``
(what ``STEP_PER_ROOT_LAMBDA`` in :mod:`numcodec_plugin.models.transform_coder` is set from), then
the coder's BD-rate against JPEG 2000 and JPEG 2000 + KLT, measured in the same run.

    python benchmarks/transform_step.py
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make the ``benchmarks`` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import coders, metrics, sentinel2  # noqa: E402
from numcodec_plugin import transform_coding  # noqa: E402
from numcodec_plugin.models.transform_coder import LAMBDAS  # noqa: E402
from numcodec_plugin.models.gain_hyperprior import lambda_at  # noqa: E402

STEPS = [2 ** (i / 2) for i in range(6, 35)]
LEVELS = (42, 45, 48, 50, 53, 55, 58, 60, 63, 65, 68, 70, 75, 80)


def main() -> None:
    tiles = sentinel2.benchmark_tiles(sentinel2.validation_split(), 256, 4)
    distortion = np.zeros((len(tiles), len(STEPS)))
    rate = np.zeros_like(distortion)
    points = []
    for j, step in enumerate(STEPS):
        results = []
        for i, tile in enumerate(tiles):
            data, _, reconstruction = transform_coding.encode(tile.data.astype(np.float64), step)
            decoded = np.clip(np.rint(reconstruction), 0, 65535).astype(np.uint16)
            distortion[i, j] = np.mean((decoded.astype(np.float64) - tile.data) ** 2) / 1e8
            rate[i, j] = 8 * len(data) / tile.data.size
            results.append(metrics.evaluate(tile.data, decoded, 8 * len(data)))
        points.append(metrics.aggregate("klt-wavelet-v2", f"step {step:.0f}", results))
    print("| quality | lambda | best step (DN) | step x sqrt(lambda) |\n| ---: | ---: | ---: | ---: |")
    for quality in range(-1, len(LAMBDAS) + 1):
        lam = lambda_at(LAMBDAS, quality)
        best = STEPS[int(np.argmin((lam * distortion + rate).mean(axis=0)))]
        print(f"| {quality} | {lam:.0f} | {best:.0f} | {best * math.sqrt(lam):.0f} |")
    for anchor in (coders.Jpeg2000, coders.KltJpeg2000):
        sweep = []
        for level in LEVELS:
            coder = anchor(level=level, threads=2)
            results = []
            for tile in tiles:
                streams = coder.encode(tile.data)
                results.append(metrics.evaluate(tile.data, coder.decode(streams), coders.coded_bits(streams)))
            sweep.append(metrics.aggregate(coder.family, coder.setting, results))
        print(f"BD-rate against {anchor.family}: {metrics.bd_rate(points, sweep)}")


if __name__ == "__main__":
    main()
