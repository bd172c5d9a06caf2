"""``ds.tec`` and ``da.tec``: TerraCodec helpers on xarray objects (registered on import of xr_terracodec).

* ``ds.tec.encoding(...)``: the ``to_zarr`` encoding (:func:`xr_terracodec.encoding`);
* ``ds.tec.to_zarr(store, ...)``: encode and write, Dask-parallel (:func:`xr_terracodec.write`);
* ``ds.tec.to_model_order()`` / ``da.tec.to_model_order()``: bands in the model's order, dims (..., band, y, x);
* ``ds.tec.stack_bands()``: one variable per band (odc-stac layout) -> one variable with a band dimension;
* ``da.tec.roundtrip(...)``: what a store would give back, computed in memory;
* ``da.tec.report(...)``: rate, PSNR and spectral angle of that round trip.
"""

from __future__ import annotations

import inspect
import itertools
import math
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import xarray as xr

from numcodec_plugin import engine
from numcodec_plugin.errors import ConfigurationError
from numcodec_plugin.settings import normalise_settings
from xr_terracodec import metrics
from xr_terracodec.band_names import are_band_names, band_id, to_model_order
from xr_terracodec.encoding import BAND_DIM, DEFAULT_TIME_CHUNK, VariablePlan, band_dimension, encoding, model_layout, plan_variable


def _in_model_order(obj: xr.DataArray | xr.Dataset, model: str | None) -> xr.DataArray | xr.Dataset:
    """Select and order the bands the model codes and move the band dimension before the last two."""
    band_dim = band_dimension(obj)
    if band_dim is None or band_dim not in obj.coords or not are_band_names(obj[band_dim].values.tolist()):
        raise ConfigurationError(f"cannot reorder bands: no coordinate of Sentinel-2 band names among {tuple(obj.dims)}")
    ordered = obj.isel({band_dim: to_model_order(obj[band_dim].values.tolist(), model_layout(model).bands)})
    if isinstance(ordered, xr.DataArray):
        return _band_axis_third_last(ordered, band_dim)
    return ordered.assign({name: _band_axis_third_last(var, band_dim)
                           for name, var in ordered.data_vars.items() if band_dim in var.dims})


def _band_axis_third_last(var: xr.DataArray, band_dim: Hashable) -> xr.DataArray:
    others = [dim for dim in var.dims if dim != band_dim]
    if len(others) < 2:
        return var
    return var.transpose(*others[:-2], band_dim, *others[-2:])


#: The keyword-only options of :func:`xr_terracodec.encoding`; ``ds.tec.to_zarr`` routes them there.
ENCODING_OPTIONS = frozenset(name for name, parameter in inspect.signature(encoding).parameters.items()
                             if parameter.kind is parameter.KEYWORD_ONLY)


@xr.register_dataset_accessor("tec")
class DatasetAccessor:
    """TerraCodec helpers on a Dataset (``ds.tec``)."""

    def __init__(self, ds: xr.Dataset) -> None:
        self._obj = ds

    def encoding(self, quality: float | None = None, model: str | None = None, zarr_format: int = 3,
                 shard: bool = True, **kwargs: Any) -> dict[Hashable, dict[str, Any]]:
        """The ``to_zarr`` encoding; see :func:`xr_terracodec.encoding`."""
        return encoding(self._obj, quality, model, zarr_format, shard, **kwargs)

    def to_zarr(self, store: Any, quality: float | None = None, model: str | None = None, zarr_format: int = 3,
                shard: bool = True, *, progress: bool = False, gpu: bool | None = None, **kwargs: Any) -> None:
        """Encode and write with Dask (:func:`xr_terracodec.write`).

        Keywords that are options of :func:`xr_terracodec.encoding` (``max_error``, ``refinement_steps``,
        ``chunk_size``, ``variables``...) shape the encoding; the others go to ``Dataset.to_zarr``
        (``mode``, ``append_dim``, ``region``...).
        """
        from xr_terracodec.dask import write

        options = {name: kwargs.pop(name) for name in ENCODING_OPTIONS & kwargs.keys()}
        write(self._obj, store, self.encoding(quality, model, zarr_format, shard, **options), progress=progress,
              gpu=gpu, **kwargs)

    def to_model_order(self, model: str | None = None) -> xr.Dataset:
        """The dataset with its bands selected and ordered for ``model`` and each banded variable's dims (..., band, y, x)."""
        return _in_model_order(self._obj, model)

    def stack_bands(self, name: str = "reflectance", model: str | None = None) -> xr.Dataset:
        """Join one-variable-per-band data (``ds.red``, ``ds.nir08``...) into ``name`` with a ``band`` dimension, in model order.

        The other variables (e.g. ``SCL``) are kept; the band coordinate keeps the variables' names.
        """
        ds = self._obj
        names = [var for var in ds.data_vars if band_id(var) is not None]
        ordered = [names[i] for i in to_model_order(names, model_layout(model).bands)]
        stacked = xr.concat([ds[var] for var in ordered], dim=BAND_DIM, coords="minimal", compat="override")
        stacked = _band_axis_third_last(stacked.assign_coords({BAND_DIM: ordered}), BAND_DIM)
        return ds.drop_vars(names).assign({name: stacked})


@xr.register_dataarray_accessor("tec")
class DataArrayAccessor:
    """TerraCodec helpers on a DataArray of shape (..., band, y, x) (``da.tec``)."""

    def __init__(self, da: xr.DataArray) -> None:
        self._obj = da

    def to_model_order(self, model: str | None = None) -> xr.DataArray:
        """The array with its bands selected and ordered for ``model`` and dims (..., band, y, x)."""
        return _in_model_order(self._obj, model)

    def roundtrip(self, quality: float | None = None, model: str | None = None, *, chunk_size: int | None = None,
                  time_chunk: int = DEFAULT_TIME_CHUNK, dn_scale: float = engine.DEFAULT_DN_SCALE,
                  max_error: float | Sequence[float] | None = None, refinement_steps: int = 0) -> xr.DataArray:
        """Encode and decode in memory, chunk by chunk as a store written with :func:`xr_terracodec.encoding` would
        (``time_chunk`` dates per chunk for a temporal model; ``max_error`` and ``refinement_steps`` as there).

        Returns a DataArray like the input (same dims, coordinates, attributes, dtype) holding the
        values a Zarr v3 store of it would give back.
        """
        return self._obj.copy(data=_code(self._obj, quality, model, chunk_size, time_chunk, dn_scale, max_error,
                                         refinement_steps)[0])

    def report(self, quality: float | None = None, model: str | None = None, *, chunk_size: int | None = None,
               time_chunk: int = DEFAULT_TIME_CHUNK, dn_scale: float = engine.DEFAULT_DN_SCALE,
               max_error: float | Sequence[float] | None = None, refinement_steps: int = 0,
               show: bool = True) -> dict[str, float]:
        """Rate and distortion of :meth:`roundtrip`: printed (unless ``show=False``) and returned.

        Keys: ``bits_per_pixel_per_band`` (coded bits / values), ``compression_ratio`` (raw bytes /
        coded bytes), ``psnr_db`` (peak 10000 DN, over valid values) and ``sam_deg`` (mean spectral
        angle in degrees, over pixels whose bands are all valid and non-zero).
        """
        da = self._obj
        decoded, nbytes, plan = _code(da, quality, model, chunk_size, time_chunk, dn_scale, max_error, refinement_steps)
        values = np.moveaxis(np.asarray(da.values), da.get_axis_num(plan.band_dim), -1)
        decoded = np.moveaxis(decoded, da.get_axis_num(plan.band_dim), -1)
        scale = dn_scale if da.dtype.kind == "f" else 1.0
        valid = ~(np.isnan(values) if math.isnan(plan.nodata) else values == plan.nodata)
        original, restored = values.astype(np.float64) * scale, decoded.astype(np.float64) * scale
        result = {
            "bits_per_pixel_per_band": 8.0 * nbytes / da.size,
            "compression_ratio": da.nbytes / nbytes,
            "psnr_db": metrics.psnr(metrics.mse(original[valid], restored[valid])) if valid.any() else math.inf,
            "sam_deg": float(np.mean(metrics.spectral_angles(original, restored, -1, valid.all(axis=-1)))) if valid.any() else 0.0,
        }
        if show:
            print(f"{da.name or 'array'}: {result['bits_per_pixel_per_band']:.4f} bits/pixel/band "
                  f"(ratio {result['compression_ratio']:.1f}:1), PSNR {result['psnr_db']:.2f} dB "
                  f"(peak {metrics.REFLECTANCE_PEAK:g} DN), SAM {result['sam_deg']:.3f} deg")
        return result


def _code(da: xr.DataArray, quality: float | None, model: str | None, chunk_size: int | None, time_chunk: int,
          dn_scale: float, max_error: float | Sequence[float] | None,
          refinement_steps: int) -> tuple[np.ndarray, int, VariablePlan]:
    """(decoded values, coded bytes, plan): each chunk padded with no-data to full size as Zarr does, coded, decoded.

    Chunks are those :func:`plan_variable` gives (several dates each for a temporal model).
    """
    layout = model_layout(model, quality)
    plan = plan_variable(da, layout, chunk_size, shard_size=None, time_chunk=time_chunk)
    settings = normalise_settings(layout.name, quality, plan.nodata, dn_scale, max_error, refinement_steps)
    values = np.asarray(da.values)
    decoded = np.empty_like(values)
    nbytes = 0
    blocks = [tuple(slice(start, min(start + step, size)) for start, step, size in zip(corner, plan.chunks, values.shape))
              for corner in itertools.product(*(range(0, size, step) for size, step in zip(values.shape, plan.chunks)))]
    for group in _by_leading_block(blocks, values.ndim - 2):
        coded = engine.encode_many([_pad(values[block], plan.chunks, plan.nodata) for block in group], settings)
        nbytes += sum(len(data) for data in coded)
        for block, chunk in zip(group, engine.decode_many(coded)):
            decoded[block] = chunk[tuple(slice(0, s.stop - s.start) for s in block)]
    return decoded, nbytes, plan


def _by_leading_block(blocks: list[tuple[slice, ...]], leading: int) -> list[list[tuple[slice, ...]]]:
    """Chunk windows grouped by their window on the first ``leading`` axes (one batch of network work each)."""
    groups: dict[tuple, list[tuple[slice, ...]]] = {}
    for block in blocks:
        groups.setdefault(tuple((s.start, s.stop) for s in block[:leading]), []).append(block)
    return list(groups.values())


def _pad(block: np.ndarray, chunks: tuple[int, ...], nodata: float) -> np.ndarray:
    """``block`` padded with ``nodata`` at the end of every axis to the full chunk shape."""
    pad = tuple((0, c - n) for c, n in zip(chunks, block.shape))
    return np.pad(block, pad, constant_values=np.asarray(nodata).astype(block.dtype)) if any(p[1] for p in pad) else block
