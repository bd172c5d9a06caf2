"""The time-series benchmark runs end to end on a user's (T, C, H, W) file and reports both codings."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks import temporal_rd
from tests.test_bounds_benchmark import table_rows
from tests.test_temporal import TEMPORAL_TEST_MODEL


def test_small_run_reports_both_codings(s2_series: np.ndarray, tmp_path: Path) -> None:
    np.savez(tmp_path / "series.npz", data=s2_series[:, :, :64, :64])
    temporal_rd.main(["--input", str(tmp_path / "series.npz"), "--size", "64", "--model", TEMPORAL_TEST_MODEL,
                      "--qualities", "1", "3", "--repeats", "1", "--out", str(tmp_path)])
    report = (tmp_path / "temporal_rd.md").read_text()
    assert "series[0:2]: 2 dates x 12 bands x 64 x 64" in report
    rows = table_rows(report, "codec")
    assert [row[0].split(" (")[1] for row in rows] == [f"{TEMPORAL_TEST_MODEL}) temporal chunks"] * 2 + [
        "test-fixed-seed) frame by frame"] * 2
    assert all(float(row[2]) > 0 for row in rows)
    speed = table_rows(report, "coding")
    assert len(speed) == 2 and speed[1][4] == "1.00x" and float(speed[0][1]) > 0
