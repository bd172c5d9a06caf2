"""The integer hyper-synthesis: exact sums, the same bits whatever the threads or batch, training computes
what decodes, refusal of weights whose sums could round, and the shipped model that uses it."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from numcodec_plugin import ConfigurationError, engine
from numcodec_plugin.models.integer_hyper_synthesis import EXACT_LIMIT, INPUT_MAX, INPUT_STEP, IntegerHyperSynthesis
from numcodec_plugin.models.registry import hybrid_members, load_model
from tests.conftest import TEST_MODEL, decode_on_another_instruction_set
from xr_terracodec import metrics

NETWORK = hybrid_members("tec-s2-hybrid-v2")[0]  # the hybrid's learned member, tec-s2-gain-v3


@pytest.fixture(scope="module")
def small() -> tuple[IntegerHyperSynthesis, torch.Tensor, torch.Tensor]:
    """An integer hyper-synthesis started from the test model's, calibrated; hyper-latents; qualities."""
    network = load_model(TEST_MODEL).network
    generator = torch.Generator().manual_seed(0)
    z_hat = torch.randn((6, 16, 8, 8), generator=generator) * 4 + 0.3
    hyper_synthesis = IntegerHyperSynthesis(network.h_s, network.levels)
    hyper_synthesis.calibrate(network.h_s, [z_hat * (1 + level) for level in range(network.levels)])
    return hyper_synthesis, z_hat, torch.tensor([0.0, 0.5, 1.0, 1.7, 2.2, 3.0])


def test_sums_are_integers_below_the_exact_limit(small) -> None:
    hyper_synthesis, _, _ = small
    assert max(hyper_synthesis.accumulator_bounds()) < EXACT_LIMIT
    hyper_synthesis.check_exact()


def test_the_output_does_not_depend_on_threads_or_batch(small) -> None:
    hyper_synthesis, z_hat, quality = small
    threads = torch.get_num_threads()
    outputs = []
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            with torch.no_grad():
                outputs.append(hyper_synthesis(z_hat, quality))
                outputs.append(torch.cat([hyper_synthesis(z_hat[i:i + 1], quality[i:i + 1]) for i in range(len(z_hat))]))
    finally:
        torch.set_num_threads(threads)
    for output in outputs[1:]:
        assert torch.equal(output, outputs[0])
    assert not torch.equal(outputs[0][0], outputs[0][1])  # quality changes the activation steps, so the output


def test_the_float64_sums_of_other_devices_are_the_cpus(small) -> None:
    """What a GPU computes (float64, rounded: exact whatever algorithm its library picks) is, on the same
    integers, bit for bit the CPU's float32 sums."""
    hyper_synthesis, z_hat, quality = small
    activations = torch.round(z_hat / INPUT_STEP).clamp(-INPUT_MAX, INPUT_MAX)
    for layer in hyper_synthesis.layers:
        weight = layer._weights()[0].detach()
        with torch.no_grad():
            cpu = layer.sums(activations, weight)
            assert torch.equal(layer.sums(activations, weight, in_float64=True), cpu)
        activations = torch.randint(-255, 256, cpu.shape, generator=torch.Generator().manual_seed(1)).float()


def test_training_computes_exactly_what_decodes(small) -> None:
    hyper_synthesis, z_hat, quality = small
    training = copy.deepcopy(hyper_synthesis)
    with torch.enable_grad():
        trained = training(z_hat, quality)  # straight-through rounding, gradients for every parameter
        trained.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in training.parameters())
    with torch.no_grad():
        assert torch.equal(copy.deepcopy(hyper_synthesis).freeze()(z_hat, quality), trained.detach())


def test_the_input_step_grows_with_the_hyper_latents_range(small) -> None:
    """High qualities' hyper-latents span far more than INPUT_MAX steps of INPUT_STEP: calibration widens
    that level's input step, so they are not clipped and the output follows the float network's."""
    hyper_synthesis, z_hat, _ = small
    network = load_model(TEST_MODEL).network
    wide = z_hat * 40  # up to about +-600, beyond INPUT_MAX * INPUT_STEP = 63
    calibrated = copy.deepcopy(hyper_synthesis)
    calibrated.calibrate(network.h_s, [z_hat] * (network.levels - 1) + [wide])
    assert calibrated.input_steps[0] == INPUT_STEP and calibrated.input_steps[-1] > 8 * INPUT_STEP
    top = torch.full((len(z_hat),), float(network.levels - 1))
    clipped = copy.deepcopy(calibrated)
    with torch.no_grad():
        clipped.input_steps.fill_(INPUT_STEP)
        reference = network.h_s(wide)
        errors = [(h(wide, top) - reference).abs().mean() / reference.abs().mean() for h in (calibrated, clipped)]
    assert errors[0] < 0.1 < errors[1]


def test_weights_whose_sums_could_round_are_refused() -> None:
    wide = nn.Conv2d(1024, 2, 5, padding=2)
    with torch.no_grad():
        wide.weight.fill_(0.01)
    hyper_synthesis = IntegerHyperSynthesis(nn.Sequential(wide), 2)
    assert hyper_synthesis.accumulator_bounds()[0] == 127 * 1024 * 25 * INPUT_MAX
    with pytest.raises(ConfigurationError, match=r"2\*\*24"):
        hyper_synthesis.check_exact()


def test_a_batch_on_the_models_device_gets_each_tiles_canonical_parameters() -> None:
    """A GPU encoder computes the integer model's entropy parameters batched on its device; on the same
    symbols they are bit for bit what each tile's decoder computes alone on the CPU. The float model
    and its portable form keep them on the CPU (None)."""
    coder = load_model(NETWORK)
    z_symbols = np.random.default_rng(0).integers(-6, 7, (3, 64, 8, 8)).astype(np.int32)
    for quality in (1.0, 4.5, 8.0):
        batched = coder.batched_latent_parameters(z_symbols, quality, torch.device("cpu"))
        for (scales, means), z in zip(batched, z_symbols):
            alone = coder._latent_parameters(z, quality)
            assert torch.equal(scales, alone[0]) and torch.equal(means, alone[1])
    for model in ("tec-s2-gain-v1", "tec-s2-gain-v1-portable"):
        assert load_model(model).batched_latent_parameters(z_symbols, 5.0, torch.device("cpu")) is None


def _tiles(s2_scene: np.ndarray) -> np.ndarray:
    return np.stack([np.ascontiguousarray(s2_scene[:, y:y + 256, x:x + 256]) for y in (0, 256) for x in (0, 256, 512)])


def test_a_batched_device_synthesis_is_the_decoders_within_float_rounding(s2_scene: np.ndarray) -> None:
    """What a GPU encoder measures a lossy chunk's corrections on: the whole batch's reconstruction on
    its device, close to (not bit for bit) each tile's canonical CPU synthesis. Error-bounded chunks
    never take it (``exact_reconstruction``)."""
    coder = load_model(NETWORK)
    x = torch.from_numpy(_tiles(s2_scene)[:3].astype(np.float32))
    x = (x - torch.tensor(coder.identity.mean)[:, None, None]) / torch.tensor(coder.identity.std)[:, None, None]
    with torch.inference_mode():
        _, canonical = coder.compress(x, 5.0)
        y, z_symbols = coder._analyse_tiles(x, 5.0, 0)
        y_hat = torch.stack([coder._code_tile(y[i], z_symbols[i], 5.0, None)[1] for i in range(3)])
        batched = coder.device_synthesis(y_hat, 5.0, torch.device("cpu"))
    assert batched.shape == canonical.shape == x.shape
    torch.testing.assert_close(batched, canonical, rtol=0, atol=1e-4)  # standardised units: ~0.01 DN and less


def test_the_integer_model_codes_real_pixels_at_the_float_models_rate(s2_scene: np.ndarray) -> None:
    tiles = _tiles(s2_scene)
    results = []
    for quality in (2.0, 5.0, 8.0):
        row = []
        for model in ("tec-s2-gain-v1", NETWORK):
            data = engine.encode(tiles, engine.EncodeSettings(model=model, quality=quality))
            decoded = engine.decode(data)
            row.append((len(data), metrics.psnr(metrics.mse(tiles.astype(np.float64), decoded.astype(np.float64)))))
        results.append(row)
    for (float_bytes, float_psnr), (integer_bytes, integer_psnr) in results:
        assert integer_bytes < 1.12 * float_bytes  # the integer entropy model costs a few % more bits ...
        assert abs(integer_psnr - float_psnr) < 0.05  # ... and the transforms are the float model's
    assert [r[1][0] for r in results] == sorted(r[1][0] for r in results)  # rate and quality rise with quality
    assert [r[1][1] for r in results] == sorted(r[1][1] for r in results)


def test_integer_model_chunks_decode_on_another_instruction_set(s2_scene: np.ndarray) -> None:
    """Under SSE4.1 (another CPU, as far as the network's bits go) the float model refuses some lossy
    chunks (a scale crossed a table step, benchmarks/portability.py); the integer model's entropy
    parameters are exact, so every chunk decodes, within float rounding of the reconstruction (up to
    2 DN: the spectral map starts from the synthesis rounded to whole DN, docs/guarantees.md)."""
    tiles = _tiles(s2_scene)
    chunks = [engine.encode(tiles[i:i + 1], engine.EncodeSettings(model=NETWORK, quality=q))
              for i in range(len(tiles)) for q in (1.0, 5.0)]
    for there, data in zip(decode_on_another_instruction_set(chunks), chunks):
        assert np.abs(there.astype(np.int64) - engine.decode(data).astype(np.int64)).max() <= 2
