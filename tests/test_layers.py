"""The bundled architecture's layers compute what CompressAI's do, bit for bit."""

from __future__ import annotations

import pytest
import torch

from numcodec_plugin.models.layers import InferenceGDN

from compressai.layers import GDN  # noqa: E402  (after numcodec_plugin: its shim makes compressai importable)


@pytest.mark.parametrize("inverse", [False, True])
def test_inference_gdn_is_compressai_gdn_bit_for_bit(inverse: bool) -> None:
    torch.manual_seed(0)
    layer = InferenceGDN(64, inverse=inverse)
    with torch.no_grad():  # trained-looking parameters, not the identity-like initialisation
        layer.beta.uniform_(0.5, 2.0)
        layer.gamma.uniform_(0.0, 0.3)
    reference = GDN(64, inverse=inverse)
    reference.load_state_dict(layer.state_dict())
    x = torch.randn(2, 64, 48, 40).contiguous(memory_format=torch.channels_last) * 3
    with torch.inference_mode():
        assert torch.equal(layer(x), reference(x))
        assert torch.equal(layer(x.contiguous()), reference(x.contiguous()))
    # Under autograd it is CompressAI's forward, so training gets gradients.
    x.requires_grad_(True)
    layer(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
