"""Validation of codec parameters, shared by the numcodecs and Zarr v3 adapters."""

from __future__ import annotations

import math

from numcodec_plugin.engine import EncodeSettings
from numcodec_plugin.errors import ConfigurationError
from numcodec_plugin.models.registry import DEFAULT_MODEL, check_quality, check_refinement, default_quality


def normalise_settings(model: str | None, quality: float | None, nodata: float | str | None, dn_scale: float,
                       max_error: float | list[float] | tuple[float, ...] | None = None,
                       refinement_steps: int = 0) -> EncodeSettings:
    """Resolve defaults (so stored configurations are explicit) and refuse invalid values early.

    Under an error bound, ``quality=None`` stays None: the engine then picks the quality per chunk.
    """
    model = model or DEFAULT_MODEL
    check_refinement(model, refinement_steps)
    if quality is not None or max_error is None:
        quality = float(default_quality(model) if quality is None else quality)
        check_quality(model, quality)
    if max_error is not None:
        values = max_error if isinstance(max_error, (list, tuple)) else [max_error]
        if any(not isinstance(v, (int, float)) or v < 0 or not float(v).is_integer() for v in values):
            raise ConfigurationError(f"max_error must be whole DN >= 0 (one value or one per band), got {max_error!r}")
        max_error = tuple(float(v) for v in max_error) if isinstance(max_error, (list, tuple)) else float(max_error)
    if isinstance(nodata, str):
        if nodata.lower() != "nan":
            raise ConfigurationError(f"nodata must be a number or 'NaN', got {nodata!r}")
        nodata = math.nan
    if not (isinstance(dn_scale, (int, float)) and math.isfinite(dn_scale) and dn_scale > 0):
        raise ConfigurationError(f"dn_scale must be a positive number, got {dn_scale!r}")
    return EncodeSettings(model=model, quality=quality, nodata=None if nodata is None else float(nodata),
                          dn_scale=float(dn_scale), max_error=max_error, refinement_steps=refinement_steps)
