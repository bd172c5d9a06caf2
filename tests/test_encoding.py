"""xr_terracodec.encoding and band names: real stores written by ``to_zarr``, read by ``open_zarr``."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr
import zarr.errors

import numcodec_plugin
import numcodec_plugin.zarr3
import xr_terracodec
from numcodec_plugin import ConfigurationError
from numcodec_plugin.models.bands import L1C_BANDS, L2A_BANDS
from tests.conftest import TEST_MODEL
from xr_terracodec.band_names import BAND_ALIASES, band_id, to_model_order
from xr_terracodec.encoding import chunk_for_writing, zarr_format_of

QUALITY = 2.0
EARTH_SEARCH = [BAND_ALIASES[band][0] for band in L2A_BANDS]


def cube(s2_series: np.ndarray, band_names: list[str] = list(L2A_BANDS)) -> xr.Dataset:
    """(time, band, y, x) reflectance of real pixels, 264 x 250 (partial edge chunks), a no-data corner and an SCL mask."""
    data = s2_series[:, :, :264, :250].copy()
    data[0, :, :20, :30] = 0
    scl = np.full((data.shape[0], 264, 250), 4, np.uint8)
    return xr.Dataset(
        {"reflectance": (("time", "band", "y", "x"), data), "SCL": (("time", "y", "x"), scl)},
        coords={"time": np.arange(data.shape[0]), "band": band_names, "y": np.arange(264) * 10.0, "x": np.arange(250) * 10.0},
    )


def quiet_encoding(ds: xr.Dataset, **kwargs) -> dict:
    """The encoding, with the expected warning about the SCL mask silenced."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="not compressed with TerraCodec")
        return xr_terracodec.encoding(ds, quality=QUALITY, model=TEST_MODEL, **kwargs)


@pytest.fixture(scope="module")
def ds(s2_series: np.ndarray) -> xr.Dataset:
    return cube(s2_series)


@pytest.fixture(scope="module")
def in_memory(ds: xr.Dataset) -> np.ndarray:
    """The engine round trip of the reflectance, chunk by chunk: what every store must give back."""
    return ds.reflectance.tec.roundtrip(quality=QUALITY, model=TEST_MODEL).values


@pytest.mark.parametrize("zarr_format, shard", [(3, True), (3, False), (2, False)], ids=["v3-sharded", "v3", "v2"])
def test_store_written_with_the_encoding_reads_back_the_in_memory_round_trip(
        tmp_path: Path, ds: xr.Dataset, in_memory: np.ndarray, zarr_format: int, shard: bool) -> None:
    encoding = quiet_encoding(ds, zarr_format=zarr_format, shard=shard)
    assert set(encoding) == ({"reflectance", "band"} if zarr_format == 3 else {"reflectance"})
    entry = encoding["reflectance"]
    assert entry["chunks"] == (1, 12, 256, 250)
    assert entry.get("shards") == ((1, 12, 512, 250) if shard else None)
    assert zarr_format_of(encoding) == zarr_format  # what xr_terracodec.write passes to to_zarr
    with warnings.catch_warnings():
        warnings.simplefilter("error", zarr.errors.UnstableSpecificationWarning)  # band names as v3 strings
        ds.to_zarr(tmp_path / "cube.zarr", encoding=encoding, zarr_format=zarr_format)

    array = zarr.open_array(tmp_path / "cube.zarr" / "reflectance", mode="r")
    if zarr_format == 3:
        codecs = array.metadata.codecs[0].codecs if shard else array.metadata.codecs
        assert isinstance(codecs[0], numcodec_plugin.zarr3.TerraCodec) and len(codecs) == 1
        assert array.metadata.fill_value == 0
    else:
        assert array.metadata.compressor.get_config()["nodata"] == 0
    back = xr.open_zarr(tmp_path / "cube.zarr")
    assert back.reflectance.dtype == np.uint16 and list(back.band.values) == list(L2A_BANDS)
    np.testing.assert_array_equal(back.reflectance.values, in_memory)
    np.testing.assert_array_equal(back.SCL.values, ds.SCL.values)
    assert (back.reflectance.values[0, :, :20, :30] == 0).all()


def test_in_memory_round_trip_matches_the_engine_on_one_padded_chunk(ds: xr.Dataset, in_memory: np.ndarray) -> None:
    """The right edge chunk (x 0..250 of a 256 chunk) is padded with no-data, as Zarr pads it."""
    block = np.zeros((12, 256, 256), np.uint16)
    block[:, :8, :250] = ds.reflectance.values[1, :, 256:, :]
    settings = numcodec_plugin.engine.EncodeSettings(TEST_MODEL, QUALITY, 0.0)
    decoded = numcodec_plugin.engine.decode(numcodec_plugin.engine.encode(block, settings))
    np.testing.assert_array_equal(in_memory[1, :, 256:, :], decoded[:, :8, :250])


def test_float_reflectance_keeps_nan_no_data(tmp_path: Path, ds: xr.Dataset) -> None:
    values = ds.reflectance.values
    floats = ds[["reflectance"]].assign(reflectance=ds.reflectance.copy(data=np.where(values == 0, np.nan, values / 1e4).astype(np.float32)))
    encoding = xr_terracodec.encoding(floats, quality=QUALITY, model=TEST_MODEL)
    assert np.isnan(encoding["reflectance"]["fill_value"])
    floats.to_zarr(tmp_path / "f.zarr", encoding=encoding, zarr_format=3)
    back = xr.open_zarr(tmp_path / "f.zarr").reflectance.values
    np.testing.assert_array_equal(np.isnan(back), np.isnan(floats.reflectance.values))
    np.testing.assert_array_equal(back, floats.reflectance.tec.roundtrip(quality=QUALITY, model=TEST_MODEL).values)


def test_nodata_attribute_becomes_the_fill_value_and_codec_nodata(ds: xr.Dataset) -> None:
    signed = ds[["reflectance"]].astype(np.int16)
    signed.reflectance.attrs["nodata"] = -1
    assert xr_terracodec.encoding(signed, model=TEST_MODEL)["reflectance"]["fill_value"] == -1
    v2 = xr_terracodec.encoding(signed, model=TEST_MODEL, zarr_format=2)["reflectance"]["compressors"]
    assert v2.get_config()["nodata"] == -1
    unsigned = ds[["reflectance"]].copy()
    unsigned.reflectance.attrs["nodata"] = -1
    with pytest.raises(ConfigurationError, match="no-data value -1 is not a uint16 value"):
        xr_terracodec.encoding(unsigned, model=TEST_MODEL)


def test_other_variables_are_skipped_with_a_warning_or_refused_when_asked_for(tmp_path: Path, ds: xr.Dataset) -> None:
    with pytest.warns(UserWarning, match="'SCL': dtype uint8 is not one of uint16, int16, float32"):
        assert set(xr_terracodec.encoding(ds, model=TEST_MODEL, zarr_format=2)) == {"reflectance"}
    with pytest.raises(ConfigurationError, match="'SCL': dtype uint8"):
        xr_terracodec.encoding(ds, model=TEST_MODEL, variables=["reflectance", "SCL"])
    with pytest.raises(ConfigurationError, match=r"no data variable\(s\) \['B04'\]"):
        xr_terracodec.encoding(ds, model=TEST_MODEL, variables=["B04"])
    without_bands = ds.drop_vars("band").rename({"band": "channel"})
    with pytest.raises(ConfigurationError, match="no band dimension among"):
        xr_terracodec.encoding(without_bands, model=TEST_MODEL, variables=["reflectance"])
    with pytest.raises(ConfigurationError, match="zarr_format must be 2 or 3"):
        xr_terracodec.encoding(ds, model=TEST_MODEL, zarr_format=4)
    assert not (tmp_path / "never.zarr").exists()


def test_band_dimension_found_by_its_coordinate_and_checked_against_the_model(ds: xr.Dataset) -> None:
    renamed = ds[["reflectance"]].rename({"band": "spectral"}).assign_coords(spectral=EARTH_SEARCH)
    assert xr_terracodec.encoding(renamed, model=TEST_MODEL)["reflectance"]["chunks"] == (1, 12, 256, 250)
    shuffled = renamed.isel(spectral=[1, 0] + list(range(2, 12)))
    with pytest.raises(ConfigurationError, match=r"not test-fixed-seed's .* in that order; reorder with ds.tec.to_model_order\(\)"):
        xr_terracodec.encoding(shuffled, model=TEST_MODEL, variables=["reflectance"])
    transposed = renamed.transpose("time", "y", "spectral", "x")
    with pytest.raises(ConfigurationError, match=r"must end with \('spectral', y, x\)"):
        xr_terracodec.encoding(transposed, model=TEST_MODEL, variables=["reflectance"])
    fixed = transposed.isel(spectral=slice(None, None, -1)).tec.to_model_order(TEST_MODEL)
    assert fixed.reflectance.dims == ("time", "spectral", "y", "x")
    np.testing.assert_array_equal(fixed.reflectance.values, ds.reflectance.values)
    eleven = ds[["reflectance"]].drop_vars("band").isel(band=slice(0, 11))
    with pytest.raises(ConfigurationError, match="11 bands, but test-fixed-seed codes 12"):
        xr_terracodec.encoding(eleven, model=TEST_MODEL, variables=["reflectance"])


def test_chunks_and_shards_follow_the_model_tile_and_are_capped_to_the_array(s2_scene: np.ndarray) -> None:
    big = xr.Dataset({"r": (("time", "band", "y", "x"), np.broadcast_to(s2_scene[:, :1000, :1068], (3, 12, 1000, 1068)))},
                     coords={"band": list(L2A_BANDS)})
    entry = xr_terracodec.encoding(big, model=TEST_MODEL)["r"]
    assert entry["chunks"] == (1, 12, 256, 256)
    assert entry["shards"] == (1, 12, 1024, 1024)
    assert xr_terracodec.encoding(big, model=TEST_MODEL, shard_size=512)["r"]["shards"] == (1, 12, 512, 512)
    assert xr_terracodec.encoding(big, model=TEST_MODEL, chunk_size=512)["r"]["chunks"] == (1, 12, 512, 512)
    rechunked = chunk_for_writing(big, {"r": entry})
    assert rechunked.r.chunks == ((1, 1, 1), (12,), (1000,), (1024, 44))


@pytest.mark.parametrize("names", [list(L2A_BANDS), [b.lower() for b in L2A_BANDS], EARTH_SEARCH],
                         ids=["planetary-computer", "eopf", "earth-search"])
def test_the_three_naming_schemes_map_onto_the_model_order(names: list[str]) -> None:
    assert to_model_order(names) == list(range(12))
    rng = np.random.default_rng(0)
    permutation = rng.permutation(12)
    shuffled = [names[i] for i in permutation]
    order = to_model_order(shuffled, "S2L2A")
    assert [band_id(shuffled[i]) for i in order] == list(L2A_BANDS)


def test_band_mapping_drops_extra_bands_and_names_missing_or_repeated_ones() -> None:
    with_cirrus = EARTH_SEARCH[:10] + ["cirrus"] + EARTH_SEARCH[10:]
    assert to_model_order(with_cirrus, "S2L2A") == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12]
    assert to_model_order(with_cirrus, "S2L1C") == list(range(13))
    assert to_model_order(["b8a", "B02"], ["B02", "B8A"]) == [1, 0]
    with pytest.raises(ConfigurationError, match=r"missing from the data: B10 .*not recognised as bands: \['AOT'\]"):
        to_model_order(EARTH_SEARCH + ["AOT"], L1C_BANDS)
    with pytest.raises(ConfigurationError, match="given more than once: B02"):
        to_model_order(EARTH_SEARCH + ["B02"])
    assert band_id("NIR08") == "B8A" and band_id("scl") is None and band_id(3) is None
