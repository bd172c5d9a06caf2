"""The quantiser step law of ``klt-wavelet-v2`` and its rate-distortion curve beside JPEG 2000 (+ KLT).

Codes the benchmark tiles (default: the validation split; the model card's law was measured on
training files, the command in ``docs/benchmarks/transform_step.md``) with
:func:`numcodec_plugin.transform_coding.encode` over a grid of steps; reports, per quality of the
bundled models, the step whose mean ``lambda * D + R`` is lowest and that step times ``sqrt(lambda)``
(what ``STEP_PER_ROOT_LAMBDA`` in :mod:`numcodec_plugin.models.transform_coder` is set from), then
the coder's BD-rate against JPEG 2000 and JPEG 2000 + KLT, measured in the same run (the bare
coder: no chunk header, tile corrections or checksum, which ``rd_benchmark.py`` includes).

    python benchmarks/transform_step.py [inputs ...] [--out docs/benchmarks]
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make the ``benchmarks`` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import coders, metrics, reporting  # noqa: E402
from benchmarks.rd_benchmark import add_data_arguments, load_tiles, rate_point  # noqa: E402
from numcodec_plugin import transform_coding  # noqa: E402
from numcodec_plugin.models.gain_hyperprior import lambda_at  # noqa: E402
from numcodec_plugin.models.transform_coder import LAMBDAS, LOWEST_QUALITY, STEP_PER_ROOT_LAMBDA  # noqa: E402

STEPS = [2 ** (i / 2) for i in range(6, 35)]
LEVELS = (42, 45, 48, 50, 53, 55, 58, 60, 63, 65, 68, 70, 75, 80)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_data_arguments(parser)
    parser.add_argument("--out", type=Path, help="folder to write transform_step.md to")
    args = parser.parse_args(argv)
    tiles = load_tiles(args)
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
    law = []
    for quality in range(int(LOWEST_QUALITY), len(LAMBDAS) + 1):
        lam = lambda_at(LAMBDAS, quality)
        best = STEPS[int(np.argmin((lam * distortion + rate).mean(axis=0)))]
        law.append([quality, f"{lam:.1f}", f"{best:.0f}", f"{best * math.sqrt(lam):.0f}",
                    f"{STEP_PER_ROOT_LAMBDA / math.sqrt(lam):.0f}"])
    bd_rows = []
    for anchor in (coders.Jpeg2000, coders.KltJpeg2000):
        bd = metrics.bd_rate(points, [rate_point(anchor(level=level, threads=2), tiles) for level in LEVELS])
        interval = f"{bd.psnr_range[0]:.1f}-{bd.psnr_range[1]:.1f}" if bd.psnr_range else "no overlap"
        bd_rows.append([anchor.family, "-" if bd.percent is None else f"{bd.percent:+.1f} %", interval])
    sections = [
        f"Data: {len(tiles)} tiles: {', '.join(t.name for t in tiles)}.",
        "## Step law (lowest mean lambda * D + R over the step grid, steps 2^(k/2) DN)\n\n"
        + reporting.markdown_table(("quality", "lambda", "best step (DN)", "step x sqrt(lambda)", "coder's step (DN)"), law),
        "## The bare coder against JPEG 2000 (BD-rate, PCHIP, within 30-50 dB)\n\n"
        + reporting.markdown_table(("Anchor", "BD-rate", "PSNR interval (dB)"), bd_rows),
    ]
    reporting.publish(reporting.report("Quantiser step law of klt-wavelet-v2", "benchmarks/transform_step.py", argv, 2,
                                       "klt-wavelet-v2", sections), args.out, "transform_step.md")


if __name__ == "__main__":
    main()
