"""GeoTIFF / COG files as a (time, band, y, x) cube ready for the codec.

The convention: **one multi-band GeoTIFF per date**, all on the same grid (CRS, transform, size).

* The date (UTC) is read from the file name: the first ``YYYY-MM-DD`` or ``YYYYMMDD``, optionally
  followed by a time ``THHMMSS`` / ``THH:MM:SS`` (e.g. ``S2_20230614.tif``,
  ``site3_2023-06-14T101559.tif``). Two files of one date are refused.
* Bands are identified by their descriptions when every band has one naming a Sentinel-2 band
  (``B04``, ``red``, ``b8a``...: :mod:`xr_terracodec.band_names`); they are then put in the model's
  order and extra bands (e.g. ``B10``) are left out. Files without such descriptions must hold
  exactly the model's bands, in its order (L2A: B01 B02 B03 B04 B05 B06 B07 B08 B8A B09 B11 B12).
* Values are taken as they are: DN = reflectance x 10000, already harmonised (see
  :mod:`xr_terracodec.stac` for the +1000 offset of processing baseline >= 04.00). The no-data
  value is the files' nodata tag, else 0.

Files are read lazily with ``rioxarray`` (Dask chunks of one tile's size).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from numcodec_plugin.errors import ConfigurationError
from xr_terracodec.band_names import are_band_names, to_model_order
from xr_terracodec.encoding import model_layout
from xr_terracodec.stac import REFLECTANCE

SUFFIXES = (".tif", ".tiff")
_DATE = re.compile(r"(?<!\d)(\d{4})-?(\d{2})-?(\d{2})(?:T(\d{2}):?(\d{2}):?(\d{2}))?(?!\d)")


def find_files(folder: str | Path) -> list[Path]:
    """The GeoTIFFs (``*.tif``, ``*.tiff``) directly in ``folder``, sorted by name."""
    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in SUFFIXES)
    if not files:
        raise ConfigurationError(f"no GeoTIFF files (*.tif, *.tiff) in {folder}")
    return files


def date_of(path: str | Path) -> np.datetime64:
    """The acquisition time in ``path``'s file name (see the module docstring)."""
    match = _DATE.search(Path(path).name)
    if match is None:
        raise ConfigurationError(f"no date (YYYYMMDD or YYYY-MM-DD) in the file name {Path(path).name!r}")
    try:
        when = dt.datetime(*(int(part) for part in match.groups() if part is not None))
    except ValueError as error:
        raise ConfigurationError(f"file name {Path(path).name!r}: {error}") from None
    return np.datetime64(when, "ms")


def open_geotiffs(paths: Sequence[str | Path], *, model: str | None = None, chunk_size: int = 256) -> xr.Dataset:
    """Lazy cube of ``paths`` (one multi-band file per date), bands in the model's order, sorted by date."""
    if not paths:
        raise ConfigurationError("no GeoTIFF files given")
    dated = sorted((date_of(path), Path(path)) for path in paths)
    for (first, a), (second, b) in zip(dated, dated[1:]):
        if first == second:
            raise ConfigurationError(f"{a.name} and {b.name} have the same date {first}; one file per date")
    bands = model_layout(model).bands
    frames = [_open(path, bands, chunk_size) for _, path in dated]
    for (_, path), frame in zip(dated[1:], frames[1:]):
        _check_same_grid(frames[0], frame, dated[0][1], path)
    nodata = frames[0].attrs.get("nodata", 0)
    reflectance = xr.concat(frames, dim="time", coords="minimal", compat="override", join="override")
    reflectance = reflectance.assign_coords(time=[when for when, _ in dated]).rename(REFLECTANCE)
    reflectance.attrs = {"long_name": "surface reflectance", "units": "DN (reflectance x 10000)", "nodata": nodata}
    return xr.Dataset({REFLECTANCE: reflectance})


def _open(path: Path, bands: Sequence[str], chunk_size: int) -> xr.DataArray:
    import rioxarray

    try:
        da = rioxarray.open_rasterio(path, chunks={"band": -1, "y": chunk_size, "x": chunk_size}, lock=False)
    except Exception as error:  # rasterio raises RasterioIOError and friends
        raise ConfigurationError(f"cannot read {path} as a GeoTIFF: {error}") from error
    descriptions = da.attrs.get("long_name")
    descriptions = [descriptions] if isinstance(descriptions, str) else list(descriptions or [])
    if len(descriptions) == da.sizes["band"] and are_band_names(descriptions):
        try:
            da = da.isel(band=to_model_order(descriptions, bands))
        except ConfigurationError as error:
            raise ConfigurationError(f"{path.name}: {error}") from None
    elif da.sizes["band"] != len(bands):
        raise ConfigurationError(f"{path.name} has {da.sizes['band']} bands without Sentinel-2 band descriptions; "
                                 f"give the model's {len(bands)} bands in order ({', '.join(bands)}) or name them")
    nodata = da.rio.nodata
    da = da.assign_coords(band=list(bands))
    da.attrs = {"nodata": 0 if nodata is None else np.asarray(nodata).item()}
    return da


def _check_same_grid(reference: xr.DataArray, other: xr.DataArray, reference_path: Path, path: Path) -> None:
    mismatches = []
    if other.rio.crs != reference.rio.crs:
        mismatches.append(f"CRS {other.rio.crs} vs {reference.rio.crs}")
    if other.shape != reference.shape:
        mismatches.append(f"size {other.shape[1:]} vs {reference.shape[1:]}")
    elif tuple(other.rio.transform()) != tuple(reference.rio.transform()):
        mismatches.append(f"transform {tuple(other.rio.transform())[:6]} vs {tuple(reference.rio.transform())[:6]}")
    if other.dtype != reference.dtype:
        mismatches.append(f"dtype {other.dtype} vs {reference.dtype}")
    if mismatches:
        raise ConfigurationError(f"{path.name} is not on the grid of {reference_path.name}: {'; '.join(mismatches)}; "
                                 "all files must share CRS, transform, size and dtype")

