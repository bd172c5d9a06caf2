"""The bundled default model on real Sentinel-2 pixels: rate and quality rise together, decoding is reproducible."""

from __future__ import annotations

import hashlib
import math
import os
import subprocess
import sys
import threading

import numcodecs
import numpy as np
import pytest
import torch

from numcodec_plugin import DEFAULT_MODEL, bitstream, engine, quality_range, tile_pool
from numcodec_plugin.models.registry import EXTRAPOLATED_LEVELS, hybrid_members, load_model, trained_quality_range
from numcodec_plugin.scoped_determinism import deterministic_torch
from xr_terracodec import metrics


#: the bundled learned network, which the tests of the learned model's behaviour name
NETWORK = "tec-s2-gain-v3"
HYBRID = "tec-s2-hybrid-v2"


def test_default_codec_uses_the_bundled_transform_coder() -> None:
    assert numcodecs.get_codec({"id": "terracodec"}).get_config()["model"] == DEFAULT_MODEL == "klt-wavelet-v3"
    assert hybrid_members() == ("klt-wavelet-v3",)
    assert hybrid_members(HYBRID) == (NETWORK, "klt-wavelet-v2")
    assert hybrid_members(HYBRID, quality=-2.0) == ("klt-wavelet-v2",)  # below the network's lowest quality
    assert quality_range() == quality_range(HYBRID) == (-3.0, 10.0) and trained_quality_range(HYBRID) == (1.0, 8.0)


def test_the_engine_codes_with_the_default_when_no_model_is_named(s2_scene: np.ndarray) -> None:
    """No model named means the default, in the engine as in the codec configs; the hybrid's chunk is one
    member's coding, and below the network's lowest quality its transform coder's."""
    x = np.ascontiguousarray(s2_scene[:, :256, :256])
    data = engine.encode(x, engine.EncodeSettings(quality=5.0))
    assert bitstream.unpack(data).header.model_name == DEFAULT_MODEL
    assert data == engine.encode(x, engine.EncodeSettings(model=DEFAULT_MODEL, quality=5.0))
    low = engine.encode(x, engine.EncodeSettings(model=HYBRID, quality=-2.0))
    assert bitstream.unpack(low).header.model_name == "klt-wavelet-v2"
    hybrid = engine.encode(x, engine.EncodeSettings(model=HYBRID, quality=5.0))
    member = bitstream.unpack(hybrid).header.model_name
    assert hybrid == engine.encode(x, engine.EncodeSettings(model=member, quality=5.0))


def test_psnr_and_rate_rise_with_quality(s2_scene: np.ndarray) -> None:
    x = np.ascontiguousarray(s2_scene[:, 256:512, 256:512])
    lo, hi = quality_range()
    results = []
    for quality in (lo, (lo + hi) / 2, hi):
        data = numcodecs.get_codec({"id": "terracodec", "quality": quality}).encode(x)
        results.append((len(data) * 8 / x.size, metrics.psnr(metrics.mse(x, engine.decode(data)))))
    rates, psnrs = zip(*results)
    assert rates[0] < rates[1] < rates[2], results
    assert psnrs[0] < psnrs[1] < psnrs[2], results


def test_rate_lambda_follows_the_training_lambdas_between_levels() -> None:
    """The low-pass layer trades rate for distortion at the quality's training lambda, interpolated like the gains."""
    coder = load_model(NETWORK, 1.0)
    lambdas = coder.lambdas
    assert coder.rate_lambda(1.0) == pytest.approx(lambdas[0])
    assert coder.rate_lambda(float(len(lambdas))) == pytest.approx(lambdas[-1])
    assert coder.rate_lambda(2.5) == pytest.approx(math.sqrt(lambdas[1] * lambdas[2]))


def test_qualities_below_the_trained_levels_extrapolate_the_lambda(s2_scene: np.ndarray) -> None:
    """Below quality 1 the lambda is extrapolated geometrically like the gains, and rate and PSNR keep falling
    on real pixels down to the lowest valid quality."""
    coder = load_model(NETWORK, 1.0)
    lambdas = coder.lambdas
    assert coder.rate_lambda(0.0) == pytest.approx(lambdas[0] ** 2 / lambdas[1])
    assert quality_range(NETWORK) == (1.0 - EXTRAPOLATED_LEVELS, 8.0) and trained_quality_range(NETWORK) == (1.0, 8.0)
    x = np.ascontiguousarray(s2_scene[:, 256:512, 256:512])
    results = []
    for quality in (quality_range(NETWORK)[0], 0.0, 1.0):
        data = numcodecs.get_codec({"id": "terracodec", "model": NETWORK, "quality": quality}).encode(x)
        results.append((len(data) * 8 / x.size, metrics.psnr(metrics.mse(x, engine.decode(data)))))
    rates, psnrs = zip(*results)
    assert rates[0] < rates[1] < rates[2], results
    assert psnrs[0] < psnrs[1] < psnrs[2], results


def test_below_the_trained_levels_each_chunk_keeps_the_cheaper_network_quality(s2_scene: np.ndarray,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """At a quality below 1 the encoder codes a chunk with the network at that quality (extrapolated gains), at
    the whole qualities above it and at quality 1, the corrections at the extrapolated lambda every time, and
    keeps the one of lowest lambda * D + R: never costlier than any alone."""
    x = np.ascontiguousarray(s2_scene[:, :256, :256])
    quality = -1.0
    lam = load_model(NETWORK, quality).rate_lambda(quality)

    def cost(data: bytes) -> float:
        mse = metrics.mse(x, engine.decode(data)) / 1e8  # reflectance units
        return lam * mse + len(data) * 8 / x.size

    assert engine.network_qualities(None, quality) == [1.0, 0.0, quality] and engine.network_qualities(None, 2.0) == [2.0]
    assert engine.network_qualities(None, 0.5) == [1.0, 0.5]
    chosen = engine.encode(x, engine.EncodeSettings(model=NETWORK, quality=quality))
    alone = {}
    for network_quality in (1.0, 0.0, quality):
        monkeypatch.setattr(engine, "network_qualities", lambda model, q, nq=network_quality: [nq])
        alone[network_quality] = engine.encode(x, engine.EncodeSettings(model=NETWORK, quality=quality))
    assert bitstream.unpack(alone[1.0]).header.quality == 1.0 and alone[quality][4] == bitstream.EXTRAPOLATED_QUALITY_VERSION
    assert chosen in alone.values()
    assert cost(chosen) == pytest.approx(min(cost(data) for data in alone.values()), rel=1e-3)


def test_entropy_tables_code_the_same_symbols_in_fewer_bytes(s2_scene: np.ndarray) -> None:
    """tec-s2-gain-v3 is v2 with per-quality entropy tables: at trained qualities its chunks decode to
    v2's array in no more bytes (fewer where a table was kept, e.g. quality 1; as many at 5, where none
    was); below quality 1, where the tables save most, the chunk is smaller still. The tables are part
    of the model's identity, so a v3 chunk names its own weights."""
    x = np.ascontiguousarray(s2_scene[:, 256:512, 256:768])
    v2, v3 = load_model("tec-s2-gain-v2"), load_model("tec-s2-gain-v3")
    assert v2.identity.digest != v3.identity.digest
    sizes = {}
    for quality in (-1.0, 1.0, 5.0):
        old, new = (engine.encode(x, engine.EncodeSettings(model=m, quality=quality)) for m in ("tec-s2-gain-v2", "tec-s2-gain-v3"))
        header = bitstream.unpack(new).header
        assert (header.model_name, header.model_digest) == ("tec-s2-gain-v3", v3.identity.digest)
        if quality >= 1:
            np.testing.assert_array_equal(engine.decode(new), engine.decode(old))
        sizes[quality] = len(new) / len(old)
    assert max(sizes.values()) <= 1 and sizes[1.0] < 1 and sizes[-1.0] < 0.9, sizes


@pytest.mark.parametrize("model", [NETWORK, "klt-wavelet-v3"])
def test_decoding_is_reproducible_across_threads_batches_and_processes(model: str, s2_scene: np.ndarray, tmp_path) -> None:
    data = engine.encode(np.ascontiguousarray(s2_scene[:, :300, :520]), engine.EncodeSettings(model=model, quality=5))
    digests = set()
    threads = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            for batch_size in (1, 16):
                digests.add(hashlib.sha256(engine.decode(data, batch_size=batch_size).tobytes()).hexdigest())
    finally:
        torch.set_num_threads(threads)
    (tmp_path / "chunk.bin").write_bytes(data)
    script = ("import hashlib, sys; from numcodec_plugin import engine; "
              "print(hashlib.sha256(engine.decode(open(sys.argv[1], 'rb').read()).tobytes()).hexdigest())")
    env_one_tile_thread = {"TERRACODEC_TILE_THREADS": "1", "PATH": "/usr/bin:/bin"}
    env_other_core_count = {"OMP_NUM_THREADS": "3", "TERRACODEC_TILE_THREADS": "3", "PATH": "/usr/bin:/bin"}  # another machine's
    for env in (None, env_one_tile_thread, env_other_core_count):
        out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "chunk.bin")], capture_output=True, text=True,
                             check=True, env=env)
        digests.add(out.stdout.strip())
    assert len(digests) == 1, digests


def test_fresh_threads_decode_what_warm_threads_encoded(s2_scene: np.ndarray, monkeypatch) -> None:
    """A tile's bits must not depend on whether its thread ran torch before (OpenMP sets a thread's
    team size lazily; :func:`numcodec_plugin.scoped_determinism.pin_thread`): decode on new tile pools
    of either size, and a one-tile chunk on a brand-new thread and on one whose team was set outside
    our calls, as new and concurrent Dask or Zarr threads would."""
    monkeypatch.setenv("TERRACODEC_TILE_THREADS", str(os.cpu_count() or 1))  # restored afterwards
    chunk = engine.encode(np.ascontiguousarray(s2_scene[:, :512, :512]), engine.EncodeSettings(model=NETWORK, quality=5))
    tile = engine.encode(np.ascontiguousarray(s2_scene[:, :256, :256]), engine.EncodeSettings(model=NETWORK, quality=5))
    expected = engine.decode(chunk), engine.decode(tile)
    try:
        for workers in (1, 2):
            tile_pool.set_workers(workers)  # new, cold threads
            np.testing.assert_array_equal(engine.decode(chunk), expected[0])
        np.testing.assert_array_equal(_decode_on_new_thread(tile), expected[1])
        np.testing.assert_array_equal(_decode_on_thread_warmed_outside(tile), expected[1])
    finally:
        tile_pool.set_workers(os.cpu_count() or 1)


def _decode_on_new_thread(data: bytes) -> np.ndarray:
    out = []
    thread = threading.Thread(target=lambda: out.append(engine.decode(data)))
    thread.start()
    thread.join()
    return out[0]


def _decode_on_thread_warmed_outside(data: bytes) -> np.ndarray:
    """Decode on a thread that ran torch with two threads, entering while another codec call holds
    the deterministic settings (as concurrent Zarr threads do)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    warm, go, out = threading.Event(), threading.Event(), []

    def work() -> None:
        torch.ones(1 << 20).sum()  # large enough for a parallel region: the thread's team is set here
        warm.set()
        go.wait()
        out.append(engine.decode(data))

    thread = threading.Thread(target=work)
    try:
        thread.start()
        warm.wait()
        with deterministic_torch():
            go.set()
            thread.join()
    finally:
        torch.set_num_threads(threads)
    return out[0]


def test_the_synthesis_layout_does_not_change_the_decoded_array(s2_scene: np.ndarray) -> None:
    """Channels-last is a speed choice only: with the synthesis in the default layout the same bytes
    decode to the same array (so chunks written before the switch decode unchanged)."""
    data = engine.encode(np.ascontiguousarray(s2_scene[:, :256, :512]), engine.EncodeSettings(model=NETWORK, quality=6))
    channels_last = engine.decode(data)
    synthesis = load_model(NETWORK, 6.0)._canonical.g_s  # the copy the decoder evaluates
    try:
        synthesis.to(memory_format=torch.contiguous_format)
        default_layout = engine.decode(data)
    finally:
        synthesis.to(memory_format=torch.channels_last)
    np.testing.assert_array_equal(channels_last, default_layout)
