"""TerraCodec as a numcodecs codec (``codec_id = "terracodec"``), e.g. a Zarr v2 compressor.

The codec receives each chunk as an array of shape (..., bands, y, x) and returns
self-describing bytes, so decoding needs no configuration: the model and quality come from
the chunk header. In Zarr v2 the array's fill value is not passed to codecs; give it as
``nodata`` (default: 0 for integers, NaN for floats) so padding and no-data stay exact.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numcodecs.abc import Codec
from numcodecs.compat import ensure_contiguous_ndarray, ndarray_copy

from numcodec_plugin import engine
from numcodec_plugin.errors import ConfigurationError
from numcodec_plugin.settings import normalise_settings


class TerraCodec(Codec):
    """Learned lossy codec for Sentinel-2 chunks.

    Parameters
    ----------
    model:
        Registry name; default the bundled model (:data:`numcodec_plugin.DEFAULT_MODEL`).
    quality:
        Higher = better and more bits; valid range from :func:`numcodec_plugin.quality_range`.
    nodata:
        Value kept bit-exact and never shown to the network; default 0 (ints) or NaN (floats).
    dn_scale:
        Float inputs are multiplied by this to reach the model's DN scale (reflectance x 10000).
    max_error:
        Optional per-pixel bound in DN (one value or one per band): every decoded value is within it
        of the original; 0 = lossless. Without ``quality`` the quality is chosen per chunk.
    refinement_steps:
        Gradient steps that refine each tile's latents against the decoder before coding: fewer bits
        at the same quality for a slower encode (bundled image models; decoding is unchanged).
    """

    codec_id = "terracodec"

    def __init__(self, model: str | None = None, quality: float | None = None, nodata: float | None = None,
                 dn_scale: float = engine.DEFAULT_DN_SCALE, max_error: float | list[float] | None = None,
                 refinement_steps: int = 0) -> None:
        self.settings = normalise_settings(model, quality, nodata, dn_scale, max_error, refinement_steps)

    def encode(self, buf: Any) -> bytes:
        array = np.asarray(buf)
        if array.ndim < 3:
            raise ConfigurationError(
                f"TerraCodec needs each chunk as an array of shape (..., band, y, x), got shape {array.shape}; "
                "use it as a Zarr compressor or pass the chunk array itself"
            )
        return engine.encode(array, self.settings)

    def decode(self, buf: Any, out: Any = None) -> np.ndarray:
        decoded = engine.decode(ensure_contiguous_ndarray(buf))
        if out is None:
            return decoded
        return ndarray_copy(decoded, out)

    def get_config(self) -> dict[str, Any]:
        s = self.settings
        nodata = None if s.nodata is None else ("NaN" if math.isnan(s.nodata) else s.nodata)
        max_error = list(s.max_error) if isinstance(s.max_error, tuple) else s.max_error
        config = {"id": self.codec_id, "model": s.model, "quality": s.quality, "nodata": nodata, "dn_scale": s.dn_scale,
                  "max_error": max_error}
        if s.refinement_steps:  # absent by default, so stores that do not use it stay readable by earlier releases
            config["refinement_steps"] = s.refinement_steps
        return config

    def __repr__(self) -> str:
        s = self.settings
        return (f"TerraCodec(model={s.model!r}, quality={s.quality!r}, nodata={s.nodata!r}, dn_scale={s.dn_scale!r}, "
                f"max_error={s.max_error!r}, refinement_steps={s.refinement_steps!r})")
