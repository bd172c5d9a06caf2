"""What the low-pass correction layer buys: the same chunks decoded with and without it.

On the tiles of ``rd_benchmark.py`` (same inputs and options), TerraCodec codes every tile through
its numcodecs config at each quality. Each chunk is then decoded twice: as written, and with its
low-pass corrections removed (the chunk repacked without them, so its rate is the learned layer's
alone). Reported per quality: rate and PSNR both ways, how many tiles carry a correction and their
block sizes; the BD-rate of the layer over the shared PSNR interval; and, for the reconstruction
without corrections, the share of its squared error that lies in the means of square blocks,
i.e. how smooth the learned layer's error is.

Example::

    python benchmarks/lowpass_gain.py --out docs/benchmarks
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make the ``benchmarks`` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import ablation, metrics, reporting  # noqa: E402
from benchmarks.coders import TerraCodec  # noqa: E402
from numcodec_plugin import bitstream  # noqa: E402

ENERGY_BLOCKS = (64, 32, 8)
HEADERS = ("quality", "bpp/band without", "PSNR without (dB)", "bpp/band with", "PSNR with (dB)", "tiles corrected",
           "block sizes (px: tiles)")


#: the chunk repacked without its low-pass corrections
without_corrections = functools.partial(ablation.stripped, field="correction")


def block_energy_share(error: np.ndarray, block: int) -> float:
    """Share of the squared (band, y, x) ``error`` that the per-band means of ``block``-pixel squares carry."""
    bands, height, width = error.shape
    trimmed = error[:, :height - height % block, :width - width % block]
    means = trimmed.reshape(bands, height // block, block, width // block, block).mean(axis=(2, 4))
    return float(np.sum(means ** 2) * block * block / np.sum(trimmed ** 2))


@dataclasses.dataclass
class QualityResult:
    quality: float
    without: metrics.RatePoint
    with_layer: metrics.RatePoint
    blocks: collections.Counter  # block side -> tiles
    energy: dict[int, list[float]]  # block -> share per tile


def measure(coder: TerraCodec, images: Sequence[np.ndarray]) -> QualityResult:
    """Code ``images`` with ``coder`` and measure them with and without the low-pass layer."""
    without, with_layer, tiles = ablation.ablate(coder, images, without_corrections, "low-pass layer")
    blocks, energy = collections.Counter(), {b: [] for b in ENERGY_BLOCKS}
    for image, tile in zip(images, tiles):
        error = tile.decoded.astype(np.float64) - image
        for block in ENERGY_BLOCKS:
            energy[block].append(block_energy_share(error, block))
        blocks.update(t.correction.block for t in bitstream.unpack(tile.data).tiles if t.correction is not None)
    return QualityResult(coder.quality, without, with_layer, blocks, energy)


def main(argv: Sequence[str] | None = None) -> None:
    args = ablation.parse_arguments(argv, __doc__.split("\n")[0], "lowpass.md")
    images, results = ablation.sweep(args, measure)
    rows = [(f"{r.quality:g}", f"{r.without.bpp:.4f}", f"{r.without.psnr:.2f}", f"{r.with_layer.bpp:.4f}",
             f"{r.with_layer.psnr:.2f}", f"{sum(r.blocks.values())}/{len(images)}",
             ", ".join(f"{b}: {n}" for b, n in sorted(r.blocks.items(), reverse=True)) or "-") for r in results]
    bd_text = ablation.bd_rate_text([r.with_layer for r in results], [r.without for r in results])
    energy_rows = [(f"{r.quality:g}", *(f"{100 * np.mean(r.energy[b]):.0f} %" for b in ENERGY_BLOCKS)) for r in results]
    sections = [
        f"Data: {len(images)} tiles of {args.tile} x {args.tile}.",
        "## Rate and PSNR (peak 10000) of the same chunks with and without their corrections\n\n"
        + reporting.markdown_table(HEADERS, rows),
        f"BD-rate of the layer (with against without, PCHIP): **{bd_text}**.",
        "## Share of the learned layer's squared error in block means (mean over tiles)\n\n"
        + reporting.markdown_table(("quality", *(f"{b} x {b} px" for b in ENERGY_BLOCKS)), energy_rows),
    ]
    reporting.publish(reporting.report("Low-pass correction layer", "benchmarks/lowpass_gain.py", argv, args.threads,
                                       args.model, sections, args.note), args.out, "lowpass.md")


if __name__ == "__main__":
    main()
