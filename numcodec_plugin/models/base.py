"""The interface between the tensor engine and a network: :class:`TileCoder`.

A tile coder turns a batch of band-standardised tiles into entropy-coded streams and back.
Both directions report a CRC-32 of the quantised symbols per tile, computed by the one
function :func:`symbol_checksum`, so the engine can tell a decoder whose entropy model
disagrees with the encoder's before it returns anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from numcodec_plugin.checksums import crc32
from numcodec_plugin.lowpass import LowpassCorrection
from numcodec_plugin.spectral import SpectralCorrection
from numcodec_plugin.models.identity import ModelIdentity


@dataclass(frozen=True)
class CodedTile:
    """One tile's entropy-coded streams (in the model's order) and its symbol checksum.

    ``offsets``: the engine's per-band DC correction of the tile, in units of ``OFFSET_STEP`` DN
    (the mean error of the learned reconstruction over the tile's valid pixels, measured by the
    encoder and subtracted by the decoder). ``correction``: the engine's low-pass correction of the
    tile (:mod:`numcodec_plugin.lowpass`), if the encoder found one that pays; ``spectral``: its
    spectral correction (:mod:`numcodec_plugin.spectral`), likewise.
    """

    streams: tuple[bytes, ...]
    checksum: int
    offsets: tuple[int, ...] = ()
    correction: LowpassCorrection | None = None
    spectral: SpectralCorrection | None = None


class LoadedModel(Protocol):
    """What the engine needs from any loaded model, image or temporal."""

    identity: ModelIdentity
    network: torch.nn.Module
    #: tile height and width must be multiples of this
    size_multiple: int
    #: preferred tile edge (the size the model was trained on or assumes)
    tile_size: int
    #: False for :class:`TileCoder`, True for :class:`SequenceCoder`
    temporal: bool
    #: True if the latent streams it writes use the fixed scale table of chunk format 4
    #: (:class:`~numcodec_plugin.models.entropy_coding.ScaleTable`); it still reads older ones
    latent_scale_table: bool
    #: True if the engine fits its low-pass correction to the model's reconstructions (where
    #: ``rate_lambda`` is known): a network's errors carry low-frequency bias; a wavelet coder codes
    #: the low frequencies in its LL subband at its own step, where the fit does not pay, so it is not run
    lowpass_correction: bool

    def streams(self, quality: float) -> int:
        """Streams per tile (and frame) at ``quality``."""

    def rate_lambda(self, quality: float) -> float | None:
        """The Lagrange multiplier the model trades rate for distortion with at ``quality``
        (distortion: MSE in reflectance units; rate: bits per pixel per band), or None if unknown.
        The engine's low-pass correction layer uses it, and is off for models that return None."""


class TileCoder(LoadedModel, Protocol):
    """An image model: tiles are coded independently."""

    def compress(self, x: torch.Tensor, quality: float, refinement_steps: int = 0,
                 exact_reconstruction: bool = True) -> tuple[list[CodedTile], torch.Tensor]:
        """Code a (B, C, H, W) batch of standardised tiles at ``quality``, their latents refined by
        ``refinement_steps`` gradient steps where the model supports it; also return the decoder's
        reconstruction of them: bit-identical to what :meth:`decompress` will compute, or with
        ``exact_reconstruction`` False, where a model can compute it faster so, within float32
        rounding of it (what the engine's corrections of a lossy chunk are measured on)."""

    def decompress(self, streams: list[tuple[bytes, ...]], tile_shape: tuple[int, int], quality: float,
                   scale_table: bool) -> tuple[torch.Tensor, list[int]]:
        """Decode tiles of ``tile_shape`` (latents against the scale table, or as chunk formats 1-3 coded
        them); returns the (B, C, H, W) batch and each tile's symbol checksum."""


#: the fewest frames a chunk must hold for a temporal model to code it
MIN_TEMPORAL_FRAMES = 2


class SequenceCoder(LoadedModel, Protocol):
    """A temporal model: the tiles at one position of a chunk's frames form a sequence, coded in
    frame order, each frame depending on the ones before it. Chunks hold at least
    :data:`MIN_TEMPORAL_FRAMES` frames.
    """

    def compress(self, x: torch.Tensor, quality: float) -> tuple[list[list[CodedTile]], torch.Tensor]:
        """Code (S, T, C, H, W) sequences of standardised tiles; returns each sequence's T coded tiles and
        the decoder's (S, T, C, H, W) reconstruction."""

    def decompress(self, streams: list[list[tuple[bytes, ...]]], tile_shape: tuple[int, int],
                   quality: float, scale_table: bool) -> tuple[torch.Tensor, list[list[int]]]:
        """Decode sequences (each a list of per-frame streams); returns (S, T, C, H, W) and per-frame checksums."""


AnyCoder = TileCoder | SequenceCoder


def symbol_checksum(*symbols: np.ndarray | torch.Tensor) -> int:
    """CRC-32 of one tile's integer symbols (rounded, as little-endian int32), in argument order."""
    crc = 0
    for values in symbols:
        array = values.detach().float().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
        crc = crc32(np.ascontiguousarray(array if array.dtype.kind in "iu" else np.rint(array), "<i4"), crc)
    return crc
