"""The distortion the bundled models trade against rate, in training and in latent refinement."""

from __future__ import annotations

import torch


def reflectance_mse(x_hat: torch.Tensor, x: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Per-sample mean squared error, in reflectance units, of band-standardised (B, C, H, W) tensors
    (``std``: the bands' DN standard deviations, by which they were divided)."""
    error = (x_hat - x) * (std / 10000.0)[None, :, None, None]
    return error.pow(2).flatten(1).mean(1)
