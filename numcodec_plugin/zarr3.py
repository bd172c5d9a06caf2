"""TerraCodec as a Zarr v3 array-to-bytes codec (``"name": "terracodec"``).

Use it as the ``serializer`` of a v3 array (alone or inside ``sharding_indexed``). The no-data
value is the array's ``fill_value``, so padding of edge chunks and missing data come back
bit-exact. Network work runs in worker threads, off zarr's event loop, and the chunks zarr
hands over together (``zarr.config`` ``codec_pipeline.batch_size``, or the inner chunks of a
shard) share network batches.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from zarr.abc.codec import ArrayBytesCodec
from zarr.core.common import parse_named_configuration

from numcodec_plugin import engine
from numcodec_plugin.errors import ConfigurationError
from numcodec_plugin.models.registry import is_temporal, model_band_count
from numcodec_plugin.settings import normalise_settings

if TYPE_CHECKING:
    from zarr.core.array_spec import ArraySpec
    from zarr.core.buffer import Buffer, NDBuffer
    from zarr.core.chunk_grids import ChunkGrid
    from zarr.core.dtype.wrapper import ZDType


@dataclass(frozen=True)
class TerraCodec(ArrayBytesCodec):
    """Zarr v3 serializer; ``model``, ``quality``, ``dn_scale``, ``max_error`` and ``refinement_steps`` as in
    the numcodecs codec."""

    is_fixed_size = False

    model: str
    quality: float | None
    dn_scale: float
    max_error: float | tuple[float, ...] | None
    refinement_steps: int

    def __init__(self, *, model: str | None = None, quality: float | None = None, dn_scale: float = engine.DEFAULT_DN_SCALE,
                 max_error: float | list[float] | None = None, refinement_steps: int = 0) -> None:
        settings = normalise_settings(model, quality, None, dn_scale, max_error, refinement_steps)
        for name in ("model", "quality", "dn_scale", "max_error", "refinement_steps"):
            object.__setattr__(self, name, getattr(settings, name))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TerraCodec":
        _, configuration = parse_named_configuration(data, "terracodec", require_configuration=False)
        return cls(**(configuration or {}))

    def to_dict(self) -> dict[str, Any]:
        configuration = {"model": self.model, "quality": self.quality, "dn_scale": self.dn_scale}
        if self.max_error is not None:
            configuration["max_error"] = list(self.max_error) if isinstance(self.max_error, tuple) else self.max_error
        if self.refinement_steps:
            configuration["refinement_steps"] = self.refinement_steps
        return {"name": "terracodec", "configuration": configuration}

    def validate(self, *, shape: tuple[int, ...], dtype: "ZDType", chunk_grid: "ChunkGrid") -> None:
        chunk_shape = tuple(getattr(chunk_grid, "chunk_shape", shape))
        if len(shape) >= 3 and shape[-3] != chunk_shape[-3]:
            raise ConfigurationError(
                f"chunks split the band axis ({chunk_shape[-3]} of {shape[-3]} bands per chunk); every chunk must "
                f"hold all bands, e.g. chunks={(1,) * (len(shape) - 3) + (shape[-3], 256, 256)}"
            )
        engine.check_array(chunk_shape, dtype.to_native_dtype(), model_band_count(self.model))
        if is_temporal(self.model):
            engine.check_frames(chunk_shape, self.model)

    def _settings(self, spec: "ArraySpec") -> engine.EncodeSettings:
        fill = spec.fill_value
        nodata = float(fill) if fill is not None else None
        return engine.EncodeSettings(self.model, self.quality, nodata, self.dn_scale, self.max_error, self.refinement_steps)

    async def encode(self, chunks_and_specs: Iterable[tuple["NDBuffer | None", "ArraySpec"]]) -> list["Buffer | None"]:
        items = list(chunks_and_specs)
        results: list[Buffer | None] = [None] * len(items)
        groups: dict[Any, list[int]] = {}
        for index, (chunk, spec) in enumerate(items):
            if chunk is not None:
                groups.setdefault(_fill_key(spec.fill_value), []).append(index)
        for members in groups.values():
            spec = items[members[0]][1]
            arrays = [items[i][0].as_numpy_array() for i in members]
            encoded = await asyncio.to_thread(engine.encode_many, arrays, self._settings(spec))
            for i, data in zip(members, encoded):
                results[i] = items[i][1].prototype.buffer.from_bytes(data)
        return results

    async def decode(self, chunks_and_specs: Iterable[tuple["Buffer | None", "ArraySpec"]]) -> list["NDBuffer | None"]:
        items = list(chunks_and_specs)
        members = [i for i, (chunk, _) in enumerate(items) if chunk is not None]
        decoded = await asyncio.to_thread(engine.decode_many, [items[i][0].as_numpy_array() for i in members])
        results: list[NDBuffer | None] = [None] * len(items)
        for i, array in zip(members, decoded):
            spec = items[i][1]
            if array.shape != tuple(spec.shape):
                raise ConfigurationError(f"chunk decodes to shape {array.shape}, the array expects {tuple(spec.shape)}")
            results[i] = spec.prototype.nd_buffer.from_numpy_array(array.astype(spec.dtype.to_native_dtype(), copy=False))
        return results

    async def _encode_single(self, chunk_array: "NDBuffer", chunk_spec: "ArraySpec") -> "Buffer | None":
        return (await self.encode([(chunk_array, chunk_spec)]))[0]

    async def _decode_single(self, chunk_bytes: "Buffer", chunk_spec: "ArraySpec") -> "NDBuffer":
        return (await self.decode([(chunk_bytes, chunk_spec)]))[0]

    def compute_encoded_size(self, input_byte_length: int, chunk_spec: "ArraySpec") -> int:
        raise NotImplementedError("TerraCodec chunks have data-dependent sizes")


def _fill_key(fill: Any) -> Any:
    value = float(fill) if fill is not None else None
    return "nan" if value is not None and math.isnan(value) else value
