"""Latent refinement: rate and PSNR against the unrefined codec for a grid of steps and step sizes.

The search that chose :data:`numcodec_plugin.models.latent_refinement.LATENT_LEARNING_RATE` and
``HYPER_LATENT_LEARNING_RATE``. Every setting codes the same tiles through the public numcodecs
configuration at a few qualities; the table gives, per quality, the rate change and the PSNR change
against the same tiles coded without refinement, and the encode time per tile (one thread: a chunk
of one tile refines on one core). The step sizes are module constants, not codec settings, so the
search sets them for its own run.

Example::

    python benchmarks/refinement_search.py --max-tiles 1 --out docs/benchmarks
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the ``benchmarks`` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import coders, metrics, reporting, sentinel2  # noqa: E402
from benchmarks.coders import TerraCodec  # noqa: E402
from benchmarks.rd_benchmark import add_data_arguments, load_tiles  # noqa: E402
from numcodec_plugin.models import latent_refinement  # noqa: E402
from numcodec_plugin.models.registry import REFINABLE_EXAMPLE  # noqa: E402

#: (steps, latent step size, hyper-latent step size); the shipped choice is among them
DEFAULT_GRID = ("50,0.005,0.003", "50,0.01,0.03", "50,0.02,0.1", "50,0.02,0.3", "50,0.04,0.3", "50,0.02,1.0",
                "25,0.02,0.3", "100,0.02,0.3")


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_data_arguments(parser)
    parser.set_defaults(max_tiles=1)
    parser.add_argument("--qualities", type=float, nargs="+", default=[2.0, 5.0, 8.0], help="qualities coded")
    parser.add_argument("--grid", nargs="+", default=list(DEFAULT_GRID), metavar="STEPS,LATENT,HYPER",
                        help="settings searched (default: %(default)s)")
    parser.add_argument("--model", default=REFINABLE_EXAMPLE,
                        help="TerraCodec model that refines latents (default: %(default)s)")
    parser.add_argument("--out", type=Path, help="folder to write refinement_search.md to")
    parser.add_argument("--note", default="", help="a remark printed at the top of the report")
    return parser.parse_args(argv)


def code(tiles: Sequence[sentinel2.Image], coder: TerraCodec) -> tuple[metrics.RatePoint, float]:
    """Rate point of ``coder`` on ``tiles`` and its mean encode seconds per tile."""
    results, seconds = [], 0.0
    for tile in tiles:
        started = time.perf_counter()
        streams = coder.encode(tile.data)
        seconds += time.perf_counter() - started
        results.append(metrics.evaluate(tile.data, coder.decode(streams), coders.coded_bits(streams)))
    return metrics.aggregate(coder.family, coder.setting, results), seconds / len(tiles)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_arguments(argv)
    coders.limit_threads(1)
    tiles = load_tiles(args)
    plain = {q: code(tiles, TerraCodec(q, args.model)) for q in args.qualities}
    headers = ["steps", "latent step", "hyper-latent step"]
    for q in args.qualities:
        headers += [f"q{q:g} rate", f"q{q:g} PSNR (dB)"]
    headers.append("encode s/tile")
    rows = [["0", "-", "-"] + [v for q in args.qualities for v in (f"{plain[q][0].bpp:.4f} bpp", f"{plain[q][0].psnr:.2f}")]
            + [f"{sum(s for _, s in plain.values()) / len(plain):.2f}"]]
    shipped = latent_refinement.LATENT_LEARNING_RATE, latent_refinement.HYPER_LATENT_LEARNING_RATE
    try:
        for entry in args.grid:
            steps, latent, hyper = entry.split(",")
            latent_refinement.LATENT_LEARNING_RATE, latent_refinement.HYPER_LATENT_LEARNING_RATE = float(latent), float(hyper)
            print(f"refinement {entry} on {len(tiles)} tiles", file=sys.stderr, flush=True)
            row, seconds = [steps, latent, hyper], 0.0
            for q in args.qualities:
                point, spent = code(tiles, TerraCodec(q, args.model, refinement_steps=int(steps)))
                row += [f"{100 * (point.bpp / plain[q][0].bpp - 1):+.1f} %", f"{point.psnr - plain[q][0].psnr:+.2f}"]
                seconds += spent
            rows.append(row + [f"{seconds / len(args.qualities):.2f}"])
    finally:
        latent_refinement.LATENT_LEARNING_RATE, latent_refinement.HYPER_LATENT_LEARNING_RATE = shipped
    table = reporting.markdown_table(headers, rows, text_columns=3)
    sections = [f"Data: {len(tiles)} tiles: {', '.join(t.name for t in tiles)}.",
                "## Against the unrefined codec (first row: its rate and PSNR; then the changes)\n\n" + table]
    text = reporting.report("Latent refinement search", "benchmarks/refinement_search.py", argv, 1, args.model, sections,
                            args.note)
    reporting.publish(text, args.out, "refinement_search.md")


if __name__ == "__main__":
    main()
