"""The decoder A/B benchmark runs each checkout in processes of its own and tells whether the two
write the same bytes and decode the same values (here a checkout against itself: they must)."""

from __future__ import annotations

from pathlib import Path

from benchmarks import decoder_ab

ROOT = Path(__file__).resolve().parent.parent


def test_a_checkout_against_itself_writes_the_same_bytes_and_decodes_the_same_values(tmp_path: Path) -> None:
    decoder_ab.main([str(ROOT), "--sizes", "256", "--qualities", "1", "--rounds", "1", "--repeats", "2",
                     "--out", str(tmp_path)])
    report = (tmp_path / "decoder_ab.md").read_text()
    (row,) = [line for line in report.splitlines() if line.startswith("| 12x")]
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[:3] == ["12x256x256", "1", "1"]
    assert cells[-2:] == ["yes", "yes"]
    assert float(cells[5].rstrip("x")) > 0
