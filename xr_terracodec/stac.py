"""Sentinel-2 L2A from a STAC API, as a (time, band, y, x) cube ready for the codec.

:func:`search` finds items with ``pystac-client``; :func:`load` reads them lazily with
``odc-stac`` into a Dataset holding

* ``reflectance``: (time, band, y, x) uint16 DN on the 10 m grid, bands in the model's order
  with their ids (``B01`` ... ``B12``) as coordinate, no-data 0, chunked (1, 12, 256, 256);
* optionally masks such as ``scl``: (time, y, x) uint8, to be stored losslessly beside it;
* ``spatial_ref`` with the CRS and geotransform, ``x``/``y`` pixel-centre coordinates.

Asset names of Earth Search v1 (``coastal`` ... ``swir22``) and of the Planetary Computer
(``B01`` ... ``B12``) are both understood (:mod:`xr_terracodec.band_names`).

Harmonisation: from processing baseline 04.00 on (25 January 2022, and all Collection-1
reprocessing), L2A DN carry a +1000 offset (``BOA_ADD_OFFSET = -1000``). The codec models
expect harmonised DN, so :func:`load` subtracts 1000 from the items that still carry it,
clipping valid pixels at 1 so that they never become the no-data value 0. Which items carry
it is read from the item: ``earthsearch:boa_offset_applied: true`` means Earth Search already
removed it; otherwise ``s2:processing_baseline >= 04.00`` means the offset is in the pixels.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from numcodec_plugin.errors import ConfigurationError
from xr_terracodec.band_names import band_id
from xr_terracodec.encoding import model_layout

EARTH_SEARCH = "https://earth-search.aws.element84.com/v1"
PLANETARY_COMPUTER = "https://planetarycomputer.microsoft.com/api/stac/v1"
DEFAULT_COLLECTION = "sentinel-2-l2a"
REFLECTANCE = "reflectance"
#: the +1000 DN that L2A products of processing baseline >= 04.00 add to every valid pixel
BOA_OFFSET = 1000
CLOUD_COVER = "eo:cloud_cover"
RESOLUTION_M = 10.0


@dataclass(frozen=True)
class Query:
    """An item search: API root, collection and the optional filters."""

    url: str
    collection: str = DEFAULT_COLLECTION
    bbox: tuple[float, float, float, float] | None = None
    datetime: str | None = None
    max_cloud: float | None = None
    max_items: int | None = None

    def describe(self) -> dict[str, Any]:
        """The query as JSON-able values (recorded in the archive's attributes)."""
        return {"url": self.url, "collection": self.collection, "bbox": list(self.bbox) if self.bbox else None,
                "datetime": self.datetime, "max_cloud": self.max_cloud, "max_items": self.max_items}


def open_api(url: str, sign: bool | None = None) -> Any:
    """A ``pystac_client.Client`` for ``url``; raises :class:`ConfigurationError` if it is no STAC API.

    ``sign``: sign the asset URLs of found items with ``planetary_computer.sign_inplace`` (default:
    for Planetary Computer URLs, whose assets cannot be read unsigned).
    """
    from pystac_client import Client

    modifier = _signer(url, sign)
    try:
        return Client.open(url, modifier=modifier)
    except Exception as error:  # pystac-client raises APIError, requests/JSON/pystac errors alike
        raise ConfigurationError(f"cannot open a STAC API at {url!r}: {error}") from error


def _signer(url: str, sign: bool | None) -> Any:
    if sign is False or (sign is None and "planetarycomputer.microsoft.com" not in url):
        return None
    try:
        import planetary_computer
    except ImportError:
        raise ConfigurationError("Planetary Computer assets must be signed: pip install 'xr-terracodec[pc]' "
                                 "(or pass sign=False / --no-sign if your hrefs need no signing)") from None
    return planetary_computer.sign_inplace


def search(url: str, collection: str = DEFAULT_COLLECTION, *, bbox: Sequence[float] | None = None,
           datetime: str | None = None, max_cloud: float | None = None, max_items: int | None = None,
           sign: bool | None = None) -> list:
    """Items of ``collection`` at the STAC API ``url``, oldest first.

    ``bbox`` (lon/lat: west, south, east, north) and ``datetime`` (``"2024-06-01/2024-06-30"``)
    filter on the server. ``max_cloud`` keeps items whose ``eo:cloud_cover`` is at most that
    percentage: sent as a CQL2 ``filter`` or a ``query`` where the API supports one, and always
    checked here too (some servers ignore what they do not support). ``max_items``: at most that
    many items (the first the API returns that pass). Raises :class:`ConfigurationError` for an
    unreachable API or an empty result.
    """
    query = Query(url, collection, tuple(map(float, bbox)) if bbox is not None else None, datetime, max_cloud, max_items)
    return run_query(query, sign)


def run_query(query: Query, sign: bool | None = None) -> list:
    """:func:`search` for a :class:`Query`."""
    from pystac_client import ConformanceClasses

    client = open_api(query.url, sign)
    kwargs: dict[str, Any] = {"collections": [query.collection], "bbox": query.bbox, "datetime": query.datetime}
    if query.max_cloud is not None:
        if client.conforms_to(ConformanceClasses.FILTER):
            kwargs["filter"] = {"op": "<=", "args": [{"property": CLOUD_COVER}, query.max_cloud]}
            kwargs["filter_lang"] = "cql2-json"
        elif client.conforms_to(ConformanceClasses.QUERY):
            kwargs["query"] = {CLOUD_COVER: {"lte": query.max_cloud}}
    try:
        found = client.search(**kwargs).items()
        items = []
        for item in found:
            if query.max_cloud is None or item.properties.get(CLOUD_COVER, np.inf) <= query.max_cloud:
                items.append(item)
            if query.max_items is not None and len(items) >= query.max_items:
                break
    except Exception as error:
        raise ConfigurationError(f"STAC search at {query.url!r} failed: {error}") from error
    if not items:
        raise ConfigurationError(f"the STAC search found no items: {query.describe()} (check the collection "
                                 "name, the bbox as lon/lat west,south,east,north, and the date range)")
    return sorted(items, key=lambda item: (_when(item), item.id))


def _when(item: Any) -> dt.datetime:
    when = item.datetime or item.common_metadata.start_datetime
    if when is None:
        raise ConfigurationError(f"item {item.id} has neither datetime nor start_datetime")
    return when


def boa_offset(item: Any) -> int:
    """DN to subtract from ``item``'s pixels to harmonise them: :data:`BOA_OFFSET` or 0 (see the module docstring)."""
    props = item.properties
    if props.get("earthsearch:boa_offset_applied") is True:
        return 0
    baseline = props.get("s2:processing_baseline")
    try:
        return BOA_OFFSET if baseline is not None and float(baseline) >= 4.0 else 0
    except ValueError:
        raise ConfigurationError(f"item {item.id}: cannot read s2:processing_baseline {baseline!r}") from None


def solar_day(item: Any) -> dt.date:
    """The local solar date of ``item`` (UTC time shifted by its centre longitude): one time step per day and orbit."""
    bbox = item.bbox
    west, east = (bbox[0], bbox[2]) if len(bbox) == 4 else (bbox[0], bbox[3])
    if west > east:  # crosses the antimeridian
        east += 360.0
    longitude = ((west + east) / 2 + 180.0) % 360.0 - 180.0
    return (_when(item) + dt.timedelta(hours=longitude / 15)).date()


def band_assets(items: Sequence[Any], bands: Sequence[str]) -> list[str]:
    """Asset keys holding ``bands`` (model order); :class:`ConfigurationError` naming items that lack some."""
    keys = _asset_keys(items[0], bands)
    for item in items:
        found = _asset_keys(item, bands)
        missing = [band for band, key in zip(bands, found) if key is None]
        if missing:
            raise ConfigurationError(f"item {item.id} has no asset for band(s) {', '.join(missing)} "
                                     f"(assets: {', '.join(item.assets)}); the model codes {', '.join(bands)}")
        if found != keys:
            raise ConfigurationError(f"items {items[0].id} and {item.id} name their band assets differently "
                                     f"({keys} vs {found}); load items of one catalogue at a time")
    return keys


def _asset_keys(item: Any, bands: Sequence[str]) -> list[str | None]:
    by_band = {band_id(key): key for key in item.assets if band_id(key) is not None}
    return [by_band.get(band) for band in bands]


def mask_assets(items: Sequence[Any], masks: Sequence[str]) -> dict[str, str]:
    """Variable name (lower case) -> asset key of each mask (matched ignoring case, e.g. ``scl`` -> ``SCL``)."""
    return {mask.lower(): [_mask_key(item, mask) for item in items][0] for mask in masks}


def _mask_key(item: Any, mask: str) -> str:
    for key in item.assets:
        if key.lower() == mask.lower():
            return key
    raise ConfigurationError(f"item {item.id} has no {mask!r} asset (assets: {', '.join(item.assets)})")


def load(items: Sequence[Any], *, model: str | None = None, masks: Sequence[str] = (),
         bbox: Sequence[float] | None = None, crs: str | None = None, chunk_size: int = 256,
         harmonise: bool = True) -> xr.Dataset:
    """Lazy (time, band, y, x) uint16 cube of ``items`` on the 10 m grid (see the module docstring).

    Items of one local solar day are mosaicked into one time step (the first valid pixel wins).
    ``bbox`` (lon/lat) crops; ``crs`` (e.g. ``"EPSG:32633"``) is needed when the items span
    several UTM zones; ``masks`` are asset names (``["scl"]``) loaded as uint8 variables with
    nearest-neighbour resampling, as are the 20 m and 60 m bands. ``harmonise=False`` keeps
    the DN as stored. Items found by :func:`search` at the Planetary Computer come signed.
    """
    import odc.stac

    items = list(items)
    if not items:
        raise ConfigurationError("no items to load")
    bands = model_layout(model).bands
    band_keys = band_assets(items, bands)
    mask_keys = mask_assets(items, masks)
    offsets = _offsets_per_day(items) if harmonise else None
    ds = odc.stac.load(
        items, bands=band_keys + list(mask_keys.values()), groupby=lambda item, parsed, index: solar_day(item),
        resolution=RESOLUTION_M, crs=crs, bbox=tuple(bbox) if bbox is not None else None,
        chunks={"time": 1, "y": chunk_size, "x": chunk_size}, dtype="uint16", nodata=0, resampling="nearest",
    )
    reflectance = xr.concat([ds[key] for key in band_keys], dim="band", coords="minimal", compat="override")
    reflectance = reflectance.assign_coords(band=list(bands)).transpose("time", "band", "y", "x")
    if offsets is not None:
        reflectance = remove_offset(reflectance, offsets)
    reflectance = reflectance.chunk({"band": -1}).rename(REFLECTANCE)
    reflectance.attrs = {"long_name": "surface reflectance", "units": "DN (reflectance x 10000, harmonised)", "nodata": 0}
    variables = {REFLECTANCE: reflectance}
    for name, key in mask_keys.items():
        variables[name] = ds[key].astype(np.uint8).assign_attrs(nodata=0, long_name=f"{key} (lossless)")
    return xr.Dataset(variables)


def _offsets_per_day(items: Sequence[Any]) -> np.ndarray:
    """The BOA offset of each time step (solar day, in date order); refuses days mixing offsets."""
    per_day: dict[dt.date, dict[int, str]] = {}
    for item in items:
        per_day.setdefault(solar_day(item), {}).setdefault(boa_offset(item), item.id)
    mixed = {day: ids for day, ids in per_day.items() if len(ids) > 1}
    if mixed:
        day, ids = next(iter(mixed.items()))
        raise ConfigurationError(f"items of {day} need different BOA offsets ({ids}): they cannot be mosaicked "
                                 "into one harmonised time step; search them separately")
    return np.array([next(iter(per_day[day])) for day in sorted(per_day)], dtype=np.int32)


def remove_offset(reflectance: xr.DataArray, offsets: np.ndarray) -> xr.DataArray:
    """Subtract ``offsets[t]`` from time step ``t``, keeping no-data 0 and clipping valid pixels at 1 (lazy)."""
    shift = xr.DataArray(offsets.astype(np.int32), dims="time")
    harmonised = (reflectance.astype(np.int32) - shift).clip(1, np.iinfo(np.uint16).max)
    return harmonised.where(reflectance != 0, 0).astype(np.uint16)
