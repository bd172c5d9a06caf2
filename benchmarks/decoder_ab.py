"""Decode speed of this checkout against another one on the same chunks, taking turns: is a change
faster, and does it decode the same values from the same bytes?

This checkout encodes centred crops of a real scene at each quality; then, round after round, each
checkout decodes those bytes in a fresh process of its own (its own compiled kernels first on the
path), the checkouts alternating, so that a shared machine's drift meets both. Each process also
encodes the crops itself, so the table says whether the two encoders write the same bytes. Times
are the minimum and the median over all rounds of ``--repeats`` decodes; the ratio is the other
checkout's minimum over this one's (above 1: this checkout is faster).

Example (the other checkout built in place first)::

    git worktree add ../base 3540fcd && (cd ../base && python setup.py build_ext --inplace)
    python benchmarks/decoder_ab.py ../base --out docs/benchmarks/decoder-ab
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
HEADERS = ("Chunk", "Quality", "threads", "other ms (min / median)", "this ms (min / median)", "speed-up",
           "same bytes", "same values")


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("other", type=Path, help="the other checkout (its kernels built in place)")
    parser.add_argument("--data", type=Path, help="sample folder (default: the benchmarks' Sentinel-2 samples)")
    parser.add_argument("--sizes", type=int, nargs="+", default=(256, 1024), help="chunk sides (default: 256 1024)")
    parser.add_argument("--qualities", type=float, nargs="+", default=(1.0, 5.0, 8.0), help="default: 1 5 8")
    parser.add_argument("--threads", type=int, default=1, help="tile threads per process (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="processes per checkout (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=20, help="timed decodes per process (default: %(default)s)")
    parser.add_argument("--out", type=Path, help="folder to write decoder_ab.md to")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)  # internal: the job file of one process
    return parser.parse_args(argv)


def worker(job_file: Path) -> None:
    """One process of one checkout: encode and decode the job's chunks; print JSON timings and digests."""
    job = json.loads(job_file.read_text())
    sys.path.insert(0, job["checkout"])
    import time

    from numcodec_plugin import engine, tile_pool

    tile_pool.set_workers(job["threads"])
    results = []
    for case in job["cases"]:
        chunk = np.load(case["crop"])
        data = Path(case["chunk"]).read_bytes()
        ours = engine.encode(chunk, engine.EncodeSettings(quality=case["quality"]))
        decoded = engine.decode(data)
        seconds = []
        for _ in range(job["repeats"]):
            start = time.perf_counter()
            engine.decode(data)
            seconds.append(time.perf_counter() - start)
        results.append({"seconds": seconds, "bytes": hashlib.sha256(ours).hexdigest(),
                        "values": hashlib.sha256(decoded.tobytes()).hexdigest()})
    print(json.dumps(results))


def run_worker(checkout: Path, job: dict, folder: Path) -> list[dict]:
    job_file = folder / "job.json"
    job_file.write_text(json.dumps(dict(job, checkout=str(checkout.resolve()))))
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), str(checkout), "--worker", str(job_file)],
                          cwd=checkout, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _commit(checkout: Path) -> str:
    """The checkout's commit, with ``+changes`` where its tracked files differ from it."""
    def git(*arguments: str) -> str:
        return subprocess.run(["git", "-C", str(checkout), *arguments], capture_output=True, text=True).stdout.strip()
    return (git("rev-parse", "--short", "HEAD") or "not a git checkout") + ("+changes" if git("status", "--porcelain", "-uno") else "")


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_arguments(argv)
    if args.worker:
        worker(args.worker)
        return
    sys.path.insert(0, str(ROOT))
    from benchmarks import reporting, sentinel2
    from numcodec_plugin import engine

    image = sentinel2.scene(args.data or ROOT / sentinel2.DEFAULT_DATA_ROOT)
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        cases, labels = [], []
        for size in args.sizes:
            crop = sentinel2.centre_crop(image, size)
            np.save(folder / f"crop{size}.npy", crop)
            for quality in args.qualities:
                chunk = folder / f"chunk{size}_{quality:g}.bin"
                chunk.write_bytes(engine.encode(crop, engine.EncodeSettings(quality=quality)))
                cases.append({"crop": str(folder / f"crop{size}.npy"), "chunk": str(chunk), "quality": quality})
                labels.append(("x".join(map(str, crop.shape)), f"{quality:g}"))
        job = {"cases": cases, "threads": args.threads, "repeats": args.repeats}
        runs: dict[str, list[list[dict]]] = {"other": [], "this": []}
        for round_ in range(args.rounds):
            print(f"round {round_ + 1} of {args.rounds}", file=sys.stderr, flush=True)
            for name, checkout in (("other", args.other), ("this", ROOT)):
                runs[name].append(run_worker(checkout, job, folder))
    rows = []
    for index, (chunk, quality) in enumerate(labels):
        seconds = {name: np.concatenate([r[index]["seconds"] for r in rounds]) for name, rounds in runs.items()}
        every_run = [r[index] for rounds in runs.values() for r in rounds]
        same = ["yes" if len({r[key] for r in every_run}) == 1 else "no" for key in ("bytes", "values")]
        rows.append([chunk, quality, str(args.threads),
                     *(f"{1e3 * seconds[n].min():.1f} / {1e3 * np.median(seconds[n]):.1f}" for n in ("other", "this")),
                     f"{seconds['other'].min() / seconds['this'].min():.2f}x", *same])
    text = reporting.report("Decoder A/B", "benchmarks/decoder_ab.py", argv, args.threads, None,
                            [reporting.markdown_table(HEADERS, rows, 3)],
                            note=f"other checkout: {args.other.resolve()} ({_commit(args.other)}); "
                                 f"this checkout: {ROOT} ({_commit(ROOT)})")
    reporting.publish(text, args.out, "decoder_ab.md")


if __name__ == "__main__":
    main()
