"""The bundled temporal mode: the image model's latent of frame t, coded given frame t-1.

A Sentinel-2 time series revisits the same ground: field edges, roads and relief stay where they
were while reflectance drifts with season and atmosphere. :class:`TemporalPrior` refines the
hyperprior's Gaussian (mean and scale) of frame t's latent from the *decoded* latent of frame
t-1 at the same place, which the decoder has already. The image model's transforms are shared
unchanged (frozen), so a temporal chunk reconstructs exactly like an image chunk would; only
the entropy model, hence the rate, changes. Frame 0 of a chunk is coded as an image.

The prior works in the analysis domain (latents divided by the quality's gain), so one set of
weights serves every quality; it is told the quality as one extra input plane. Its last layer
starts at zero: before training it *is* the image model's prior.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from numcodec_plugin.models.base import CodedTile
from numcodec_plugin.models.gain_hyperprior import GainHyperprior, GainHyperpriorCoder
from numcodec_plugin.models.identity import ModelIdentity
from numcodec_plugin.tile_pool import map_tiles


class TemporalPrior(nn.Module):
    """(previous decoded latent, hyperprior mean, hyperprior scale, quality) -> refined mean and scale."""

    def __init__(self, M: int = 160, hidden: int = 96) -> None:
        super().__init__()
        self.config = {"M": M, "hidden": hidden}
        self.net = nn.Sequential(
            nn.Conv2d(3 * M + 1, hidden, 3, padding=1), nn.LeakyReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, padding=1), nn.LeakyReLU(inplace=True),
            nn.Conv2d(hidden, 2 * M, 1),
        )
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, previous: torch.Tensor, means: torch.Tensor, scales: torch.Tensor, gain: torch.Tensor,
                quality: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """All latents in the gain domain (as the coder sees them), shape (B, M, h, w); ``gain`` (B, M, 1, 1);
        ``quality`` (B,) as a fraction of the model's range. Returns (scales, means) in the gain domain."""
        level = quality.float()[:, None, None, None].expand(-1, 1, *means.shape[-2:])
        features = torch.cat([previous / gain, means / gain, torch.log(scales.clamp(min=1e-3) / gain), level], 1)
        shift, log_factor = self.net(features).chunk(2, 1)
        return scales * torch.exp(log_factor.clamp(-6, 6)), means + shift * gain


class TemporalGainHyperprior(nn.Module):
    """The bundled image model plus a :class:`TemporalPrior` (one state dict, one identity digest)."""

    def __init__(self, image: GainHyperprior, prior: TemporalPrior) -> None:
        super().__init__()
        self.image = image
        self.prior = prior

    @property
    def size_multiple(self) -> int:
        return self.image.size_multiple


class TemporalGainHyperpriorCoder(GainHyperpriorCoder):
    """:class:`SequenceCoder` of the bundled temporal mode.

    Each tile position of a chunk is a sequence over its frames: frame 0 is coded as the image
    coder codes it; frame t's latent Gaussian comes from the hyperprior refined by the
    :class:`TemporalPrior` given the decoded latent of frame t-1. Sequences run side by side in
    the tile pool; within one, frames go in order (the decoder has nothing else to go on). The
    same canonical CPU evaluation as the image coder keeps encoder and decoder bit-identical.
    """

    temporal = True

    def __init__(self, network: TemporalGainHyperprior, identity: ModelIdentity) -> None:
        super().__init__(network.image, identity)
        self.network = network
        self._canonical_prior = copy.deepcopy(network.prior).cpu()

    def _latent_parameters(self, z_symbols: np.ndarray, previous: torch.Tensor | None, quality: float) -> tuple[torch.Tensor, torch.Tensor]:
        scales, means = super()._latent_parameters(z_symbols, previous, quality)
        if previous is None:
            return scales, means
        gain, _ = self._gains(1, quality, self._canonical, torch.device("cpu"))
        level = torch.tensor([(quality - 1.0) / (self._canonical.levels - 1)])
        scales, means = self._canonical_prior(previous[None], means[None], scales[None], gain, level)
        return scales[0], means[0]

    def _analyse(self, x: torch.Tensor, quality: float) -> tuple[torch.Tensor, torch.Tensor]:
        gain, _ = self._gains(x.shape[0], quality, self.network.image, x.device)
        y = self.network.image.analysis(x, gain)
        return y, self.network.image.h_a(y)

    def compress(self, x: torch.Tensor, quality: float) -> tuple[list[list[CodedTile]], torch.Tensor]:
        sequences, frames = x.shape[:2]
        y, z_symbols = self._analyse_tiles(x.flatten(0, 1), quality)
        y, z_symbols = y.unflatten(0, (sequences, frames)), z_symbols.reshape((sequences, frames) + z_symbols.shape[1:])

        def code(s: int) -> tuple[list[CodedTile], torch.Tensor]:
            tiles, images, previous = [], [], None
            for t in range(frames):
                tile, x_hat, previous = self._code_tile(y[s, t], z_symbols[s, t], quality, previous)
                tiles.append(tile)
                images.append(x_hat)
            return tiles, torch.cat(images)

        coded = map_tiles(code, range(sequences))
        return [tiles for tiles, _ in coded], torch.stack([images for _, images in coded])

    def decompress(self, streams: list[list[tuple[bytes, ...]]], tile_shape: tuple[int, int],
                   quality: float) -> tuple[torch.Tensor, list[list[int]]]:
        def decode(sequence: list[tuple[bytes, ...]]) -> tuple[torch.Tensor, list[int]]:
            images, checksums, previous = [], [], None
            for tile in sequence:
                x_hat, checksum, previous = self._decode_tile(tile, tile_shape, quality, previous)
                images.append(x_hat)
                checksums.append(checksum)
            return torch.cat(images), checksums

        decoded = map_tiles(decode, streams)
        return torch.stack([images for images, _ in decoded]), [checksums for _, checksums in decoded]
