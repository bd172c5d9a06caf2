"""The bundled temporal mode: the image model's latent of frame t predicted from frame t-1.

A Sentinel-2 time series revisits the same ground. The hyperprior already describes each
frame's coarse structure cheaply (the hyper-latent); what costs bits is the *innovation*, the
latent minus the hyperprior's mean. Where the ground is the same, frame t's innovation follows
frame t-1's at the same place, up to a per-channel factor that depends on how much the season
or the atmosphere changed. So frame t's latent is coded around

    mean_t + alpha_c * (y_hat_{t-1} - mean_{t-1})

with the hyperprior's scale, where ``alpha_c`` (0 to 1.875 in steps of 1/8, per latent channel)
is fitted by the encoder to the tile by least squares and sent in a third stream (4 bits per
channel whose previous innovation is not all zero). The encoder codes every frame both ways and
keeps the shorter; an empty third stream means the frame was coded as an image. Frame 0 of a
chunk is always coded as an image.

Nothing here is learned beyond the shared image model: its transforms, hyperprior and gains are
used unchanged, so a temporal chunk reconstructs as precisely as image chunks of the same
quality while spending fewer bits where the ground persists (docs/time-series.md measures it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from numcodec_plugin.errors import BitstreamError
from numcodec_plugin.models.base import CodedTile, symbol_checksum
from numcodec_plugin.models.entropy_coding import clip_symbols, decode_latent, decode_uniform, encode_latent, encode_uniform
from numcodec_plugin.models.gain_hyperprior import GainHyperpriorCoder
from numcodec_plugin.tile_pool import map_tiles

#: prediction factors are ALPHA_STEP * k for k in 0..ALPHA_LEVELS-1
ALPHA_STEP = 0.125
ALPHA_LEVELS = 16
_PREDICTED = b"\x01"  # first byte of a non-empty factor stream


@dataclass(frozen=True)
class _FrameState:
    """What the next frame is predicted from: this frame's decoded latent and its hyperprior mean."""

    latent: torch.Tensor
    means: torch.Tensor

    @property
    def innovation(self) -> torch.Tensor:
        return self.latent - self.means


def prediction_levels(target: torch.Tensor, innovation: torch.Tensor) -> np.ndarray:
    """Per-channel factor levels k (ALPHA_STEP * k) that best predict ``target`` from ``innovation`` (least squares)."""
    energy = innovation.pow(2).sum((1, 2))
    slope = (target * innovation).sum((1, 2)) / energy.clamp(min=1e-12)
    levels = torch.round(slope / ALPHA_STEP).clamp(0, ALPHA_LEVELS - 1)
    return torch.where(energy > 0, levels, 0).numpy().astype(np.int32)


class TemporalGainHyperpriorCoder(GainHyperpriorCoder):
    """:class:`SequenceCoder` of the bundled temporal mode (see the module docstring).

    Sequences (tile positions) run side by side in the tile pool; within one, frames go in
    order. The canonical CPU evaluation of the image coder keeps encoder and decoder identical.
    """

    temporal = True

    def streams(self, quality: float) -> int:
        """The latent, the hyper-latent and the prediction factors (empty for frames coded as images)."""
        return 3

    def _code_frame(self, y: torch.Tensor, z_symbols: np.ndarray, previous: _FrameState | None, quality: float
                    ) -> tuple[tuple[bytes, ...], int, _FrameState]:
        """Streams, symbol checksum and state of one frame of a sequence: predicted or not, whichever is shorter."""
        scales, means = self._latent_parameters(z_symbols, quality)
        z_stream = self.hyper_latent_tables(quality).encode(z_symbols)
        options = [(means, b"", np.zeros(0, np.int32))]
        if previous is not None:
            levels = prediction_levels(y - means, previous.innovation)
            active = _active_channels(previous)
            if levels.any():
                predicted = means + torch.from_numpy(levels * ALPHA_STEP).float()[:, None, None] * previous.innovation
                options.append((predicted, _PREDICTED + encode_uniform(levels[active], np.full(active.sum(), ALPHA_LEVELS)),
                                levels))
        coded = []
        for centre, factors, levels in options:
            symbols = clip_symbols((y - centre).numpy())
            coded.append(((encode_latent(symbols, scales.numpy()), z_stream, factors), symbols, centre, levels))
        streams, symbols, centre, levels = min(coded, key=lambda c: sum(map(len, c[0])))
        return streams, symbol_checksum(symbols, z_symbols, levels), _FrameState(torch.from_numpy(symbols).float() + centre, means)

    def _decode_frame(self, streams: tuple[bytes, ...], tile_shape: tuple[int, int], previous: _FrameState | None,
                      quality: float, scale_table: bool) -> tuple[int, _FrameState]:
        z_symbols = self.hyper_latent_tables(quality).decode(streams[1], self._hyper_latent_shape(tile_shape))
        scales, means = self._latent_parameters(z_symbols, quality)
        centre, levels = means, np.zeros(0, np.int32)
        if streams[2]:
            if previous is None or streams[2][:1] != _PREDICTED:
                raise BitstreamError("corrupt chunk: prediction factors for a frame that has nothing to be predicted from")
            active = _active_channels(previous)
            levels = np.zeros(len(active), np.int32)
            levels[active] = decode_uniform(streams[2][1:], np.full(active.sum(), ALPHA_LEVELS))
            centre = means + torch.from_numpy(levels * ALPHA_STEP).float()[:, None, None] * previous.innovation
        symbols = decode_latent(streams[0], scales.numpy(), scale_table)
        return symbol_checksum(symbols, z_symbols, levels), _FrameState(torch.from_numpy(symbols).float() + centre, means)

    def compress(self, x: torch.Tensor, quality: float) -> tuple[list[list[CodedTile]], torch.Tensor]:
        sequences, frames = x.shape[:2]
        y, z_symbols = self._analyse_tiles(x.flatten(0, 1), quality, refinement_steps=0)
        y, z_symbols = y.unflatten(0, (sequences, frames)), z_symbols.reshape((sequences, frames) + z_symbols.shape[1:])

        def code(s: int) -> tuple[list[CodedTile], torch.Tensor]:
            tiles, images, state = [], [], None
            for t in range(frames):
                streams, checksum, state = self._code_frame(y[s, t], z_symbols[s, t], state, quality)
                tiles.append(CodedTile(streams, checksum))
                images.append(self._synthesise(state.latent, quality))
            return tiles, torch.cat(images)

        coded = map_tiles(code, range(sequences))
        return [tiles for tiles, _ in coded], torch.stack([images for _, images in coded])

    def decompress(self, streams: list[list[tuple[bytes, ...]]], tile_shape: tuple[int, int],
                   quality: float, scale_table: bool = True) -> tuple[torch.Tensor, list[list[int]]]:
        def decode(sequence: list[tuple[bytes, ...]]) -> tuple[torch.Tensor, list[int]]:
            images, checksums, state = [], [], None
            for tile in sequence:
                checksum, state = self._decode_frame(tile, tile_shape, state, quality, scale_table)
                images.append(self._synthesise(state.latent, quality))
                checksums.append(checksum)
            return torch.cat(images), checksums

        decoded = map_tiles(decode, streams)
        return torch.stack([images for images, _ in decoded]), [checksums for _, checksums in decoded]


def _active_channels(previous: _FrameState) -> np.ndarray:
    """Channels whose previous innovation is not all zero: only these carry a factor."""
    return (previous.innovation.abs().sum((1, 2)) > 0).numpy()
