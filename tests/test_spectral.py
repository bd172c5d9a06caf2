"""The spectral correction layer: a per-tile linear map of the bands, exact on every machine."""

from __future__ import annotations

import numpy as np

from numcodec_plugin import bitstream, engine, spectral
from numcodec_plugin.models.registry import DEFAULT_MODEL, load_model
from xr_terracodec import metrics


def test_a_fitted_map_removes_a_reconstructions_spectral_shrinkage(s2_scene: np.ndarray) -> None:
    """Real pixels reconstructed with each band shrunk by 10% towards its mean and mixed 5% with the
    next band, plus noise: the fitted map, quantised and coded, removes the systematic part."""
    original = np.ascontiguousarray(s2_scene[:, 256:512, 256:512]).astype(np.float64)
    deviation = original - original.mean(axis=(1, 2), keepdims=True)
    noise = np.random.default_rng(0).normal(0, 20, original.shape)
    reconstruction = original - 0.1 * deviation + 0.05 * np.roll(deviation, 1, axis=0) + noise
    model = load_model(DEFAULT_MODEL)
    centre = spectral.centre_of(model.identity.mean)
    correction = spectral.fit(reconstruction, original, np.ones(original.shape[1:], bool), centre,
                              model.rate_lambda(3.0))
    assert correction is not None
    corrected = spectral.apply(correction, reconstruction, centre)
    assert np.array_equal(corrected, np.rint(corrected))  # whole DN
    assert metrics.mse(original, reconstruction) > 1000
    assert metrics.mse(original, corrected) < 1.05 * 20 ** 2  # down to the noise: what no linear map removes


def test_the_map_is_exact_integer_arithmetic() -> None:
    """The decoder's float64 products and sums are exact integers, so its output equals int64 arithmetic
    and does not depend on the order of the sum (another BLAS, another machine)."""
    rng = np.random.default_rng(0)
    bands = 12
    weights = rng.integers(-2 ** 15, 2 ** 15 + 1, (bands, bands))
    offsets = rng.integers(-300, 301, bands)
    symbols = np.vstack([weights, offsets[None]])
    scale_index = spectral.laplace_scale_index(np.abs(symbols).mean(axis=1))
    correction = spectral.SpectralCorrection(11, tuple(int(i) for i in scale_index),
                                             spectral.encode_laplace_rows(symbols, scale_index))
    reconstruction = rng.uniform(-2 ** 16 - 50, 2 ** 16 + 50, (bands, 16, 16))
    centre = rng.integers(0, 3000, bands).astype(np.float64)
    out = spectral.apply(correction, reconstruction, centre)
    rounded = np.clip(np.rint(reconstruction), -2 ** 16, 2 ** 16).astype(np.int64)
    products = weights @ (rounded - centre.astype(np.int64)[:, None, None]).reshape(bands, -1)  # exact int64
    expected = rounded - (np.rint(products / 2 ** 11).reshape(rounded.shape) + offsets[:, None, None])
    np.testing.assert_array_equal(out, expected)
    centred = (rounded - centre.astype(np.int64)[:, None, None]).reshape(bands, -1).astype(np.float64)
    in_another_order = np.zeros_like(centred)
    for j in rng.permutation(bands):  # the same float64 sums, accumulated over the bands in another order
        in_another_order += weights[:, j, None].astype(np.float64) * centred[j]
    np.testing.assert_array_equal(in_another_order, weights.astype(np.float64) @ centred)


def test_an_exact_reconstruction_gets_no_correction() -> None:
    original = np.random.default_rng(1).integers(0, 10000, (12, 64, 64)).astype(np.float64)
    centre = np.full(12, 1000.0)
    assert spectral.fit(original, original, np.ones((64, 64), bool), centre, 1e4) is None


def test_network_chunks_carry_it_and_decode_to_what_the_encoder_measured(s2_scene: np.ndarray) -> None:
    """At quality 5 real tiles take a spectral correction (format version 5); the chunk's error-bounded
    twin, whose residual is coded against the decoder's reconstruction bit for bit, still meets its bound."""
    x = np.ascontiguousarray(s2_scene[:, :256, :512])
    data = engine.encode(x, engine.EncodeSettings(model="tec-s2-gain-v3", quality=5.0))
    chunk = bitstream.unpack(data)
    assert data[4] == bitstream.SPECTRAL_VERSION and any(t.spectral is not None for t in chunk.tiles)
    from benchmarks.spectral_gain import without_spectral

    for k, (y, x0) in enumerate(((0, 0), (0, 256))):  # each tile's map lowers its error (a fit on a regular
        tile = np.s_[:, y:y + 256, x0:x0 + 256]       # subsample once raised it: aliasing with the synthesis)
        with_map, without_map = (engine.decode(d)[tile].astype(np.float64) for d in (data, without_spectral(data)))
        if chunk.tiles[k].spectral is not None:
            assert metrics.mse(x[tile], with_map) < metrics.mse(x[tile], without_map)
    bounded = engine.encode(x, engine.EncodeSettings(model="tec-s2-gain-v3", quality=5.0, max_error=20))
    assert any(t.spectral is not None for t in bitstream.unpack(bounded).tiles)
    assert np.abs(engine.decode(bounded).astype(np.int64) - x).max() <= 20


def test_the_benchmark_reports_the_layer_on_a_small_run(s2_scene: np.ndarray, tmp_path) -> None:
    from benchmarks import spectral_gain
    from tests.test_bounds_benchmark import table_rows

    np.savez(tmp_path / "tile.npz", data=np.ascontiguousarray(s2_scene[:, :256, :256]))
    spectral_gain.main([str(tmp_path / "tile.npz"), "--max-tiles", "1", "--qualities", "3", "5", "--out", str(tmp_path)])
    report = (tmp_path / "spectral.md").read_text()
    rows = table_rows(report, "quality")
    assert [row[0] for row in rows] == ["3", "5"]
    assert all(float(row[3]) >= float(row[1]) for row in rows)  # the layer's bytes come on top
    assert "BD-rate of the layer" in report
