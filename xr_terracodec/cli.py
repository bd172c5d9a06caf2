"""The ``terracodec`` command: ``terracodec demo`` and ``terracodec convert``.

Errors the package raises on purpose (:class:`numcodec_plugin.TerraCodecError`) are printed as
one line and exit with status 2; anything else is a bug and shows its traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from numcodec_plugin.errors import TerraCodecError
from xr_terracodec.stac import DEFAULT_COLLECTION, EARTH_SEARCH


def _bbox(text: str) -> tuple[float, float, float, float]:
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4:
        raise argparse.ArgumentTypeError(f"expected west,south,east,north in degrees, got {text!r}")
    return values  # type: ignore[return-value]


def _storage_option(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with VALUE read as JSON where it is (``anon=true`` -> True), else kept as text."""
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def parser() -> argparse.ArgumentParser:
    """The argument parser of ``terracodec``."""
    main_parser = argparse.ArgumentParser(prog="terracodec", description="Learned compression of Sentinel-2 time series.")
    commands = main_parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="compress a real Sentinel-2 sample and show the result (no network)")
    demo.add_argument("--out", default="terracodec-demo", help="folder for the store and the PNG (default: %(default)s)")

    convert = commands.add_parser(
        "convert", help="convert a STAC search, GeoTIFFs or a Zarr store into a TerraCodec archive (resumable)",
        description="Convert SRC into the TerraCodec archive DEST. Rerun the same command after an interruption "
                    "to finish the job; --append adds new dates. See docs/converting.md.",
        epilog=f"example: terracodec convert {EARTH_SEARCH} s2.zarr --bbox 11.0,46.0,11.1,46.1 "
               "--datetime 2024-06-01/2024-08-31 --max-cloud 20 --masks scl")
    convert.add_argument("source", nargs="+", metavar="SRC",
                         help="STAC API URL, a folder of GeoTIFFs, GeoTIFF files (one per date), or a Zarr store")
    convert.add_argument("dest", metavar="DEST", help="destination: local path or fsspec URL (s3://..., memory://...)")
    search = convert.add_argument_group("STAC search")
    search.add_argument("--collection", default=DEFAULT_COLLECTION, help="default: %(default)s")
    search.add_argument("--bbox", type=_bbox, help="west,south,east,north in degrees (also crops the cube)")
    search.add_argument("--datetime", help="date or range, e.g. 2024-06-01/2024-08-31")
    search.add_argument("--max-cloud", type=float, help="largest eo:cloud_cover in percent")
    search.add_argument("--max-items", type=int, help="at most this many items")
    search.add_argument("--no-sign", dest="sign", action="store_false", default=None,
                        help="do not sign Planetary Computer asset URLs")
    content = convert.add_argument_group("content and codec")
    content.add_argument("--masks", nargs="*", default=[], metavar="NAME",
                         help="extra layers stored losslessly, e.g. scl (STAC asset or Zarr variable)")
    content.add_argument("--variable", help="Zarr source: the variable to code, when several have a band dimension")
    content.add_argument("--model", help="codec model (default: the archive's, else the bundled model)")
    content.add_argument("--quality", type=float, help="codec quality (default: the archive's, else the model's middle)")
    content.add_argument("--zarr-format", type=int, choices=(2, 3), help="default: the archive's, else 3 (sharded)")
    content.add_argument("--temporal", action="store_true",
                         help="code several dates per chunk jointly with a temporal model (default: the bundled temporal mode)")
    content.add_argument("--time-chunk", type=int, metavar="N", help="dates per chunk with --temporal (default: the archive's, else 4)")
    content.add_argument("--max-error", type=float, nargs="+", metavar="E",
                         help="per-pixel bound in DN, one value or one per band; 0 = lossless (docs/guarantees.md)")
    content.add_argument("--refinement-steps", type=int, metavar="N",
                         help="refine each tile's latents by N gradient steps at encode: fewer bits, slower writes "
                              "(image models; default: the archive's, else 0)")
    run = convert.add_argument_group("run")
    run.add_argument("--append", action="store_true", help="add the source's dates to an existing archive")
    run.add_argument("--dry-run", action="store_true", help="print the plan and write nothing")
    run.add_argument("--scheduler", help="address of a Dask scheduler to run on")
    run.add_argument("--gpus", type=int, help="start a local Dask cluster with this many GPU workers")
    run.add_argument("--storage-option", type=_storage_option, action="append", default=[], metavar="KEY=VALUE",
                     help="fsspec option for remote stores (repeatable), e.g. anon=true")
    run.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    return main_parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``terracodec``; returns the exit status (also used as the process's)."""
    args = parser().parse_args(argv)
    try:
        if args.command == "demo":
            from xr_terracodec.demo import demo

            demo(args.out)
        else:
            _convert(args)
    except TerraCodecError as error:
        print(f"terracodec: error: {error}", file=sys.stderr)
        return 2
    return 0


def _convert(args: argparse.Namespace) -> None:
    from xr_terracodec.convert import plan, run

    sources = args.source
    source = sources[0] if len(sources) == 1 else sources
    job = plan(source, args.dest, collection=args.collection, bbox=args.bbox, datetime=args.datetime,
               max_cloud=args.max_cloud, max_items=args.max_items, sign=args.sign, masks=args.masks,
               variable=args.variable, model=args.model, quality=args.quality, zarr_format=args.zarr_format,
               append=args.append, storage_options=dict(args.storage_option) or None,
               max_error=None if args.max_error is None else (args.max_error[0] if len(args.max_error) == 1 else args.max_error),
               temporal=args.temporal, time_chunk=args.time_chunk, refinement_steps=args.refinement_steps)
    print(job.describe())
    if args.dry_run:
        print("dry run: nothing written")
        return
    print(run(job, scheduler=args.scheduler, gpus=args.gpus, progress=args.progress))


if __name__ == "__main__":
    sys.exit(main())
