"""The ``encoding=`` of ``Dataset.to_zarr`` that stores Sentinel-2 cubes with TerraCodec.

A variable is compressed when it has a band dimension (named ``band``, or any dimension whose
coordinate holds band names, see :mod:`xr_terracodec.band_names`) as its third-last dimension,
holds the bands the model codes in the model's order, and has dtype uint16, int16 or float32.
Everything else (masks such as SCL, angles, coordinates) is left to xarray's defaults.

Chunks suit the model: all bands in one chunk (the codec needs them together), one time step
(or other leading index) per chunk, and tiles of the model's tile size (256) in y and x. With
Zarr v3 the chunks are grouped into shards (1024 x 1024 by default) so that a store does not
hold one object per 256 x 256 tile, and the chunks of a shard share the network's batches.

With a temporal model (``temporal=True``) a chunk spans ``time_chunk`` time steps (default 4),
which the model codes jointly; variables without a time axis are then coded with the temporal
model's image counterpart, so one store can mix both (see docs/time-series.md).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

import numcodec_plugin
import numcodec_plugin.zarr3
from numcodec_plugin.engine import DEFAULT_DN_SCALE, SUPPORTED_DTYPES, EncodeSettings, default_nodata
from numcodec_plugin.engine import check_frames as engine_check_frames
from numcodec_plugin.errors import ConfigurationError
from numcodec_plugin.models.registry import DEFAULT_MODEL, image_counterpart, load_model, temporal_model
from numcodec_plugin.settings import normalise_settings
from xr_terracodec.band_names import are_band_names, to_model_order

BAND_DIM = "band"
TIME_DIM = "time"
DEFAULT_SHARD_SIZE = 1024
DEFAULT_TIME_CHUNK = 4


@dataclass(frozen=True)
class ModelLayout:
    """What chunking needs to know about a model: its name, bands (in order), tile size and whether
    it codes time steps jointly."""

    name: str
    bands: tuple[str, ...]
    tile_size: int
    temporal: bool = False


def model_layout(model: str | None = None, quality: float | None = None) -> ModelLayout:
    """The :class:`ModelLayout` of ``model`` (default: the bundled model), loading it on the CPU once."""
    coder = load_model(model, quality, "cpu")
    return ModelLayout(model or DEFAULT_MODEL, coder.identity.bands, coder.tile_size, coder.temporal)


@dataclass(frozen=True)
class VariablePlan:
    """How one variable is chunked and coded."""

    band_dim: Hashable
    chunks: tuple[int, ...]
    shards: tuple[int, ...] | None
    nodata: float


def band_dimension(obj: xr.DataArray | xr.Dataset) -> Hashable | None:
    """``"band"`` if ``obj`` has that dimension, else the dimension whose coordinate holds band names."""
    if BAND_DIM in obj.dims:
        return BAND_DIM
    for dim in obj.dims:
        if dim in obj.coords and obj[dim].ndim == 1 and are_band_names(obj[dim].values.tolist()):
            return dim
    return None


def nodata_of(var: xr.DataArray) -> float:
    """The variable's no-data value: its ``_FillValue`` or ``nodata`` (attribute or encoding), else the codec's default."""
    for source in (var.attrs, var.encoding):
        for key in ("_FillValue", "nodata"):
            if source.get(key) is not None:
                return float(source[key])
    return default_nodata(var.dtype)


def plan_variable(var: xr.DataArray, layout: ModelLayout, chunk_size: int | None = None,
                  shard_size: int | None = DEFAULT_SHARD_SIZE, time_chunk: int = DEFAULT_TIME_CHUNK) -> VariablePlan:
    """Chunks (and shards, unless ``shard_size`` is None) for ``var``, or :class:`ConfigurationError` saying why it cannot be coded.

    For a temporal ``layout`` the time axis (``time``, else the first leading axis) is chunked by
    ``time_chunk`` steps; other leading axes always by one.
    """
    if var.dtype not in SUPPORTED_DTYPES:
        raise ConfigurationError(f"dtype {var.dtype} is not one of {', '.join(map(str, SUPPORTED_DTYPES))}")
    band_dim = band_dimension(var)
    if band_dim is None:
        raise ConfigurationError(f"no band dimension among {var.dims} (a dimension named {BAND_DIM!r} "
                                 "or one whose coordinate holds Sentinel-2 band names)")
    if var.ndim < 3 or var.dims[-3] != band_dim:
        raise ConfigurationError(f"dimensions {var.dims} must end with ({band_dim!r}, y, x); "
                                 "reorder with ds.tec.to_model_order()")
    _check_bands(var, band_dim, layout)
    side = chunk_size or layout.tile_size
    leading, (bands, height, width) = var.shape[:-3], var.shape[-3:]
    steps = [1] * len(leading)
    if layout.temporal:
        if not leading:
            raise ConfigurationError(f"{layout.name} is a temporal model but {var.dims} has no time axis before the bands")
        axis = var.dims.index(TIME_DIM) if TIME_DIM in var.dims[:-3] else 0
        steps[axis] = min(time_chunk, leading[axis])
        engine_check_frames(tuple(steps) + (bands, height, width), layout.name)
    chunks = tuple(steps) + (bands, min(side, height), min(side, width))
    shards = None
    if shard_size is not None:
        shards = chunks[:-2] + tuple(_shard_side(n, c, shard_size) for n, c in zip((height, width), chunks[-2:]))
    return VariablePlan(band_dim, chunks, shards if shards != chunks else None, _checked_nodata(var))


def _checked_nodata(var: xr.DataArray) -> float:
    nodata = nodata_of(var)
    if var.dtype.kind in "iu" and not (np.iinfo(var.dtype).min <= nodata <= np.iinfo(var.dtype).max and nodata.is_integer()):
        raise ConfigurationError(f"no-data value {nodata:g} is not a {var.dtype} value")
    return nodata


def _check_bands(var: xr.DataArray, band_dim: Hashable, layout: ModelLayout) -> None:
    names = var[band_dim].values.tolist() if band_dim in var.coords else None
    if names is not None and are_band_names(names):
        if to_model_order(names, layout.bands) != list(range(len(names))):
            raise ConfigurationError(f"bands {names} are not {layout.name}'s {list(layout.bands)} in that order; "
                                     "reorder with ds.tec.to_model_order()")
    elif var.sizes[band_dim] != len(layout.bands):
        raise ConfigurationError(f"{var.sizes[band_dim]} bands, but {layout.name} codes {len(layout.bands)} "
                                 f"({', '.join(layout.bands)})")


def _shard_side(size: int, chunk: int, shard_size: int) -> int:
    """Whole chunks per shard: about ``shard_size``, but no more than the array needs."""
    return min(max(shard_size // chunk, 1), math.ceil(size / chunk)) * chunk


def encoding(ds: xr.Dataset, quality: float | None = None, model: str | None = None, zarr_format: int = 3,
             shard: bool = True, *, variables: Iterable[Hashable] | None = None, chunk_size: int | None = None,
             shard_size: int = DEFAULT_SHARD_SIZE, dn_scale: float = DEFAULT_DN_SCALE,
             max_error: float | Sequence[float] | None = None, temporal: bool = False,
             time_chunk: int = DEFAULT_TIME_CHUNK, refinement_steps: int = 0) -> dict[Hashable, dict[str, Any]]:
    """``encoding=`` for ``ds.to_zarr`` compressing every data variable TerraCodec can take.

    Parameters
    ----------
    quality, model:
        Codec settings (defaults: the bundled model, its middle quality; with ``temporal=True`` the
        bundled temporal model).
    temporal, time_chunk:
        Code ``time_chunk`` time steps per chunk jointly with a temporal model (implied when ``model``
        is one). Reading one date then decodes its whole chunk. Variables without a time axis, or
        with a single date, are coded with the model's image counterpart where it has one.
    zarr_format:
        3 (the codec is the array's ``serializer``, no further compressors; no-data is the array's
        ``fill_value``) or 2 (the codec is the ``compressor`` and carries the no-data value).
    shard:
        Zarr v3 only: group chunks into shards of about ``shard_size`` pixels a side.
    variables:
        Compress exactly these, raising :class:`ConfigurationError` if one cannot be; by default
        every data variable that can be, with a warning naming the others.
    chunk_size:
        Chunk side in y and x (default: the model's tile size, 256).
    dn_scale:
        Float variables are multiplied by this to reach DN (reflectance x 10000).
    max_error:
        Per-pixel bound in DN (one value or one per band; 0 = lossless), see docs/guarantees.md.
        Without ``quality`` the codec then picks the quality per chunk.
    refinement_steps:
        Gradient steps refining each tile's latents at encode (image models only): fewer bits at the
        same quality for a slower write; reading is unchanged. See docs/model-card.md.

    Notes
    -----
    Pass the same ``zarr_format`` to ``to_zarr`` (or use :func:`xr_terracodec.write`, which does).
    No-data is the variable's ``_FillValue`` or ``nodata`` attribute, else 0 (integers) / NaN (floats).
    For Zarr v3 a band coordinate of fixed-width strings gets ``{"dtype": object}``, so it is
    stored as the v3 ``string`` type rather than one without a specification.
    """
    if zarr_format not in (2, 3):
        raise ConfigurationError(f"zarr_format must be 2 or 3, got {zarr_format!r}")
    names = list(ds.data_vars) if variables is None else list(variables)
    absent = [name for name in names if name not in ds.data_vars]
    if absent:
        raise ConfigurationError(f"no data variable(s) {absent} in the dataset (has {list(ds.data_vars)})")
    layout = model_layout(temporal_model(model) if temporal else model, quality)
    counterpart = image_counterpart(layout.name) if layout.temporal else None
    image_layout = model_layout(counterpart, quality) if counterpart else None
    result: dict[Hashable, dict[str, Any]] = {}
    skipped: dict[Hashable, str] = {}
    for name in names:
        var = ds[name]
        chosen = layout
        if layout.temporal and image_layout is not None and math.prod(var.shape[:-3]) < 2:
            chosen = image_layout  # no time series to exploit
        try:
            plan = plan_variable(var, chosen, chunk_size, shard_size if zarr_format == 3 and shard else None, time_chunk)
        except ConfigurationError as error:
            skipped[name] = str(error)
            continue
        result[name] = _entry(plan, normalise_settings(chosen.name, quality, None, dn_scale, max_error,
                                                                       refinement_steps), zarr_format)
        if zarr_format == 3 and plan.band_dim in ds.coords and ds[plan.band_dim].dtype.kind == "U":
            result[plan.band_dim] = {"dtype": object}  # band names as v3 strings, not unspecified fixed-width
    reasons = "; ".join(f"{name!r}: {reason}" for name, reason in skipped.items())
    if skipped and variables is not None:
        raise ConfigurationError(f"cannot compress with TerraCodec: {reasons}")
    if len(skipped) == len(names):
        raise ConfigurationError(f"no data variable can be compressed with TerraCodec: {reasons}")
    if skipped:
        warnings.warn(f"not compressed with TerraCodec (left to xarray's defaults): {reasons}", UserWarning, stacklevel=2)
    return result


def _entry(plan: VariablePlan, settings: EncodeSettings, zarr_format: int) -> dict[str, Any]:
    codec_settings = {"model": settings.model, "quality": settings.quality, "dn_scale": settings.dn_scale,
                      "max_error": settings.max_error, "refinement_steps": settings.refinement_steps}
    if zarr_format == 2:
        return {"chunks": plan.chunks, "compressors": numcodec_plugin.TerraCodec(nodata=plan.nodata, **codec_settings)}
    fill_value = int(plan.nodata) if plan.nodata.is_integer() else plan.nodata
    entry = {"chunks": plan.chunks, "compressors": None, "fill_value": fill_value,
             "serializer": numcodec_plugin.zarr3.TerraCodec(**codec_settings)}
    if plan.shards is not None:
        entry["shards"] = plan.shards
    return entry


def zarr_format_of(encoding: Mapping[Hashable, Mapping[str, Any]]) -> int | None:
    """3 or 2 for an encoding made by :func:`encoding` (by its v3 ``serializer`` or v2 ``compressors``), else None."""
    for entry in encoding.values():
        if isinstance(entry.get("serializer"), numcodec_plugin.zarr3.TerraCodec):
            return 3
        if isinstance(entry.get("compressors"), numcodec_plugin.TerraCodec):
            return 2
    return None


def chunk_for_writing(ds: xr.Dataset, encoding: Mapping[Hashable, Mapping[str, Any]]) -> xr.Dataset:
    """``ds`` with each encoded variable Dask-chunked into its write units: one shard (or chunk) per task.

    Zarr needs every Dask chunk to cover whole shards, and one task per shard lets the shard's
    chunks share network batches while memory stays bounded by the tasks in flight.
    """
    units = {name: entry.get("shards") or entry["chunks"] for name, entry in encoding.items() if "chunks" in entry}
    return ds.assign({name: ds[name].chunk(dict(zip(ds[name].dims, unit))) for name, unit in units.items()})
