"""Encoder-side latent refinement: fewer bits for the same decoder.

The analysis transform is an amortised guess at the latents that minimise ``lambda * D + R``
for the decoder. An encoder may do better per tile by searching for them directly: gradient
steps on ``lambda * D + R`` with respect to the latent ``y`` and hyper-latent ``z`` of each tile,
the decoder's transforms held fixed (Campos et al., "Content adaptive optimization for neural
image compression", CVPRW 2019; Yang et al., "Improving inference for neural image compression",
NeurIPS 2020). Only the encoder changes: the chunk format, the decoder and every chunk already
written stay as they are, and the refined latents are coded exactly like the analysed ones.

Rounding has no useful gradient. The distortion sees the rounded latents (the symbols the coder
will write, around the same means and medians) through the straight-through estimator; the rate
of ``y`` is that of ``y`` plus uniform noise, the usual differentiable stand-in (the "mixed"
quantisation of Minnen and Singh 2020). Every step also scores the iterate as the coder will code it
(exact discrete likelihoods), and each tile keeps its best one, so refinement never leaves a tile
costlier than the analysis transform's latents by this measure. The measure leaves out what the
engine corrects after the network almost for free, each band's mean error per tile (its DC
offsets); the low-pass layer, which costs bits, is not modelled here. Refined latents can therefore
lose to the analysed ones once that layer is added, so the engine codes each tile both ways and keeps
the cheaper after all corrections (``numcodec_plugin.engine``: one more coding pass, without
refinement; the refined chunk then never costs more than the unrefined one). The rates are the
network's own entropy models; a model with fitted entropy tables (``tec-s2-gain-v3``) codes with
those, which the same choice by coded size accounts for. The latent is optimised in units
of the un-gained analysis output (``y / gain``), so one learning rate serves every quality.
``benchmarks/rd_benchmark.py --refinement-steps`` measures what it buys and what it costs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from numcodec_plugin.models.distortion import reflectance_mse

if TYPE_CHECKING:
    from numcodec_plugin.models.gain_hyperprior import GainHyperprior

#: Adam's step sizes for the un-gained latent and for the hyper-latent, cosine-annealed to 0 over the
#: steps. Chosen at 50 steps on four of the benchmark's validation tiles at qualities 2, 5 and 8, from
#: a grid of 0.005-0.04 and 0.003-1, and checked on training images with
#: ``benchmarks/refinement_search.py`` (docs/benchmarks/refinement_search.md): the hyper-latent wants
#: large steps, enough to move its symbols across whole integers.
LATENT_LEARNING_RATE = 0.02
HYPER_LATENT_LEARNING_RATE = 0.3


def _rounded(values: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """``values`` rounded to integers around ``centres`` in the forward pass, unchanged in the backward."""
    rounded = torch.round(values - centres) + centres
    return values + (rounded - values).detach()


def _bits(likelihood: torch.Tensor) -> torch.Tensor:
    """Per-tile information content of (B, ...) likelihoods."""
    return -torch.log2(likelihood).flatten(1).sum(1)


def rate_distortion_costs(network: GainHyperprior, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor,
                          level: torch.Tensor, inverse_gain: torch.Tensor, medians: torch.Tensor, std: torch.Tensor,
                          rate_lambda: float, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per tile ``lambda * D + R`` of coding latents ``y`` and ``z`` (D the reflectance MSE of the
    synthesis against ``x``, R bits per pixel per band): as the coder will code them (rounded, exact
    discrete likelihoods; no gradient through R) and the differentiable surrogate (the same D, R of
    ``y + noise``: uniform noise stands in for rounding, which has no useful gradient)."""
    bottleneck, conditional = network.entropy_bottleneck, network.gaussian_conditional
    z_hat = _rounded(z, medians)
    # the bottleneck's likelihood takes (channels, 1, values), one row per channel
    z_likelihood = bottleneck._likelihood(z_hat.transpose(0, 1).reshape(z.shape[1], 1, -1))[0]
    z_bits = _bits(bottleneck.likelihood_lower_bound(z_likelihood).reshape(z.shape[1], z.shape[0], -1).transpose(0, 1))
    scales, means = network.hyper_parameters(z_hat, level)
    y_hat = _rounded(y, means)

    def y_bits(values: torch.Tensor) -> torch.Tensor:
        return _bits(conditional.likelihood_lower_bound(conditional._likelihood(values, scales, means)))

    pixels = x.shape[1] * x.shape[2] * x.shape[3]
    x_hat = network.synthesis(y_hat, inverse_gain)
    # the engine removes each band's mean error per tile (DC offsets) at almost no cost: leave it to them
    x_hat = x_hat - (x_hat - x).mean((2, 3), keepdim=True)
    distortion = rate_lambda * reflectance_mse(x_hat, x, std)
    coded = distortion + (y_bits(y_hat) + z_bits).detach() / pixels
    return coded.detach(), distortion + (y_bits(y + noise) + z_bits) / pixels


def refine_latents(network: GainHyperprior, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor, level: float,
                   gain: torch.Tensor, inverse_gain: torch.Tensor, medians: torch.Tensor, std: torch.Tensor,
                   rate_lambda: float, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Latents ``(y, z)`` of the standardised (B, C, H, W) tiles ``x`` at quality level ``level`` (0-based,
    as :meth:`~numcodec_plugin.models.gain_hyperprior.GainHyperprior.gains` takes it) after ``steps`` Adam steps on the
    surrogate of :func:`rate_distortion_costs`, starting from the analysed ``y`` and ``z``; per tile,
    the iterate (the analysed latents included) whose coded cost is lowest. Tiles do not interact:
    a batch gives each tile what it would get alone (up to floating-point order), and the noise is
    drawn from a fixed seed, so the result does not depend on the process's random state."""
    generator = torch.Generator(device=x.device).manual_seed(0)
    with torch.inference_mode(False), torch.enable_grad():
        x, gain, inverse_gain = x.clone(), gain.detach().clone(), inverse_gain.detach().clone()
        medians, std = medians.clone().to(x.device), std.clone().to(x.device)
        levels = torch.full((x.shape[0],), float(level), device=x.device)
        latent = (y.detach().clone() / gain).requires_grad_(True)
        hyper_latent = z.detach().clone().requires_grad_(True)
        optimiser = torch.optim.Adam([{"params": [latent], "lr": LATENT_LEARNING_RATE},
                                      {"params": [hyper_latent], "lr": HYPER_LATENT_LEARNING_RATE}])
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps)
        best_cost = torch.full((x.shape[0],), float("inf"), device=x.device)
        best_y, best_z = torch.empty_like(y), torch.empty_like(z)  # every tile takes step 0's, the analysed latents
        for step in range(steps + 1):
            noise = torch.rand(y.shape[1:], generator=generator, device=x.device) - 0.5  # alike for every tile
            coded, surrogate = rate_distortion_costs(network, x, latent * gain, hyper_latent, levels, inverse_gain,
                                                     medians, std, rate_lambda, noise)
            better = coded < best_cost
            best_cost = torch.where(better, coded, best_cost)
            best_y[better], best_z[better] = (latent * gain).detach()[better], hyper_latent.detach()[better]
            if step == steps:
                break
            latent.grad, hyper_latent.grad = torch.autograd.grad(surrogate.sum(), [latent, hyper_latent])
            optimiser.step()
            schedule.step()
        return best_y, best_z
