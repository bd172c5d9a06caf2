"""The portability benchmark runs end to end: chunks of the portable mode decode identically under SSE4.1."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks import portability
from tests.test_bounds_benchmark import table_rows


def test_small_run_decodes_portable_chunks_on_another_instruction_set(s2_series: np.ndarray, tmp_path: Path) -> None:
    np.savez(tmp_path / "tile.npz", data=s2_series[0, :, :64, :64])
    portability.main([str(tmp_path / "tile.npz"), "--tile", "64", "--max-tiles", "1", "--qualities", "3",
                      "--isas", "SSE41", "--models", "tec-s2-gain-v1-portable", "--out", str(tmp_path)])
    rows = table_rows((tmp_path / "portability.md").read_text(), "Chunks")
    assert [row[0] for row in rows] == ["tec-s2-gain-v1-portable, quality 3",
                                        "tec-s2-gain-v1-portable, max_error 10 DN, quality chosen by the codec",
                                        "tec-s2-gain-v1-portable, max_error 10 DN at quality 5"]
    assert all(row[3] == "1 / 1" and row[4] == "0" and row[5] == "0" for row in (rows[0], rows[2])), rows
    assert rows[0][1] == rows[2][1] == "1"  # both carry a learned layer: the network's bits are the same there
    assert table_rows((tmp_path / "portability.md").read_text(), "Model")[0][0] == "tec-s2-gain-v1-portable"
