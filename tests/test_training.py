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


def _data_folder(root: Path, s2_scene: np.ndarray) -> Path:
    folder = root / "l2a_scenes"
    folder.mkdir(parents=True)
    np.savez(folder / "crop.npz", data=np.ascontiguousarray(s2_scene[:, :160, :160]), bands=np.array(BAND_SETS["S2L2A"]),
             meta=json.dumps({"source": "test"}))
    return root


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

    folder = tmp_path / "s2" / "l2a_scenes"
    folder.mkdir(parents=True)
    np.savez(folder / "crop.npz", data=np.ascontiguousarray(s2_scene[:, :288, :288]),
             bands=np.array(BAND_SETS["S2L2A"]), meta=json.dumps({"source": "test"}))
    data = str(tmp_path / "s2")
    main(["run", "--data", data, "--out", str(tmp_path / "run"), "--N", "16", "--M", "32", "--crop", "64",
          "--batch", "2", "--threads", "1", "--steps", "1"])
    main(["export", str(tmp_path / "run" / "checkpoint.pt"), str(tmp_path / "base.pt"), "--name", "small"])
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
