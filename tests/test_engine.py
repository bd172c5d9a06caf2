"""The tensor engine on real Sentinel-2 pixels: shapes, dtypes, no-data exactness, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from numcodec_plugin import (
    ConfigurationError,
    EntropyModelMismatchError,
    ModelMismatchError,
    engine,
    load_model,
)
from numcodec_plugin.scoped_determinism import deterministic_torch
from tests.conftest import TEST_MODEL
from xr_terracodec import metrics

SETTINGS = engine.EncodeSettings(model=TEST_MODEL, quality=3)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return metrics.psnr(metrics.mse(a, b))


@pytest.mark.parametrize("height, width", [(264, 264), (1000, 700), (37, 301), (256, 256)])
def test_any_frame_size_round_trips(s2_scene: np.ndarray, height: int, width: int) -> None:
    x = np.ascontiguousarray(s2_scene[:, :height, :width])
    y = engine.decode(engine.encode(x, engine.EncodeSettings(quality=6)))  # the bundled model
    assert y.shape == x.shape and y.dtype == x.dtype
    assert psnr(x, y) > 28  # a misplaced tile or a bad crop costs far more than that


def test_tiles_reassemble_exactly() -> None:
    frames = np.random.default_rng(0).random((3, 12, 100, 77)).astype(np.float32)
    tiles = engine._to_tiles(frames, (64, 32))
    assert tiles.shape == (3 * 2 * 3, 12, 64, 32)
    np.testing.assert_array_equal(engine._from_tiles(tiles, 3, 100, 77), frames)


def test_tile_plan_spreads_padding() -> None:
    assert engine.plan_tiles(264, 264, 256, 32) == (160, 160)
    assert engine.plan_tiles(1000, 700, 256, 32) == (256, 256)
    assert engine.plan_tiles(37, 10, 256, 32) == (64, 32)


def test_leading_axes_and_batches_do_not_change_bytes(s2_series: np.ndarray) -> None:
    x = s2_series[:, :, :128, :96]
    together = engine.encode(x, SETTINGS, batch_size=1)
    assert together == engine.encode(x, SETTINGS, batch_size=16)
    frames = engine.decode(together)
    np.testing.assert_array_equal(frames[1], engine.decode(engine.encode(x[1], SETTINGS)))


@pytest.mark.parametrize("nodata", [0, 65535, 1234])
def test_uint16_nodata_is_exact_and_never_invented(s2_series: np.ndarray, nodata: int) -> None:
    x = s2_series[0, :, :96, :128].copy()
    x[x == nodata] += 1
    x[:, 10:40, 20:70] = nodata
    x[3, 50:60, :] = nodata  # one band only
    y = engine.decode(engine.encode(x, engine.EncodeSettings(TEST_MODEL, 3, nodata=nodata)))
    np.testing.assert_array_equal(y == nodata, x == nodata)


def test_nodata_does_not_leak_into_neighbours(s2_series: np.ndarray) -> None:
    x = s2_series[0, :, :128, :128].copy()
    holed = x.copy()
    holed[:, :64, :] = 0
    bundled = engine.EncodeSettings(quality=6)
    a = engine.decode(engine.encode(x, bundled))[:, 80:, :]
    b = engine.decode(engine.encode(holed, bundled))[:, 80:, :]
    # with the hole filled before the transform the valid half codes about as well as without it
    assert psnr(x[:, 80:], b) > psnr(x[:, 80:], a) - 1.5


def test_int16_and_clipping(s2_series: np.ndarray) -> None:
    x = (s2_series[0, :, :64, :64].astype(np.int32) - 1000).clip(-32768, 32767).astype(np.int16)
    x[0, :2, :2] = 0
    y = engine.decode(engine.encode(x, SETTINGS))
    assert y.dtype == np.int16
    assert (y[0, :2, :2] == 0).all()
    saturated = np.full((12, 64, 64), 65535, np.uint16)
    assert engine.decode(engine.encode(saturated, SETTINGS)).max() <= 65535


def test_float32_reflectance_with_nan_nodata(s2_series: np.ndarray) -> None:
    """Reflectance floats are coded exactly like the same DN in uint16 (dn_scale=10000), NaN kept."""
    dn = s2_series[0, :, :64, :64].copy()
    dn[:, :5, :5] = 0
    x = dn.astype(np.float32) / 10000
    x[:, :5, :5] = np.nan
    y = engine.decode(engine.encode(x, SETTINGS))
    assert y.dtype == np.float32
    np.testing.assert_array_equal(np.isnan(y), np.isnan(x))
    y_dn = engine.decode(engine.encode(dn, SETTINGS)).astype(np.float32)
    valid = ~np.isnan(x)
    assert np.abs(y[valid] * 10000 - y_dn[valid]).max() <= 0.51  # only the integer rounding differs


def test_float_inf_is_refused() -> None:
    x = np.ones((12, 32, 32), np.float32)
    x[0, 0, 0] = np.inf
    with pytest.raises(ConfigurationError, match="inf"):
        engine.encode(x, SETTINGS)


@pytest.mark.parametrize(
    "shape, dtype, match",
    [((13, 32, 32), np.uint16, "13 bands"), ((12, 32, 32), np.uint8, "dtype uint8"), ((32, 32), np.uint16, "dimension")],
)
def test_bad_input_is_refused(shape: tuple, dtype: type, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        engine.encode(np.zeros(shape, dtype), SETTINGS)


def test_quality_outside_range_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="outside"):
        engine.encode(np.zeros((12, 32, 32), np.uint16), engine.EncodeSettings(TEST_MODEL, 99))


def test_wrong_weights_at_decode_time(s2_series: np.ndarray) -> None:
    data = bytearray(engine.encode(s2_series[0, :, :64, :64], SETTINGS))
    coder = load_model(TEST_MODEL)
    with torch.no_grad():
        original = coder.network.g_s[0].weight.clone()
        coder.network.g_s[0].weight.mul_(1.01)
    try:
        from numcodec_plugin.models.identity import ModelIdentity

        changed = ModelIdentity.of(TEST_MODEL, "S2L2A", coder.identity.mean, coder.identity.std, coder.network)
        saved, coder.identity = coder.identity, changed
        with pytest.raises(ModelMismatchError, match="weights"):
            engine.decode(bytes(data))
    finally:
        coder.identity = saved
        with torch.no_grad():
            coder.network.g_s[0].weight.copy_(original)


def test_entropy_model_disagreement_is_detected(s2_series: np.ndarray) -> None:
    data = engine.encode(s2_series[0, :, :64, :64], SETTINGS)
    coder = load_model(TEST_MODEL)
    with torch.no_grad():
        bias = coder._canonical.h_s[-1].bias  # the copy both sides evaluate the entropy parameters with
        original = bias.clone()
        bias.add_(0.7)  # other scales at decode: like another device or library version
    try:
        with pytest.raises(EntropyModelMismatchError, match="checksum"):
            engine.decode(data)
    finally:
        with torch.no_grad():
            bias.copy_(original)


def test_determinism_settings_are_scoped() -> None:
    before = torch.are_deterministic_algorithms_enabled()
    with deterministic_torch():
        assert torch.are_deterministic_algorithms_enabled()
    engine.encode(np.ones((12, 32, 32), np.uint16), SETTINGS)
    assert torch.are_deterministic_algorithms_enabled() == before
