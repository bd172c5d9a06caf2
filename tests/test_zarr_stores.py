"""Real Zarr stores on disk through xarray: v2 (numcodecs), v3, sharded v3, fresh-process reads."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import dask
import numcodecs
import numpy as np
import pytest
import xarray as xr
import zarr

import numcodec_plugin
from numcodec_plugin import ConfigurationError, engine
from numcodec_plugin.zarr3 import TerraCodec as TerraCodecV3
from tests.conftest import TEST_MODEL


def cube(s2_series: np.ndarray, dtype: str = "uint16") -> xr.Dataset:
    """(time, band, y, x) with partial edge chunks for 256 x 256 chunking, and some no-data."""
    data = s2_series[:, :, :264, :250].copy()
    data[0, :, :20, :30] = 0
    if dtype == "int16":
        data = data.astype(np.int16)
    elif dtype == "float32":
        data = np.where(data == 0, np.nan, data / 10000).astype(np.float32)
    return xr.Dataset({"reflectance": (("time", "band", "y", "x"), data)},
                      coords={"band": list(numcodec_plugin.models.bands.L2A_BANDS)})


def expected(ds: xr.Dataset, chunk: tuple[int, int] = (256, 256)) -> np.ndarray:
    """What the codec gives chunk by chunk, edge chunks padded with the fill value as Zarr does."""
    data = ds.reflectance.values
    fill = np.nan if data.dtype.kind == "f" else 0
    out = np.empty_like(data)
    for t in range(data.shape[0]):
        for y in range(0, data.shape[2], chunk[0]):
            for x in range(0, data.shape[3], chunk[1]):
                block = np.full((12,) + chunk, fill, data.dtype)
                part = data[t, :, y:y + chunk[0], x:x + chunk[1]]
                block[:, :part.shape[1], :part.shape[2]] = part
                decoded = engine.decode(engine.encode(block, engine.EncodeSettings(TEST_MODEL, 3)))
                out[t, :, y:y + chunk[0], x:x + chunk[1]] = decoded[:, :part.shape[1], :part.shape[2]]
    return out


V3 = {"serializer": TerraCodecV3(model=TEST_MODEL, quality=3), "compressors": None, "chunks": (1, 12, 256, 256)}
V2 = {"compressors": numcodecs.get_codec({"id": "terracodec", "model": TEST_MODEL, "quality": 3}), "chunks": (1, 12, 256, 256)}
SHARDED = dict(V3, shards=(1, 12, 512, 512))


@pytest.mark.parametrize("fmt, encoding", [(3, V3), (2, V2), (3, SHARDED)], ids=["v3", "v2", "v3-sharded"])
@pytest.mark.parametrize("dtype", ["uint16", "int16", "float32"])
def test_store_round_trip(tmp_path: Path, s2_series: np.ndarray, fmt: int, encoding: dict, dtype: str) -> None:
    ds = cube(s2_series, dtype)
    store = tmp_path / "s2.zarr"
    enc = dict(encoding)
    if fmt == 2 and dtype == "float32":
        enc["compressors"] = numcodecs.get_codec({"id": "terracodec", "model": TEST_MODEL, "quality": 3, "nodata": "NaN"})
    ds.to_zarr(store, zarr_format=fmt, encoding={"reflectance": enc}, consolidated=True)
    back = xr.open_zarr(store)
    assert back.reflectance.chunks is not None  # lazy, Dask-backed
    values = back.reflectance.values
    assert values.dtype == ds.reflectance.dtype
    np.testing.assert_array_equal(values, expected(ds))
    if dtype == "float32":
        np.testing.assert_array_equal(np.isnan(values), np.isnan(ds.reflectance.values))
    else:
        np.testing.assert_array_equal(values == 0, ds.reflectance.values == 0)


def test_fresh_process_reads_without_importing_us(tmp_path: Path, s2_series: np.ndarray) -> None:
    ds = cube(s2_series)
    for name, fmt, enc in [("v3.zarr", 3, SHARDED), ("v2.zarr", 2, V2)]:
        ds.to_zarr(tmp_path / name, zarr_format=fmt, encoding={"reflectance": enc})
    script = textwrap.dedent(f"""
        import sys, json
        import numpy as np, xarray as xr
        before = [m for m in sys.modules if m.startswith(("numcodec_plugin", "xr_terracodec"))]
        out = {{}}
        for name in ("v3.zarr", "v2.zarr"):
            values = xr.open_zarr({str(tmp_path)!r} + "/" + name).reflectance.values
            np.save({str(tmp_path)!r} + "/" + name + ".npy", values)
        print(json.dumps(before))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, check=True)
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
    reference = expected(ds)
    for name in ("v3.zarr", "v2.zarr"):
        np.testing.assert_array_equal(np.load(tmp_path / f"{name}.npy"), reference)


def test_dask_threaded_reads_equal_serial(tmp_path: Path, s2_series: np.ndarray) -> None:
    cube(s2_series).to_zarr(tmp_path / "s.zarr", encoding={"reflectance": V3})
    lazy = xr.open_zarr(tmp_path / "s.zarr").reflectance
    with dask.config.set(scheduler="synchronous"):
        serial = lazy.values
    with dask.config.set(scheduler="threads", num_workers=8):
        threaded = lazy.values
    np.testing.assert_array_equal(serial, threaded)


@pytest.mark.parametrize("chunks, match", [((1, 6, 256, 256), "split the band axis"), ((1, 12, 256, 256), "13 bands")])
def test_bad_chunking_refused_before_writing(tmp_path: Path, chunks: tuple, match: str) -> None:
    bands = 12 if chunks[1] == 6 else 13
    ds = xr.Dataset({"reflectance": (("time", "band", "y", "x"), np.ones((1, bands, 64, 64), np.uint16))})
    enc = dict(V3, chunks=chunks if bands == 12 else (1, 13, 256, 256))
    with pytest.raises(ConfigurationError, match=match):
        ds.to_zarr(tmp_path / "bad.zarr", encoding={"reflectance": enc})
    assert not list((tmp_path / "bad.zarr").rglob("c/*")), "chunk data was written"


def test_unsupported_dtype_refused(tmp_path: Path) -> None:
    ds = xr.Dataset({"reflectance": (("band", "y", "x"), np.ones((12, 64, 64), np.uint8))})
    with pytest.raises(ConfigurationError, match="uint8"):
        ds.to_zarr(tmp_path / "u8.zarr", encoding={"reflectance": dict(V3, chunks=(12, 64, 64))})


def test_codec_configs_round_trip() -> None:
    codec = numcodecs.get_codec({"id": "terracodec"})
    assert codec.get_config()["model"] == numcodec_plugin.DEFAULT_MODEL
    lo, hi = numcodec_plugin.quality_range()
    assert lo <= codec.get_config()["quality"] <= hi
    again = numcodecs.get_codec(codec.get_config())
    assert again.get_config() == codec.get_config()
    v3 = TerraCodecV3(model=TEST_MODEL, quality=2.5)
    assert TerraCodecV3.from_dict(v3.to_dict()) == v3
    assert zarr.registry.get_codec_class("terracodec") is TerraCodecV3


def test_numcodecs_decode_into_out(s2_series: np.ndarray) -> None:
    codec = numcodecs.get_codec({"id": "terracodec", "model": TEST_MODEL})
    x = s2_series[0, :, :64, :64]
    out = np.empty_like(x)
    codec.decode(codec.encode(x), out=out)
    np.testing.assert_array_equal(out, codec.decode(codec.encode(x)))
