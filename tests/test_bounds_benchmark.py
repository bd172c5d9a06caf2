"""The lossless / error-bound benchmark runs end to end and reports bounds that hold."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks import bounds_benchmark
from benchmarks.bounds_benchmark import TileOutcome, check_bound
from tests.conftest import TEST_MODEL


def table_rows(report: str, first_header: str) -> list[list[str]]:
    """The body rows of the Markdown table whose first header cell is ``first_header``."""
    lines = report.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    body = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        body.append([cell.strip() for cell in line.strip("|").split("|")])
    return body


def test_small_run_reports_bounds_that_hold(s2_series: np.ndarray, tmp_path: Path) -> None:
    np.savez(tmp_path / "tile.npz", data=s2_series[0, :, :64, :64])
    bounds_benchmark.main([str(tmp_path / "tile.npz"), "--tile", "64", "--max-tiles", "1", "--bounds", "0", "5",
                           "--model", TEST_MODEL, "--search-steps", "3", "--timed-bounds", "5", "--speed-repeats", "1",
                           "--out", str(tmp_path)])
    report = (tmp_path / "bounds.md").read_text()
    lossless = table_rows(report, "Codec")
    assert [row[0] for row in lossless] == [f"TerraCodec ({TEST_MODEL})", "JPEG 2000", "JPEG XL"]
    assert all(row[3] == "yes" and float(row[2]) > 0 for row in lossless)
    bounded = table_rows(report, "E (DN)")
    assert [(row[0], row[1]) for row in bounded] == [("5", f"TerraCodec ({TEST_MODEL})"), ("5", "JPEG 2000 + KLT"),
                                                      ("5", "JPEG XL")]
    assert all(int(row[4]) <= 5 and float(row[3]) > 0 for row in bounded)
    assert bounded[0][5] == bounds_benchmark.GUARANTEED
    assert all(row[5] in ("yes (1/1 tiles)", "no: lossless rate") for row in bounded[1:])


def test_a_broken_bound_stops_the_run() -> None:
    check_bound(TileOutcome(bits=8, samples=1, max_abs_error=5, mode="level", value=90.0), 5, "codec", "tile")
    with pytest.raises(AssertionError, match="broke the bound"):
        check_bound(TileOutcome(bits=8, samples=1, max_abs_error=6, mode="level", value=90.0), 5, "codec", "tile")
