"""The bundled architecture: a small mean-scale hyperprior with gain units.

One set of weights serves a continuous range of rates (Cui et al., "Asymmetric gained deep
image compression with continuous rate adaptation", CVPR 2021): the latent ``y`` is
multiplied by a learned per-channel gain vector before quantisation and by an inverse gain
after it. Each integer quality level has its own pair of vectors, trained with its own
lambda; qualities between levels interpolate the vectors geometrically.

Inputs are band-standardised tensors (the engine applies the model's statistics). A fixed
orthonormal spectral rotation (a KLT estimated on the training data) decorrelates the bands
before the learned transform and is undone after it. Downsampling is 8x in ``y`` and 32x in
``z``, so tile sizes must be multiples of 32.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from numcodec_plugin._torchvision_shim import ensure_compressai_importable

ensure_compressai_importable()

from compressai.entropy_models import EntropyBottleneck, GaussianConditional  # noqa: E402
from compressai.models.utils import conv, deconv  # noqa: E402

from numcodec_plugin.models.base import CodedTile, symbol_checksum  # noqa: E402
from numcodec_plugin.models.entropy_coding import (  # noqa: E402
    CategoricalTables,
    clip_symbols,
    decode_latent,
    encode_latent,
)
from numcodec_plugin.models.identity import ModelIdentity  # noqa: E402
from numcodec_plugin.models.integer_hyper_synthesis import IntegerHyperSynthesis  # noqa: E402
from numcodec_plugin.models.latent_refinement import refine_latents  # noqa: E402
from numcodec_plugin.models.layers import InferenceGDN  # noqa: E402
from numcodec_plugin.tile_pool import map_tiles  # noqa: E402


def training_lambdas(levels: int) -> tuple[float, ...]:
    """The Lagrange multiplier of each quality level, lowest rate first: 64 x 3.16**k (distortion in
    reflectance units, rate in bits per pixel per band). The trainer uses them, and the test models
    take the same law."""
    return tuple(64.0 * 3.16 ** k for k in range(levels))


def lambda_at(lambdas: tuple[float, ...], quality: float) -> float:
    """The lambda of ``quality`` given one per whole quality from 1: interpolated geometrically like the
    gains, and beyond the levels (below quality 1, above the last) extrapolated like them from the two
    nearest levels."""
    log_lambdas = np.log(np.asarray(lambdas, dtype=np.float64))
    level, top = quality - 1.0, len(log_lambdas) - 1
    if level < 0:  # np.interp would clamp; outputs at trained qualities stay np.interp's to the bit
        return float(np.exp(log_lambdas[0] + level * (log_lambdas[1] - log_lambdas[0])))
    if level > top:
        return float(np.exp(log_lambdas[top] + (level - top) * (log_lambdas[top] - log_lambdas[top - 1])))
    return float(np.exp(np.interp(level, np.arange(len(log_lambdas)), log_lambdas)))


class GainHyperprior(nn.Module):
    """Mean-scale hyperprior codec with per-quality gain units on the latent."""

    size_multiple = 32

    def __init__(self, bands: int = 12, N: int = 64, M: int = 160, levels: int = 8,
                 integer_hyper_synthesis: bool = False, table_qualities: list[float] | None = None,
                 hyper_latent_table_size: int = 0) -> None:
        """``table_qualities``: the qualities that have their own entropy tables, fitted after training
        (:mod:`numcodec_plugin.training.entropy_tables`): :attr:`hyper_latent_probabilities`, with
        ``hyper_latent_table_size`` packed entries each, and :attr:`latent_scale_factors`. None: the
        entropy bottleneck's table and the hyper-synthesis's scales as they are, at every quality."""
        super().__init__()
        self.config = {"bands": bands, "N": N, "M": M, "levels": levels}
        if integer_hyper_synthesis:
            self.config["integer_hyper_synthesis"] = True
        self.register_buffer("spectral_rotation", torch.eye(bands))
        if table_qualities:
            self.config.update(table_qualities=list(table_qualities), hyper_latent_table_size=hyper_latent_table_size)
            #: per table quality, the hyper-latent's probabilities packed on the bottleneck's symbol ranges
            #: (:meth:`~numcodec_plugin.models.entropy_coding.CategoricalTables.packed`)
            self.register_buffer("hyper_latent_probabilities", torch.zeros(len(table_qualities), hyper_latent_table_size))
            #: per table quality, a factor on each latent channel's scales (1 where recalibrating does not pay)
            self.register_buffer("latent_scale_factors", torch.ones(len(table_qualities), M))
        self.g_a = nn.Sequential(conv(bands, N), InferenceGDN(N), conv(N, N), InferenceGDN(N), conv(N, M))
        self.g_s = nn.Sequential(
            deconv(M, N), InferenceGDN(N, inverse=True), deconv(N, N), InferenceGDN(N, inverse=True), deconv(N, bands)
        )
        self.h_a = nn.Sequential(
            conv(M, N, stride=1, kernel_size=3), nn.LeakyReLU(inplace=True),
            conv(N, N), nn.LeakyReLU(inplace=True), conv(N, N),
        )
        self.h_s = nn.Sequential(
            deconv(N, M), nn.LeakyReLU(inplace=True),
            deconv(M, M * 3 // 2), nn.LeakyReLU(inplace=True),
            conv(M * 3 // 2, M * 2, stride=1, kernel_size=3),
        )
        if integer_hyper_synthesis:
            self.h_s = IntegerHyperSynthesis(self.h_s, levels)
        self.entropy_bottleneck = EntropyBottleneck(N)
        self.gaussian_conditional = GaussianConditional(None)
        # Log-gains start log-spaced so that the levels differ in rate from the first step.
        start = torch.linspace(-2.5, 2.5, levels).unsqueeze(1).repeat(1, M)
        self.log_gain = nn.Parameter(start.clone())
        self.log_inverse_gain = nn.Parameter(-start.clone())

    @property
    def levels(self) -> int:
        return self.log_gain.shape[0]

    def gains(self, quality: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Gain and inverse gain, shape (B, M, 1, 1), for per-sample qualities up to levels-1: between
        levels interpolated geometrically, below level 0 extrapolated the same way from levels 0 and 1
        (smaller gains, coarser latents: rates below the trained ones)."""
        quality = quality.clamp(max=self.levels - 1)
        low = quality.floor().long().clamp(0, self.levels - 2)
        frac = (quality - low).unsqueeze(1)
        def mix(table: torch.Tensor) -> torch.Tensor:
            return torch.exp(table[low] * (1 - frac) + table[low + 1] * frac)[:, :, None, None]
        return mix(self.log_gain), mix(self.log_inverse_gain)

    def to_channels_last(self) -> "GainHyperprior":
        """Store the analysis and synthesis transforms channels-last, the layout oneDNN convolves
        fastest on CPU (training steps and the synthesis speed up; ``benchmarks/codec_speed.py``
        times the stages). The synthesis output is bit for bit what the default layout gives, so
        chunks decode as before (``tests/test_bundled_model.py``); the hyper-synthesis, whose
        output is the entropy model, gains nothing and keeps its layout."""
        for transform in (self.g_a, self.g_s):
            transform.to(memory_format=torch.channels_last)
        return self

    def rotate(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("oc,bchw->bohw", self.spectral_rotation, x)

    def unrotate(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("co,bchw->bohw", self.spectral_rotation, x)

    def analysis(self, x: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
        return self.g_a(self.rotate(x)) * gain

    def synthesis(self, y_hat: torch.Tensor, inverse_gain: torch.Tensor) -> torch.Tensor:
        return self.unrotate(self.g_s(y_hat * inverse_gain))

    def hyper_parameters(self, z_hat: torch.Tensor, quality: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scales and means of the latent's Gaussian model from the decoded hyper-latent, at per-sample
        qualities in [0, levels-1] (which only the integer hyper-synthesis's activation steps depend on)."""
        if isinstance(self.h_s, IntegerHyperSynthesis):
            scales, means = self.h_s(z_hat, quality).chunk(2, 1)
        else:
            scales, means = self.h_s(z_hat).chunk(2, 1)
        return scales, means

    def forward(self, x: torch.Tensor, quality: torch.Tensor) -> dict[str, torch.Tensor]:
        """Training pass with noise quantisation; returns the reconstruction and likelihoods."""
        gain, inverse_gain = self.gains(quality)
        y = self.analysis(x, gain)
        z = self.h_a(y)
        z_hat, z_likelihoods = self.entropy_bottleneck(z)
        scales, means = self.hyper_parameters(z_hat, quality)
        y_hat, y_likelihoods = self.gaussian_conditional(y, scales, means=means)
        return {"x_hat": self.synthesis(y_hat, inverse_gain), "likelihoods": (y_likelihoods, z_likelihoods)}

    def aux_loss(self) -> torch.Tensor:
        return self.entropy_bottleneck.loss()

    def update(self, force: bool = True) -> None:
        """Build the hyper-latent's integer CDF tables (on CPU, after training or loading)."""
        self.entropy_bottleneck.update(force=force)


class RoundedFloat64(nn.Module):
    """Float64 ``layers`` evaluated so that every CPU gets the same bits: each layer on float32
    values (the products of two float32 numbers are exact in float64), its output rounded to float32.

    The convolution kernels of another instruction set or BLAS sum in another order, but in float64
    that moves a sum by about 1e-16 relative, far below float32's rounding step, so the rounded
    outputs agree except for sums that fall within that distance of a rounding boundary.
    """

    def __init__(self, layers: nn.Sequential) -> None:
        super().__init__()
        self.layers = layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(torch.float64)
        for layer in self.layers:
            x = layer(x).to(torch.float32).to(torch.float64)
        return x.to(torch.float32)


class PortableDecoder:
    """What encoder and decoder must compute alike (the entropy parameters, the inverse gain and the
    reconstruction), evaluated to be reproducible on any CPU: what the ``-portable`` model names
    decode with. It answers the same calls as :class:`GainHyperprior` (``hyper_parameters``,
    ``gains``, ``synthesis``), so the coder uses either without telling them apart.

    The transforms run as :class:`RoundedFloat64`; the gains (an ``exp``) and the spectral rotation
    (a sum over bands) run in float64 too and are rounded to float32. ``benchmarks/portability.py``
    measures it: with the float32 path, some tiles decode under another instruction set to other
    scale-table entries (the chunk is refused) and other values, with this one none did. The price
    is the float64 arithmetic: that report's decode time per tile.
    """

    def __init__(self, network: GainHyperprior) -> None:
        self._network = copy.deepcopy(network).cpu().to(torch.float64, memory_format=torch.contiguous_format)
        self._hyper_synthesis = RoundedFloat64(self._network.h_s)
        self._synthesis = RoundedFloat64(self._network.g_s)

    def hyper_parameters(self, z_hat: torch.Tensor, quality: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scales, means = self._hyper_synthesis(z_hat).chunk(2, 1)
        return scales, means

    def gains(self, quality: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        gain, inverse_gain = self._network.gains(quality.to(torch.float64))
        return gain.to(torch.float32), inverse_gain.to(torch.float32)

    def synthesis(self, y_hat: torch.Tensor, inverse_gain: torch.Tensor) -> torch.Tensor:
        x = self._synthesis(y_hat * inverse_gain)
        return self._network.unrotate(x.to(torch.float64)).to(torch.float32)


class GainHyperpriorCoder:
    """:class:`TileCoder` for a :class:`GainHyperprior`; quality q picks the gains of level q - 1
    (trained for q in [1, levels]; below 1 extrapolated, see :meth:`GainHyperprior.gains`).

    What encoder and decoder must both compute (the hyper-synthesis that gives the entropy
    parameters, and the synthesis whose output is the reconstruction) runs *canonically*: on CPU,
    one tile at a time, single-threaded, tiles side by side in :mod:`numcodec_plugin.tile_pool`.
    So the streams and the decoded array do not depend on batch size, core count or the device
    that encoded. Only what is encoder-only (the analysis transform and the optional latent
    refinement, :mod:`numcodec_plugin.models.latent_refinement`) runs batched on the model's device,
    and an integer hyper-synthesis, which gives the same bits anywhere (:meth:`batched_latent_parameters`).
    The encoder's own copy of the reconstruction, which the engine measures a lossy chunk's
    corrections on, may come from the device too (:meth:`device_synthesis`): close is enough there.
    Entropy coding goes through :mod:`numcodec_plugin.models.entropy_coding`.

    Both copies run channels-last (:meth:`GainHyperprior.to_channels_last`).
    """

    tile_size = 256
    size_multiple = GainHyperprior.size_multiple
    temporal = False
    latent_scale_table = True
    lowpass_correction = True

    def __init__(self, network: GainHyperprior, identity: ModelIdentity, lambdas: tuple[float, ...], *,
                 portable: bool = False) -> None:
        if len(lambdas) != network.levels:
            raise ValueError(f"{len(lambdas)} lambdas for a network with {network.levels} quality levels")
        self.network = network
        self.identity = identity
        self.lambdas = lambdas
        self.z_tables = CategoricalTables.from_entropy_bottleneck(network.entropy_bottleneck)
        qualities = [float(q) for q in network.config.get("table_qualities", ())]
        #: per table quality: (hyper-latent tables, float32 factors on the latent's scales)
        self._tables_by_quality = {
            q: (self.z_tables.with_packed(probabilities.double().numpy()), factors.float().cpu().clone())
            for q, probabilities, factors in zip(qualities, getattr(network, "hyper_latent_probabilities", ()),
                                                 getattr(network, "latent_scale_factors", ()))
        }
        self._medians = network.entropy_bottleneck._get_medians().detach().cpu()
        network.to_channels_last()
        if isinstance(network.h_s, IntegerHyperSynthesis):
            network.h_s.check_exact()
            network.h_s.freeze()
        self._canonical = copy.deepcopy(network).cpu()  # stays on CPU when ``network`` moves to a GPU
        #: what computes the entropy parameters and the reconstruction: the CPU copy of the network, or
        #: with ``portable`` the same weights evaluated to be reproducible on any CPU
        self._decoder = PortableDecoder(network) if portable else self._canonical

    def streams(self, quality: float) -> int:
        """Streams per tile: the latent and the hyper-latent."""
        return 2

    def _table_quality(self, quality: float) -> float | None:
        """The table quality nearest ``quality`` (the lower of two equally near); None if the model has none."""
        if not self._tables_by_quality:
            return None
        return min(self._tables_by_quality, key=lambda q: (abs(q - quality), q))

    def hyper_latent_tables(self, quality: float) -> CategoricalTables:
        """The hyper-latent's tables at ``quality``: the nearest table quality's, or the entropy bottleneck's
        if the model has none. Fitted tables follow the hyper-latent's distribution, which narrows as
        the gains fall; their symbol ranges, and so the clipping, are the bottleneck's."""
        table_quality = self._table_quality(quality)
        return self.z_tables if table_quality is None else self._tables_by_quality[table_quality][0]

    def rate_lambda(self, quality: float) -> float:
        """The training lambda of ``quality`` (:func:`lambda_at`)."""
        return lambda_at(self.lambdas, quality)

    def _gains(self, batch: int, quality: float, network: GainHyperprior | PortableDecoder,
               device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        return network.gains(torch.full((batch,), quality - 1.0, device=device))

    def _entropy_parameters(self, z_symbols: np.ndarray, quality: float, network: GainHyperprior | PortableDecoder,
                            device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, M, h, w) scales and means of a batch of latents from their (B, N, h', w') hyper-latent
        symbols, computed by ``network`` on ``device``."""
        z_hat = torch.from_numpy(z_symbols).float().to(device) + self._medians.to(device)
        scales, means = network.hyper_parameters(z_hat, torch.full((len(z_symbols),), quality - 1.0, device=device))
        table_quality = self._table_quality(quality)
        if table_quality is not None:  # one float32 product per element: the same bits on every device
            scales = scales * self._tables_by_quality[table_quality][1].to(device)[None, :, None, None]
        return scales, means

    def _latent_parameters(self, z_symbols: np.ndarray, quality: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Scales and means of one tile's (M, h, w) latent from its hyper-latent symbols (canonical path)."""
        scales, means = self._entropy_parameters(z_symbols[None], quality, self._decoder, torch.device("cpu"))
        return scales[0], means[0]

    def batched_latent_parameters(self, z_symbols: np.ndarray, quality: float,
                                  device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        """Scales and means (CPU) of a batch's latents from its (B, N, h, w) hyper-latent symbols, all
        tiles at once on ``device``, if that gives the canonical path's bits: with an integer
        hyper-synthesis, exact on any device and batch. A GPU encoder so takes the hyper-synthesis off
        its CPUs. None when the tiles must compute them one by one on the CPU (:meth:`_latent_parameters`):
        a float hyper-synthesis or the portable decoder."""
        if self._decoder is not self._canonical or not isinstance(self.network.h_s, IntegerHyperSynthesis):
            return None
        with torch.inference_mode():
            scales, means = self._entropy_parameters(z_symbols, quality, self.network, device)
        return list(zip(scales.cpu(), means.cpu()))

    def _hyper_latent_shape(self, tile_shape: tuple[int, int]) -> tuple[int, int, int]:
        return (self._canonical.entropy_bottleneck.channels, tile_shape[0] // 32, tile_shape[1] // 32)

    def _analyse_tiles(self, x: torch.Tensor, quality: float, refinement_steps: int) -> tuple[torch.Tensor, np.ndarray]:
        """Latents (CPU) and clipped hyper-latent symbols of a (B, C, H, W) batch, refined by
        ``refinement_steps`` steps of :func:`~numcodec_plugin.models.latent_refinement.refine_latents`."""
        if x.device.type == "cpu":
            latents = map_tiles(lambda tile: self._analyse(tile[None], quality, refinement_steps), list(x))
            y = torch.cat([a for a, _ in latents]).cpu()
            z = torch.cat([b for _, b in latents]).cpu()
        else:
            y, z = self._analyse(x, quality, refinement_steps)
            y, z = y.float().cpu(), z.float().cpu()
        return y, self.z_tables.clip((z - self._medians).numpy())

    def _analyse(self, x: torch.Tensor, quality: float, refinement_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        gain, inverse_gain = self._gains(x.shape[0], quality, self.network, x.device)
        y = self.network.analysis(x, gain).contiguous()  # back from channels-last: h_a keeps its layout
        z = self.network.h_a(y)
        if refinement_steps:
            std = torch.tensor(self.identity.std, dtype=torch.float32)
            y, z = refine_latents(self.network, x, y, z, quality - 1.0, gain, inverse_gain, self._medians, std,
                                  self.rate_lambda(quality), refinement_steps)
        return y, z

    def _code_tile(self, y: torch.Tensor, z_symbols: np.ndarray, quality: float,
                   parameters: tuple[torch.Tensor, torch.Tensor] | None) -> tuple[CodedTile, torch.Tensor]:
        """One tile's streams and its decoded latent ``y_hat``; the latent's ``parameters`` unless computed here."""
        scales, means = parameters or self._latent_parameters(z_symbols, quality)
        y_symbols = clip_symbols((y - means).numpy())
        tile = CodedTile((encode_latent(y_symbols, scales.numpy()), self.hyper_latent_tables(quality).encode(z_symbols)),
                         symbol_checksum(y_symbols, z_symbols))
        return tile, torch.from_numpy(y_symbols).float() + means

    def _decode_tile(self, streams: tuple[bytes, ...], tile_shape: tuple[int, int], quality: float,
                     scale_table: bool) -> tuple[torch.Tensor, int]:
        """One tile's reconstruction and symbol checksum."""
        z_symbols = self.hyper_latent_tables(quality).decode(streams[1], self._hyper_latent_shape(tile_shape))
        scales, means = self._latent_parameters(z_symbols, quality)
        y_symbols = decode_latent(streams[0], scales.numpy(), scale_table)
        return self._synthesise(torch.from_numpy(y_symbols).float() + means, quality), symbol_checksum(y_symbols, z_symbols)

    def _synthesise(self, y_hat: torch.Tensor, quality: float) -> torch.Tensor:
        """The decoder's reconstruction of one tile (canonical path), from its decoded latent."""
        _, inverse_gain = self._gains(1, quality, self._decoder, torch.device("cpu"))
        return self._decoder.synthesis(y_hat[None], inverse_gain)

    def device_synthesis(self, y_hat: torch.Tensor, quality: float, device: torch.device) -> torch.Tensor:
        """The reconstruction (CPU, float32) of a (B, M, h, w) batch of decoded latents, all tiles at once
        on ``device``: the decoder's within float32 rounding (another device and batch sum in another
        order), not bit for bit."""
        _, inverse_gain = self._gains(len(y_hat), quality, self.network, device)
        return self.network.synthesis(y_hat.to(device), inverse_gain).float().cpu()

    def compress(self, x: torch.Tensor, quality: float, refinement_steps: int = 0,
                 exact_reconstruction: bool = True) -> tuple[list[CodedTile], torch.Tensor]:
        y, z_symbols = self._analyse_tiles(x, quality, refinement_steps)
        on_device = x.device.type != "cpu"
        # on a GPU an integer hyper-synthesis runs there, batched; on CPU the tile pool runs it tile by tile
        batched = self.batched_latent_parameters(z_symbols, quality, x.device) if on_device else None
        parameters = batched or [None] * x.shape[0]
        coded = map_tiles(lambda i: self._code_tile(y[i], z_symbols[i], quality, parameters[i]), range(x.shape[0]))
        tiles, y_hat = [tile for tile, _ in coded], [latent for _, latent in coded]
        if on_device and not exact_reconstruction:  # enough to measure the corrections on: the GPU's
            return tiles, self.device_synthesis(torch.stack(y_hat), quality, x.device)
        return tiles, torch.cat(map_tiles(lambda latent: self._synthesise(latent, quality), y_hat))

    def decompress(self, streams: list[tuple[bytes, ...]], tile_shape: tuple[int, int], quality: float,
                   scale_table: bool = True) -> tuple[torch.Tensor, list[int]]:
        decoded = map_tiles(lambda tile: self._decode_tile(tile, tile_shape, quality, scale_table), streams)
        return torch.cat([x for x, _ in decoded]), [c for _, c in decoded]
