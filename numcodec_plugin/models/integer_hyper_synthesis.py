"""An integer hyper-synthesis: entropy parameters that every CPU computes to the same bits.

The decoder must derive exactly the encoder's probability tables from the hyper-latent, or it
decodes garbage (the chunk's symbol checksum then refuses it). A float network does not give that
across machines: another instruction set sums its convolutions in another order, and a scale that
lands near a step of the scale table falls on the other side (``docs/benchmarks/portability.md``).
Following Ballé, Johnston and Minnen ("Integer networks for data compression with latent-variable
models", ICLR 2019), this hyper-synthesis computes with integers wherever order could matter:

* its input is the decoded hyper-latent in integer steps, clamped to ``+-INPUT_MAX``: a step per
  quality level, at least ``INPUT_STEP`` (the hyper-latents of high qualities span +-300 and more,
  which steps of ``INPUT_STEP`` would clip);
* every weight is an integer in ``+-WEIGHT_MAX`` times a per-output-channel step;
* every hidden activation is an integer in ``+-ACTIVATION_MAX``: the float network's LeakyReLU of
  the layer's output, divided by a step per layer and quality level (interpolated linearly between
  levels, as quality is continuous) and rounded;
* each convolution therefore sums integers, and :meth:`IntegerHyperSynthesis.check_exact` proves
  from the weights that no partial sum reaches ``2**24``, below which float32 holds every integer
  exactly: the sums are exact in any order, with any thread count, batch or instruction set;
* what is not such a sum (a sum times its step, plus the bias, over the next step, rounded; the
  linear interpolation of steps) is one IEEE operation per element, which every conforming machine
  rounds alike. No ``exp`` or other library function is involved.

Training runs the same arithmetic with straight-through rounding (the step sizes then get the
gradient of learned step-size quantisation, Esser et al. 2020), so what was trained is exactly what
decodes. ``terracodec-train integer-hyper-synthesis`` starts it from a float hyper-synthesis and
fine-tunes it with the rest of the model frozen.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from numcodec_plugin.errors import ConfigurationError

#: the input, the decoded hyper-latent (integer symbols plus the bottleneck's float medians), in steps
#: of at least 1/8 (the step of low qualities), clamped to +-INPUT_MAX steps
INPUT_STEP = 0.125
INPUT_MAX = 504
ACTIVATION_MAX = 255
WEIGHT_MAX = 127
#: the float hyper-synthesis's LeakyReLU slope, kept: the trained network relies on its negative side
NEGATIVE_SLOPE = 0.01
#: float32 represents every integer of magnitude up to 2**24 exactly
EXACT_LIMIT = 2 ** 24


def _round(values: torch.Tensor) -> torch.Tensor:
    """``values`` rounded to integers, unchanged in the backward pass (straight-through)."""
    return values + (torch.round(values) - values).detach()


def _per_level(table: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """(B,) values of a (levels,) ``table`` at per-sample qualities, interpolated linearly between levels;
    outside [0, levels-1] the nearest level's (extrapolated qualities below level 0 use level 0's steps)."""
    quality = quality.to(table).clamp(0, len(table) - 1)
    low = quality.floor().long().clamp(max=len(table) - 2)
    frac = quality - low
    return table[low] * (1 - frac) + table[low + 1] * frac


def _convolutions(h_s: nn.Sequential) -> list[nn.Conv2d | nn.ConvTranspose2d]:
    """The (transposed) convolutions of a float hyper-synthesis, in order (its activations left out)."""
    return [m for m in h_s if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]


class IntegerConvolution(nn.Module):
    """One layer: a (transposed) convolution of integer inputs by integer weights, then ``sums x
    (input step x weight step) + bias``; hidden layers requantise that to integer activations."""

    def __init__(self, layer: nn.Conv2d | nn.ConvTranspose2d, levels: int, hidden: bool) -> None:
        super().__init__()
        self.transposed = isinstance(layer, nn.ConvTranspose2d)
        self.stride, self.padding, self.kernel_size = layer.stride, layer.padding, layer.kernel_size
        self.output_padding = layer.output_padding if self.transposed else (0, 0)
        self.weight = nn.Parameter(layer.weight.detach().clone())
        self.bias = nn.Parameter(layer.bias.detach().clone())
        #: step of the output activations per quality level (hidden layers only)
        self.output_steps = nn.Parameter(torch.ones(levels)) if hidden else None
        # :meth:`freeze`'s integer weights and steps: buffers, so they move with the module, not saved
        self.register_buffer("frozen_weight", None, persistent=False)
        self.register_buffer("frozen_step", None, persistent=False)

    @property
    def _channel_axis(self) -> int:
        return 1 if self.transposed else 0

    def _weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(integer weights as floats, straight-through; per-output-channel step): the largest weight of
        each channel maps to ``WEIGHT_MAX``. Outside autograd, computed once (:meth:`freeze`)."""
        if self.frozen_weight is not None and not torch.is_grad_enabled():
            return self.frozen_weight, self.frozen_step
        others = tuple(d for d in range(4) if d != self._channel_axis)
        step = (self.weight.detach().abs().amax(dim=others) / WEIGHT_MAX).clamp_min(1e-12)
        shape = [1, 1, 1, 1]
        shape[self._channel_axis] = -1
        return _round(self.weight / step.reshape(shape)).clamp(-WEIGHT_MAX, WEIGHT_MAX), step

    def freeze(self) -> None:
        """Compute the integer weights once, for inference (call again after changing the weights)."""
        with torch.no_grad():
            self.frozen_weight = self.frozen_step = None
            weight, step = self._weights()
            self.frozen_weight, self.frozen_step = weight.detach().clone(), step.detach().clone()

    def convolve(self, activations: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """The layer's (transposed) convolution, in the inputs' dtype."""
        if self.transposed:
            return F.conv_transpose2d(activations, weight, None, self.stride, self.padding, self.output_padding)
        return F.conv2d(activations, weight, None, self.stride, self.padding)

    def sums(self, activations: torch.Tensor, weight: torch.Tensor, in_float64: bool | None = None) -> torch.Tensor:
        """The convolution's integer sums, exact on any device. On CPU (``in_float64`` None: any other
        device) in float32, whose direct convolution :meth:`IntegerHyperSynthesis.check_exact` has
        checked. Elsewhere a library may pick an algorithm that transforms its inputs (Winograd's, an
        FFT), inexact in float32; in float64 its error on these sums (below 2**24) is far below 0.5, so
        rounding gives the exact integers."""
        if in_float64 is None:
            in_float64 = activations.device.type != "cpu"
        if not in_float64:
            return self.convolve(activations, weight)
        return _round(self.convolve(activations.double(), weight.double())).float()

    def output_step(self, quality: torch.Tensor) -> torch.Tensor:
        return _per_level(self.output_steps, quality)

    def forward(self, activations: torch.Tensor, input_step: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
        """Integer ``activations`` of (B,) steps ``input_step`` -> this layer's integer activations
        (hidden layer) or real outputs (output layer), float32."""
        weight, weight_step = self._weights()
        values = self.sums(activations, weight) * (input_step[:, None] * weight_step[None, :])[:, :, None, None] + self.bias[None, :, None, None]
        if self.output_steps is None:
            return values
        step = self.output_step(quality)[:, None, None, None]
        return _round(F.leaky_relu(values, NEGATIVE_SLOPE) / step).clamp(-ACTIVATION_MAX, ACTIVATION_MAX)

    def accumulator_bound(self, input_max: int) -> int:
        """The largest magnitude a partial sum of this layer can reach with inputs within ``+-input_max``:
        per output channel, the absolute integer weights of the taps that reach one output pixel (all
        taps of a convolution; one stride phase of a transposed convolution), summed."""
        weight = self._weights()[0].detach().abs().transpose(0, self._channel_axis)  # (out, in, kh, kw)
        sh, sw = self.stride if self.transposed else (1, 1)
        worst = max(weight[:, :, py::sh, px::sw].sum(dim=(1, 2, 3)).max().item() for py in range(sh) for px in range(sw))
        return int(worst) * input_max


class IntegerHyperSynthesis(nn.Module):
    """Drop-in for the bundled hyper-synthesis ``h_s``: decoded hyper-latents ``z_hat`` (symbols plus the
    bottleneck's medians) at per-sample qualities -> the latent's scales and means, concatenated."""

    def __init__(self, h_s: nn.Sequential, levels: int) -> None:
        """The structure and starting weights of the float ``h_s`` (convolutions with LeakyReLUs
        between them); activation steps 1 until :meth:`calibrate`."""
        super().__init__()
        convolutions = _convolutions(h_s)
        #: step of the input (the decoded hyper-latent) per quality level
        self.input_steps = nn.Parameter(torch.full((levels,), INPUT_STEP))
        self.layers = nn.ModuleList(IntegerConvolution(conv, levels, hidden=i < len(convolutions) - 1)
                                    for i, conv in enumerate(convolutions))

    def calibrate(self, h_s: nn.Sequential, z_hat_by_level: list[torch.Tensor]) -> None:
        """Set the steps per quality level so that the 99.99th percentile of the magnitudes on that level's
        hyper-latents maps to ``INPUT_MAX`` (input; the step is at least ``INPUT_STEP``) and those of the
        float ``h_s``'s activations to ``ACTIVATION_MAX`` (hidden layers)."""
        generator = torch.Generator().manual_seed(0)

        def percentile(x: torch.Tensor) -> float:
            sample = x.abs().flatten()[torch.randperm(x.numel(), generator=generator)[:1_000_000]]
            return float(torch.quantile(sample, 0.9999))

        with torch.no_grad():
            for level, x in enumerate(z_hat_by_level):
                self.input_steps[level] = max(percentile(x) / INPUT_MAX, INPUT_STEP)
                for conv, layer in zip(_convolutions(h_s), self.layers):
                    x = conv(x)
                    if layer.output_steps is None:
                        break
                    x = F.leaky_relu(x, NEGATIVE_SLOPE)
                    layer.output_steps[level] = max(percentile(x), 1e-4) / ACTIVATION_MAX

    def freeze(self) -> "IntegerHyperSynthesis":
        for layer in self.layers:
            layer.freeze()
        return self

    def forward(self, z_hat: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
        step = _per_level(self.input_steps, quality)
        activations = _round(z_hat.float() / step[:, None, None, None]).clamp(-INPUT_MAX, INPUT_MAX)
        for layer in self.layers:
            activations = layer(activations, step, quality)
            if layer.output_steps is not None:
                step = layer.output_step(quality)
        return activations

    def accumulator_bounds(self) -> list[int]:
        """Each layer's largest possible partial sum (:meth:`IntegerConvolution.accumulator_bound`)."""
        return [layer.accumulator_bound(INPUT_MAX if i == 0 else ACTIVATION_MAX) for i, layer in enumerate(self.layers)]

    def check_exact(self, hyper_latent_size: tuple[int, int] = (8, 8)) -> None:
        """Raise :class:`~numcodec_plugin.errors.ConfigurationError` unless every partial sum stays below ``EXACT_LIMIT`` and this machine's
        float32 convolutions sum exactly: each layer on random extreme integers of a tile's shapes
        (default: a 256 x 256 tile's 8 x 8 hyper-latent) against float64, where those sums are exact too
        (a convolution algorithm that transforms its inputs, such as Winograd's, would fail this)."""
        bounds = self.accumulator_bounds()
        if max(bounds) >= EXACT_LIMIT:
            raise ConfigurationError(f"integer hyper-synthesis: partial sums up to {bounds} could reach 2**24, "
                             "where float32 rounds")
        generator = torch.Generator().manual_seed(0)
        first = self.layers[0]
        channels = first.weight.shape[0 if first.transposed else 1]
        probe = torch.randint(-INPUT_MAX, INPUT_MAX + 1, (1, channels, *hyper_latent_size), generator=generator).float()
        for i, layer in enumerate(self.layers):
            weight = layer._weights()[0].detach()
            with torch.no_grad():
                single = layer.convolve(probe, weight)
                double = layer.convolve(probe.double(), weight.double())
            if not torch.equal(single.double(), double):
                raise ConfigurationError(f"integer hyper-synthesis: this machine's float32 convolution of layer {i} is not exact")
            probe = torch.randint(-ACTIVATION_MAX, ACTIVATION_MAX + 1, single.shape, generator=generator).float()
