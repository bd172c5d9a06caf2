"""Lossless and error-bounded coding: TerraCodec's ``max_error`` mode against tuned JPEG 2000 and JPEG XL.

On the tiles of ``rd_benchmark.py`` (same inputs and options), in one run:

* lossless (E = 0): TerraCodec with ``max_error=0`` against lossless JPEG 2000 (reversible 5/3, all
  bands in one codestream) and lossless JPEG XL (one grayscale image per band); every decode is
  checked bit-exact;
* near-lossless, for each bound E > 0 in ``--bounds``: TerraCodec with ``max_error=E`` (quality picked
  per tile by the codec), checked to be within E DN on every pixel of every tile; JPEG 2000 + KLT and
  JPEG XL each tuned per tile to the cheapest setting whose largest absolute error is at most E
  (bisection of the level, resp. the logarithm of the distance). Where no lossy setting meets E, or
  only at more bits than the codec's lossless mode, the tile counts at that lossless rate (lossless
  JPEG 2000 for JPEG 2000 + KLT) and the 'meets bound' column says on how many tiles that happened;
* encode/decode time of one tile for TerraCodec at the bounds in ``--timed-bounds``, with lossless
  JPEG 2000 and JPEG XL for scale.

Rates are bits per pixel per band over all tiles. A bound broken by any codec, or a lossless decode
that is not bit-exact, stops the run with an ``AssertionError``.

Example::

    python benchmarks/bounds_benchmark.py --max-tiles 4 --out docs/benchmarks
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make the ``benchmarks`` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import coders, reporting, sentinel2, timing  # noqa: E402
from benchmarks.coders import Coder, Jpeg2000Lossless, JpegXl, KltJpeg2000, Streams, TerraCodec  # noqa: E402
from benchmarks.rd_benchmark import add_data_arguments, load_tiles  # noqa: E402
from numcodec_plugin import bitstream  # noqa: E402

DEFAULT_BOUNDS = (0, 1, 2, 5, 10, 20, 50)
DEFAULT_TIMED_BOUNDS = (0, 10)
#: JPEG 2000 levels searched (dB at the 16-bit peak): from far coarser than any bound here to where
#: OpenJPEG's rate stops growing (about 130 dB on Sentinel-2 tiles)
JPEG2K_LEVELS = (40.0, 130.0)
#: JPEG XL distances searched: libjxl's coarsest useful distance and its finest (it clamps below 0.01)
JPEGXL_DISTANCES = (25.0, 0.01)
GUARANTEED = "guaranteed"
LOSSLESS_HEADERS = ("Codec", "Setting", "bpp/band", "bit-exact", "rate vs best classical")
BOUND_HEADERS = ("E (DN)", "Codec", "Setting", "bpp/band", "max abs error (DN)", "meets bound", "rate vs best classical")
SPEED_HEADERS = ("Codec", "Setting", "bpp/band", "encode s/tile", "decode s/tile", "encode MB/s", "decode MB/s")


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_data_arguments(parser)
    parser.add_argument("--bounds", type=int, nargs="+", default=DEFAULT_BOUNDS,
                        help="maximum absolute errors E in DN; 0 = lossless (default: %(default)s)")
    parser.add_argument("--search-steps", type=int, default=8,
                        help="bisection steps per tile when tuning JPEG 2000 + KLT and JPEG XL (default: %(default)s)")
    parser.add_argument("--model", help="TerraCodec model (default: the bundled model)")
    parser.add_argument("--threads", type=int, default=2, help="threads per codec (default: %(default)s)")
    parser.add_argument("--timed-bounds", type=int, nargs="+", default=DEFAULT_TIMED_BOUNDS,
                        help="bounds at which TerraCodec is timed (default: %(default)s)")
    parser.add_argument("--speed-repeats", type=int, default=3, help="timed repeats per codec (default: %(default)s)")
    parser.add_argument("--out", type=Path, help="folder to write bounds.md to")
    parser.add_argument("--note", default="", help="a remark printed at the top of the report")
    return parser.parse_args(argv)


@dataclass(frozen=True)
class TileOutcome:
    """One codec on one tile: its rate, its largest error and the setting it used.

    ``mode`` names the setting ("level", "distance", "quality") and ``value`` is its value, or ``mode``
    is a lossless mode ("lossless (5/3)") and ``value`` None.
    """

    bits: int
    samples: int
    max_abs_error: int
    mode: str
    value: float | None


@dataclass(frozen=True)
class BoundRow:
    """One codec at one bound over all tiles."""

    bound: int
    codec: str
    outcomes: list[TileOutcome]

    @property
    def bpp(self) -> float:
        return sum(o.bits for o in self.outcomes) / sum(o.samples for o in self.outcomes)

    @property
    def max_abs_error(self) -> int:
        return max(o.max_abs_error for o in self.outcomes)


@dataclass(frozen=True)
class BoundSearch:
    """A lossy codec tuned per tile to a bound, and the lossless coder it falls back to."""

    make: Callable[[float], Coder]
    fewest_bits: float  # the setting at the cheap end of the search
    most_bits: float
    mode: str  # the setting's name
    lossless: Coder
    geometric: bool = False  # bisect the logarithm of the setting

    @property
    def family(self) -> str:
        return self.make(self.most_bits).family

    def between(self, a: float, b: float) -> float:
        """The next setting to try between ``a`` and ``b``."""
        return math.sqrt(a * b) if self.geometric else (a + b) / 2


def lossless_coders(threads: int) -> list[Coder]:
    """The classical lossless anchors: JPEG 2000 (5/3) and JPEG XL."""
    return [Jpeg2000Lossless(threads), JpegXl(0.0, threads)]


def bound_searches(threads: int) -> list[BoundSearch]:
    """The classical codecs tuned to a bound, each with its lossless fallback."""
    j2k_lossless, jxl_lossless = lossless_coders(threads)
    return [
        BoundSearch(lambda level: KltJpeg2000(level, threads), *JPEG2K_LEVELS, "level", j2k_lossless),
        BoundSearch(lambda distance: JpegXl(distance, threads), *JPEGXL_DISTANCES, "distance", jxl_lossless,
                    geometric=True),
    ]


def largest_error(original: np.ndarray, decoded: np.ndarray) -> int:
    """The largest absolute difference in DN; raises unless ``decoded`` has the original's shape and dtype."""
    if decoded.shape != original.shape or decoded.dtype != original.dtype:
        raise AssertionError(f"decoded {decoded.dtype} {decoded.shape} differs from the original's "
                             f"{original.dtype} {original.shape}")
    return int(np.abs(decoded.astype(np.int64) - original.astype(np.int64)).max())


def outcome(coder: Coder, streams: Streams, image: np.ndarray, mode: str, value: float | None) -> TileOutcome:
    """Decode ``streams`` and measure them against ``image``."""
    return TileOutcome(coders.coded_bits(streams), image.size, largest_error(image, coder.decode(streams)), mode, value)


class Trials:
    """Coded tiles already measured, by coder and tile: the bisections of one tile at different bounds
    share their first steps, and every bound falls back to the same lossless result."""

    def __init__(self) -> None:
        self._seen: dict[tuple[Coder, str], TileOutcome] = {}

    def __call__(self, coder: Coder, tile: sentinel2.Image, mode: str, value: float | None) -> TileOutcome:
        key = (coder, tile.name)
        if key not in self._seen:
            self._seen[key] = outcome(coder, coder.encode(tile.data), tile.data, mode, value)
        return self._seen[key]


def check_bound(result: TileOutcome, bound: int, codec: str, tile: str) -> None:
    """Fail loudly where ``result`` breaks the bound (for E = 0: is not bit-exact)."""
    if result.max_abs_error > bound:
        raise AssertionError(f"{codec} broke the bound on {tile}: max abs error {result.max_abs_error} > {bound} DN")


def chosen_quality(chunk: bytes) -> float:
    """The quality TerraCodec coded a chunk at (read from its header)."""
    return bitstream.unpack(chunk).header.quality


def ours_outcome(model: str | None, bound: int, tile: sentinel2.Image) -> TileOutcome:
    """TerraCodec with ``max_error=bound`` on one tile, the quality left to the codec."""
    coder = TerraCodec(model=model, max_error=bound)
    streams = coder.encode(tile.data)
    return outcome(coder, streams, tile.data, "quality", chosen_quality(streams[0]))


def tightest(search: BoundSearch, tile: sentinel2.Image, bound: int, steps: int, trials: Trials) -> TileOutcome | None:
    """The cheapest setting found by bisection whose error is at most ``bound``; None if even the dearest fails."""
    def trial(setting: float) -> TileOutcome:
        return trials(search.make(setting), tile, search.mode, setting)

    cheap, dear = search.fewest_bits, search.most_bits
    best = trial(dear)
    if best.max_abs_error > bound:
        return None
    for _ in range(steps):
        middle = search.between(cheap, dear)
        result = trial(middle)
        if result.max_abs_error <= bound:
            dear, best = middle, result
        else:
            cheap = middle
    return best


def tuned_outcome(search: BoundSearch, tile: sentinel2.Image, bound: int, steps: int, trials: Trials) -> TileOutcome:
    """The tuned lossy result where it meets ``bound`` in fewer bits than the lossless fallback, else the fallback."""
    fallback = trials(search.lossless, tile, search.lossless.setting, None)
    lossy = tightest(search, tile, bound, steps, trials)
    return lossy if lossy is not None and lossy.bits < fallback.bits else fallback


def bound_rows(tiles: Sequence[sentinel2.Image], bound: int, args: argparse.Namespace, trials: Trials) -> list[BoundRow]:
    """TerraCodec, then the classical codecs (lossless at E = 0, tuned above), at ``bound``; every tile checked."""
    rows = [BoundRow(bound, TerraCodec(model=args.model).family, [ours_outcome(args.model, bound, t) for t in tiles])]
    if bound == 0:
        rows += [BoundRow(0, coder.family, [trials(coder, t, coder.setting, None) for t in tiles])
                 for coder in lossless_coders(args.threads)]
    else:
        rows += [BoundRow(bound, search.family, [tuned_outcome(search, t, bound, args.search_steps, trials) for t in tiles])
                 for search in bound_searches(args.threads)]
    for row in rows:
        for tile, result in zip(tiles, row.outcomes):
            check_bound(result, bound, row.codec, tile.name)
    return rows


def settings_text(row: BoundRow) -> str:
    """The settings used over the tiles: per mode, the range of its values (or the lossless mode's name)."""
    parts = []
    for mode in dict.fromkeys(o.mode for o in row.outcomes):
        values = [o.value for o in row.outcomes if o.mode == mode and o.value is not None]
        low, high = (min(values), max(values)) if values else (None, None)
        parts.append(mode if low is None else f"{mode} {low:.3g}" if low == high else f"{mode} {low:.3g}-{high:.3g}")
    return "; ".join(parts)


def meets_bound_text(row: BoundRow, ours: str) -> str:
    """Whether a lossy setting met the bound: on all tiles, some (the rest at the lossless rate) or none."""
    if row.codec == ours:
        return GUARANTEED
    met, count = sum(o.value is not None for o in row.outcomes), len(row.outcomes)
    if met == count:
        return f"yes ({count}/{count} tiles)"
    if met == 0:
        return "no: lossless rate"
    return f"{met}/{count} tiles, rest at lossless rate"


def relative_rate(row: BoundRow, rows: Sequence[BoundRow], ours: str) -> str:
    """For TerraCodec: its rate against the lowest classical rate at the same bound."""
    if row.codec != ours:
        return "-"
    best = min(r.bpp for r in rows if r.bound == row.bound and r.codec != ours)
    return f"{(row.bpp / best - 1) * 100:+.1f} %"


def lossless_table(rows: Sequence[BoundRow], ours: str) -> str:
    lossless = [r for r in rows if r.bound == 0]
    table = [[r.codec, settings_text(r), f"{r.bpp:.4f}", "yes", relative_rate(r, lossless, ours)] for r in lossless]
    return reporting.markdown_table(LOSSLESS_HEADERS, table, text_columns=2)


def bound_table(rows: Sequence[BoundRow], ours: str) -> str:
    bounded = [r for r in rows if r.bound > 0]
    table = [[str(r.bound), r.codec, settings_text(r), f"{r.bpp:.4f}", str(r.max_abs_error), meets_bound_text(r, ours),
              relative_rate(r, bounded, ours)] for r in bounded]
    return reporting.markdown_table(BOUND_HEADERS, table, text_columns=3)


def speed_table(image: sentinel2.Image, args: argparse.Namespace) -> str:
    """Time TerraCodec at each timed bound, and the classical lossless coders, on one tile."""
    rows = []
    megabytes = image.data.nbytes / 1e6
    timed: list[Coder] = [TerraCodec(model=args.model, max_error=bound) for bound in args.timed_bounds]
    for coder in timed + lossless_coders(args.threads):
        measured = timing.measure(coder, image.data, args.speed_repeats)
        rows.append([coder.family, coder.setting, f"{measured.bits / image.data.size:.4f}",
                     f"{megabytes / measured.encode_mb_s:.3f}", f"{megabytes / measured.decode_mb_s:.3f}",
                     f"{measured.encode_mb_s:.2f}", f"{measured.decode_mb_s:.2f}"])
    return reporting.markdown_table(SPEED_HEADERS, rows, text_columns=2)


def sections(tiles: Sequence[sentinel2.Image], rows: Sequence[BoundRow], args: argparse.Namespace) -> list[str]:
    """The report's sections after its header."""
    ours = rows[0].codec
    shape = "x".join(map(str, tiles[0].data.shape))
    parts = [f"Data: {len(tiles)} tiles: {', '.join(t.name for t in tiles)}. Rates in bits per pixel per band over "
             f"all tiles; 'rate vs best classical' compares TerraCodec with the cheapest classical codec at the same "
             f"bound."]
    if any(r.bound == 0 for r in rows):
        parts.append("## Lossless (E = 0)\n\nEvery decode compared bit for bit with the original. TerraCodec: "
                     "`max_error=0`, the quality chosen per tile.\n\n" + lossless_table(rows, ours))
    if any(r.bound > 0 for r in rows):
        parts.append(
            "## Near-lossless: every pixel within E DN\n\n"
            f"TerraCodec: `max_error=E`, the quality chosen per tile; its largest error checked on every pixel. "
            f"JPEG 2000 + KLT (level {JPEG2K_LEVELS[0]:g}-{JPEG2K_LEVELS[1]:g} dB) and JPEG XL (distance "
            f"{JPEGXL_DISTANCES[1]:g}-{JPEGXL_DISTANCES[0]:g}): per tile the cheapest setting meeting E found in "
            f"{args.search_steps} bisection steps; where none does, or only above the codec's lossless rate, "
            f"the tile counts at its lossless rate (lossless JPEG 2000 5/3 for JPEG 2000 + KLT).\n\n"
            + bound_table(rows, ours))
    parts.append(f"## Speed (one {shape} tile, median of {args.speed_repeats}; MB = 10^6 raw bytes)\n\n"
                 "TerraCodec under a bound codes each tile at every quality of "
                 "`numcodec_plugin.engine.bounded_quality_candidates` and keeps the smallest, so its encode time "
                 "includes those trials.\n\n" + speed_table(tiles[0], args))
    return parts


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_arguments(argv)
    coders.limit_threads(args.threads)
    tiles = load_tiles(args)
    trials = Trials()
    rows: list[BoundRow] = []
    for bound in args.bounds:
        print(f"E = {bound} DN: {len(tiles)} tiles", file=sys.stderr, flush=True)
        rows += bound_rows(tiles, bound, args, trials)
    print(f"timing on {tiles[0].name}", file=sys.stderr, flush=True)
    text = reporting.report("Lossless and error-bounded benchmark", "benchmarks/bounds_benchmark.py", argv,
                            args.threads, args.model, sections(tiles, rows, args), args.note)
    reporting.publish(text, args.out, "bounds.md")


if __name__ == "__main__":
    main()
