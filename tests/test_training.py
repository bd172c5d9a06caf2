"""The training command end to end on a tiny real-pixel folder: train, resume, export, load."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from numcodec_plugin.models.bands import BAND_SETS
from numcodec_plugin.models.gain_hyperprior import GainHyperprior
from numcodec_plugin.models.registry import read_network
from numcodec_plugin.training.train import main


def _data_folder(root: Path, s2_scene: np.ndarray, size: int = 160) -> Path:
    folder = root / "l2a_scenes"
    folder.mkdir(parents=True)
    np.savez(folder / "crop.npz", data=np.ascontiguousarray(s2_scene[:, :size, :size]), bands=np.array(BAND_SETS["S2L2A"]),
             meta=json.dumps({"source": "test"}))
    return root


def _one_step_model(tmp_path: Path, data: str) -> Path:
    """A small model trained for one step on ``data`` and exported as ``base.pt``: a base to fine-tune."""
    main(["run", "--data", data, "--out", str(tmp_path / "run"), "--N", "16", "--M", "32", "--crop", "64",
          "--batch", "2", "--threads", "1", "--steps", "1"])
    main(["export", str(tmp_path / "run" / "checkpoint.pt"), str(tmp_path / "base.pt"), "--name", "small"])
    return tmp_path / "base.pt"


def _network(weights: Path) -> GainHyperprior:
    return read_network(weights)[0]


def test_train_resume_and_export(tmp_path: Path, s2_scene: np.ndarray) -> None:
    data = str(_data_folder(tmp_path / "s2", s2_scene))
    run = ["run", "--data", data, "--out", str(tmp_path / "run"), "--N", "16", "--M", "32", "--crop", "64", "--batch", "2",
           "--threads", "1", "--log-every", "1"]
    main([*run, "--steps", "2"])
    main([*run, "--steps", "3"])  # resumes from the checkpoint: one more step
    state = torch.load(tmp_path / "run" / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert state["step"] == 3 and state["config"] == {"bands": 12, "N": 16, "M": 32, "levels": 8}
    main(["export", str(tmp_path / "run" / "checkpoint.pt"), str(tmp_path / "model.pt"), "--name", "small"])
    network = _network(tmp_path / "model.pt")
    for key, value in state["model"].items():  # the exported weights are the checkpoint's, quantiles refitted
        if not key.startswith("entropy_bottleneck."):
            torch.testing.assert_close(network.state_dict()[key], value, rtol=0, atol=0)
    assert network.aux_loss().item() < 1.0  # quantiles fitted (about 660 untrained)


def test_integer_hyper_synthesis_fine_tunes_resumes_and_exports_with_the_rest_frozen(tmp_path: Path,
                                                                                     s2_scene: np.ndarray) -> None:
    from numcodec_plugin.models.integer_hyper_synthesis import IntegerHyperSynthesis

    data = str(_data_folder(tmp_path / "s2", s2_scene, size=288))
    _one_step_model(tmp_path, data)
    run = ["integer-hyper-synthesis", "--base", str(tmp_path / "base.pt"), "--data", data, "--out", str(tmp_path / "ihs"),
           "--bank", "4", "--batch", "2", "--threads", "1", "--log-every", "1"]
    main([*run, "--steps", "2"])
    main([*run, "--steps", "3"])  # resumes: one more step
    state = torch.load(tmp_path / "ihs" / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert state["step"] == 3
    main(["export-integer-hyper-synthesis", str(tmp_path / "ihs" / "checkpoint.pt"), str(tmp_path / "int.pt"),
          "--name", "small-int"])
    base, network = _network(tmp_path / "base.pt"), _network(tmp_path / "int.pt")
    assert isinstance(network.h_s, IntegerHyperSynthesis) and network.config["integer_hyper_synthesis"]
    network.h_s.check_exact()
    for key, value in base.state_dict().items():  # everything but the hyper-synthesis is the base model's
        if not key.startswith("h_s."):
            torch.testing.assert_close(network.state_dict()[key], value, rtol=0, atol=0)
    trained = dict(network.h_s.named_parameters())
    assert not torch.equal(trained["layers.0.weight"], base.h_s[0].weight)  # fine-tuned from base's


def test_entropy_tables_are_fitted_into_a_delta_of_the_base_weights(tmp_path: Path, s2_scene: np.ndarray) -> None:
    """``entropy-tables`` writes a weights file holding only the per-quality tables; it loads as the base
    network plus those tables, and a coder built on it codes a tile that decodes as the base's does."""
    from numcodec_plugin.models.gain_hyperprior import GainHyperpriorCoder
    from numcodec_plugin.models.identity import ModelIdentity
    from numcodec_plugin.training.entropy_tables import SCALE_FACTORS

    data = str(_data_folder(tmp_path / "s2", s2_scene, size=288))
    np.savez(tmp_path / "s2" / "l2a_scenes" / "other.npz", data=np.ascontiguousarray(s2_scene[:, 300:588, 300:588]),
             bands=np.array(BAND_SETS["S2L2A"]), meta=json.dumps({"source": "test"}))  # fitted on one, checked on the other
    _one_step_model(tmp_path, data)
    main(["entropy-tables", "--base", str(tmp_path / "base.pt"), "--out", str(tmp_path / "small-tables.pt"),
          "--name", "small-tables", "--data", data, "--crops", "6", "--latent-crops", "2", "--threads", "1"])
    shipped = torch.load(tmp_path / "small-tables.pt", map_location="cpu", weights_only=True)
    assert shipped["delta_of"] == "base" and set(shipped["state_dict"]) == {"hyper_latent_probabilities",
                                                                               "latent_scale_factors"}
    (base, _), (network, header) = read_network(tmp_path / "base.pt"), read_network(tmp_path / "small-tables.pt")
    assert network.config["table_qualities"] == [float(q) for q in range(-1, 9)]
    for key, value in base.state_dict().items():  # everything else is the base's
        torch.testing.assert_close(network.state_dict()[key], value, rtol=0, atol=0)
    factors = network.latent_scale_factors
    assert factors.shape == (10, 32) and bool(((factors == 1) | torch.isin(factors, torch.tensor(SCALE_FACTORS).float())).all())
    assert network.hyper_latent_probabilities.shape[0] == 10 and (network.hyper_latent_probabilities >= 0).all()
    coders = []
    for model, name in ((base, "small"), (network, "small-tables")):
        model.eval()
        model.update(force=True)
        identity = ModelIdentity.of(name, "S2L2A", header["statistics"]["mean"], header["statistics"]["std"], model)
        coders.append(GainHyperpriorCoder(model, identity, tuple(header["lambdas"])))
    mean, std = (torch.tensor(header["statistics"][k])[None, :, None, None] for k in ("mean", "std"))
    x = (torch.from_numpy(s2_scene[:, :256, :256].astype(np.float32))[None] - mean) / std
    with torch.inference_mode():
        for quality in (-1.0, 4.0):
            tiles, _ = coders[1].compress(x, quality)
            decoded, checksums = coders[1].decompress([tiles[0].streams], (256, 256), quality)
            assert checksums == [tiles[0].checksum]
            base_tiles, base_decoded = coders[0].compress(x, quality)
            torch.testing.assert_close(decoded, base_decoded, rtol=0, atol=0)  # the same symbols, other streams
