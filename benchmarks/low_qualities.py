"""Qualities below 1: what the encoder's choice among its codings gives, against two of them alone.

Below its lowest trained quality the encoder codes every chunk with the network at the quality asked
for (its gain units extrapolated), at the whole qualities above it and at quality 1, the engine's
corrections at the extrapolated lambda every time, and keeps per chunk the coding of lowest
``lambda * D + R`` (``numcodec_plugin.engine.network_qualities``). This benchmark codes the tiles of
``rd_benchmark.py`` (same inputs and options) at each quality three ways, through the numcodecs config:
as the codec does, and with only the extrapolated gains or only the network at quality 1 allowed (by
narrowing ``engine.network_qualities`` for the run). Reported per quality and way: rate, PSNR, the
share of the chunks' bytes in the hyper-latent streams (the last of each tile's streams, as in the
bundled image models), and the qualities the chosen codings' networks coded at.

Example::

    python benchmarks/low_qualities.py --out docs/benchmarks
    python benchmarks/low_qualities.py ../shared/data/s2/l2a_scenes/majortom_0U_199R.npz --name low_qualities_easy.md
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the ``benchmarks`` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import coders, metrics, reporting  # noqa: E402
from benchmarks.coders import TerraCodec  # noqa: E402
from benchmarks.rd_benchmark import add_data_arguments, load_tiles  # noqa: E402
from numcodec_plugin import bitstream, engine  # noqa: E402
from numcodec_plugin.models.registry import quality_range, trained_quality_range  # noqa: E402

HEADERS = ("quality", "coding", "bpp/band", "PSNR (dB, peak 10000)", "hyper-latent share of the bytes",
           "tiles per network quality")
#: the ways compared: name, and which of ``engine.network_qualities``' codings it allows (None: all)
WAYS = (("as the codec does (the cheapest per chunk)", None), ("extrapolated gains only", -1), ("network at quality 1 only", 0))


@contextlib.contextmanager
def only_coding(index: int | None) -> Iterator[None]:
    """While active, the encoder considers only coding ``index`` of :func:`engine.network_qualities` (None: all)."""
    original = engine.network_qualities
    if index is not None:
        engine.network_qualities = lambda model, quality: [original(model, quality)[index]]
    try:
        yield
    finally:
        engine.network_qualities = original


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_data_arguments(parser)
    parser.add_argument("--model", help="TerraCodec model (default: the bundled model)")
    parser.add_argument("--qualities", type=float, nargs="+",
                        help="qualities (default: the sweep of rd_benchmark.py below the trained range, and its lowest trained quality)")
    parser.add_argument("--threads", type=int, default=2, help="TerraCodec tile threads (default: %(default)s)")
    parser.add_argument("--out", type=Path, help="folder to write the report to")
    parser.add_argument("--name", default="low_qualities.md", help="report file name (default: %(default)s)")
    parser.add_argument("--note", default="", help="a remark printed at the top of the report")
    return parser.parse_args(argv)


def default_qualities(model: str | None) -> list[float]:
    lowest_trained = trained_quality_range(model)[0]
    if quality_range(model)[0] >= lowest_trained:
        raise SystemExit(f"model {model or 'default'} takes no quality below its trained range")
    return [q for q in coders.quality_sweep(model, 2) if q < lowest_trained] + [lowest_trained]


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_arguments(argv)
    coders.limit_threads(args.threads)
    tiles = load_tiles(args)
    rows, curves = [], {name: [] for name, _ in WAYS}
    for quality in args.qualities or default_qualities(args.model):
        for name, index in WAYS:
            coder = TerraCodec(quality=quality, model=args.model)
            results, network, hyper_latent_bytes, total_bytes = [], collections.Counter(), 0, 0
            with only_coding(index):
                for image in tiles:
                    streams = coder.encode(image.data)
                    chunk = bitstream.unpack(streams[0])
                    network[chunk.header.quality] += 1
                    hyper_latent_bytes += sum(len(tile.streams[-1]) for tile in chunk.tiles)
                    total_bytes += len(streams[0])
                    results.append(metrics.evaluate(image.data, coder.decode(streams), coders.coded_bits(streams)))
            point = metrics.aggregate(name, coder.setting, results)
            curves[name].append(point)
            counts = ", ".join(f"{count} at {q:g}" for q, count in sorted(network.items(), reverse=True))
            rows.append((f"{quality:g}", name, f"{point.bpp:.4f}", f"{point.psnr:.2f}",
                         f"{100 * hyper_latent_bytes / total_bytes:.0f} %", counts))
        print(f"quality {quality:g} done", file=sys.stderr)
    chosen = curves[WAYS[0][0]]
    bd_rows = []
    for name, _ in WAYS[1:]:
        bd = metrics.bd_rate(chosen, curves[name])
        bd_rows.append((name, "-" if bd.percent is None else f"{bd.percent:+.1f} %",
                        "-" if bd.psnr_range is None else f"{bd.psnr_range[0]:.1f}-{bd.psnr_range[1]:.1f}"))
    sections = [
        f"Data: {len(tiles)} tiles: {', '.join(tile.name for tile in tiles)}.",
        "## Rate and PSNR of each coding\n\n" + reporting.markdown_table(HEADERS, rows, text_columns=2),
        "## BD-rate of the choice against each coding alone (PCHIP; negative = fewer bits)\n\n"
        + reporting.markdown_table(("against", "BD-rate", "PSNR interval (dB)"), bd_rows),
    ]
    reporting.publish(reporting.report("Qualities below the trained range", "benchmarks/low_qualities.py", argv,
                                       args.threads, args.model, sections, args.note), args.out, args.name)


if __name__ == "__main__":
    main()
