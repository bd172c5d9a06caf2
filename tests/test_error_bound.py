"""Error-bounded and lossless modes: the bound holds on every pixel, through every path."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numcodecs
import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from numcodec_plugin import ConfigurationError, TerraCodecError, bitstream, engine
from numcodec_plugin.zarr3 import TerraCodec as TerraCodecV3
from tests.conftest import TEST_MODEL


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    frames=st.integers(1, 2), height=st.integers(1, 70), width=st.integers(1, 70),
    dtype=st.sampled_from(["uint16", "int16"]), nodata=st.sampled_from([0, 1, 7, 65535, -5]),
    bound=st.one_of(st.sampled_from([0, 1, 2, 5, 10, 50]), st.lists(st.integers(0, 20), min_size=12, max_size=12)),
    seed=st.integers(0, 2**16),
)
def test_bound_holds_on_every_pixel(s2_scene: np.ndarray, frames: int, height: int, width: int, dtype: str,
                                    nodata: int, bound: int | list[int], seed: int) -> None:
    info = np.iinfo(dtype)
    if not info.min <= nodata <= info.max:
        nodata = 0
    rng = np.random.default_rng(seed)
    y0, x0 = rng.integers(0, 400, 2)
    x = np.stack([s2_scene[:, y0 + 3 * f:y0 + 3 * f + height, x0:x0 + width] for f in range(frames)]).astype(np.int64)
    x = np.clip(x - (1000 if dtype == "int16" else 0), info.min, info.max).astype(dtype)
    x[rng.random(x.shape) < 0.05] = nodata
    data = engine.encode(x, engine.EncodeSettings(TEST_MODEL, quality=2, nodata=nodata, max_error=bound))
    y = engine.decode(data)
    limit = np.asarray(bound).reshape(-1, 1, 1)
    valid = x != nodata
    assert (np.abs(y.astype(np.int64) - x)[valid] <= np.broadcast_to(limit, x.shape)[valid]).all()
    np.testing.assert_array_equal(y == nodata, ~valid)


def test_lossless_uint16_and_float32_are_bit_exact(s2_series: np.ndarray) -> None:
    x = s2_series[0, :, :100, :90].copy()
    np.testing.assert_array_equal(engine.decode(engine.encode(x, engine.EncodeSettings(TEST_MODEL, 3, max_error=0))), x)
    f = x.astype(np.float32) / 10000
    f[0, 0, :3] = [np.nan, -0.0, 1e-30]
    back = engine.decode(engine.encode(f, engine.EncodeSettings(TEST_MODEL, 3, max_error=0)))
    valid = ~np.isnan(f)
    np.testing.assert_array_equal(back[valid].view(np.uint32), f[valid].view(np.uint32))
    assert np.isnan(back[0, 0, 0])


def test_quality_is_chosen_per_chunk_under_a_bound(s2_series: np.ndarray) -> None:
    x = s2_series[0, :, :64, :64]
    chosen = engine.encode(x, engine.EncodeSettings(TEST_MODEL, None, max_error=5))
    sizes = [len(engine.encode(x, engine.EncodeSettings(TEST_MODEL, q, max_error=5)))
             for q in engine.bounded_quality_candidates(TEST_MODEL)]
    assert len(chosen) <= min(sizes)  # the residual-only candidate may beat every learned layer
    if len(chosen) < min(sizes):
        assert bitstream.unpack(chosen).residual_only


def _with_valid_crc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


def test_corrupt_residual_stream_raises(s2_series: np.ndarray) -> None:
    data = engine.encode(s2_series[0, :, :64, :64], engine.EncodeSettings(TEST_MODEL, 3, max_error=2))
    layer = bitstream.unpack(data).residual
    start = data.index(layer.subbands.high)
    reference = engine.decode(data)
    failures = 0
    for offset in range(0, len(layer.subbands.high), max(1, len(layer.subbands.high) // 16)):
        body = bytearray(data[:-4])
        body[start + offset] ^= 0x10
        try:
            decoded = engine.decode(_with_valid_crc(bytes(body)))
        except TerraCodecError:
            failures += 1
            continue
        np.testing.assert_array_equal(decoded, reference)  # a flip in bits the decoder never reads
    assert failures >= 8


def test_near_lossless_float_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="max_error=0"):
        engine.encode(np.ones((12, 8, 8), np.float32), engine.EncodeSettings(TEST_MODEL, 3, max_error=2))


@pytest.mark.parametrize("fmt", ["v2", "v3", "v3-sharded"])
def test_bound_through_zarr_stores(tmp_path: Path, s2_series: np.ndarray, fmt: str) -> None:
    data = s2_series[:, :, :200, :150].copy()
    data[0, :, :10, :10] = 0
    ds = xr.Dataset({"reflectance": (("time", "band", "y", "x"), data)})
    if fmt == "v2":
        codec = numcodecs.get_codec({"id": "terracodec", "model": TEST_MODEL, "quality": 3, "max_error": 4})
        enc, zarr_format = {"compressors": codec, "chunks": (1, 12, 128, 128)}, 2
    else:
        enc = {"serializer": TerraCodecV3(model=TEST_MODEL, max_error=[4] * 12), "compressors": None, "chunks": (1, 12, 128, 128)}
        zarr_format = 3
        if fmt == "v3-sharded":
            enc["shards"] = (1, 12, 256, 256)
    ds.to_zarr(tmp_path / "b.zarr", zarr_format=zarr_format, encoding={"reflectance": enc})
    back = xr.open_zarr(tmp_path / "b.zarr").reflectance.values
    assert np.abs(back.astype(int) - data).max() <= 4
    np.testing.assert_array_equal(back == 0, data == 0)


def test_bound_through_encoding_helper_and_convert(tmp_path: Path, s2_series: np.ndarray) -> None:
    import xr_terracodec
    from xr_terracodec.cli import main

    data = s2_series[:, :, :130, :140].copy()
    ds = xr.Dataset({"reflectance": (("time", "band", "y", "x"), data)})
    ds.to_zarr(tmp_path / "src.zarr", encoding=xr_terracodec.encoding(ds, model=TEST_MODEL, max_error=3))
    assert np.abs(xr.open_zarr(tmp_path / "src.zarr").reflectance.values.astype(int) - data).max() <= 3
    assert main(["convert", str(tmp_path / "src.zarr"), str(tmp_path / "out.zarr"), "--model", TEST_MODEL,
                 "--quality", "2", "--max-error", "7", "--no-progress"]) == 0
    stored = xr.open_zarr(tmp_path / "out.zarr")
    source = xr.open_zarr(tmp_path / "src.zarr").reflectance.values.astype(int)
    assert np.abs(stored.reflectance.values.astype(int) - source).max() <= 7
    assert stored.attrs["terracodec"]["layout"]["codec"]["max_error"] == 7


@pytest.mark.parametrize("quality", [5.0, -2.0, None])
def test_the_default_and_the_hybrid_meet_the_bound_on_real_pixels(s2_scene: np.ndarray, quality: float | None) -> None:
    """The default (klt-wavelet-v3) and tec-s2-hybrid-v2 under max_error: at a quality both of the hybrid's
    members code, below the network's range where only its transform coder does, and with the quality
    chosen per chunk: every value within the bound, each chunk coded by one member (or by the residual
    coder alone)."""
    x = np.ascontiguousarray(s2_scene[:, 100:228, 200:328])
    data = engine.encode(x, engine.EncodeSettings(quality=quality, max_error=10))
    assert np.abs(engine.decode(data).astype(np.int64) - x).max() <= 10
    chunk = bitstream.unpack(data)
    assert chunk.residual_only or chunk.header.model_name == "klt-wavelet-v3"
    data = engine.encode(x, engine.EncodeSettings(model="tec-s2-hybrid-v2", quality=quality, max_error=10))
    assert np.abs(engine.decode(data).astype(np.int64) - x).max() <= 10
    chunk = bitstream.unpack(data)
    assert chunk.residual_only or chunk.header.model_name in ("tec-s2-gain-v3", "klt-wavelet-v2")
    if quality == -2.0:
        assert chunk.header.model_name == "klt-wavelet-v2"
