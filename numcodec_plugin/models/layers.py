"""Layers of the bundled architecture that differ from CompressAI's only in how they compute."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from numcodec_plugin._torchvision_shim import ensure_compressai_importable

ensure_compressai_importable()

from compressai.layers import GDN  # noqa: E402


class InferenceGDN(GDN):
    """CompressAI's :class:`~compressai.layers.GDN` (same parameters, same state dict) that, outside
    autograd, squares, takes the root and multiplies in place.

    On a 64 x 128 x 128 activation the layer is memory-bound: each out-of-place element-wise step
    allocates and writes another 4 MB tensor, while in place the normalisation reuses the
    convolution's output. Every step is one IEEE operation per element either way, so the output is
    bit for bit CompressAI's (``tests/test_layers.py``), and chunks decode exactly as before
    (``tests/test_release_chunks.py``).
    Training (grad enabled) runs CompressAI's forward, whose intermediates autograd keeps.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            return super().forward(x)
        channels = x.shape[1]
        beta = self.beta_reparam(self.beta)
        gamma = self.gamma_reparam(self.gamma).reshape(channels, channels, 1, 1)
        norm = F.conv2d(x * x, gamma, beta)
        norm = norm.sqrt_() if self.inverse else norm.rsqrt_()
        return norm.mul_(x)
