"""STAC search and load against a real STAC API (rustac, in memory) serving COGs of real pixels."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("pystac_client")
pytest.importorskip("odc.stac")
pytestmark = [pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning"),
              pytest.mark.filterwarnings("ignore:The 'shapely.ops.transform:DeprecationWarning")]

import pystac  # noqa: E402

from numcodec_plugin import ConfigurationError  # noqa: E402
from numcodec_plugin.models.bands import L2A_BANDS  # noqa: E402
from tests._stac_api import ACQUISITIONS, EPSG, ORIGIN, free_port, scl_of, series, stac_api  # noqa: E402,F401
from xr_terracodec import stac  # noqa: E402

MAIN = [acq for acq in ACQUISITIONS if acq.collection == "sentinel-2-l2a"]


def test_search_by_date_cloud_cover_and_count(stac_api: str) -> None:
    everything = stac.search(stac_api)
    assert [item.datetime.isoformat()[:10] for item in everything] == [acq.datetime[:10] for acq in MAIN]
    clear = stac.search(stac_api, max_cloud=30)
    assert [item.properties["eo:cloud_cover"] for item in clear] == [5.0, 12.0, 20.0]
    assert len(stac.search(stac_api, datetime="2023-03-01/2023-08-01")) == 2
    assert len(stac.search(stac_api, max_items=2)) == 2
    assert len(stac.search(stac_api, max_cloud=30, max_items=1)) == 1


def test_search_errors_name_the_problem(stac_api: str) -> None:
    with pytest.raises(ConfigurationError, match="no items"):
        stac.search(stac_api, datetime="2010-01-01/2010-12-31")
    with pytest.raises(ConfigurationError, match="no items"):
        stac.search(stac_api, bbox=(-80.0, 10.0, -79.0, 11.0))
    with pytest.raises(ConfigurationError, match="cannot open a STAC API"):
        stac.search(f"http://127.0.0.1:{free_port()}")


def test_load_gives_the_harmonised_cube_in_model_order(stac_api: str, series: np.ndarray) -> None:
    items = stac.search(stac_api)
    ds = stac.load(items, masks=["scl"])
    reflectance = ds[stac.REFLECTANCE]
    assert reflectance.dims == ("time", "band", "y", "x")
    assert reflectance.dtype == np.uint16
    assert reflectance["band"].values.tolist() == list(L2A_BANDS)
    assert reflectance.data.chunksize == (1, 12, 256, 256)
    # items whose files carry the +1000 offset (baseline >= 04.00, not harmonised by the catalogue) come back true
    np.testing.assert_array_equal(reflectance.values, series)
    np.testing.assert_array_equal(ds["scl"].values, np.stack([scl_of(frame) for frame in series]))
    assert ds["scl"].dtype == np.uint8
    assert ds.odc.geobox.crs.epsg == EPSG
    assert float(ds.x[0]) == ORIGIN[0] + 5 and float(ds.y[0]) == ORIGIN[1] - 5


def test_load_crops_to_bbox_on_the_native_grid(stac_api: str) -> None:
    items = stac.search(stac_api, max_items=1)
    west, south, east, north = items[0].bbox
    full = stac.load(items)[stac.REFLECTANCE]
    cropped = stac.load(items, bbox=(west, (south + north) / 2, (west + east) / 2, north))[stac.REFLECTANCE]
    assert 120 <= cropped.sizes["y"] <= 140 and 120 <= cropped.sizes["x"] <= 140
    np.testing.assert_array_equal(cropped.values, full.reindex(x=cropped.x, y=cropped.y, fill_value=0).values)


def test_planetary_computer_asset_names_load_the_same(stac_api: str, series: np.ndarray) -> None:
    items = stac.search(stac_api, max_items=2)
    renamed = []
    for item in items:
        data = item.to_dict()
        data["assets"] = {_pc_name(key): asset for key, asset in data["assets"].items()}
        renamed.append(pystac.Item.from_dict(json.loads(json.dumps(data))))
    assert "B8A" in renamed[0].assets and "SCL" in renamed[0].assets
    ds = stac.load(renamed, masks=["scl"])
    np.testing.assert_array_equal(ds[stac.REFLECTANCE].values, series[:2])
    assert list(ds.data_vars) == [stac.REFLECTANCE, "scl"]


def _pc_name(key: str) -> str:
    from xr_terracodec.band_names import band_id

    return band_id(key) or key.upper()


def test_missing_bands_are_named(stac_api: str) -> None:
    items = stac.search(stac_api, collection="no-swir22")
    with pytest.raises(ConfigurationError, match="no asset for band.*B12"):
        stac.load(items)
    with pytest.raises(ConfigurationError, match="no 'cloud' asset"):
        stac.load(stac.search(stac_api, max_items=1), masks=["cloud"])


@pytest.mark.parametrize(("properties", "offset"), [
    ({"s2:processing_baseline": "03.01"}, 0),
    ({"s2:processing_baseline": "04.00"}, 1000),
    ({"s2:processing_baseline": "05.09", "earthsearch:boa_offset_applied": True}, 0),
    ({"s2:processing_baseline": "05.09", "earthsearch:boa_offset_applied": False}, 1000),
    ({}, 0),
])
def test_boa_offset_rule(properties: dict, offset: int) -> None:
    import datetime as dt

    item = pystac.Item("x", None, None, dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc), properties)
    assert stac.boa_offset(item) == offset


def test_remove_offset_keeps_nodata_and_clips_at_one() -> None:
    import xarray as xr

    dn = xr.DataArray(np.array([[0, 1, 1000, 1001, 5000]], dtype=np.uint16), dims=("time", "x"))
    out = stac.remove_offset(dn, np.array([1000]))
    assert out.dtype == np.uint16
    assert out.values.tolist() == [[0, 1, 1, 1, 4000]]
