"""Inputs of ``terracodec convert``, each opened lazily as one canonical cube.

The canonical cube is a Dataset with ``reflectance`` (time, band, y, x): bands in the model's
order with their ids (``B01`` ...) as coordinate, unique times in increasing order, plus optional
masks (time, y, x) such as ``scl``. :func:`open_source` recognises:

* a **STAC API** URL (``http(s)://`` not naming a Zarr store): searched and loaded by
  :mod:`xr_terracodec.stac` (harmonised, 10 m);
* **GeoTIFF / COG files**: a folder of them or a list of paths, one multi-band file per date
  (:func:`open_geotiffs` states the convention);
* a **Zarr store** (a path or URL ending in ``.zarr`` or holding Zarr metadata): its variable
  with a band dimension (``variable=`` chooses among several), any dimension names for y and x,
  a leading ``time`` dimension;
* an ``xarray.Dataset`` already in that form.

Bands are identified by name wherever the input names them (descriptions, coordinates, asset
keys); unnamed bands must be exactly the model's bands in its order.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import xarray as xr

from numcodec_plugin.errors import ConfigurationError
from xr_terracodec import stac
from xr_terracodec.band_names import are_band_names, to_model_order
from xr_terracodec.encoding import band_dimension, model_layout
from xr_terracodec.stac import REFLECTANCE

TIFF_SUFFIXES = (".tif", ".tiff")
ZARR_MARKERS = ("zarr.json", ".zgroup", ".zmetadata")
_DATE = re.compile(r"(?<!\d)(\d{4})-?(\d{2})-?(\d{2})(?:T(\d{2}):?(\d{2}):?(\d{2}))?(?!\d)")


@dataclass(frozen=True)
class Source:
    """A canonical cube and a JSON description of where it came from (kept in the archive's attributes)."""

    cube: xr.Dataset
    description: dict[str, Any]


def open_source(source: str | Path | Sequence[str | Path] | xr.Dataset, *, model: str | None = None,
                query: Mapping[str, Any] | None = None, masks: Sequence[str] = (), variable: str | None = None,
                sign: bool | None = None, storage_options: Mapping[str, Any] | None = None) -> Source:
    """Open ``source`` (see the module docstring) as a :class:`Source`; nothing is read but metadata.

    ``query``: STAC search filters (``collection``, ``bbox``, ``datetime``, ``max_cloud``,
    ``max_items``; STAC sources only). ``masks``: extra variables (STAC assets such as ``scl``,
    or Zarr variables) carried along losslessly. ``variable``: the Zarr variable to code.
    """
    kind = source_kind(source, storage_options)
    query = {key: value for key, value in (query or {}).items() if value is not None}
    if kind != "stac" and set(query) - {"collection"}:
        raise ConfigurationError(f"search options {sorted(set(query) - {'collection'})} apply to STAC API sources only")
    if kind != "zarr" and variable is not None:
        raise ConfigurationError("variable= applies to Zarr sources only")
    if kind == "stac":
        request = stac.Query(str(source), **query)
        items = stac.run_query(request, sign)
        cube = stac.load(items, model=model, masks=masks, bbox=request.bbox)
        description = {"type": "stac", **request.describe(), "items": [item.id for item in items]}
    elif kind == "geotiff":
        paths = geotiff_paths(source)
        if masks:
            raise ConfigurationError("masks are not read from GeoTIFF sources")
        cube = open_geotiffs(paths, model=model)
        description = {"type": "geotiff", "files": [str(path) for path in paths]}
    elif kind == "zarr":
        cube = open_zarr_cube(str(source), model=model, variable=variable, masks=masks, storage_options=storage_options)
        description = {"type": "zarr", "url": str(source), "variable": variable}
    else:
        cube = source
        description = {"type": "dataset"}
    return Source(canonical(cube, model), description)


def source_kind(source: Any, storage_options: Mapping[str, Any] | None = None) -> str:
    """``"stac"``, ``"geotiff"``, ``"zarr"`` or ``"dataset"``; :class:`ConfigurationError` if none fits."""
    if isinstance(source, xr.Dataset):
        return "dataset"
    if isinstance(source, (list, tuple)):
        return "geotiff"
    text = str(source).rstrip("/")
    if text.lower().endswith(".zarr"):
        return "zarr"
    if text.lower().endswith(TIFF_SUFFIXES):
        return "geotiff"
    fs, path = fsspec.core.url_to_fs(text, **dict(storage_options or {}))
    remote_http = text.startswith(("http://", "https://"))
    if not remote_http and fs.isdir(path):
        if any(fs.exists(f"{path}/{marker}") for marker in ZARR_MARKERS):
            return "zarr"
        if any(name.lower().endswith(TIFF_SUFFIXES) for name in fs.ls(path, detail=False)):
            return "geotiff"
        raise ConfigurationError(f"{text} is a folder with neither Zarr metadata nor GeoTIFF files")
    if remote_http:
        return "stac"
    raise ConfigurationError(f"{text}: no such file or folder, and not a STAC API URL (http:// or https://)")


def geotiff_paths(source: str | Path | Sequence[str | Path]) -> list[Path]:
    """The files of a GeoTIFF source: the ``*.tif``/``*.tiff`` of a folder (sorted), or the given paths."""
    if isinstance(source, (list, tuple)):
        return [Path(path) for path in source]
    path = Path(source)
    if not path.is_dir():
        return [path]
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in TIFF_SUFFIXES)
    if not files:
        raise ConfigurationError(f"no GeoTIFF files (*.tif, *.tiff) in {path}")
    return files


def date_of(path: str | Path) -> np.datetime64:
    """The acquisition time in a GeoTIFF's file name (see :func:`open_geotiffs`)."""
    match = _DATE.search(Path(path).name)
    if match is None:
        raise ConfigurationError(f"no date (YYYYMMDD or YYYY-MM-DD) in the file name {Path(path).name!r}")
    try:
        when = dt.datetime(*(int(part) for part in match.groups() if part is not None))
    except ValueError as error:
        raise ConfigurationError(f"file name {Path(path).name!r}: {error}") from None
    return np.datetime64(when, "ms")


def open_geotiffs(paths: Sequence[str | Path], *, model: str | None = None, chunk_size: int = 256) -> xr.Dataset:
    """Cube of GeoTIFF / COG files: **one multi-band file per date**, all on one grid.

    * The date (UTC) is the first ``YYYY-MM-DD`` or ``YYYYMMDD`` in the file name, optionally with
      a time ``THHMMSS`` / ``THH:MM:SS`` (``S2_20230614.tif``, ``site3_2023-06-14T101559.tif``).
    * Bands are named by their descriptions (``B04``, ``red``, ``b8a``...) when every band has one;
      they are put in the model's order and others (``B10``) left out. Otherwise the file must
      hold exactly the model's bands in its order.
    * DN are taken as they are (reflectance x 10000, already harmonised); no-data is the files'
      nodata tag, else 0. CRS, transform, size and dtype must agree between files.
    """
    if not paths:
        raise ConfigurationError("no GeoTIFF files given")
    dated = sorted((date_of(path), Path(path)) for path in paths)
    for (first, a), (second, b) in zip(dated, dated[1:]):
        if first == second:
            raise ConfigurationError(f"{a.name} and {b.name} have the same date {first}; one file per date")
    bands = model_layout(model).bands
    frames = [_open_geotiff(path, bands, chunk_size) for _, path in dated]
    for (_, path), frame in zip(dated[1:], frames[1:]):
        _check_same_grid(frames[0], frame, dated[0][1], path)
    reflectance = xr.concat(frames, dim="time", coords="minimal", compat="override", join="override")
    reflectance = reflectance.assign_coords(time=[when for when, _ in dated])
    return xr.Dataset({REFLECTANCE: reflectance.assign_attrs(frames[0].attrs)})


def _open_geotiff(path: Path, bands: Sequence[str], chunk_size: int) -> xr.DataArray:
    import rioxarray

    try:
        da = rioxarray.open_rasterio(path, chunks={"band": -1, "y": chunk_size, "x": chunk_size}, lock=False)
    except Exception as error:  # rasterio raises RasterioIOError and friends
        raise ConfigurationError(f"cannot read {path} as a GeoTIFF: {error}") from error
    descriptions = da.attrs.get("long_name")
    names = [descriptions] if isinstance(descriptions, str) else list(descriptions or [])
    nodata = da.rio.nodata
    da = model_bands(da, "band", names if len(names) == da.sizes["band"] else None, bands, path.name)
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


def open_zarr_cube(url: str, *, model: str | None = None, variable: str | None = None, masks: Sequence[str] = (),
                   storage_options: Mapping[str, Any] | None = None) -> xr.Dataset:
    """Cube of a Zarr store's banded variable (and the named ``masks`` variables)."""
    try:
        ds = xr.open_zarr(url, storage_options=dict(storage_options) if storage_options else None)
    except Exception as error:  # zarr and fsspec raise many kinds
        raise ConfigurationError(f"cannot open {url} as a Zarr store: {error}") from error
    banded = [name for name, var in ds.data_vars.items() if band_dimension(var) is not None]
    if variable is None and len(banded) != 1:
        raise ConfigurationError(f"{url}: {'no' if not banded else 'several'} variables with a band dimension "
                                 f"({banded or list(ds.data_vars)}); name the one to code with variable= / --variable")
    name = variable if variable is not None else banded[0]
    if name not in ds.data_vars or band_dimension(ds[name]) is None:
        raise ConfigurationError(f"{url}: no variable {name!r} with a band dimension (has {list(ds.data_vars)})")
    absent = [mask for mask in masks if mask not in ds.data_vars]
    if absent:
        raise ConfigurationError(f"{url}: no mask variable(s) {absent} (has {list(ds.data_vars)})")
    var = ds[name]
    band_dim = band_dimension(var)
    names = var[band_dim].values.tolist() if band_dim in var.coords else None
    var = model_bands(var, band_dim, names, model_layout(model).bands, f"{url}:{name}")
    if "time" not in var.dims:
        raise ConfigurationError(f"{url}:{name} has no time dimension (dims {var.dims}); archives are time series")
    var = var.transpose("time", "band", ...)
    return xr.Dataset({REFLECTANCE: var, **{mask: ds[mask] for mask in masks}})


def model_bands(da: xr.DataArray, band_dim: Hashable, names: Sequence[Any] | None, bands: Sequence[str],
                label: str) -> xr.DataArray:
    """``da`` with dimension ``band`` holding ``bands`` in order, selected by ``names`` when they are band names."""
    if names is not None and are_band_names(names):
        try:
            da = da.isel({band_dim: to_model_order(names, bands)})
        except ConfigurationError as error:
            raise ConfigurationError(f"{label}: {error}") from None
    elif da.sizes[band_dim] != len(bands):
        raise ConfigurationError(f"{label} has {da.sizes[band_dim]} unnamed bands; give the model's {len(bands)} "
                                 f"bands in order ({', '.join(bands)}) or name them")
    return da.rename({band_dim: "band"}).assign_coords(band=list(bands))


def canonical(cube: xr.Dataset, model: str | None = None) -> xr.Dataset:
    """``cube`` checked and trimmed to the canonical form (see the module docstring); lazily."""
    if REFLECTANCE not in cube.data_vars:
        raise ConfigurationError(f"no {REFLECTANCE!r} variable (has {list(cube.data_vars)})")
    reflectance = cube[REFLECTANCE]
    if reflectance.ndim != 4 or reflectance.dims[:2] != ("time", "band"):
        raise ConfigurationError(f"{REFLECTANCE} has dimensions {reflectance.dims}; expected (time, band, y, x)")
    bands = list(model_layout(model).bands)
    if reflectance["band"].values.tolist() != bands:
        raise ConfigurationError(f"{REFLECTANCE} bands {reflectance['band'].values.tolist()} are not the model's {bands}")
    spatial = reflectance.dims[2:]
    for name, var in cube.data_vars.items():
        if name != REFLECTANCE and var.dims != ("time", *spatial):
            raise ConfigurationError(f"mask {name!r} has dimensions {var.dims}; expected {('time', *spatial)}")
        if name != REFLECTANCE and var.dtype.kind not in "ub":
            raise ConfigurationError(f"mask {name!r} has dtype {var.dtype}; masks must be unsigned integers")
    times = cube["time"].values.astype("datetime64[ms]")
    if len(np.unique(times)) != len(times):
        raise ConfigurationError("the source has repeated time steps (at millisecond precision)")
    keep = {"time", "band", *spatial, "spatial_ref"}
    cube = cube.drop_vars([name for name in cube.coords if name not in keep])
    return cube.assign_coords(time=times.astype("datetime64[ns]")).sortby("time")
