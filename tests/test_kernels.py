"""The compiled kernels compute exactly (bit for bit) what the numpy expressions they replace compute.

The oracles below are the numpy code the transform coder ran before the kernels (session 16); the
release fixtures (test_release_chunks.py) check the same end to end on real chunks. Every test runs
on each build this machine can run (the baseline and, on an x86-64 CPU with AVX2, the AVX2 build),
so the builds compute the same bits as numpy and hence as each other.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from types import ModuleType

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from numcodec_plugin import _kernels, kernels, spectral, wavelet

STEPS, SCALE = _kernels.CDF97_STEPS, _kernels.CDF97_SCALE
BUILDS = pytest.mark.parametrize("build", list(kernels.AVAILABLE.values()), ids=list(kernels.AVAILABLE))


def _lift(x: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Oracle: one 9/7 analysis step along ``axis`` in numpy, mirrored at both ends."""
    low, high = np.moveaxis(x, axis, 0)[0::2].copy(), np.moveaxis(x, axis, 0)[1::2].copy()
    if not len(high):
        return np.ascontiguousarray(np.moveaxis(low, 0, axis)), np.ascontiguousarray(np.moveaxis(high, 0, axis))
    for predict, update in zip(STEPS[0::2], STEPS[1::2]):
        following = np.concatenate([low[1:], low[-1:]])[:len(high)]
        high += (low[:len(high)] + following) * predict
        previous = np.concatenate([high[:1], high])[:len(low)]
        current = np.concatenate([high, high[-1:]])[:len(low)]
        low += (previous + current) * update
    return (np.ascontiguousarray(np.moveaxis(low / SCALE, 0, axis)),
            np.ascontiguousarray(np.moveaxis(high * SCALE, 0, axis)))


@BUILDS
@settings(max_examples=150, deadline=None)
@given(height=st.integers(1, 40), width=st.integers(1, 40), planes=st.integers(1, 3), seed=st.integers(0, 10**6))
def test_one_level_of_the_compiled_9_7_is_numpys_lifting(build: ModuleType, height: int, width: int, planes: int, seed: int) -> None:
    image = np.random.default_rng(seed).normal(0.0, 3000.0, (planes, height, width))
    rows_low, rows_high = _lift(image, -1)
    ll, lh = _lift(rows_low, -2)
    hl, hh = _lift(rows_high, -2)
    for got, expected in zip(build.forward97(image), (ll, hl, lh, hh)):
        np.testing.assert_array_equal(got, expected)
    inverse = build.inverse97(ll, hl, lh, hh)
    np.testing.assert_allclose(inverse, image, atol=1e-8)
    assert [b.shape[-2:] for b in wavelet.forward(image, 1, irreversible=True)] == wavelet.subband_shapes(height, width, 1)


@BUILDS
@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 10**6), step=st.floats(0.5, 500.0))
def test_the_quantisers_are_their_numpy_expressions(build: ModuleType, seed: int, step: float) -> None:
    rng = np.random.default_rng(seed)
    c = rng.laplace(0.0, step, (2, 17, 23)) * (rng.random((2, 17, 23)) < 0.7)
    quantised = build.quantise(c, step, 0.3)
    assert quantised.dtype == np.int32
    np.testing.assert_array_equal(quantised, (np.sign(c) * np.floor(np.abs(c) / step + 0.3)).astype(np.int32))
    q = (rng.integers(-5000, 5000, (2, 17, 23)) * (rng.random((2, 17, 23)) < 0.5)).astype(np.int32)
    np.testing.assert_array_equal(build.dequantise(q, step, 0.1), np.sign(q) * (np.abs(q) + 0.1) * step)
    for symbols in (q, q.astype(np.int64) << 20):
        np.testing.assert_array_equal(build.largest_magnitudes(symbols), np.abs(symbols).max(axis=(1, 2)))


@BUILDS
@settings(max_examples=60, deadline=None)
@given(height=st.integers(1, 30), width=st.integers(1, 30), planes=st.integers(1, 3), seed=st.integers(0, 10**6))
def test_the_inverse_9_7_of_symbols_is_the_inverse_of_their_dequantised_coefficients(
        build: ModuleType, height: int, width: int, planes: int, seed: int) -> None:
    """Dequantising on the way into the lifting gives the bits of dequantising first (empty subbands too)."""
    rng = np.random.default_rng(seed)
    ll = rng.normal(0.0, 3000.0, (planes, (height + 1) // 2, (width + 1) // 2))
    shapes = ((height + 1) // 2, width // 2), (height // 2, (width + 1) // 2), (height // 2, width // 2)
    symbols = [np.rint(rng.laplace(0.0, 2.0, (planes,) + shape)).astype(np.int32) for shape in shapes]
    steps = tuple(rng.uniform(1.0, 40.0, 3))
    dequantised = [build.dequantise(q, s, 0.1) for q, s in zip(symbols, steps)]
    np.testing.assert_array_equal(build.inverse97(ll, *symbols, steps=steps, reconstruction=0.1),
                                  build.inverse97(ll, *dequantised))


@BUILDS
@pytest.mark.parametrize("kept", [1, 4, 5, 12])
def test_synthesis_adds_the_components_in_order_in_float64(build: ModuleType, kept: int) -> None:
    rng = np.random.default_rng(3)
    components = rng.normal(0.0, 2000.0, (kept, 33, 700))  # more pixels than one block
    means, weights = rng.integers(-3000, 9000, 7), rng.integers(-127, 128, (kept, 7)) / 127
    expected = np.empty((7, 33, 700))
    expected[:] = means[:, None, None].astype(np.float64)
    for k in range(kept):
        expected += weights[k][:, None, None] * components[k]
    np.testing.assert_array_equal(build.synthesise(components, means, weights), expected.astype(np.float32))


def _classes(parent: np.ndarray | None, siblings: list[np.ndarray], shape: tuple[int, int], wide: bool) -> np.ndarray:
    """Oracle: terciles (np.quantile) per plane of the parent (3 x 3 sums if ``wide``, upsampled) plus 9 |siblings|."""
    def fitted(values: np.ndarray) -> np.ndarray:
        values = values[:, :shape[0], :shape[1]]
        return np.pad(values, ((0, 0), (0, shape[0] - values.shape[1]), (0, shape[1] - values.shape[2])), mode="edge")
    magnitude = np.zeros((len(siblings[0]) if parent is None else len(parent),) + shape, np.int64)
    if parent is not None:
        spread = np.abs(parent)
        if wide:
            padded = np.pad(spread, ((0, 0), (1, 1), (1, 1)), mode="edge")
            spread = sum(padded[:, dy:dy + parent.shape[1], dx:dx + parent.shape[2]] for dy in range(3) for dx in range(3))
        magnitude += fitted(spread.repeat(2, axis=1).repeat(2, axis=2))
    for sibling in siblings:
        magnitude += 9 * fitted(np.abs(sibling))
    low, high = np.quantile(magnitude.reshape(len(magnitude), -1), [1 / 3, 2 / 3], axis=-1)
    return ((magnitude > low[:, None, None]).astype(np.uint8) + (magnitude > high[:, None, None])).astype(np.uint8)


@BUILDS
@settings(max_examples=300, deadline=None)
@given(height=st.integers(1, 40), width=st.integers(1, 40), planes=st.integers(1, 3), seed=st.integers(0, 10**6),
       scale=st.sampled_from([0.01, 0.5, 3.0, 200.0, 1e6]), wide=st.booleans(), has_parent=st.booleans(),
       sibling_count=st.integers(0, 2))
def test_context_classes_are_numpys_terciles(build: ModuleType, height: int, width: int, planes: int, seed: int, scale: float, wide: bool,
                                             has_parent: bool, sibling_count: int) -> None:
    """Small and huge magnitudes take the histogram and the selection path; ties and odd sizes included."""
    rng = np.random.default_rng(seed)
    parent = rng.laplace(0, scale, (planes, (height + 1) // 2, (width + rng.integers(0, 2)) // 2 or 1)).astype(np.int32)
    siblings = [rng.laplace(0, scale, (planes, height + rng.integers(-1, 1) or 1, width + rng.integers(-1, 1) or 1))
                .astype(np.int32) for _ in range(sibling_count)]
    if not has_parent and not siblings:
        has_parent = True
    got = build.context_classes(parent if has_parent else None, siblings, height, width, wide)
    np.testing.assert_array_equal(got, _classes(parent if has_parent else None, siblings, (height, width), wide))


@BUILDS
def test_grouping_by_entry_is_a_stable_sort(build: ModuleType) -> None:
    entries = np.random.default_rng(5).integers(0, 40, 100_000).astype(np.uint8)
    order, counts = build.group_by_entry(entries)
    np.testing.assert_array_equal(order, np.argsort(entries, kind="stable"))
    np.testing.assert_array_equal(counts, np.bincount(entries, minlength=256))


@BUILDS
def test_grouped_bins_escape_beyond_the_radius_and_come_back(build: ModuleType) -> None:
    rng = np.random.default_rng(6)
    entries = rng.integers(0, 4, 5000).astype(np.uint8)
    radii = np.array([1, 2, 5, 9], np.int32)
    values = np.rint(rng.laplace(0, 3, 5000)).astype(np.int64)
    order, counts = build.group_by_entry(entries)
    bins, escaped = build.grouped_bins(values, order, counts[:4], radii)
    radius = radii[entries[order]]
    outside = np.abs(values[order]) > radius
    np.testing.assert_array_equal(bins, np.where(outside, 2 * radius + 1, values[order] + radius))
    np.testing.assert_array_equal(escaped, values[order][outside])
    decoded, positions = build.grouped_values(bins, counts[:4], radii, order)
    decoded[positions] = escaped
    np.testing.assert_array_equal(decoded, values)


@BUILDS
@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 10**6), step_log2=st.integers(4, 12), single=st.booleans(), bands=st.integers(1, 13))
def test_the_spectral_map_is_numpys_whole_number_arithmetic(build: ModuleType, seed: int, step_log2: int, single: bool,
                                                            bands: int) -> None:
    rng = np.random.default_rng(seed)
    reconstruction = rng.normal(3000, 4000, (bands, 19, 31)).astype(np.float32 if single else np.float64)
    weights = rng.integers(-2000, 2000, (bands, bands)).astype(np.float64)
    offsets = rng.integers(-50, 50, bands).astype(np.float64)
    centre = np.rint(rng.normal(2000, 500, bands))
    rounded = np.clip(np.rint(reconstruction.astype(np.float64)), -spectral.VALUE_LIMIT, spectral.VALUE_LIMIT)
    correction = np.rint((weights @ (rounded.reshape(bands, -1) - centre[:, None])) * 2.0 ** -step_log2) + offsets[:, None]
    expected = rounded - correction.reshape(rounded.shape)
    got = build.spectral_map(reconstruction, weights, offsets, 2.0 ** -step_log2, centre, float(spectral.VALUE_LIMIT))
    np.testing.assert_array_equal(got, expected)


def test_the_fastest_build_this_cpu_runs_is_selected_and_the_environment_can_force_the_baseline() -> None:
    if platform.machine().lower() in ("x86_64", "amd64") and sys.platform != "win32" and _kernels.cpu_has_avx2():
        assert "avx2" in kernels.AVAILABLE, "setup.py builds _kernels_avx2 on x86-64; this install lacks it"
    expected = "baseline" if os.environ.get("TERRACODEC_KERNELS") == "baseline" else list(kernels.AVAILABLE)[-1]
    assert kernels.SELECTED == expected
    script = "from numcodec_plugin import kernels; print(kernels.SELECTED, kernels.synthesise.__module__)"
    forced = subprocess.run([sys.executable, "-c", script], env=dict(os.environ, TERRACODEC_KERNELS="baseline"),
                            capture_output=True, text=True, check=True).stdout.split()
    assert forced == ["baseline", "numcodec_plugin._kernels"]


@BUILDS
@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10**6), single=st.booleans(), signed=st.booleans(), nodata=st.sampled_from([0.0, 1.0, 65535.0, -32768.0, 32767.0, 7.5, float("nan")]))
def test_rounding_into_an_integer_dtype_is_numpys_rint_clip_and_no_data_move(build: ModuleType, seed: int, single: bool,
                                                                              signed: bool, nodata: float) -> None:
    rng = np.random.default_rng(seed)
    dtype = np.dtype(np.int16 if signed else np.uint16)
    info = np.iinfo(dtype)
    values = rng.normal(0 if signed else 30000, 40000, (3, 9, 70))
    values[0, 0, :8] = [0.5, 1.5, 2.5, -0.5, -1.5, 65535.5, 65534.5, 32767.5]  # ties round to even
    values = values.astype(np.float32 if single else np.float64)
    expected = np.clip(np.rint(values), info.min, info.max).astype(dtype)
    if info.min <= nodata <= info.max:
        expected[expected == nodata] = nodata + 1 if nodata < info.max else nodata - 1
    got = np.empty(values.shape, dtype)
    build.round_into(values, got, float(info.min), float(info.max), nodata if info.min <= nodata <= info.max else float("nan"))
    np.testing.assert_array_equal(got, expected)
