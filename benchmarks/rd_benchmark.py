"""Rate-distortion benchmark of TerraCodec against JPEG 2000, JPEG 2000 + KLT and JPEG XL.

Every codec codes the same tiles in the same run, at a sweep of settings. Reported per
setting: rate (bits per pixel per band), PSNR with peak 10000 and with peak 65535, spectral
angle (SAM) and the largest absolute error; then the Bjontegaard delta rates (PCHIP, over the
PSNR interval the two curves share within 30-50 dB at peak 10000) and each codec's speed on
one tile. Conventions: :mod:`benchmarks.metrics`; codecs and their settings:
:mod:`benchmarks.coders`.

Inputs: ``.npz`` files (key ``data``, (C, y, x) or (N, C, y, x), band names in ``bands``),
GeoTIFFs ((band, y, x) or (y, x, band); give ``--bands`` if not in L2A or L1C order), Zarr
arrays, or folders of such files; default the project's validation split in ``--data``.
Images are cut into ``--tile`` pixel tiles, at most ``--max-tiles`` per file.

Example::

    python benchmarks/rd_benchmark.py --max-tiles 4 --out docs/benchmarks
    python benchmarks/rd_benchmark.py my_scenes/ --bands B02,B03,B04,... --out results
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the ``benchmarks`` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import coders, metrics, reporting, sentinel2, timing  # noqa: E402
from benchmarks.coders import Coder, Jpeg2000, JpegXl, KltJpeg2000, TerraCodec  # noqa: E402

DEFAULT_JPEG2K_LEVELS = (44.0, 48.0, 52.0, 56.0, 60.0, 64.0, 68.0, 74.0)
DEFAULT_JPEGXL_DISTANCES = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 25.0)
DEFAULT_QUALITY_POINTS = 8
RD_HEADERS = ("Codec", "Setting", "bpp/band", "PSNR (dB, peak 10000)", "PSNR (dB, peak 65535)", "SAM (deg)",
              "max abs error (DN)")


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """The options choosing the benchmark imagery (read by :func:`load_tiles`)."""
    parser.add_argument("inputs", nargs="*", type=Path,
                        help=".npz / GeoTIFF files, Zarr arrays or folders (default: the validation split in --data)")
    parser.add_argument("--data", type=Path, default=sentinel2.DEFAULT_DATA_ROOT,
                        help="sample folder whose validation split is the default input (default: %(default)s)")
    parser.add_argument("--bands", type=lambda s: s.split(","),
                        help="comma-separated band names of inputs that do not name their bands")
    parser.add_argument("--tile", type=int, default=256, help="tile side in pixels (default: %(default)s)")
    parser.add_argument("--max-tiles", type=int, default=4, help="at most this many tiles per file (default: %(default)s)")


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_data_arguments(parser)
    parser.add_argument("--jpeg2k-levels", type=float, nargs="+", default=DEFAULT_JPEG2K_LEVELS,
                        help="JPEG 2000 (and JPEG 2000 + KLT) fixed-quality levels in dB")
    parser.add_argument("--jpegxl-distances", type=float, nargs="+", default=DEFAULT_JPEGXL_DISTANCES,
                        help="JPEG XL Butteraugli distances")
    parser.add_argument("--model", help="TerraCodec model (default: the bundled model)")
    parser.add_argument("--qualities", type=float, nargs="+",
                        help=f"TerraCodec qualities (default: {DEFAULT_QUALITY_POINTS} across the model's range)")
    parser.add_argument("--refinement-steps", type=int, nargs="+", default=[],
                        help="also TerraCodec with this many latent-refinement steps per tile (one curve per value)")
    parser.add_argument("--also-models", nargs="+", default=[],
                        help="also these TerraCodec models, unrefined, with BD-rates against --model's curve")
    parser.add_argument("--threads", type=int, default=2, help="threads per codec (default: %(default)s)")
    parser.add_argument("--speed-repeats", type=int, default=3, help="timed repeats per codec (default: %(default)s)")
    parser.add_argument("--out", type=Path, help="folder to write rd.md and rd.png to")
    parser.add_argument("--note", default="", help="a remark printed at the top of the report")
    return parser.parse_args(argv)


def load_tiles(args: argparse.Namespace) -> list[sentinel2.Image]:
    """The benchmark tiles of the inputs (or of the default validation split)."""
    if args.inputs:
        groups = [group for path in args.inputs for group in sentinel2.read_path(path, args.bands)]
    else:
        groups = sentinel2.validation_split(args.data)
    return sentinel2.benchmark_tiles(groups, args.tile, args.max_tiles)


def build_sweeps(args: argparse.Namespace) -> dict[str, list[Coder]]:
    """Every codec's settings, by codec name; TerraCodec last (without, then with each refinement, then
    the other models)."""
    def qualities(model: str | None) -> list[float]:
        return args.qualities or coders.quality_sweep(model, DEFAULT_QUALITY_POINTS)

    sweeps: list[list[Coder]] = [
        [Jpeg2000(level, args.threads) for level in args.jpeg2k_levels],
        [KltJpeg2000(level, args.threads) for level in args.jpeg2k_levels],
        [JpegXl(distance, args.threads) for distance in args.jpegxl_distances],
    ] + [[TerraCodec(quality, args.model, refinement_steps=steps) for quality in qualities(args.model)]
         for steps in [0, *args.refinement_steps]] + [[TerraCodec(quality, model) for quality in qualities(model)]
                                                      for model in args.also_models]
    return {sweep[0].family: sweep for sweep in sweeps}


def bd_pairs(ours: Sequence[str]) -> list[tuple[str, str]]:
    """(test, anchor) codec names of the reported BD-rates; ``ours``: TerraCodec's curves, ``--model``'s
    unrefined one first (the others are also compared with it)."""
    pairs = [(KltJpeg2000.family, Jpeg2000.family)]
    for family in ours:
        pairs += [(family, Jpeg2000.family), (family, KltJpeg2000.family), (family, JpegXl.family)]
    return pairs + [(family, ours[0]) for family in ours[1:]]


def rate_point(coder: Coder, tiles: Sequence[sentinel2.Image]) -> metrics.RatePoint:
    """Code every tile with ``coder`` and aggregate rate and distortion."""
    results = []
    for tile in tiles:
        streams = coder.encode(tile.data)
        results.append(metrics.evaluate(tile.data, coder.decode(streams), coders.coded_bits(streams)))
    return metrics.aggregate(coder.family, coder.setting, results)


def run_sweeps(sweeps: dict[str, list[Coder]], tiles: Sequence[sentinel2.Image]) -> dict[str, list[metrics.RatePoint]]:
    """Rate points of every setting of every codec."""
    points = {}
    for family, sweep in sweeps.items():
        print(f"{family}: {len(sweep)} settings x {len(tiles)} tiles", file=sys.stderr, flush=True)
        points[family] = [rate_point(coder, tiles) for coder in sweep]
    return points


def rd_table(points: dict[str, list[metrics.RatePoint]]) -> str:
    rows = [
        [p.codec, p.setting, f"{p.bpp:.4f}", f"{p.psnr:.2f}", f"{p.psnr_uint16:.2f}", f"{p.sam:.3f}", f"{p.max_abs_error:.0f}"]
        for family in points.values() for p in sorted(family, key=lambda p: p.bpp)
    ]
    return reporting.markdown_table(RD_HEADERS, rows, text_columns=2)


def bd_table(points: dict[str, list[metrics.RatePoint]], ours: Sequence[str]) -> str:
    rows = []
    for test, anchor in bd_pairs(ours):
        bd = metrics.bd_rate(points[test], points[anchor])
        interval = f"{bd.psnr_range[0]:.1f}-{bd.psnr_range[1]:.1f}" if bd.psnr_range else "no overlap"
        rows.append([test, anchor, "-" if bd.percent is None else f"{bd.percent:+.1f} %", interval])
    return reporting.markdown_table(("Test", "Anchor", "BD-rate", "PSNR interval (dB)"), rows, text_columns=2)


def speed_table(sweeps: dict[str, list[Coder]], image: sentinel2.Image, repeats: int) -> str:
    """Throughput of each codec at the middle setting of its sweep, on one tile."""
    rows = []
    for sweep in sweeps.values():
        coder = sweep[len(sweep) // 2]
        measured = timing.measure(coder, image.data, repeats)
        bpp = measured.bits / image.data.size
        rows.append([coder.family, coder.setting, f"{bpp:.4f}", f"{measured.encode_mb_s:.2f}", f"{measured.decode_mb_s:.2f}"])
    return reporting.markdown_table(("Codec", "Setting", "bpp/band", "encode MB/s", "decode MB/s"), rows, text_columns=2)


def plot(points: dict[str, list[metrics.RatePoint]], path: Path) -> None:
    """PSNR (peak 10000) against rate, one curve per codec, log rate axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 5))
    for family, family_points in points.items():
        ordered = sorted(family_points, key=lambda p: p.bpp)
        axes.plot([p.bpp for p in ordered], [p.psnr for p in ordered], marker="o", label=family)
    axes.set_xscale("log")
    axes.set_xlabel("bits per pixel per band")
    axes.set_ylabel("PSNR (dB, peak 10000)")
    axes.axhspan(*metrics.BD_PSNR_RANGE, color="0.93", zorder=0, label="BD-rate PSNR range")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_arguments(argv)
    coders.limit_threads(args.threads)
    tiles = load_tiles(args)
    sweeps = build_sweeps(args)
    ours = [family for family, sweep in sweeps.items() if isinstance(sweep[0], TerraCodec)]
    points = run_sweeps(sweeps, tiles)
    print(f"timing each codec on {tiles[0].name}", file=sys.stderr, flush=True)
    sections = [
        f"Data: {len(tiles)} tiles: {', '.join(t.name for t in tiles)}.",
        "## Rate and distortion\n\n" + rd_table(points),
        f"## BD-rate (PCHIP; PSNR peak 10000, within {metrics.BD_PSNR_RANGE[0]:g}-{metrics.BD_PSNR_RANGE[1]:g} dB)\n\n"
        + bd_table(points, ours),
        f"## Speed (one {'x'.join(map(str, tiles[0].data.shape))} tile, middle setting, median of "
        f"{args.speed_repeats}; MB = 10^6 raw bytes)\n\n" + speed_table(sweeps, tiles[0], args.speed_repeats),
    ]
    text = reporting.report("Rate-distortion benchmark", "benchmarks/rd_benchmark.py", argv, args.threads, args.model,
                            sections, args.note)
    reporting.publish(text + "\n![PSNR against rate](rd.png)\n", args.out, "rd.md")
    if args.out:
        plot(points, args.out / "rd.png")


if __name__ == "__main__":
    main()
