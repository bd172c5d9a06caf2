"""Model identity: what a chunk header records about the model that coded it."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch

from numcodec_plugin.models.bands import BAND_SETS

#: buffers holding range-coder tables; derived from the weights by ``update()``, so not part of them
CODER_TABLE_KEYS = frozenset({"_quantized_cdf", "_offset", "_cdf_length", "scale_table"})


def is_coder_table(key: str) -> bool:
    return key.rsplit(".", 1)[-1] in CODER_TABLE_KEYS


@dataclass(frozen=True)
class ModelIdentity:
    """Name, band set, normalisation statistics and weight fingerprint of a loaded model.

    ``digest`` is the first 8 bytes of SHA-256 over the band set, the statistics and every
    tensor of the state dict in key order, except the range coder's tables (they are derived
    from the weights; a disagreement there is caught by the symbol checksum instead). Chunk headers carry ``name`` and ``digest``; a decoder
    whose model has another digest refuses the chunk instead of decoding it wrongly.
    """

    name: str
    band_set: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    digest: bytes

    @property
    def bands(self) -> tuple[str, ...]:
        return BAND_SETS[self.band_set]

    @classmethod
    def of(cls, name: str, band_set: str, mean: list[float], std: list[float], module: torch.nn.Module) -> "ModelIdentity":
        if band_set not in BAND_SETS:
            raise ValueError(f"unknown band set {band_set!r}; known: {sorted(BAND_SETS)}")
        if not (len(mean) == len(std) == len(BAND_SETS[band_set])):
            raise ValueError(f"statistics must have {len(BAND_SETS[band_set])} values for {band_set}")
        sha = hashlib.sha256(band_set.encode())
        sha.update(np.asarray(mean, dtype="<f8").tobytes())
        sha.update(np.asarray(std, dtype="<f8").tobytes())
        for key, tensor in sorted(module.state_dict().items()):
            if is_coder_table(key):
                continue
            sha.update(key.encode())
            sha.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return cls(name, band_set, tuple(map(float, mean)), tuple(map(float, std)), sha.digest()[:8])
