"""The low-pass correction layer: fitting, the decoder's field, the format, and its gain on real pixels."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from benchmarks.lowpass_gain import without_corrections
from numcodec_plugin import BitstreamError, bitstream, engine, lowpass
from numcodec_plugin.models.base import CodedTile
from numcodec_plugin.models.registry import load_model


def _smooth_error(seed: int = 0) -> np.ndarray:
    """(12, 256, 256) error with most of its energy at scales of 32 pixels and more, plus white noise."""
    rng = np.random.default_rng(seed)
    coarse = rng.normal(0, 150, (12, 8, 8))
    return lowpass.upsample(coarse, 32) + rng.normal(0, 20, (12, 256, 256))


def _mse_after(correction: lowpass.LowpassCorrection | None, error: np.ndarray) -> float:
    field = 0 if correction is None else lowpass.correction_field(correction, 12, error.shape[1:])
    return float(np.mean((error - field) ** 2))


def test_fit_removes_smooth_error_and_the_field_has_the_tile_shape() -> None:
    error = _smooth_error()
    correction = lowpass.fit(error, np.ones((256, 256), bool), lam=640.0)
    assert correction is not None
    assert lowpass.correction_field(correction, 12, (256, 256)).shape == (12, 256, 256)
    assert _mse_after(correction, error) < 0.2 * float(np.mean(error ** 2))


def test_white_error_gets_no_correction() -> None:
    error = np.random.default_rng(1).normal(0, 50, (12, 256, 256))
    assert lowpass.fit(error, np.ones((256, 256), bool), lam=64.0) is None


def test_higher_lambda_buys_finer_blocks_and_more_bits() -> None:
    error = _smooth_error() + lowpass.upsample(np.random.default_rng(2).normal(0, 60, (12, 64, 64)), 4)
    valid = np.ones((256, 256), bool)
    low, high = lowpass.fit(error, valid, lam=64.0), lowpass.fit(error, valid, lam=64000.0)
    assert low is not None and high is not None
    assert high.block < low.block
    assert len(high.symbols) > len(low.symbols)
    assert _mse_after(high, error) < _mse_after(low, error)


def test_invalid_pixels_do_not_steer_the_fit() -> None:
    error = _smooth_error()
    valid = np.ones((256, 256), bool)
    valid[:, 128:] = False
    garbage = error.copy()
    garbage[:, :, 128:] = 1e6
    a, b = lowpass.fit(error, valid, 640.0), lowpass.fit(garbage, valid, 640.0)
    field_a = lowpass.correction_field(a, 12, (256, 256))[:, :, :96]
    field_b = lowpass.correction_field(b, 12, (256, 256))[:, :, :96]
    np.testing.assert_array_equal(field_a, field_b)


def _real_chunk(s2_scene: np.ndarray, quality: float) -> tuple[np.ndarray, bytes]:
    x = np.ascontiguousarray(s2_scene[:, :256, :512])
    return x, engine.encode(x, engine.EncodeSettings(model="tec-s2-gain-v3", quality=quality))  # the bundled network


def _psnr(x: np.ndarray, y: np.ndarray) -> float:
    return float(10 * np.log10(10000.0 ** 2 / np.mean((x.astype(np.float64) - y) ** 2)))


def test_the_layer_pays_on_real_pixels_at_low_quality(s2_scene: np.ndarray) -> None:
    """Bundled model, quality 1: the corrections cost less than their PSNR gain is worth to the model."""
    x, data = _real_chunk(s2_scene, 1.0)
    chunk = bitstream.unpack(data)
    assert data[5] & bitstream.FLAG_LOWPASS
    assert any(tile.correction is not None for tile in chunk.tiles)
    plain = without_corrections(data)
    assert not plain[5] & bitstream.FLAG_LOWPASS  # no correction: no corrections block
    gain_db = _psnr(x, engine.decode(data)) - _psnr(x, engine.decode(plain))
    extra_bits = 8 * (len(data) - len(plain)) / x.size
    assert gain_db > 0.5, gain_db
    assert extra_bits < 0.05, extra_bits
    lam = load_model("tec-s2-gain-v3", 1.0).rate_lambda(1.0)
    mse = float(np.mean((engine.decode(data).astype(np.float64) - x) ** 2)) / 1e8
    mse_plain = float(np.mean((engine.decode(plain).astype(np.float64) - x) ** 2)) / 1e8
    assert lam * mse + 8 * len(data) / x.size < lam * mse_plain + 8 * len(plain) / x.size


def test_bitstream_round_trip_and_refusals(s2_scene: np.ndarray) -> None:
    _, data = _real_chunk(s2_scene, 1.0)
    chunk = bitstream.unpack(data)
    assert bitstream.unpack(bitstream.pack(chunk)) == chunk
    first = next(k for k, tile in enumerate(chunk.tiles) if tile.correction is not None)
    too_coarse = dataclasses.replace(chunk.tiles[first].correction, block_log2=9)
    tiles = list(chunk.tiles)
    tiles[first] = dataclasses.replace(tiles[first], correction=too_coarse)
    with pytest.raises(BitstreamError, match="low-pass block"):
        bitstream.unpack(bitstream.pack(dataclasses.replace(chunk, tiles=tiles)))


def test_models_without_a_lambda_get_dc_offsets_only() -> None:
    """The official models state no lambda in our units (``rate_lambda`` None): no low-pass or spectral layer."""
    decoded = np.zeros((1, 12, 64, 64), np.float32)
    originals = np.full((1, 12, 64, 64), 0.5)  # error -0.5 standard deviations of 100 DN: -50 DN
    out = engine._with_corrections([CodedTile((b"",), 0)], decoded, originals, np.ones((1, 1, 64, 64), bool),
                                   (1000.0,) * 12, (100.0,) * 12, None)
    assert out[0].correction is None and out[0].spectral is None
    assert out[0].offsets == (-25,) * 12  # units of OFFSET_STEP = 2 DN


@pytest.mark.parametrize("block", [4, 16, 128])
def test_the_field_is_fancy_indexing_bit_for_bit(block: int) -> None:
    """The decoder's field must stay what earlier releases computed (the error-bounded layer's CRC pins
    it): its repeats are exactly the gathers of the bilinear formula."""
    grid = np.random.default_rng(block).normal(0, 300, (12, 256 // block, 256 // block))
    for positions in (np.arange(256), np.arange(0, 256, 4)):
        r0, r1, wr = lowpass._bilinear_weights(positions, grid.shape[-2], block)
        c0, c1, wc = lowpass._bilinear_weights(positions, grid.shape[-1], block)
        by_rows = grid[:, r0, :] * (1 - wr)[:, None] + grid[:, r1, :] * wr[:, None]
        expected = by_rows[:, :, c0] * (1 - wc) + by_rows[:, :, c1] * wc
        np.testing.assert_array_equal(lowpass.upsample(grid, block, positions, positions), expected)


@pytest.mark.parametrize("block", [4, 32, 128])
def test_separable_block_means_of_the_field_match_the_full_field(block: int) -> None:
    """The fit's refinement takes the interpolated field's block means as two small matrix products
    where every pixel counts; they are the means of the full-resolution field."""
    grid = np.random.default_rng(block).normal(0, 300, (12, 256 // block, 256 // block))
    separable = lowpass._interpolated_block_means(grid, block, np.ones((256, 256)))
    full_field = lowpass.upsample(grid, block).reshape(12, 256 // block, block, 256 // block, block).mean(axis=(2, 4))
    np.testing.assert_allclose(separable, full_field, rtol=0, atol=1e-9)
    # With a pixel left out, the weighted full-resolution path: the same means wherever the pixel is not.
    weight = np.ones((256, 256))
    weight[255, 255] = 0
    partial = lowpass._interpolated_block_means(grid, block, weight)
    np.testing.assert_allclose(partial[:, :-1, :-1], full_field[:, :-1, :-1], rtol=0, atol=1e-9)
    assert not np.allclose(partial[:, -1, -1], full_field[:, -1, -1], rtol=0, atol=1e-9)
