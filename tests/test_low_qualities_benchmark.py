"""The benchmark of qualities below the trained range runs end to end and compares what it says it does."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks import low_qualities
from numcodec_plugin import engine
from tests.conftest import TEST_MODEL
from tests.test_bounds_benchmark import table_rows


def test_small_run_compares_the_two_codings_and_the_choice(s2_series: np.ndarray, tmp_path: Path) -> None:
    np.savez(tmp_path / "tile.npz", data=s2_series[0, :, :64, :64])
    np.savez(tmp_path / "other.npz", data=s2_series[1, :, 64:128, 64:128])
    low_qualities.main([str(tmp_path / "tile.npz"), str(tmp_path / "other.npz"), "--tile", "64", "--model", TEST_MODEL,
                        "--out", str(tmp_path)])
    rows = table_rows((tmp_path / "low_qualities.md").read_text(), "quality")
    qualities = ["-1", "0", "1"]
    assert [row[0] for row in rows] == [q for q in qualities for _ in low_qualities.WAYS]
    by_way = {(row[0], row[1]): row for row in rows}
    for quality in qualities[:-1]:
        chosen, extrapolated, at_one = (by_way[(quality, name)] for name, _ in low_qualities.WAYS)
        assert extrapolated[5] == f"2 at {quality}" and at_one[5] == "2 at 1"
        assert all(0 < float(row[4].rstrip(" %")) < 100 for row in (chosen, extrapolated, at_one))
        assert float(chosen[2]) > 0 and float(chosen[3]) > 0
    assert all(by_way[("1", name)][5] == "2 at 1" for name, _ in low_qualities.WAYS)  # quality 1: one coding only
    assert engine.network_qualities(TEST_MODEL, -1.0) == [1.0, 0.0, -1.0]  # restored after the run
