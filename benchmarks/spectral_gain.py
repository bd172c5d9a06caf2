"""What the spectral correction layer buys: the same chunks decoded with and without it.

On the tiles of ``rd_benchmark.py`` (same inputs and options), TerraCodec codes every tile through
its numcodecs config at each quality. Each chunk is then decoded twice: as written, and with its
spectral corrections removed (the chunk repacked without them, so its rate is that of the learned
layer, the DC offsets and the low-pass layer). Reported per quality: rate and PSNR both ways, how
many tiles carry a spectral correction and the bytes they spend on it; and the BD-rate of the layer.

Example::

    python benchmarks/spectral_gain.py --out docs/benchmarks
"""

from __future__ import annotations

import dataclasses
import functools
import sys
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the ``benchmarks`` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import ablation, metrics, reporting  # noqa: E402
from benchmarks.coders import TerraCodec  # noqa: E402
from numcodec_plugin import bitstream  # noqa: E402

HEADERS = ("quality", "bpp/band without", "PSNR without (dB)", "bpp/band with", "PSNR with (dB)", "tiles corrected",
           "bytes per corrected tile")


#: the chunk repacked without its spectral corrections
without_spectral = functools.partial(ablation.stripped, field="spectral")


@dataclasses.dataclass
class QualityResult:
    quality: float
    without: metrics.RatePoint
    with_layer: metrics.RatePoint
    corrected_tiles: int
    layer_bytes: int


def measure(coder: TerraCodec, images: Sequence) -> QualityResult:
    """Code ``images`` with ``coder`` and measure them with and without the spectral layer."""
    without, with_layer, tiles = ablation.ablate(coder, images, without_spectral, "spectral layer")
    corrected = sum(t.spectral is not None for tile in tiles for t in bitstream.unpack(tile.data).tiles)
    return QualityResult(coder.quality, without, with_layer, corrected,
                         sum(len(tile.data) - len(tile.stripped) for tile in tiles))


def main(argv: Sequence[str] | None = None) -> None:
    args = ablation.parse_arguments(argv, __doc__.split("\n")[0], "spectral.md")
    images, results = ablation.sweep(args, measure)
    rows = [(f"{r.quality:g}", f"{r.without.bpp:.4f}", f"{r.without.psnr:.2f}", f"{r.with_layer.bpp:.4f}",
             f"{r.with_layer.psnr:.2f}", f"{r.corrected_tiles}/{len(images)}",
             f"{r.layer_bytes / r.corrected_tiles:.0f}" if r.corrected_tiles else "-") for r in results]
    bd_text = ablation.bd_rate_text([r.with_layer for r in results], [r.without for r in results])
    sections = [
        f"Data: {len(images)} tiles of {args.tile} x {args.tile}.",
        "## Rate and PSNR (peak 10000) of the same chunks with and without their spectral corrections\n\n"
        + reporting.markdown_table(HEADERS, rows),
        f"BD-rate of the layer (with against without, PCHIP): **{bd_text}**.",
    ]
    reporting.publish(reporting.report("Spectral correction layer", "benchmarks/spectral_gain.py", argv, args.threads,
                                       args.model, sections, args.note), args.out, "spectral.md")


if __name__ == "__main__":
    main()
