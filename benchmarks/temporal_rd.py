"""Time-series rate-distortion: a temporal model coding chunks of several dates against its image
model coding the same frames one by one, plus the random-access cost of temporal chunks.

Both go through the public numcodecs configuration, exactly as a Zarr store would hold them:
the temporal model gets chunks of ``--time-chunk`` dates, the image model one date per chunk.
Rate is bits per pixel per band over all frames; PSNR (peak 10000 DN) is the mean over
sequences of the MSE over all frames and bands; BD-rate as in ``rd_benchmark.py``.

Usage::

    python benchmarks/temporal_rd.py --out docs/benchmarks            # validation time series
    python benchmarks/temporal_rd.py --input my_series/ --time-chunk 4  # (T, C, H, W) .npz / GeoTIFF / Zarr
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make the ``benchmarks`` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import metrics, reporting, sentinel2, timing  # noqa: E402
from benchmarks.coders import TerraCodec, coded_bits, limit_threads  # noqa: E402
from numcodec_plugin.models.registry import DEFAULT_TEMPORAL_MODEL, image_counterpart, trained_quality_range  # noqa: E402


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--input", type=Path, help="time series: a (T, C, H, W) .npz / GeoTIFF / Zarr, or a folder of them "
                                                   "(default: the validation series of ../shared/data/s2)")
    parser.add_argument("--data", type=Path, default=sentinel2.DEFAULT_DATA_ROOT)
    parser.add_argument("--model", default=DEFAULT_TEMPORAL_MODEL, help="temporal model")
    parser.add_argument("--image-model", help="anchor image model (default: the temporal model's image counterpart)")
    parser.add_argument("--time-chunk", type=int, default=4, help="dates per temporal chunk")
    parser.add_argument("--size", type=int, default=256, help="centre crop of every frame (the store's chunk side)")
    parser.add_argument("--qualities", type=float, nargs="*", help="default: every integer quality the model was trained at")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="timing repeats for the random-access table")
    parser.add_argument("--out", type=Path, help="write temporal_rd.md here")
    return parser.parse_args(argv)


def load_sequences(args: argparse.Namespace) -> list[tuple[str, np.ndarray]]:
    """(name, (T, C, size, size)) chunks of ``--time-chunk`` dates from every series with at least two dates."""
    groups = sentinel2.read_path(args.input) if args.input else sentinel2.validation_split(args.data)
    chunks = []
    for group in groups:
        if len(group) < 2:
            continue
        frames = np.stack([sentinel2.centre_crop(image, args.size) for image in group])
        for start in range(0, len(frames) - 1, args.time_chunk):
            part = frames[start:start + args.time_chunk]
            if len(part) >= 2:
                chunks.append((f"{group[0].name.split('[')[0]}[{start}:{start + len(part)}]", part))
    if not chunks:
        raise SystemExit("no time series with two or more dates in the input")
    return chunks


def as_image(sequence: np.ndarray) -> np.ndarray:
    """(T, C, H, W) -> (C, T*H, W): all frames as one image, for the metrics."""
    return sequence.transpose(1, 0, 2, 3).reshape(sequence.shape[1], -1, sequence.shape[-1])


def sequence_point(coder: TerraCodec, sequences: Sequence[tuple[str, np.ndarray]], frame_by_frame: bool) -> metrics.RatePoint:
    """Rate and distortion of ``coder`` over the sequences, as temporal chunks or one frame per chunk."""
    results = []
    for _, sequence in sequences:
        pieces = list(sequence) if frame_by_frame else [sequence]
        streams = [coder.encode(piece) for piece in pieces]
        decoded = np.stack([coder.decode(s) for s in streams]).reshape(sequence.shape)
        results.append(metrics.evaluate(as_image(sequence), as_image(decoded), sum(coded_bits(s) for s in streams)))
    return metrics.aggregate(coder.family + (" frame by frame" if frame_by_frame else " temporal chunks"),
                             coder.setting, results)


def rd_table(points: dict[str, list[metrics.RatePoint]]) -> str:
    rows = [[p.codec, p.setting, f"{p.bpp:.4f}", f"{p.psnr:.2f}", f"{p.psnr_uint16:.2f}", f"{p.sam:.2f}"]
            for curve in points.values() for p in curve]
    return reporting.markdown_table(["codec", "setting", "bpp/band", "PSNR (10000) dB", "PSNR (65535) dB", "SAM deg"], rows, 2)


def speed_table(temporal: TerraCodec, image: TerraCodec, sequence: np.ndarray, repeats: int) -> str:
    """Frames per second coding the sequence, and seconds to get one date back: decode its temporal
    chunk (all its dates) or its own image chunk."""
    temporal_chunk = temporal.encode(sequence)
    image_chunks = [image.encode(frame) for frame in sequence]
    encode = [timing.median_seconds(lambda: temporal.encode(sequence), repeats),
              timing.median_seconds(lambda: [image.encode(frame) for frame in sequence], repeats)]
    decode = [timing.median_seconds(lambda: temporal.decode(temporal_chunk), repeats),
              timing.median_seconds(lambda: [image.decode(chunk) for chunk in image_chunks], repeats)]
    one_date = [decode[0], timing.median_seconds(lambda: image.decode(image_chunks[0]), repeats)]
    frames = len(sequence)
    rows = [[label, f"{frames / encode[i]:.2f}", f"{frames / decode[i]:.2f}", f"{one_date[i]:.3f}",
             f"{one_date[i] / one_date[1]:.2f}x"]
            for i, label in enumerate([f"{temporal.family}, {frames} dates per chunk", f"{image.family}, one date per chunk"])]
    return reporting.markdown_table(["coding", "encode frames/s", "decode frames/s", "seconds to read one date",
                                     "vs image chunks"], rows)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_arguments(argv)
    limit_threads(args.threads)
    image_model = args.image_model or image_counterpart(args.model)
    if image_model is None:
        raise SystemExit(f"{args.model} has no image counterpart; give --image-model")
    lo, hi = trained_quality_range(args.model)
    qualities = args.qualities or [float(q) for q in range(int(lo), int(hi) + 1)]
    sequences = load_sequences(args)
    points = {
        "temporal": [sequence_point(TerraCodec(q, args.model), sequences, False) for q in qualities],
        "image": [sequence_point(TerraCodec(q, image_model), sequences, True) for q in qualities],
    }
    bd = metrics.bd_rate(points["temporal"], points["image"])
    bd_text = (f"**BD-rate of temporal chunks against frame-by-frame coding: {bd.percent:+.1f}%** "
               f"(PSNR {bd.psnr_range[0]:.1f}-{bd.psnr_range[1]:.1f} dB, negative = fewer bits)"
               if bd.percent is not None else "BD-rate: the curves share no PSNR interval in 30-50 dB")
    middle = qualities[len(qualities) // 2]
    sections = [
        "## Data\n\n" + "\n".join(f"- {name}: {s.shape[0]} dates x {s.shape[1]} bands x {s.shape[2]} x {s.shape[3]}"
                                  for name, s in sequences),
        "## Rate and distortion\n\n" + bd_text + "\n\n" + rd_table(points),
        f"## Speed and random access (quality {middle:g}, frames of {args.size} x {args.size})\n\n"
        + speed_table(TerraCodec(middle, args.model), TerraCodec(middle, image_model), sequences[0][1], args.repeats),
    ]
    text = reporting.report("Time series: temporal chunks vs frame-by-frame coding", "benchmarks/temporal_rd.py", argv,
                            args.threads, args.model, sections)
    reporting.publish(text, args.out, "temporal_rd.md")


if __name__ == "__main__":
    main()
