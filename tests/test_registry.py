"""Model registry: official TerraCodec checkpoints from a local directory, errors, shim, identity."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from numcodec_plugin import ConfigurationError, ModelNotFoundError, bitstream, engine, load_model, quality_range
from numcodec_plugin.models import registry
from numcodec_plugin.models.official import OFFICIAL_MODELS


def write_official_checkpoint(home: Path, name: str, key: str, architecture: str, N: int, M: int) -> Path:
    """A randomly initialised checkpoint laid out as on the hub, as a user would copy it offline."""
    from numcodec_plugin._torchvision_shim import ensure_compressai_importable

    ensure_compressai_importable()
    from terracodec.imagecodecs import ELIC, FactorizedPrior

    model = OFFICIAL_MODELS[name]
    folder = home / model.hub_id
    folder.mkdir(parents=True)
    torch.manual_seed(0)
    network = (FactorizedPrior if architecture == "factorizedprior" else ELIC)(in_channels=12, N=N, M=M, image_size=256)
    torch.save({f"model.{k}": v for k, v in network.state_dict().items()}, folder / model.checkpoint_filename(key))
    (folder / f"config_{key}.yaml").write_text(yaml.safe_dump(
        {"architecture": architecture, "modality": "S2L2A", "in_channels": 12, "lmbda": 10.0, "N": N, "M": M}))
    return folder


@pytest.mark.parametrize("name, architecture, N, M", [("tec-fp", "factorizedprior", 16, 32), ("tec-elic", "elic", 16, 320)])
def test_official_model_from_local_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, s2_series: np.ndarray,
                                             name: str, architecture: str, N: int, M: int) -> None:
    write_official_checkpoint(tmp_path, name, "lambda-10", architecture, N, M)
    monkeypatch.setenv("TERRACODEC_HOME", str(tmp_path))
    monkeypatch.setenv("TERRACODEC_OFFLINE", "1")
    monkeypatch.setattr(registry, "_cache", {})
    before = torch.are_deterministic_algorithms_enabled()
    x = s2_series[0, :, :100, :130]
    data = engine.encode(x, engine.EncodeSettings(model=name, quality=3))
    assert torch.are_deterministic_algorithms_enabled() == before, "terracodec's global flags leaked"
    header = bitstream.unpack(data).header
    assert header.model_name == name and header.tile_shape == (128, 192)  # multiples of 64
    y = engine.decode(data)
    assert y.shape == x.shape
    assert load_model(name, 3).identity.name == f"{name}/lambda-10"


def test_missing_official_weights_say_where_they_looked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERRACODEC_HOME", str(tmp_path))
    monkeypatch.setenv("TERRACODEC_OFFLINE", "1")
    monkeypatch.setattr(registry, "_cache", {})
    with pytest.raises(ModelNotFoundError) as info:
        load_model("tec-fp", 5)
    message = str(info.value)
    assert str(tmp_path / "embed2scale/TerraCodec-1.0-FP-S2L2A") in message
    assert "Hugging Face cache" in message and "lambda-200" in message


def test_gain_models_extend_their_quality_range_below_the_trained_levels() -> None:
    """The bundled and test models accept qualities down to EXTRAPOLATED_LEVELS below 1, the transform coder
    to its LOWEST_QUALITY (the default), the hybrid both; the default quality stays the middle of the trained
    range, and published models keep their published qualities."""
    assert registry.trained_quality_range("tec-s2-hybrid-v2") == registry.trained_quality_range("tec-s2-gain-v3") == (1.0, 8.0)
    assert quality_range("tec-s2-gain-v3") == (1.0 - registry.EXTRAPOLATED_LEVELS, 8.0)
    assert quality_range("klt-wavelet-v2") == quality_range() == quality_range("tec-s2-hybrid-v2") == (-3.0, 10.0)
    assert quality_range("test-fixed-seed") == (1.0 - registry.EXTRAPOLATED_LEVELS, 4.0)
    assert registry.default_quality() == 5.0
    assert quality_range("tec-fp") == registry.trained_quality_range("tec-fp") == (1.0, 5.0)
    with pytest.raises(ConfigurationError, match="outside"):
        registry.check_quality("tec-fp", 0.5)


def test_temporal_models_resolve_with_their_qualities() -> None:
    assert quality_range("tec-tt-l2a") == (1.0, 7.0)
    assert quality_range("flextec") == (1.0, 16.0)
    assert OFFICIAL_MODELS["flextec"].temporal and registry.is_temporal("tec-tt-l1c")
    assert OFFICIAL_MODELS["flextec"].lambda_key(9) == "lambda-800"
    with pytest.raises(ConfigurationError, match="integer 1..16"):
        OFFICIAL_MODELS["flextec"].lambda_key(17)


def test_official_quality_must_name_a_checkpoint() -> None:
    with pytest.raises(ConfigurationError, match="integer 1..5"):
        engine.encode(np.zeros((12, 64, 64), np.uint16), engine.EncodeSettings(model="tec-fp", quality=2.5))


def test_unknown_model_lists_the_available_ones() -> None:
    with pytest.raises(ModelNotFoundError, match="tec-s2-gain-v1"):
        load_model("no-such-model")


def test_bundled_model_identity() -> None:
    coder = load_model()
    assert coder.identity.name == registry.DEFAULT_MODEL == "klt-wavelet-v3" and coder.identity.band_set == "S2L2A"
    assert coder.identity.digest != load_model("klt-wavelet-v2").identity.digest  # v2's chunks are not v3's
    network = load_model("tec-s2-hybrid-v2")  # a hybrid loads as its network
    identity = network.identity
    assert identity.name == registry.hybrid_members("tec-s2-hybrid-v2")[0] == "tec-s2-gain-v3" and identity.band_set == "S2L2A"
    assert len(identity.mean) == len(identity.std) == 12 and len(identity.digest) == 8
    assert load_model() is coder and load_model("tec-s2-hybrid-v2") is network  # cached


def test_torchvision_shim_only_when_the_import_fails() -> None:
    script = (
        "import sys\n"
        "try:\n    import torchvision; real = True\nexcept Exception:\n    real = False\n"
        "for m in [m for m in sys.modules if m.startswith('torchvision')]: del sys.modules[m]\n"
        "import numcodec_plugin.models.gain_hyperprior, compressai\n"
        "stub = getattr(sys.modules['torchvision'], '__terracodec_stub__', False)\n"
        "print(real, stub)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.split()
    real, stub = out[-2] == "True", out[-1] == "True"
    assert stub == (not real)


def test_bundled_weights_fit_the_package_budget_and_modes_keep_their_weights() -> None:
    """All shipped weights together stay within 25 MB; the temporal and portable modes stay bound to the
    weights their chunks were written with (not to whatever the default model is)."""
    assert sum(path.stat().st_size for path in registry.WEIGHTS_DIR.glob("*.pt")) <= 25 * 10 ** 6
    assert {"tec-s2-gain-v1", registry.DEFAULT_MODEL} <= set(registry.available_models())
    assert registry.image_counterpart(registry.DEFAULT_TEMPORAL_MODEL) == "tec-s2-gain-v1"
    assert registry.PORTABLE_MODES == {"tec-s2-gain-v1-portable": "tec-s2-gain-v1"}
