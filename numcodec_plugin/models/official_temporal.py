"""Official temporal TerraCodec models, TEC-TT and FlexTEC, as :class:`SequenceCoder`.

TEC-TT (``terracodec``'s ``TemporalTransformer``) codes a sequence of frames of a fixed size
(256 x 256 for the published weights), predicting each frame's latent distribution from the
two frames before it with a transformer; FlexTEC is the same network with latent repacking,
where quality k in 1..16 is the number of latent tokens per patch actually coded (the rest are
forecast by the decoder). Weights are found like the image models' (see
:mod:`numcodec_plugin.models.official`).

``config_<lambda>.yaml`` beside a checkpoint may carry ``image_size`` and a ``sizes``
mapping that sizes the network (transform channels, latent channels, transformer width and
depth, entropy-table resolution). The published checkpoints need neither (their sizes are the
``TemporalTransformer`` defaults); the sizes let small checkpoints exercise the whole path.

The published model is 225 M parameters: in practice a GPU model (about 100 s for 4 frames of
256 x 256 on 2 CPU cores). A warning says so, once, when it is loaded on a CPU.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import warnings
from pathlib import Path

import torch
import yaml

from numcodec_plugin._torchvision_shim import ensure_compressai_importable
from numcodec_plugin.errors import ModelNotFoundError
from numcodec_plugin.models.base import CodedTile, symbol_checksum
from numcodec_plugin.models.identity import ModelIdentity
from numcodec_plugin.models.official import OfficialModel, find_checkpoint, load_weights, on_network_thread
from numcodec_plugin.scoped_determinism import deterministic_torch

_warned_cpu: set[str] = set()


def build_temporal_transformer(in_channels: int, image_size: int, flextec: bool,
                               sizes: dict | None = None) -> torch.nn.Module:
    """A randomly initialised ``TemporalTransformer``: the published sizes, or those of ``sizes``.

    With ``sizes``, the constructor's network is built on the meta device (no memory, no
    time) and its four parts are replaced by real ones of the given sizes.
    """
    ensure_compressai_importable()
    from terracodec.temporaltransformer import TemporalTransformer

    if sizes is None:
        with deterministic_torch():
            return TemporalTransformer(image_size=image_size, in_channels=in_channels, flextec=flextec)
    from terracodec.temporaltransformer.bottlenecks import GsnConditionalLocScaleShift
    from terracodec.temporaltransformer.entropy_model import TerraCodecTTEntropyModel
    from terracodec.temporaltransformer.pipeline import Dequantizer, PerChannelWeight
    from terracodec.temporaltransformer.transforms import ELICTransform

    a = sizes
    latent, d_model = int(a["latent_channels"]), int(a["d_model"])
    with torch.device("meta"):
        network = TemporalTransformer(image_size=image_size, in_channels=in_channels, flextec=flextec)
    pipeline = network.model
    pipeline.transform = ELICTransform(in_channels, in_channels, num_residual_blocks=int(a["residual_blocks"]),
                                       channels=list(a["transform_channels"]), compression_channels=latent)
    pipeline.entropy_model = TerraCodecTTEntropyModel(
        num_channels=latent, context_len=2, enable_latent_repacking=flextec, enable_masking=flextec,
        window_size_enc=int(a["window"][0]), window_size_dec=int(a["window"][1]),
        num_layers_encoder_sep=int(a["encoder_layers"][0]), num_layers_encoder_joint=int(a["encoder_layers"][1]),
        num_layers_decoder=int(a["decoder_layers"]), d_model=d_model, num_head=int(a["heads"]),
    )
    pipeline.entropy_model.bottleneck = GsnConditionalLocScaleShift(
        num_scales=int(a["table_scales"]), num_means=int(a["table_means"]), min_scale=0.01, tail_mass=2 ** -8)
    pipeline._temporal_pad_token_maker = PerChannelWeight(latent)
    pipeline._dequantizer = Dequantizer(latent, d_model)
    pipeline.avail_ks = pipeline.entropy_model.avail_ks
    left = [n for n, t in itertools.chain(network.named_parameters(), network.named_buffers()) if t.is_meta]
    if left:
        raise ModelNotFoundError(f"the terracodec TemporalTransformer has parts this sizing does not cover: {left[:5]}")
    return network


def load_temporal_network(model: OfficialModel, key: str) -> tuple[torch.nn.Module, Path]:
    """The TEC-TT / FlexTEC network for ``key`` with its weights and entropy tables, on CPU, in eval mode."""
    weights, config_path = find_checkpoint(model, key)
    config = (yaml.safe_load(config_path.read_text()) if config_path else None) or {}
    in_channels = int(config.get("in_channels", 13 if model.band_set == "S2L1C" else 12))
    network = build_temporal_transformer(in_channels, int(config.get("image_size", 256)),
                                         model.architecture == "flextec", config.get("sizes"))
    load_weights(network, weights, model.name)
    with deterministic_torch(), contextlib.redirect_stdout(io.StringIO()):  # it prints on FlexTEC set-up
        network.setup_model_for_compression()
    return network.eval(), weights.parent


class OfficialTemporalCoder:
    """:class:`SequenceCoder` for TEC-TT (quality = the checkpoint) and FlexTEC (quality = tokens coded, k).

    One sequence per call of the published API (it takes batch 1). The checksum of each frame is
    over the quantised latent the synthesis receives, captured while decoding once at encode time.
    Every call runs on :func:`~numcodec_plugin.models.official.on_network_thread`.
    """

    temporal = True
    latent_scale_table = False  # the published models' own streams
    lowpass_correction = True

    def __init__(self, network: torch.nn.Module, identity: ModelIdentity, flextec: bool) -> None:
        self.network = network
        self.identity = identity
        self.flextec = flextec
        self.tile_size = self.size_multiple = int(network.img_dims[0])

    def streams(self, quality: float) -> int:
        """Latent tokens per patch coded per frame: all of them for TEC-TT, k = quality for FlexTEC."""
        return int(quality) if self.flextec else self.network.model.get_dec_len()

    def rate_lambda(self, quality: float) -> float | None:
        """Unknown in our units (the published lambdas weigh another distortion), so no low-pass layer."""
        return None

    def _on_device(self) -> None:
        device = next(self.network.parameters()).device
        self.network.device = device  # the wrapper moves its inputs there
        if device.type == "cpu" and self.identity.name not in _warned_cpu:
            _warned_cpu.add(self.identity.name)
            warnings.warn(f"{self.identity.name} runs on the CPU here; it is a GPU model in practice "
                          "(about 100 s per 4 frames of 256 x 256 on 2 CPU cores)", RuntimeWarning, stacklevel=3)

    def _decode(self, strings: list, frames: int, quality: float) -> tuple[torch.Tensor, list[int]]:
        """Reconstruction (T, C, H, W) and per-frame symbol checksums of one sequence's streams."""
        captured: list[torch.Tensor] = []
        hook = self.network.model._dequantizer.register_forward_pre_hook(
            lambda _m, _args, kwargs: captured.append(kwargs["latent_q"]), with_kwargs=True)
        payload = {"strings": strings}
        if self.flextec:
            payload["quality"] = [int(quality)] * frames
        try:
            x_hat = self.network.decompress(payload)
        finally:
            hook.remove()
        return x_hat[0], [symbol_checksum(latent) for latent in captured]

    def compress(self, x: torch.Tensor, quality: float) -> tuple[list[list[CodedTile]], torch.Tensor]:
        self._on_device()
        return on_network_thread(self._compress, x, quality)

    def _compress(self, x: torch.Tensor, quality: float) -> tuple[list[list[CodedTile]], torch.Tensor]:
        sequences, images = [], []
        for sequence in x:
            payload = self.network.compress(sequence[None], quality=int(quality) if self.flextec else None)
            strings = [[token[0] for token in frame] for frame in payload["strings"]]
            x_hat, checksums = self._decode(payload["strings"], len(strings), quality)
            sequences.append([CodedTile(tuple(frame), checksum) for frame, checksum in zip(strings, checksums)])
            images.append(x_hat)
        return sequences, torch.stack(images)

    def decompress(self, streams: list[list[tuple[bytes, ...]]], tile_shape: tuple[int, int],
                   quality: float, scale_table: bool = False) -> tuple[torch.Tensor, list[list[int]]]:
        self._on_device()
        decoded = on_network_thread(lambda: [self._decode([[[token] for token in frame] for frame in sequence],
                                                          len(sequence), quality) for sequence in streams])
        return torch.stack([x for x, _ in decoded]), [checksums for _, checksums in decoded]
