"""End-to-end Dask throughput: ``to_zarr`` of a Sentinel-2 cube, then ``open_zarr(...).compute()`` back.

The cube is ``(time, 12, size, size)`` uint16, real pixels of a Sentinel-2 scene tiled to fill it
(each time step shifted, so frames differ), generated lazily block by block so the source takes
no memory. The same pipeline runs with:

* ``terracodec``: Zarr v3, chunks (1, 12, 256, 256) in shards of (1, 12, 1024, 1024), the
  encoding of :func:`xr_terracodec.encoding` (``--device`` picks the torch device);
* ``jpeg2k``: lossless JPEG 2000 (imagecodecs' numcodecs codec, bands as the components of one
  codestream), Zarr v2, chunks (1, 12, 1024, 1024) (``--jpeg2k-level`` for lossy fixed quality);
* ``zstd``: Zstandard level 3 on raw bytes, Zarr v3 with TerraCodec's chunks and shards.

Each codec runs in a fresh process, so its peak RSS is its own: ``RSS start`` after imports
(torch included: the shared sample loaders import it) and the source scene, ``peak RSS write``
right after writing (it should not grow with ``--time-steps``: one shard per task streams
through), ``peak RSS end`` after reading the whole cube into memory. Speeds are MB/s of raw
uint16 data (10^6 bytes). Threads: Dask's local threaded scheduler with ``--threads`` threads,
Zarr's codec pool of the same size, torch intra-op threads 1 (see docs/dask-gpus.md).

For TerraCodec, ``CPU decode identical`` says whether a fresh process that sees no GPU
(``CUDA_VISIBLE_DEVICES`` empty) and decodes serially (one thread, Dask's synchronous scheduler)
gets the very array that the writing process read back with all its threads: on a GPU run, the
GPU-encode / CPU-decode round trip; on a CPU run, decoding in a new process and another thread count.

    python -m benchmarks.dask_throughput --size 2048 --time-steps 4
    python -m benchmarks.dask_throughput --size 512 --time-steps 1 --model test-fixed-seed   # smoke run
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import metrics, sentinel2  # noqa: E402
from numcodec_plugin.models.bands import L2A_BANDS  # noqa: E402

CODECS = ("terracodec", "jpeg2k", "zstd")
SHARD = 1024
#: per time step, the scene is shifted by this many rows and columns
SHIFT = (97, 131)


def source_cube(time_steps: int, size: int, scene: np.ndarray) -> xr.Dataset:
    """The lazily generated (time, band, y, x) cube, one Dask block per shard."""
    height, width = scene.shape[-2:]
    side = min(SHARD, size)
    chunks = ((1,) * time_steps, (len(L2A_BANDS),), _split(size, side), _split(size, side))

    def block(block_info: dict) -> np.ndarray:
        (t, _), _, (y0, y1), (x0, x1) = block_info[None]["array-location"]
        rows = (np.arange(y0, y1) + SHIFT[0] * t) % height
        cols = (np.arange(x0, x1) + SHIFT[1] * t) % width
        return scene[:, rows][:, :, cols][None]

    data = da.map_blocks(block, chunks=chunks, dtype=np.uint16)
    return xr.Dataset({"reflectance": (("time", "band", "y", "x"), data)}, coords={"band": list(L2A_BANDS)})


def _split(size: int, side: int) -> tuple[int, ...]:
    return (side,) * (size // side) + ((size % side,) if size % side else ())


def encoding_for(codec: str, ds: xr.Dataset, args: argparse.Namespace) -> tuple[dict, int]:
    """(``encoding=`` for ``to_zarr``, zarr_format) of ``codec``."""
    shard = (1, len(L2A_BANDS), min(SHARD, ds.sizes["y"]), min(SHARD, ds.sizes["x"]))
    if codec == "terracodec":
        import xr_terracodec

        return xr_terracodec.encoding(ds, quality=args.quality, model=args.model, shard_size=SHARD,
                                      refinement_steps=args.refinement_steps), 3
    if codec == "zstd":
        from zarr.codecs import ZstdCodec

        chunks = shard[:2] + tuple(min(256, side) for side in shard[2:])
        return {"reflectance": {"chunks": chunks, "shards": shard, "compressors": ZstdCodec(level=3)}}, 3
    from imagecodecs.numcodecs import Jpeg2k, register_codecs

    register_codecs()
    lossy = {"level": args.jpeg2k_level} if args.jpeg2k_level else {"reversible": True}
    return {"reflectance": {"chunks": shard, "compressors": Jpeg2k(planar=True, mct=False, numthreads=1, **lossy)}}, 2


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1e6 if sys.platform == "darwin" else peak * 1024 / 1e6


def store_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def array_digest(values: np.ndarray) -> str:
    """SHA-256 of an array's bytes: two decodes agree when their digests do."""
    return hashlib.sha256(np.ascontiguousarray(values).tobytes()).hexdigest()


def serial_cpu_digest(store: Path) -> str:
    """The digest of ``store``'s cube decoded in a fresh process without GPUs, serially."""
    command = [sys.executable, "-m", "benchmarks.dask_throughput", "--decode-digest", str(store)]
    out = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    if out.returncode:
        raise SystemExit(f"CPU decode of {store} failed:\n{out.stderr[-4000:]}")
    return out.stdout.strip().splitlines()[-1]


def decode_digest(store: Path) -> str:
    """In this process: decode ``store`` on one thread with Dask's synchronous scheduler; its digest."""
    import dask

    from xr_terracodec.dask import configure_process

    configure_process(tile_threads=1, zarr_threads=1, device="cpu")
    with dask.config.set(scheduler="synchronous"):
        return array_digest(xr.open_zarr(store).reflectance.values)


def run_one(codec: str, args: argparse.Namespace) -> dict[str, Any]:
    """Write and read the cube with ``codec`` in this process; the measurements as a dict.

    The source's Dask blocks are already whole shards, so ``to_zarr`` runs one task per shard
    (what :func:`xr_terracodec.write` arranges for any input).
    """
    import dask
    import zarr

    zarr.config.set({"threading.max_workers": args.threads, "codec_pipeline.batch_size": args.zarr_batch_size})
    if codec == "terracodec":
        from numcodec_plugin import load_model
        from xr_terracodec.dask import configure_process

        configure_process(tile_threads=args.threads, **({"device": args.device} if args.device else {}))
        load_model(args.model, args.quality)  # not timed: loading happens once per process
    ds = source_cube(args.time_steps, args.size, sentinel2.scene(Path(args.data)).data)
    encoding, zarr_format = encoding_for(codec, ds, args)
    store = Path(args.workdir) / f"{codec}.zarr"
    raw_mb = ds.reflectance.nbytes / 1e6
    start_rss = peak_rss_mb()
    with dask.config.set(scheduler="threads", num_workers=args.threads):
        start = time.perf_counter()
        ds.to_zarr(store, encoding=encoding, zarr_format=zarr_format, mode="w")
        write_s = time.perf_counter() - start
        write_rss = peak_rss_mb()
        start = time.perf_counter()
        decoded = xr.open_zarr(store).reflectance.compute()
        read_s = time.perf_counter() - start
        errors = (ds.reflectance.data.astype(np.float64) - da.from_array(decoded.values, chunks=ds.reflectance.data.chunks)) ** 2
        mse = float(errors.mean().compute())
    identical = array_digest(decoded.values) == serial_cpu_digest(store) if codec == "terracodec" else None
    return {
        "codec": codec, "raw_mb": raw_mb, "store_mb": store_bytes(store) / 1e6, "cpu_decode_identical": identical,
        "write_mb_s": raw_mb / write_s, "read_mb_s": raw_mb / read_s,
        "psnr_db": metrics.psnr(mse),
        "rss_start_mb": start_rss, "peak_rss_write_mb": write_rss, "peak_rss_end_mb": peak_rss_mb(),
    }


def merged(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One codec's rounds as one result: the median write and read speeds, the highest peak RSS, and
    the decode check of every round."""
    result = dict(runs[0])
    for key in ("write_mb_s", "read_mb_s"):
        result[key] = float(np.median([r[key] for r in runs]))
    for key in ("peak_rss_write_mb", "peak_rss_end_mb"):
        result[key] = max(r[key] for r in runs)
    if result["cpu_decode_identical"] is not None:
        result["cpu_decode_identical"] = all(r["cpu_decode_identical"] for r in runs)
    return result


def table(results: list[dict[str, Any]]) -> str:
    """Markdown table; the last three columns relative to JPEG 2000 (when it ran)."""
    base = next((r for r in results if r["codec"] == "jpeg2k"), None)
    head = ("| codec | store MB | ratio | write MB/s | read MB/s | PSNR dB | RSS start MB | peak RSS write MB "
            "| peak RSS end MB | CPU decode identical | size vs J2K | write vs J2K | read vs J2K |\n|" + " --- |" * 13)
    rows = []
    for r in results:
        identical = {True: "yes", False: "**no**", None: "-"}[r.get("cpu_decode_identical")]
        versus = ["-"] * 3 if base is None else [f"{r['store_mb'] / base['store_mb']:.3f}x",
                                                  f"{r['write_mb_s'] / base['write_mb_s']:.2f}x",
                                                  f"{r['read_mb_s'] / base['read_mb_s']:.2f}x"]
        rows.append(f"| {r['codec']} | {r['store_mb']:.2f} | {r['raw_mb'] / r['store_mb']:.1f} | {r['write_mb_s']:.2f} "
                    f"| {r['read_mb_s']:.2f} | {r['psnr_db']:.2f} | {r['rss_start_mb']:.0f} | {r['peak_rss_write_mb']:.0f} "
                    f"| {r['peak_rss_end_mb']:.0f} | {identical} | " + " | ".join(versus) + " |")
    return "\n".join([head, *rows])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=2048, help="y and x size of the cube (default 2048)")
    parser.add_argument("--time-steps", type=int, default=4, help="time steps (default 4)")
    parser.add_argument("--codecs", default=",".join(CODECS), help=f"comma-separated subset of {', '.join(CODECS)}")
    parser.add_argument("--model", default=None, help="TerraCodec model (default: the bundled model)")
    parser.add_argument("--quality", type=float, default=None, help="TerraCodec quality (default: the model's middle)")
    parser.add_argument("--refinement-steps", type=int, default=0,
                        help="TerraCodec latent-refinement steps per tile (default 0; fewer bits, slower writes)")
    parser.add_argument("--device", default=None, help="torch device for TerraCodec, e.g. cuda or cpu (default: automatic)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="Dask and Zarr threads (default: all cores)")
    parser.add_argument("--zarr-batch-size", type=int, default=16,
                        help="chunks per codec call (default 16: a whole shard shares network batches)")
    parser.add_argument("--jpeg2k-level", type=float, default=None, help="lossy JPEG 2000 quality target in dB (default lossless)")
    parser.add_argument("--data", default=str(sentinel2.DEFAULT_DATA_ROOT), help="Sentinel-2 samples folder")
    parser.add_argument("--rounds", type=int, default=1,
                        help="runs per codec, the codecs taking turns; speeds are the medians (default 1)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--only", choices=CODECS, help=argparse.SUPPRESS)  # one codec, in this process
    parser.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--decode-digest", type=Path, default=None, help=argparse.SUPPRESS)  # see serial_cpu_digest
    args = parser.parse_args(argv)
    if args.size < 256 or args.size % 256:
        parser.error(f"--size must be a multiple of 256 (the chunk side), got {args.size}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.decode_digest:
        print(decode_digest(args.decode_digest))
        return
    if args.only:
        print(json.dumps(run_one(args.only, args)))
        return
    codecs = [c.strip() for c in args.codecs.split(",") if c.strip()]
    unknown = sorted(set(codecs) - set(CODECS))
    if unknown:
        raise SystemExit(f"unknown codec(s) {unknown}; choose from {', '.join(CODECS)}")
    workdir = Path(tempfile.mkdtemp(prefix="dask_throughput_"))
    passed = sys.argv[1:] if argv is None else argv
    runs: dict[str, list[dict[str, Any]]] = {codec: [] for codec in codecs}
    try:
        for _ in range(args.rounds):  # the codecs take turns, round after round
            for codec in codecs:
                out = subprocess.run([sys.executable, "-m", "benchmarks.dask_throughput", *passed, "--only", codec,
                                      "--workdir", str(workdir)], capture_output=True, text=True)
                if out.returncode:
                    raise SystemExit(f"{codec} failed:\n{out.stderr[-4000:]}")
                runs[codec].append(json.loads(out.stdout.strip().splitlines()[-1]))
                shutil.rmtree(workdir / f"{codec}.zarr", ignore_errors=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    results = [merged(runs[codec]) for codec in codecs]
    print(f"cube ({args.time_steps}, 12, {args.size}, {args.size}) uint16 = {results[0]['raw_mb']:.1f} MB; {args.threads} "
          f"threads, {os.cpu_count()} cores, {platform.processor() or platform.machine()}; device {args.device or 'automatic'}; "
          f"median of {args.rounds} round(s)")
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps({"args": {k: v for k, v in vars(args).items() if k not in ("only", "workdir", "json")},
                                         "results": results, "rounds": runs}, indent=2))


if __name__ == "__main__":
    main()
