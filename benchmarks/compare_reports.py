"""Compare two reports of ``rd_benchmark.py`` (e.g. two releases of the weights) on one PSNR interval.

A report's BD-rates are computed over the PSNR interval its own curves share; when a new model's
curve moves up, that interval moves with it, and headline BD-rates of two reports are then not
comparable. This reads the rate-distortion tables of both reports and computes, over the interval
both TerraCodec curves cover: the BD-rate of the new TerraCodec curve against the old one, and of
each against every classical codec.

Example::

    git show baa5a62:docs/benchmarks/rd.md > /tmp/rd-old.md
    python benchmarks/compare_reports.py /tmp/rd-old.md docs/benchmarks/rd.md
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the ``benchmarks`` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import metrics, reporting  # noqa: E402


def read_points(path: Path) -> dict[str, list[metrics.RatePoint]]:
    """The rows of a report's 'Rate and distortion' table, per codec."""
    points: dict[str, list[metrics.RatePoint]] = {}
    for line in path.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 7 or not line.startswith("| "):
            continue
        try:
            bpp, psnr, _, sam, max_error = map(float, cells[2:])
        except ValueError:  # the header and separator rows
            continue
        points.setdefault(cells[0], []).append(metrics.RatePoint(cells[0], cells[1], bpp, psnr, sam, max_error))
    return points


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("old", type=Path, help="the earlier rd.md")
    parser.add_argument("new", type=Path, help="the later rd.md")
    args = parser.parse_args(argv)
    old, new = read_points(args.old), read_points(args.new)
    ours = next(name for name in new if name.startswith("TerraCodec"))
    if ours not in old:
        raise SystemExit(f"{args.old} has no rows for {ours}")
    release = metrics.bd_rate(new[ours], old[ours])
    if release.psnr_range is None:
        raise SystemExit("the two TerraCodec curves share no PSNR interval")
    interval = release.psnr_range

    def bd_text(test: list[metrics.RatePoint], anchor: list[metrics.RatePoint]) -> str:
        bd = metrics.bd_rate(test, anchor, interval)
        return "-" if bd.percent is None else f"{bd.percent:+.1f} %"

    rows = [(f"{ours}, new", f"{ours}, old", f"{release.percent:+.1f} %")]
    for anchor in (name for name in new if name != ours and name in old):
        for label, points in (("old", old), ("new", new)):
            rows.append((f"{ours}, {label}", f"{anchor}, {label}", bd_text(points[ours], points[anchor])))
    print(f"BD-rate (PCHIP) over {interval[0]:.1f}-{interval[1]:.1f} dB, the PSNR interval both TerraCodec curves cover\n")
    print(reporting.markdown_table(("test", "anchor", "BD-rate"), rows, 2))


if __name__ == "__main__":
    main()
