"""The ds.tec / da.tec accessors on real pixels: round trip, report, band reordering, writing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import xr_terracodec  # noqa: F401  (registers the accessors)
from numcodec_plugin import ConfigurationError
from numcodec_plugin.models.bands import L2A_BANDS
from tests.conftest import TEST_MODEL
from tests.test_encoding import EARTH_SEARCH, QUALITY, cube


@pytest.fixture(scope="module")
def da(s2_series: np.ndarray) -> xr.DataArray:
    reflectance = cube(s2_series).reflectance
    reflectance.attrs["units"] = "DN"
    return reflectance


def test_roundtrip_returns_an_array_like_the_input(da: xr.DataArray) -> None:
    back = da.tec.roundtrip(quality=QUALITY, model=TEST_MODEL)
    assert back.dims == da.dims and back.dtype == da.dtype and back.name == da.name and back.attrs == da.attrs
    xr.testing.assert_identical(back.coords.to_dataset(), da.coords.to_dataset())
    assert not np.array_equal(back.values, da.values)  # lossy ...
    assert (back.values[0, :, :20, :30] == 0).all() and (back.values[0, :, 20:, 30:] != 0).all()  # ... but no-data exact
    np.testing.assert_array_equal(back.values, da.tec.roundtrip(quality=QUALITY, model=TEST_MODEL).values)


def test_report_gives_rate_psnr_and_sam(da: xr.DataArray, capsys: pytest.CaptureFixture) -> None:
    low = da.tec.report(quality=1, model=TEST_MODEL)
    printed = capsys.readouterr().out
    assert "bits/pixel/band" in printed and "PSNR" in printed and "SAM" in printed
    high = da.tec.report(quality=4, model=TEST_MODEL, show=False)
    assert capsys.readouterr().out == ""
    for result in (low, high):
        assert result["bits_per_pixel_per_band"] * result["compression_ratio"] == pytest.approx(16.0)
        assert 10 < result["psnr_db"] < 60 and 0 < result["sam_deg"] < 90
    assert high["bits_per_pixel_per_band"] > low["bits_per_pixel_per_band"]
    assert high["psnr_db"] > low["psnr_db"]


def test_report_psnr_is_measured_in_dn_for_float_reflectance(da: xr.DataArray) -> None:
    as_dn = da.tec.report(quality=QUALITY, model=TEST_MODEL, show=False)
    reflectance = da.copy(data=np.where(da.values == 0, np.nan, da.values / 1e4).astype(np.float32))
    as_float = reflectance.tec.report(quality=QUALITY, model=TEST_MODEL, show=False)
    assert as_float["psnr_db"] == pytest.approx(as_dn["psnr_db"], abs=0.5)
    assert as_float["sam_deg"] == pytest.approx(as_dn["sam_deg"], abs=0.5)


def test_to_model_order_reorders_and_transposes_any_naming(da: xr.DataArray) -> None:
    names = {"B01": "coastal", "B8A": "nir08"}
    shuffled = (da.assign_coords(band=[names.get(b, b.lower()) for b in L2A_BANDS])
                .isel(band=[11, 3, 0, 8, 1, 2, 4, 5, 6, 7, 9, 10]).transpose("band", "time", "y", "x"))
    ordered = shuffled.tec.to_model_order(TEST_MODEL)
    assert ordered.dims == ("time", "band", "y", "x")
    np.testing.assert_array_equal(ordered.values, da.values)
    with pytest.raises(ConfigurationError, match="no coordinate of Sentinel-2 band names"):
        da.drop_vars("band").tec.to_model_order()


def test_stack_bands_turns_one_variable_per_band_into_a_cube(s2_series: np.ndarray) -> None:
    ds = cube(s2_series)
    per_band = xr.Dataset({name: ds.reflectance.isel(band=i, drop=True) for i, name in enumerate(EARTH_SEARCH)})
    per_band = per_band[EARTH_SEARCH[::-1]].assign(SCL=ds.SCL)  # catalogue order is not the model's
    stacked = per_band.tec.stack_bands(model=TEST_MODEL)
    assert set(stacked.data_vars) == {"reflectance", "SCL"}
    assert stacked.reflectance.dims == ("time", "band", "y", "x")
    assert list(stacked.band.values) == EARTH_SEARCH
    np.testing.assert_array_equal(stacked.reflectance.values, ds.reflectance.values)


def test_dataset_to_zarr_writes_what_roundtrip_predicts(tmp_path: Path, s2_series: np.ndarray, da: xr.DataArray) -> None:
    ds = cube(s2_series)[["reflectance"]]
    ds.tec.to_zarr(tmp_path / "cube.zarr", quality=QUALITY, model=TEST_MODEL)
    back = xr.open_zarr(tmp_path / "cube.zarr").reflectance
    assert back.encoding["shards"] == (1, 12, 512, 250)
    np.testing.assert_array_equal(back.values, da.tec.roundtrip(quality=QUALITY, model=TEST_MODEL).values)
    assert ds.tec.encoding(quality=QUALITY, model=TEST_MODEL, zarr_format=2)["reflectance"]["chunks"] == (1, 12, 256, 250)


def test_dataset_to_zarr_routes_encoding_options_to_the_encoding_and_the_rest_to_xarray(
        tmp_path: Path, s2_series: np.ndarray, da: xr.DataArray) -> None:
    ds = cube(s2_series)[["reflectance"]]
    store = tmp_path / "cube.zarr"
    ds.tec.to_zarr(store, quality=QUALITY, model=TEST_MODEL)
    with pytest.raises(FileExistsError, match="mode 'w'"):  # to_zarr's default mode, "w-", refuses to overwrite
        ds.tec.to_zarr(store, quality=QUALITY, model=TEST_MODEL)
    ds.tec.to_zarr(store, quality=QUALITY, model=TEST_MODEL, max_error=30, chunk_size=128, mode="w")
    back = xr.open_zarr(store).reflectance
    assert back.encoding["chunks"] == (1, 12, 128, 128)
    valid = da.values != 0
    assert np.abs(back.values.astype(np.int64) - da.values)[valid].max() <= 30
    np.testing.assert_array_equal(
        back.values, da.tec.roundtrip(quality=QUALITY, model=TEST_MODEL, chunk_size=128, max_error=30).values)
    assert da.tec.report(quality=QUALITY, model=TEST_MODEL, chunk_size=128, max_error=30, show=False)["psnr_db"] > \
        da.tec.report(quality=QUALITY, model=TEST_MODEL, chunk_size=128, show=False)["psnr_db"]
