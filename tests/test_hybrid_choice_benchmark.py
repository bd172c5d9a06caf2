"""The hybrid member-choice benchmark counts, per quality, one coding per chunk, from the chunk headers."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks import hybrid_choice
from tests.test_bounds_benchmark import table_rows


def test_every_chunk_is_counted_once_and_only_the_transform_coder_codes_below_the_network(s2_scene: np.ndarray,
                                                                                          tmp_path: Path) -> None:
    np.savez(tmp_path / "tile.npz", data=np.ascontiguousarray(s2_scene[:, :256, :256]))
    hybrid_choice.main([str(tmp_path / "tile.npz"), "--max-tiles", "1", "--out", str(tmp_path)])
    rows = {row[0]: [int(v) for v in row[1:]] for row in table_rows((tmp_path / "hybrid_choice.md").read_text(), "quality")}
    assert [q for q in rows if q != "all"] == [str(q) for q in range(-3, 11)]
    assert all(sum(counts) == 1 for q, counts in rows.items() if q != "all")
    assert rows["-3"] == rows["-2"] == [0, 1]  # below the network's lowest quality only klt-wavelet-v2 codes
    assert rows["9"] == rows["10"] == [0, 1]  # and above its highest
    assert rows["all"] == [sum(c[i] for q, c in rows.items() if q != "all") for i in range(2)]
