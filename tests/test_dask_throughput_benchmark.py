"""The Dask throughput benchmark runs end to end and checks the decode in a fresh CPU-only process."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import zarr

from benchmarks import dask_throughput
from tests.conftest import TEST_MODEL


def test_small_run_reports_a_fresh_serial_cpu_decode_identical(tmp_path: Path, capsys) -> None:
    dask_throughput.main(["--size", "256", "--time-steps", "1", "--codecs", "terracodec,zstd", "--model", TEST_MODEL,
                          "--threads", "2", "--json", str(tmp_path / "run.json")])
    results = {r["codec"]: r for r in json.loads((tmp_path / "run.json").read_text())["results"]}
    assert results["terracodec"]["cpu_decode_identical"] is True
    assert results["zstd"]["cpu_decode_identical"] is None
    table = capsys.readouterr().out
    assert "| CPU decode identical |" in table and "| yes |" in table


def test_the_digest_tells_decodes_apart(tmp_path: Path) -> None:
    """What the check compares: the digests of two decodes differ when one value does."""
    store = tmp_path / "cube.zarr"
    values = np.arange(2 * 3 * 4, dtype=np.uint16).reshape(2, 3, 4)
    zarr.create_array(store, data=values)
    changed = values.copy()
    changed[1, 2, 3] += 1
    assert dask_throughput.array_digest(values) == dask_throughput.array_digest(zarr.open_array(store)[...])
    assert dask_throughput.array_digest(values) != dask_throughput.array_digest(changed)


def test_rounds_merge_to_median_speeds_and_the_highest_memory() -> None:
    runs = [{"codec": "terracodec", "write_mb_s": w, "read_mb_s": r, "peak_rss_write_mb": m, "peak_rss_end_mb": 2 * m,
             "cpu_decode_identical": same} for w, r, m, same in ((30, 90, 1200, True), (40, 70, 1300, True), (20, 80, 1250, False))]
    result = dask_throughput.merged(runs)
    assert (result["write_mb_s"], result["read_mb_s"]) == (30, 80)
    assert (result["peak_rss_write_mb"], result["peak_rss_end_mb"]) == (1300, 2600)
    assert result["cpu_decode_identical"] is False
