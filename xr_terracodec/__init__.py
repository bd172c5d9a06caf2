"""xarray and Dask integration of the TerraCodec codecs (:mod:`numcodec_plugin`).

* :func:`encoding`: the ``to_zarr`` encoding for Sentinel-2 cubes (Zarr v3 sharded by default);
* ``ds.tec`` / ``da.tec``: accessors (encoding, writing, band reordering, in-memory round trip
  and its rate/PSNR/SAM report), registered by importing this package;
* :func:`to_model_order` / :func:`band_id`: band names of Earth Search, Planetary Computer and EOPF;
* :func:`write`, :func:`cluster`, :func:`gpu_tasks`, :class:`TerraCodecWorker`,
  :func:`configure_process`: Dask (:mod:`xr_terracodec.dask`), imported on first use because they
  need ``distributed``.

Stores need none of this to be read: ``xr.open_zarr`` finds the codec by its entry point.
"""

from __future__ import annotations

from typing import Any

from xr_terracodec import accessor as _accessor  # noqa: F401  (registers ds.tec and da.tec)
from xr_terracodec.band_names import BAND_ALIASES, band_id, to_model_order
from xr_terracodec.encoding import encoding

_DASK_EXPORTS = ("write", "cluster", "gpu_tasks", "TerraCodecWorker", "configure_process")

__all__ = ["BAND_ALIASES", "band_id", "encoding", "to_model_order", *_DASK_EXPORTS]


def __getattr__(name: str) -> Any:
    """The Dask helpers, loaded on first use (``distributed`` is only needed by them)."""
    if name in _DASK_EXPORTS:
        from xr_terracodec import dask as dask_helpers

        return getattr(dask_helpers, name)
    raise AttributeError(f"module 'xr_terracodec' has no attribute {name!r}")
