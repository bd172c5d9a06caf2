"""Time series: temporal chunks through the engine, real Zarr stores and the official TEC-TT / FlexTEC path."""

from __future__ import annotations

import struct
import subprocess
import sys
import textwrap
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
import yaml

import numcodec_plugin
import xr_terracodec
from numcodec_plugin import ConfigurationError, bitstream, engine
from numcodec_plugin.errors import BitstreamError
from numcodec_plugin.models import registry
from numcodec_plugin.models.official import OFFICIAL_MODELS
from numcodec_plugin.models.official_temporal import build_temporal_transformer
from tests.conftest import TEST_MODEL

TEMPORAL_TEST_MODEL = "test-fixed-seed-temporal"
#: a small TemporalTransformer: every part of the published one, a fraction of its size
SMALL_TT = {"transform_channels": [16, 16, 16, 16], "residual_blocks": 1, "latent_channels": 16, "d_model": 32,
            "heads": 2, "encoder_layers": [1, 1], "decoder_layers": 1, "window": [4, 4], "table_scales": 16,
            "table_means": 8}


def series_cube(s2_series: np.ndarray, frames: int = 5) -> xr.Dataset:
    """(time, band, y, x) of real pixels with ``frames`` dates (a 5-date series does not divide by 4)."""
    data = np.concatenate([s2_series, s2_series[:, :, ::-1], s2_series[:, :, :, ::-1]])[:frames, :, :96, :160].copy()
    data[1, :, :10, :10] = 0  # some no-data
    return xr.Dataset({"reflectance": (("time", "band", "y", "x"), data)},
                      coords={"band": list(numcodec_plugin.models.bands.L2A_BANDS), "time": np.arange(frames)})


def test_temporal_chunk_round_trip_is_reproducible(s2_series: np.ndarray) -> None:
    x = s2_series[:, :, :100, :130]
    settings = engine.EncodeSettings(model=TEMPORAL_TEST_MODEL, quality=3)
    data = engine.encode(x, settings)
    chunk = bitstream.unpack(data)
    assert chunk.header.temporal and data[5] & bitstream.FLAG_TEMPORAL
    assert len(chunk.tiles) == chunk.header.tile_count
    y = engine.decode(data)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert engine.encode(x, settings, batch_size=1) == data, "bytes depend on the batch size"
    assert np.array_equal(engine.decode(data, batch_size=1), y)
    # the temporal prior changes the rate, not the reconstruction of the shared image model
    image = engine.decode(engine.encode(x, engine.EncodeSettings(model=TEST_MODEL, quality=3)))
    assert np.array_equal(image[0], y[0])


def test_temporal_model_refuses_a_single_date() -> None:
    with pytest.raises(ConfigurationError, match="temporal model.*at least 2"):
        engine.encode(np.ones((12, 64, 64), np.uint16), engine.EncodeSettings(model=TEMPORAL_TEST_MODEL))
    ds = xr.Dataset({"r": (("time", "band", "y", "x"), np.ones((3, 12, 64, 64), np.uint16))})
    with pytest.raises(ConfigurationError, match="at least 2"):
        xr_terracodec.encoding(ds, model=TEMPORAL_TEST_MODEL, time_chunk=1, variables=["r"])
    with pytest.raises(ConfigurationError, match="temporal coding needs a temporal model"):
        xr_terracodec.encoding(ds, model=TEST_MODEL, temporal=True)


def test_v3_array_with_one_date_chunks_is_refused_at_creation(tmp_path: Path) -> None:
    import zarr

    with pytest.raises(ConfigurationError, match="at least 2"):
        zarr.create_array(tmp_path / "a.zarr", shape=(4, 12, 64, 64), chunks=(1, 12, 64, 64), dtype="uint16",
                          serializer=numcodec_plugin.zarr3.TerraCodec(model=TEMPORAL_TEST_MODEL), compressors=None)
    assert not (tmp_path / "a.zarr" / "zarr.json").exists()


def test_old_version_with_temporal_flag_is_corrupt(s2_series: np.ndarray) -> None:
    data = bytearray(engine.encode(s2_series[:, :, :64, :64], engine.EncodeSettings(model=TEMPORAL_TEST_MODEL)))
    data[4] = bitstream.VERSION
    data[-4:] = struct.pack("<I", zlib.crc32(bytes(data[:-4])))
    with pytest.raises(BitstreamError, match="do not match format version"):
        bitstream.unpack(bytes(data))


@pytest.mark.parametrize("zarr_format, shard", [(3, False), (2, False), (3, True)], ids=["v3", "v2", "v3-sharded"])
def test_temporal_store_round_trip_in_a_fresh_process(tmp_path: Path, s2_series: np.ndarray, zarr_format: int,
                                                      shard: bool) -> None:
    ds = series_cube(s2_series)
    enc = xr_terracodec.encoding(ds, model=TEMPORAL_TEST_MODEL, quality=3, zarr_format=zarr_format, shard=shard,
                                 chunk_size=64, shard_size=128, time_chunk=4)
    assert enc["reflectance"]["chunks"] == (4, 12, 64, 64)
    store = tmp_path / "series.zarr"
    ds.to_zarr(store, encoding=enc, zarr_format=zarr_format, consolidated=False)
    back = xr.open_zarr(store, consolidated=False).reflectance
    assert back.data.chunks[0] == (4, 1)  # the 5th date sits in a partial last chunk
    values = back.values
    assert values.shape == ds.reflectance.shape
    assert (values[1, :, :10, :10] == 0).all() and (values[ds.reflectance.values != 0] != 0).all()
    # the same chunk coded directly gives the same pixels: what the store holds is the temporal chunk
    first = ds.reflectance.values[:4, :, :64, :64]
    direct = engine.decode(engine.encode(first, engine.EncodeSettings(model=TEMPORAL_TEST_MODEL, quality=3)))
    assert np.array_equal(values[:4, :, :64, :64], direct)
    # and the in-memory preview codes the same chunks, the partial last one included
    preview = ds.reflectance.tec.roundtrip(3, TEMPORAL_TEST_MODEL, chunk_size=64)
    assert np.array_equal(preview.values, values)
    script = textwrap.dedent(f"""
        import sys, numpy as np, xarray as xr
        values = xr.open_zarr({str(store)!r}, consolidated=False).reflectance.values
        np.save({str(tmp_path / "fresh.npy")!r}, values)
        assert "xr_terracodec" not in sys.modules
    """)
    subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path)
    assert np.array_equal(np.load(tmp_path / "fresh.npy"), values)


def test_mixed_store_codes_series_jointly_and_single_images_alone(tmp_path: Path, s2_series: np.ndarray) -> None:
    ds = series_cube(s2_series, frames=4)
    ds["composite"] = ds.reflectance.median("time").astype(np.uint16)
    enc = xr_terracodec.encoding(ds, model=TEMPORAL_TEST_MODEL, quality=3, chunk_size=64)
    assert enc["reflectance"]["serializer"].model == TEMPORAL_TEST_MODEL
    assert enc["composite"]["serializer"].model == TEST_MODEL and enc["composite"]["chunks"] == (12, 64, 64)
    ds.to_zarr(tmp_path / "mixed.zarr", encoding=enc, zarr_format=3, consolidated=False)
    back = xr.open_zarr(tmp_path / "mixed.zarr", consolidated=False)
    assert back.composite.shape == (12, 96, 160) and back.reflectance.shape == (4, 12, 96, 160)
    assert np.abs(back.composite.values.astype(float) - ds.composite.values).mean() < 2000


def write_official_temporal_checkpoint(home: Path, name: str, key: str, image_size: int = 64) -> None:
    """A small randomly initialised TEC-TT / FlexTEC checkpoint laid out as on the hub."""
    model = OFFICIAL_MODELS[name]
    folder = home / model.hub_id
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    network = build_temporal_transformer(12, image_size, name == "flextec", SMALL_TT)
    torch.save(network.state_dict(), folder / model.checkpoint_filename(key))
    (folder / f"config_{key}.yaml").write_text(yaml.safe_dump({"image_size": image_size, "in_channels": 12, "sizes": SMALL_TT}))


@pytest.mark.parametrize("name, key, quality", [("tec-tt-l2a", "lambda-0.4", 1), ("flextec", "lambda-800", 6)])
def test_official_temporal_models_from_local_checkpoints(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         s2_series: np.ndarray, name: str, key: str, quality: int) -> None:
    write_official_temporal_checkpoint(tmp_path, name, key)
    monkeypatch.setenv("TERRACODEC_HOME", str(tmp_path))
    monkeypatch.setenv("TERRACODEC_OFFLINE", "1")
    monkeypatch.setattr(registry, "_cache", {})
    x = s2_series[:, :, :100, :70]
    before = torch.are_deterministic_algorithms_enabled()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = engine.encode(x, engine.EncodeSettings(model=name, quality=quality))
    assert torch.are_deterministic_algorithms_enabled() == before, "terracodec's global flags leaked"
    assert any("GPU model" in str(w.message) for w in caught)
    header = bitstream.unpack(data).header
    assert header.temporal and header.tile_shape == (64, 64)  # the model's fixed frame size
    assert header.streams_per_tile == (quality if name == "flextec" else 16)
    y = engine.decode(data)
    assert y.shape == x.shape and np.array_equal(engine.decode(data), y)
    with pytest.raises(ConfigurationError, match="at least 2"):
        engine.encode(x[0], engine.EncodeSettings(model=name, quality=quality))
    # through a sharded v3 store, read back in a fresh process that finds the weights the same way
    ds = series_cube(s2_series, frames=3)
    enc = xr_terracodec.encoding(ds, model=name, quality=quality, shard_size=128)
    assert enc["reflectance"]["chunks"] == (3, 12, 64, 64)  # the model's frame size
    ds.to_zarr(tmp_path / "tt.zarr", encoding=enc, zarr_format=3, consolidated=False)
    script = textwrap.dedent(f"""
        import numpy as np, xarray as xr
        np.save({str(tmp_path / "tt.npy")!r}, xr.open_zarr({str(tmp_path / "tt.zarr")!r}, consolidated=False).reflectance.values)
    """)
    subprocess.run([sys.executable, "-W", "ignore", "-c", script], check=True, cwd=tmp_path)
    values = np.load(tmp_path / "tt.npy")
    assert values.shape == ds.reflectance.shape
    # the same bytes decode to the same values in any process, whichever Dask thread reads a chunk
    assert np.array_equal(values, xr.open_zarr(tmp_path / "tt.zarr", consolidated=False).reflectance.values)


def test_dask_write_of_temporal_chunks_through_the_accessor(tmp_path: Path, s2_series: np.ndarray) -> None:
    ds = series_cube(s2_series, frames=4)
    enc = ds.tec.encoding(3, TEMPORAL_TEST_MODEL, chunk_size=64, shard_size=128)
    xr_terracodec.write(ds, tmp_path / "dask.zarr", enc)
    back = xr.open_zarr(tmp_path / "dask.zarr", consolidated=False).reflectance
    assert back.encoding["chunks"] == (4, 12, 64, 64) and back.encoding["shards"] == (4, 12, 128, 128)
    direct = engine.decode(engine.encode(ds.reflectance.values[:, :, :64, :64],
                                         engine.EncodeSettings(model=TEMPORAL_TEST_MODEL, quality=3)))
    assert np.array_equal(back.values[:, :, :64, :64], direct)


def test_bundled_temporal_mode_saves_bits_where_the_ground_persists(s2_scene: np.ndarray) -> None:
    """Real pixels seen twice, the second time 4% brighter with a little noise (a revisit): the temporal
    chunk costs fewer bits than two image chunks and reconstructs every frame as well."""
    first = s2_scene[:, :256, :256].astype(np.float64)
    noise = np.random.default_rng(0).normal(0, 20, first.shape)
    series = np.stack([first, np.clip(first * 1.04 + noise, 1, 65535)]).astype(np.uint16)
    temporal = engine.encode(series, engine.EncodeSettings(model=registry.DEFAULT_TEMPORAL_MODEL, quality=5))
    image_model = registry.image_counterpart(registry.DEFAULT_TEMPORAL_MODEL)  # the same weights, one date at a time
    frames = [engine.encode(frame, engine.EncodeSettings(model=image_model, quality=5)) for frame in series]
    assert len(temporal) < 0.9 * sum(map(len, frames))
    decoded = engine.decode(temporal).astype(np.float64)
    for t, frame in enumerate(frames):
        image_error = np.abs(engine.decode(frame).astype(np.float64) - series[t]).mean()
        assert np.abs(decoded[t] - series[t]).mean() <= 1.05 * image_error


def test_error_bound_holds_for_temporal_chunks(s2_series: np.ndarray) -> None:
    x = s2_series[:, :, :64, :96]
    for bound in (0, 7):
        data = engine.encode(x, engine.EncodeSettings(model=TEMPORAL_TEST_MODEL, max_error=bound))
        assert np.abs(engine.decode(data).astype(np.int64) - x).max() <= bound
