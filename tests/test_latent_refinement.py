"""Latent refinement: the encoder searches for cheaper latents, the decoder is unchanged."""

from __future__ import annotations

from pathlib import Path

import numcodecs
import numpy as np
import pytest
import torch
import xarray as xr
import zarr

import numcodec_plugin
import xr_terracodec
from numcodec_plugin import engine
from numcodec_plugin.errors import ConfigurationError
from numcodec_plugin.models.base import CodedTile
from numcodec_plugin.models.latent_refinement import rate_distortion_costs, refine_latents
from numcodec_plugin.models.registry import DEFAULT_TEMPORAL_MODEL, REFINABLE_EXAMPLE, load_model
from numcodec_plugin.scoped_determinism import deterministic_torch
from tests.conftest import TEST_MODEL
from xr_terracodec import metrics



def coded_cost(x: np.ndarray, data: bytes, quality: float) -> float:
    """``lambda * D + R`` of a chunk as written and decoded: reflectance MSE, bits per pixel per band."""
    decoded = numcodecs.get_codec({"id": "terracodec"}).decode(data)  # a codec knowing nothing of the settings
    mse = float(np.mean(((decoded.astype(np.float64) - x) / 10000.0) ** 2))
    return load_model(REFINABLE_EXAMPLE, quality).rate_lambda(quality) * mse + 8 * len(data) / x.size


def test_refined_latents_code_real_pixels_at_a_lower_rate_distortion_cost(s2_scene: np.ndarray) -> None:
    """At a low quality, where the analysed latents are furthest from the best, 50 refinement steps lower
    the chunk's cost as written and decoded. At quality 5 this tile's refined latents cost 1.35% more
    once the low-pass layer (which refinement does not model) is added; the encoder then keeps the
    analysed ones, so refinement never leaves a chunk costlier."""
    x = np.ascontiguousarray(s2_scene[:, 256:512, 256:512])
    costs = {}
    for quality, steps in ((2.0, 0), (2.0, 50), (5.0, 0), (5.0, 50)):
        data = numcodecs.get_codec({"id": "terracodec", "model": "tec-s2-gain-v3", "quality": quality,
                                    "refinement_steps": steps}).encode(x)
        costs[quality, steps] = coded_cost(x, data, quality)
    assert costs[2.0, 50] < 0.97 * costs[2.0, 0], costs
    assert costs[5.0, 50] <= costs[5.0, 0] * (1 + 1e-6), costs
    refined = numcodecs.get_codec({"id": "terracodec", "model": "tec-s2-gain-v3", "quality": 3.0,
                                   "refinement_steps": 20}).encode(x)
    assert metrics.psnr(metrics.mse(x, engine.decode(refined))) > 35  # the same decoder gives a sound image


def test_each_tile_takes_the_coding_of_lowest_cost_after_the_corrections() -> None:
    """The encoder's choice between two codings of the same tiles: per tile, the one whose cost after the
    DC offsets (and the low-pass layer) is lower, with the reconstruction that goes with it; the first
    coding on a tie."""
    originals = np.zeros((3, 12, 64, 64), np.float32)
    exact, off = np.zeros_like(originals), np.full_like(originals, 0.3)
    off[:, :, :32] = -0.3  # half the tile too bright, half too dark: no DC offset removes it
    first = [CodedTile((b"a%d" % k,), k, (0,) * 12) for k in range(3)]
    second = [CodedTile((b"b%d" % k,), k, (0,) * 12) for k in range(3)]
    codings = [(first, np.stack([exact[0], off[1], exact[2]])), (second, np.stack([off[0], exact[1], exact[2]]))]
    tiles, chosen = engine._cheapest_per_tile(codings, originals, np.ones((3, 1, 64, 64), bool), (1000.0,) * 12,
                                              (100.0,) * 12, 1e4)
    assert [t.streams[0] for t in tiles] == [b"a0", b"b1", b"a2"]
    assert not chosen.any()


def test_refinement_steps_are_in_both_configurations_and_round_trip() -> None:
    codec = numcodecs.get_codec({"id": "terracodec", "model": TEST_MODEL, "quality": 3, "refinement_steps": 7})
    assert codec.get_config()["refinement_steps"] == 7
    assert numcodecs.get_codec(codec.get_config()).settings == codec.settings
    assert "refinement_steps" not in numcodecs.get_codec({"id": "terracodec", "model": TEST_MODEL}).get_config()
    v3 = numcodec_plugin.zarr3.TerraCodec(model=TEST_MODEL, quality=3, refinement_steps=7)
    assert v3.to_dict()["configuration"]["refinement_steps"] == 7
    assert numcodec_plugin.zarr3.TerraCodec.from_dict(v3.to_dict()) == v3
    assert "refinement_steps" not in numcodec_plugin.zarr3.TerraCodec(model=TEST_MODEL).to_dict()["configuration"]


@pytest.mark.parametrize("steps", [-1, 2.5, True, "10"])
def test_invalid_step_counts_are_refused(steps: object) -> None:
    with pytest.raises(ConfigurationError, match="refinement_steps must be a whole number"):
        numcodecs.get_codec({"id": "terracodec", "refinement_steps": steps})


@pytest.mark.parametrize("model", [DEFAULT_TEMPORAL_MODEL, "tec-fp"])
def test_models_that_cannot_be_refined_are_refused(model: str) -> None:
    with pytest.raises(ConfigurationError, match=f"model {model} does not support latent refinement"):
        numcodec_plugin.zarr3.TerraCodec(model=model, refinement_steps=5)
    with pytest.raises(ConfigurationError, match="does not support latent refinement"):
        engine.encode(np.ones((12, 64, 64), np.uint16), engine.EncodeSettings(model=model, refinement_steps=5))


def test_a_temporal_encoding_with_refinement_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    ds = xr.Dataset({"reflectance": (("time", "band", "y", "x"), np.ones((2, 12, 64, 64), np.uint16))})
    with pytest.raises(ConfigurationError, match="does not support latent refinement"):
        xr_terracodec.write(ds, tmp_path / "series.zarr",
                            xr_terracodec.encoding(ds, temporal=True, refinement_steps=5))
    assert not list(tmp_path.iterdir())


def test_a_refined_v3_store_reads_back_through_xarray(tmp_path: Path, s2_scene: np.ndarray) -> None:
    ds = xr.Dataset({"reflectance": (("band", "y", "x"), np.ascontiguousarray(s2_scene[:, :64, :128]))})
    store = tmp_path / "refined.zarr"
    xr_terracodec.write(ds, store, xr_terracodec.encoding(ds, quality=3, model=TEST_MODEL, shard=False,
                                                       refinement_steps=3))
    serializer = zarr.open_array(store / "reflectance").metadata.codecs[0]
    assert serializer.refinement_steps == 3
    back = xr.open_zarr(store)["reflectance"].values
    assert back.shape == ds["reflectance"].shape and back.dtype == np.uint16
    plain = engine.decode(engine.encode(ds["reflectance"].values, engine.EncodeSettings(TEST_MODEL, 3)))
    assert not np.array_equal(back, plain)  # the refinement reached the store's chunks


def _analysed(coder, x: torch.Tensor, quality: float) -> tuple[torch.Tensor, ...]:
    gain, inverse_gain = coder.network.gains(torch.full((x.shape[0],), quality - 1.0))
    y = coder.network.analysis(x, gain).contiguous()
    return y, coder.network.h_a(y), gain, inverse_gain


def test_each_tile_keeps_its_cheapest_iterate_and_is_refined_as_if_alone(s2_scene: np.ndarray) -> None:
    coder = load_model(TEST_MODEL, 3.0)
    mean = torch.tensor(coder.identity.mean)[:, None, None]
    std = torch.tensor(coder.identity.std)
    x = (torch.from_numpy(np.stack([s2_scene[:, :64, :64], s2_scene[:, 64:128, 64:128]]).astype(np.float32))
         - mean) / std[:, None, None]
    lam = coder.rate_lambda(3.0)
    with deterministic_torch(), torch.no_grad():  # one intra-op thread, as the engine refines tiles
        y, z, gain, inverse_gain = _analysed(coder, x, 3.0)
        refined = refine_latents(coder.network, x, y, z, 2.0, gain, inverse_gain, coder._medians, std, lam, 8)
        alone = [refine_latents(coder.network, x[i:i + 1], y[i:i + 1], z[i:i + 1], 2.0, gain[i:i + 1],
                                inverse_gain[i:i + 1], coder._medians, std, lam, 8) for i in range(2)]
        noise, levels = torch.zeros(y.shape[1:]), torch.full((2,), 2.0)
        before, _ = rate_distortion_costs(coder.network, x, y, z, levels, inverse_gain, coder._medians, std, lam, noise)
        after, _ = rate_distortion_costs(coder.network, x, *refined, levels, inverse_gain, coder._medians, std, lam,
                                         noise)
        alone_costs = [rate_distortion_costs(coder.network, x[i:i + 1], *alone[i], levels[:1], inverse_gain[i:i + 1],
                                             coder._medians, std, lam, noise)[0] for i in range(2)]
    assert (after <= before).all() and (after < before).any(), (before, after)
    # Refined as if alone: the same cost, and latents within float noise of the lone refinement's. A batched
    # convolution sums in another order, and where two iterates cost nearly the same the kept one may differ,
    # so the latents are compared at a tenth of a refinement step (the step moves them by up to ~0.2 here).
    torch.testing.assert_close(after, torch.cat(alone_costs), rtol=1e-4, atol=0)
    for i, (y_alone, z_alone) in enumerate(alone):
        torch.testing.assert_close(refined[0][i:i + 1], y_alone, rtol=0, atol=0.02)
        torch.testing.assert_close(refined[1][i:i + 1], z_alone, rtol=0, atol=0.02)


def test_the_search_benchmark_reports_each_setting_and_restores_the_shipped_step_sizes(s2_series: np.ndarray,
                                                                                     tmp_path: Path) -> None:
    from benchmarks import refinement_search
    from numcodec_plugin.models import latent_refinement

    shipped = latent_refinement.LATENT_LEARNING_RATE, latent_refinement.HYPER_LATENT_LEARNING_RATE
    np.savez(tmp_path / "tile.npz", data=s2_series[0, :, :64, :64])
    refinement_search.main([str(tmp_path / "tile.npz"), "--tile", "64", "--qualities", "2", "--grid", "3,0.02,0.3",
                            "--out", str(tmp_path)])
    rows = [line for line in (tmp_path / "refinement_search.md").read_text().splitlines() if line.startswith("| ")]
    assert rows[2].startswith("| 0 | - | - |") and rows[3].startswith("| 3 | 0.02 | 0.3 | ")
    assert rows[3].split(" | ")[3].endswith("%")
    assert (latent_refinement.LATENT_LEARNING_RATE, latent_refinement.HYPER_LATENT_LEARNING_RATE) == shipped


def test_the_accessor_previews_a_refined_encode(s2_scene: np.ndarray) -> None:
    da = xr.DataArray(np.ascontiguousarray(s2_scene[:, :64, :64]), dims=("band", "y", "x"))
    plain = da.tec.report(quality=3, model=TEST_MODEL, show=False)
    refined = da.tec.report(quality=3, model=TEST_MODEL, refinement_steps=3, show=False)
    assert refined != plain and refined["bits_per_pixel_per_band"] > 0
    assert da.tec.roundtrip(quality=3, model=TEST_MODEL, refinement_steps=3).shape == da.shape
