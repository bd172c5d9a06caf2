"""benchmarks/compare_reports.py reads the tables of real rd_benchmark reports."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.compare_reports import main, read_points
from numcodec_plugin import DEFAULT_MODEL

REPORT = Path(__file__).resolve().parent.parent / "docs" / "benchmarks" / "rd.md"


def test_it_reads_every_codec_of_the_shipped_report() -> None:
    points = read_points(REPORT)
    assert {"JPEG 2000", "JPEG 2000 + KLT", "JPEG XL"} <= set(points)
    ours = [name for name in points if name.startswith("TerraCodec")]
    assert ours[0] == f"TerraCodec ({DEFAULT_MODEL})" and len(points[ours[0]]) >= 3
    assert all(p.bpp > 0 and 20 < p.psnr < 80 for p in points[ours[0]])


def test_a_report_against_itself_is_zero_and_a_worse_one_costs_bits(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    main([str(REPORT), str(REPORT)])
    assert "| +0.0 % |" in capsys.readouterr().out.splitlines()[4]
    ours = next(name for name in read_points(REPORT) if name.startswith("TerraCodec"))
    doubled = []
    for line in REPORT.read_text().splitlines():  # the same report with our rates doubled
        cells = line.split(" | ")
        if line.startswith(f"| {ours} |") and len(cells) == 7:
            cells[2] = f"{2 * float(cells[2]):.4f}"
        doubled.append(" | ".join(cells))
    (tmp_path / "worse.md").write_text("\n".join(doubled))
    main([str(REPORT), str(tmp_path / "worse.md")])
    assert "| +100.0 % |" in capsys.readouterr().out.splitlines()[4]
