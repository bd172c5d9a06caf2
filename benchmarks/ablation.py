"""What an engine layer buys: shared arguments and sweep of the benchmarks that decode the same chunks
with and without one of the engine's corrections (``lowpass_gain.py``, ``spectral_gain.py``)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np

from benchmarks import coders, metrics
from benchmarks.coders import TerraCodec
from benchmarks.rd_benchmark import DEFAULT_QUALITY_POINTS, add_data_arguments, load_tiles
from numcodec_plugin import bitstream

Result = TypeVar("Result")


def parse_arguments(argv: Sequence[str] | None, description: str, report: str) -> argparse.Namespace:
    """The options of such a benchmark: ``rd_benchmark.py``'s data options, model, qualities, threads,
    and where to write ``report``."""
    parser = argparse.ArgumentParser(description=description)
    add_data_arguments(parser)
    parser.add_argument("--model", help="TerraCodec model (default: the bundled model)")
    parser.add_argument("--qualities", type=float, nargs="+", help="qualities (default: spread over the range)")
    parser.add_argument("--threads", type=int, default=2, help="TerraCodec tile threads (default: %(default)s)")
    parser.add_argument("--out", type=Path, help=f"folder to write {report} to")
    parser.add_argument("--note", default="", help="a remark printed at the top of the report")
    return parser.parse_args(argv)


def sweep(args: argparse.Namespace, measure: Callable[[TerraCodec, list[np.ndarray]], Result]
          ) -> tuple[list[np.ndarray], list[Result]]:
    """The benchmark's tiles, and ``measure`` of them at each quality of ``args``."""
    coders.limit_threads(args.threads)
    images = [tile.data for tile in load_tiles(args)]
    results = []
    for quality in args.qualities or coders.quality_sweep(args.model, DEFAULT_QUALITY_POINTS):
        results.append(measure(TerraCodec(quality=quality, model=args.model), images))
        print(f"quality {quality:g} done", file=sys.stderr)
    return images, results


def bd_rate_text(with_layer: list[metrics.RatePoint], without: list[metrics.RatePoint]) -> str:
    """The layer's BD-rate (with against without, PCHIP) as the reports print it."""
    bd = metrics.bd_rate(with_layer, without)
    if bd.percent is None:
        return "no shared PSNR interval"
    return f"{bd.percent:+.1f} % over {bd.psnr_range[0]:.1f}-{bd.psnr_range[1]:.1f} dB"


@dataclasses.dataclass(frozen=True)
class Ablated:
    """One tile coded as written (``data``) and with the layer stripped (``stripped``, decoded to ``decoded``)."""

    data: bytes
    stripped: bytes
    decoded: np.ndarray


def ablate(coder: TerraCodec, images: Sequence[np.ndarray], strip: Callable[[bytes], bytes],
           layer: str) -> tuple[metrics.RatePoint, metrics.RatePoint, list[Ablated]]:
    """Code ``images`` with ``coder``; rate and distortion without and with ``layer`` (``strip`` removes it
    from a chunk), and each tile's chunks."""
    plain, full, tiles = [], [], []
    for image in images:
        data = coder.encode(image)[0]
        stripped = strip(data)
        decoded = coder.decode([stripped])
        full.append(metrics.evaluate(image, coder.decode([data]), 8 * len(data)))
        plain.append(metrics.evaluate(image, decoded, 8 * len(stripped)))
        tiles.append(Ablated(data, stripped, decoded))
    setting = coder.setting
    return (metrics.aggregate(f"without {layer}", setting, plain), metrics.aggregate(f"with {layer}", setting, full),
            tiles)


def stripped(data: bytes, field: str) -> bytes:
    """The chunk ``data`` repacked with every tile's ``field`` (``correction``, ``spectral``) removed."""
    chunk = bitstream.unpack(data)
    tiles = [dataclasses.replace(tile, **{field: None}) for tile in chunk.tiles]
    return bitstream.pack(dataclasses.replace(chunk, tiles=tiles))
