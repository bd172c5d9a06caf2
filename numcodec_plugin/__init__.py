"""numcodec_plugin: TerraCodec learned compression as a numcodecs and Zarr v3 codec.

Everything a reader needs to decode a chunk lives here: models, tensor engine, bitstream and
the two codec adapters. ``numcodec_plugin.TerraCodec`` is the numcodecs codec (Zarr v2
``compressor``); ``numcodec_plugin.zarr3.TerraCodec`` is the Zarr v3 ``serializer``. Both are
registered by entry points, so stores decode in processes that never import this package.
"""

from numcodec_plugin.errors import (
    BitstreamError,
    ConfigurationError,
    EntropyModelMismatchError,
    ModelMismatchError,
    ModelNotFoundError,
    TerraCodecError,
)
from numcodec_plugin.models.registry import DEFAULT_MODEL, DEFAULT_TEMPORAL_MODEL, available_models, load_model, quality_range
from numcodec_plugin.numcodecs_codec import TerraCodec

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_TEMPORAL_MODEL",
    "BitstreamError",
    "ConfigurationError",
    "EntropyModelMismatchError",
    "ModelMismatchError",
    "ModelNotFoundError",
    "TerraCodec",
    "TerraCodecError",
    "available_models",
    "load_model",
    "quality_range",
]
__version__ = "0.1.0"
