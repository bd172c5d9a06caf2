"""``klt-wavelet-v3`` and ``-v2``: the classical transform coder (:mod:`numcodec_plugin.transform_coding`) as a model.

It answers the engine like a network does (:class:`~numcodec_plugin.models.base.TileCoder`), so its
chunks are ordinary TerraCodec chunks: header, mask, tiles with DC offsets and corrections, one
stream per tile, the error-bounded layer. It has no weights; its constants are the one parameter
of its module, so that they make the model's digest (a chunk coded with other constants is refused,
``ModelMismatchError``) and its device. Its statistics are zero means and unit deviations, so the
engine hands it tiles in DN.

Quality means what it means for the bundled network: the same lambda per quality
(:func:`~numcodec_plugin.models.gain_hyperprior.lambda_at` of the training lambdas), and the
quantiser step that minimises ``lambda * D + R`` at that lambda, ``STEP_PER_ROOT_LAMBDA / sqrt(lambda)``
(``benchmarks/transform_step.py`` measures it; on training files 26k-41k at qualities -3..8).
The hybrid model ``tec-s2-hybrid-v2`` codes each chunk with the bundled network and with this coder
and keeps the cheaper (:func:`numcodec_plugin.engine.encode_many`).

Version 3 codes the subbands with the compiled rANS coder (``rans``), version 2 with constriction;
the two differ in nothing else. Version 1 (one session on main, never a default) coded with the 5/3
wavelet, every component and per-symbol Laplace laws; its chunks are refused as of an unknown model.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from numcodec_plugin import transform_coding
from numcodec_plugin.models.base import CodedTile, symbol_checksum
from numcodec_plugin.models.bands import BAND_SETS
from numcodec_plugin.models.gain_hyperprior import lambda_at, training_lambdas
from numcodec_plugin.models import laplace_rans
from numcodec_plugin.models.identity import ModelIdentity
from numcodec_plugin.tile_pool import map_tiles

#: quantiser step (DN) times the square root of lambda
STEP_PER_ROOT_LAMBDA = 32000.0
#: qualities with their own lambda, as for the bundled network (whole qualities 1..8)
LAMBDAS = training_lambdas(8)
#: the lowest quality: the step law holds below the trained qualities too (lambdas extrapolated like the
#: network's), down to about 30 dB on the validation tiles
LOWEST_QUALITY = -3.0
#: the highest quality: lambdas extrapolated above quality 8 likewise, so that the top of the range codes
#: beyond 1 bit per pixel per band once the rate-distortion quantiser has made quality 8 cheaper
HIGHEST_QUALITY = 10.0


class TransformCoder:
    """Tiles coded by :func:`numcodec_plugin.transform_coding.encode` at the step of their quality."""

    size_multiple = 2 ** transform_coding.LEVELS
    tile_size = 256
    temporal = False
    latent_scale_table = False
    lowpass_correction = False

    def __init__(self, name: str, band_set: str, rans: bool = False) -> None:
        self.rans = rans
        constants = [transform_coding.LEVELS, transform_coding.BASIS_SCALE, transform_coding.ROUNDING,
                     transform_coding.RECONSTRUCTION, transform_coding.STEP_INDEX_BASE, STEP_PER_ROOT_LAMBDA, *LAMBDAS]
        if rans:  # the rANS coder's fixed point is part of v3's format (v2's digest stays as it was)
            constants.append(laplace_rans.PRECISION)
        self.network = nn.Module()
        self.network.constants = nn.Parameter(torch.tensor(constants, dtype=torch.float64), requires_grad=False)
        bands = len(BAND_SETS[band_set])
        self.identity = ModelIdentity.of(name, band_set, [0.0] * bands, [1.0] * bands, self.network)

    def streams(self, quality: float) -> int:
        return 1

    def rate_lambda(self, quality: float) -> float:
        return lambda_at(LAMBDAS, quality)

    def step(self, quality: float) -> float:
        """The quantiser step (DN) of ``quality``."""
        return STEP_PER_ROOT_LAMBDA / math.sqrt(self.rate_lambda(quality))

    def compress(self, x: torch.Tensor, quality: float, refinement_steps: int = 0,
                 exact_reconstruction: bool = True) -> tuple[list[CodedTile], torch.Tensor]:
        step, rate_lambda = self.step(quality), self.rate_lambda(quality)

        def code(tile: np.ndarray) -> tuple[CodedTile, np.ndarray]:
            data, symbols, reconstruction = transform_coding.encode(tile, step, self.rans, rate_lambda)
            return CodedTile((data,), symbol_checksum(*symbols)), reconstruction

        coded = map_tiles(code, list(x.detach().cpu().double().numpy()))
        return [tile for tile, _ in coded], torch.from_numpy(np.stack([r for _, r in coded]))

    def decompress(self, streams: list[tuple[bytes, ...]], tile_shape: tuple[int, int], quality: float,
                   scale_table: bool) -> tuple[torch.Tensor, list[int]]:
        bands = len(self.identity.bands)

        def decode(tile_streams: tuple[bytes, ...]) -> tuple[np.ndarray, int]:
            reconstruction, symbols = transform_coding.decode(tile_streams[0], bands, tile_shape, self.rans)
            return reconstruction, symbol_checksum(*symbols)

        decoded = map_tiles(decode, streams)
        tiles = [r for r, _ in decoded]
        return torch.from_numpy(np.stack(tiles) if len(tiles) > 1 else tiles[0][None]), [c for _, c in decoded]
