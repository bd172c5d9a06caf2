"""The transform coder's step-law benchmark runs end to end on a small input and reports what it says."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from benchmarks import transform_step
from numcodec_plugin.models.gain_hyperprior import lambda_at
from numcodec_plugin.models.transform_coder import LAMBDAS, LOWEST_QUALITY, STEP_PER_ROOT_LAMBDA
from tests.test_bounds_benchmark import table_rows


def test_small_run_reports_a_step_per_quality_and_the_bd_rates(s2_scene: np.ndarray, tmp_path: Path) -> None:
    np.savez(tmp_path / "tile.npz", data=np.ascontiguousarray(s2_scene[:, :256, :256]))
    transform_step.main([str(tmp_path / "tile.npz"), "--max-tiles", "1", "--out", str(tmp_path)])
    text = (tmp_path / "transform_step.md").read_text()
    law = table_rows(text, "quality")
    assert [int(row[0]) for row in law] == list(range(int(LOWEST_QUALITY), len(LAMBDAS) + 1))
    steps = [float(row[2]) for row in law]
    assert steps == sorted(steps, reverse=True) and steps[0] > steps[-1]  # a larger lambda never picks a coarser step
    for row in law:  # the coder's own step, for comparison
        assert abs(float(row[4]) - STEP_PER_ROOT_LAMBDA / math.sqrt(lambda_at(LAMBDAS, int(row[0])))) <= 0.5
    bd = table_rows(text, "Anchor")
    assert [row[0] for row in bd] == ["JPEG 2000", "JPEG 2000 + KLT"]
    assert all(row[1].endswith("%") for row in bd)
