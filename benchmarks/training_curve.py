"""The training curve of a run of ``terracodec-train``: a Markdown table and a PNG from its log.

Usage: python benchmarks/training_curve.py runs/default/train.log --out docs/model-card
(The log is the JSON lines the trainer prints; loss, rate and PSNR are averages over all quality
levels drawn in each logging window.)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.reporting import markdown_table, write  # noqa: E402


def read_log(path: Path) -> list[dict]:
    """The JSON records of a training log, as the checkpoints saw them: at a 'resuming from step N' line,
    the records after step N (from a run stopped before its next checkpoint) are dropped."""
    records: list[dict] = []
    for line in path.read_text().splitlines():
        if line.startswith("{"):
            records.append(json.loads(line))
        elif line.startswith("resuming from step"):
            resumed = int(line.rsplit(" ", 1)[1])
            records = [r for r in records if r["step"] <= resumed]
    return records


def summarise(records: list[dict], rows: int) -> list[list[object]]:
    """About ``rows`` evenly spaced records as table rows."""
    step = max(1, len(records) // rows)
    chosen = records[::step] + ([records[-1]] if (len(records) - 1) % step else [])
    return [[r["step"], r["loss"], r["bpp_per_band"], r["psnr_db"], r["steps_per_s"]] for r in chosen]


def plot(records: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in records]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    left.plot(steps, [r["psnr_db"] for r in records])
    left.set(xlabel="step", ylabel="training PSNR (dB, peak 10000)")
    right.plot(steps, [r["bpp_per_band"] for r in records])
    right.set(xlabel="step", ylabel="estimated bits / pixel / band")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("log", type=Path)
    parser.add_argument("--rows", type=int, default=12)
    parser.add_argument("--out", type=Path, help="folder for training_curve.md and training_curve.png")
    args = parser.parse_args(argv)
    records = read_log(args.log)
    table = markdown_table(["step", "loss", "bits/pixel/band", "PSNR (dB)", "steps/s"], summarise(records, args.rows))
    print(table)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        write(args.out / "training_curve.md", table + "\n")
        plot(records, args.out / "training_curve.png")


if __name__ == "__main__":
    main()
