"""Latent entropy coding: the scale table of chunk format 4, and reading chunks of formats 1-3."""

from __future__ import annotations

import dataclasses
import hashlib
import struct
import zlib

import constriction
import numpy as np
import pytest
import torch

from numcodec_plugin import BitstreamError, bitstream, engine
from numcodec_plugin.models import entropy_coding
from numcodec_plugin.models.base import symbol_checksum
from numcodec_plugin.models.entropy_coding import LATENT_LIMIT, SCALE_BOUND, ScaleTable
from numcodec_plugin.models import registry
from numcodec_plugin.models.registry import load_model
from numcodec_plugin.scoped_determinism import deterministic_torch
from numcodec_plugin.training.entropy_tables import fitted_table
from tests.test_registry import write_official_checkpoint

TABLE = ScaleTable.standard()


def _random_latent(seed: int, top: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    scales = np.exp(rng.uniform(np.log(0.01), np.log(top), size=(40, 12, 16))).astype(np.float32)
    return entropy_coding.clip_symbols(rng.normal(0.0, scales)), scales


def test_table_entries_round_scales_up_exactly() -> None:
    """The logarithmic guess, settled by comparisons, is ``searchsorted``'s answer, also on the table's
    own values, just around them, below the bound, above the top, and for NaN."""
    s = TABLE.scales
    probes = np.concatenate([s, np.nextafter(s, 0), np.nextafter(s, np.inf), [0.0, 1e-9, SCALE_BOUND, 1e6, np.nan],
                             np.exp(np.random.default_rng(0).uniform(-5, 7, 10000))])
    for dtype in (np.float32, np.float64):
        values = probes.astype(dtype)
        expected = np.minimum(np.searchsorted(s, np.fmax(values, SCALE_BOUND).astype(np.float64)), len(s) - 1)
        np.testing.assert_array_equal(TABLE.entries(values), expected)


@pytest.mark.parametrize("top", [0.5, 8.0, 600.0])
def test_scale_table_round_trip(top: float) -> None:
    symbols, scales = _random_latent(1, top)
    np.testing.assert_array_equal(TABLE.decode(TABLE.encode(symbols, scales), scales), symbols)


def test_values_beyond_a_scales_reach_escape_and_come_back() -> None:
    symbols, scales = _random_latent(2, 4.0)
    symbols.reshape(-1)[[0, 7, 99]] = [LATENT_LIMIT, -LATENT_LIMIT, 57]
    scales.reshape(-1)[[0, 7, 99]] = 0.2
    coded = TABLE.encode(symbols, scales)
    np.testing.assert_array_equal(TABLE.decode(coded, scales), symbols)
    plain = symbols.copy()
    plain.reshape(-1)[[0, 7, 99]] = 0
    assert len(coded) > len(TABLE.encode(plain, scales))  # an escape costs bits, it is not free


def _per_element_stream(symbols: np.ndarray, scales: np.ndarray) -> bytes:
    """The latent as chunk formats 1-3 coded it: one discretised Gaussian per element (written with
    constriction directly: the codec itself only reads such streams now)."""
    coder = constriction.stream.stack.AnsCoder()
    coder.encode_reverse(symbols.reshape(-1).astype(np.int32), constriction.stream.model.QuantizedGaussian(-LATENT_LIMIT, LATENT_LIMIT),
                         np.zeros(symbols.size), np.maximum(scales.reshape(-1).astype(np.float64), SCALE_BOUND))
    return coder.get_compressed().tobytes()


@pytest.mark.parametrize("top", [0.5, 8.0, 600.0])
def test_scale_table_bits_estimate_the_coded_length(top: float) -> None:
    """The information content the entropy-table fit ranks scale factors by is the stream's length
    within a few bytes and 1%, escapes included."""
    symbols, scales = _random_latent(4, top)
    symbols.reshape(-1)[[3, 50]] = [LATENT_LIMIT, -900]
    estimate = TABLE.bits(symbols, scales).sum() / 8
    assert abs(len(TABLE.encode(symbols, scales)) - estimate) < 8 + 0.01 * estimate


def test_packed_hyper_latent_tables_keep_the_symbol_ranges() -> None:
    """Per-quality tables are stored packed on the bottleneck table's symbol ranges; unpacked, they
    code on the same ranges, and a table fitted to the symbols codes them in fewer bytes."""
    shared = load_model("tec-s2-gain-v2").z_tables
    rng = np.random.default_rng(0)
    symbols = shared.clip(rng.normal(0.0, 0.4, size=(1, len(shared.low), 8, 8)))[0]
    np.testing.assert_allclose(shared.with_packed(shared.packed(shared.probabilities)).probabilities,
                               shared.probabilities, rtol=1e-12, atol=0)
    fitted = shared.with_packed(shared.packed(fitted_table(shared.symbol_counts(symbols), shared, mix=0.03)))
    assert (fitted.low == shared.low).all() and (fitted.high == shared.high).all()
    coded = fitted.encode(symbols)
    np.testing.assert_array_equal(fitted.decode(coded, symbols.shape), symbols)
    assert len(coded) < len(shared.encode(symbols))
    with pytest.raises(ValueError, match="packed probabilities"):
        shared.with_packed(np.ones(shared.packed_size + 1))


def test_the_table_costs_little_against_a_gaussian_per_element() -> None:
    symbols, scales = _random_latent(3, 8.0)
    assert len(TABLE.encode(symbols, scales)) < 1.01 * len(_per_element_stream(symbols, scales))


def test_damaged_streams_give_an_error_or_other_symbols() -> None:
    symbols, scales = _random_latent(4, 8.0)
    coded = bytearray(TABLE.encode(symbols, scales))
    coded[len(coded) // 2] ^= 0x5A
    try:
        decoded = TABLE.decode(bytes(coded), scales)
    except BitstreamError:
        return
    assert decoded.shape == symbols.shape and not np.array_equal(decoded, symbols)


def _as_format_3(data: bytes) -> bytes:
    """The same chunk as an older release wrote it: latents re-coded with one discretised Gaussian per
    element, the scale-table flag cleared (so version 3)."""
    chunk = bitstream.unpack(data)
    coder = load_model(chunk.header.model_name, chunk.header.quality)
    tiles = []
    with deterministic_torch(), torch.inference_mode():
        for tile in chunk.tiles:
            z = coder.hyper_latent_tables(chunk.header.quality).decode(tile.streams[1], coder._hyper_latent_shape(chunk.header.tile_shape))
            scales = coder._latent_parameters(z, chunk.header.quality)[0].numpy()
            y = TABLE.decode(tile.streams[0], scales)
            assert symbol_checksum(y, z) == tile.checksum
            tiles.append(dataclasses.replace(tile, streams=(_per_element_stream(y, scales),) + tile.streams[1:],
                                             spectral=None))
    header = dataclasses.replace(chunk.header, scale_table=False)
    return bitstream.pack(dataclasses.replace(chunk, header=header, tiles=tiles))


def test_chunks_of_earlier_formats_still_decode(s2_scene: np.ndarray) -> None:
    """A chunk as format 3 wrote it (per-element Gaussians, no spectral maps) decodes to what the same
    chunk's format 4 form (scale table, no spectral maps) decodes to."""
    data = engine.encode(np.ascontiguousarray(s2_scene[:, :256, :512]), engine.EncodeSettings(model="tec-s2-gain-v3", quality=3))
    assert data[4] == bitstream.SPECTRAL_VERSION and data[5] & bitstream.FLAG_SCALE_TABLE
    chunk = bitstream.unpack(data)
    format_4 = bitstream.pack(dataclasses.replace(chunk, tiles=[dataclasses.replace(t, spectral=None)
                                                                 for t in chunk.tiles]))
    old = _as_format_3(data)
    assert format_4[4] == bitstream.SCALE_TABLE_VERSION and old[4] == bitstream.LOWPASS_VERSION
    np.testing.assert_array_equal(engine.decode(old), engine.decode(format_4))


def test_scale_table_flag_on_a_model_without_one_is_refused(tmp_path, monkeypatch, s2_series: np.ndarray) -> None:
    """The official models write CompressAI's own streams (format 1); a chunk of theirs flagged as coded
    against the scale table is refused, not decoded."""
    write_official_checkpoint(tmp_path, "tec-fp", "lambda-10", "factorizedprior", 16, 32)
    monkeypatch.setenv("TERRACODEC_HOME", str(tmp_path))
    monkeypatch.setenv("TERRACODEC_OFFLINE", "1")
    monkeypatch.setattr(registry, "_cache", {})
    data = bytearray(engine.encode(s2_series[0, :, :64, :64], engine.EncodeSettings(model="tec-fp", quality=3)))
    assert data[4] == bitstream.VERSION
    data[4], data[5] = bitstream.SCALE_TABLE_VERSION, data[5] | bitstream.FLAG_SCALE_TABLE
    data[-4:] = struct.pack("<I", zlib.crc32(bytes(data[:-4])))
    with pytest.raises(BitstreamError, match="scale table"):
        engine.decode(bytes(data))


@pytest.mark.parametrize("mean_magnitude", [0.05, 0.1, 0.7, 6.0, 90.0])
def test_laplace_bits_estimates_the_coded_length(mean_magnitude: float) -> None:
    """The low-pass fit ranks candidates by this estimate: it is within 2% and a few words of the stream."""
    rng = np.random.default_rng(int(mean_magnitude * 100))
    symbols = np.rint(rng.laplace(0, mean_magnitude, (12, 64, 64)) * rng.uniform(0.5, 2, (12, 1, 1))).astype(np.int64)
    scale_index = entropy_coding.laplace_scale_index(np.abs(symbols).mean(axis=(1, 2)))
    scales = np.broadcast_to(entropy_coding.laplace_scale(scale_index)[:, None, None], symbols.shape)
    coded_bytes = len(entropy_coding.encode_laplace(symbols, scales))
    estimate = entropy_coding.laplace_bits(symbols, scale_index) / 8
    assert abs(coded_bytes - estimate) <= 0.02 * estimate + 16


def _tabled_pieces() -> list[tuple[np.ndarray, np.ndarray]]:
    """Symbols under every scale byte, escapes to the alphabet's edge among them, in two pieces."""
    n = 256 * 40
    index = (np.arange(n) % 256).astype(np.uint8)
    symbols = ((np.arange(n) * 7919) % 41 - 20).astype(np.int64)
    symbols[::501] = 65536 - np.arange(n)[::501]
    return [(symbols[:4000], index[:4000]), (symbols[4000:], index[4000:])]


def test_tabled_laplace_pieces_decode_in_order_to_the_same_symbols() -> None:
    pieces = _tabled_pieces()
    decoder = entropy_coding.LaplaceTableDecoder(entropy_coding.encode_laplace_table(pieces))
    for symbols, index in pieces:
        np.testing.assert_array_equal(decoder.decode(index.reshape(40, -1)), symbols.reshape(40, -1))


def test_tabled_laplace_laws_are_the_same_on_every_platform() -> None:
    """The laws are part of the chunk format of klt-wavelet-v2: these bytes were recorded on x86-64
    (AMD EPYC, AVX-512); a platform whose exp, sqrt or constriction built other laws fails here
    instead of decoding other symbols."""
    data = entropy_coding.encode_laplace_table(_tabled_pieces())
    assert hashlib.sha256(data).hexdigest() == "805f6f3f177a123feb2f79bd0dbc5526cc1f412f2872c2040b55b45afae47d2a"


def test_tabled_laplace_codes_zeros_at_a_tiny_scale_for_almost_nothing() -> None:
    """The per-symbol laws over the whole alphabet cost 0.011 bit per symbol even for certain zeros;
    one tabled law per scale byte does not."""
    zeros = np.zeros(1 << 18, np.int64)
    index = np.zeros(zeros.shape, np.uint8)
    per_symbol = entropy_coding.encode_laplace(zeros, entropy_coding.laplace_scale(index))
    tabled = entropy_coding.encode_laplace_table([(zeros, index)])
    assert len(per_symbol) > 0.01 * zeros.size / 8
    assert len(tabled) < 16


@pytest.mark.parametrize("mean_magnitude", [0.3, 3.0, 40.0])
def test_tabled_laplace_costs_what_laplace_bits_estimates(mean_magnitude: float) -> None:
    rng = np.random.default_rng(3)
    symbols = np.rint(rng.laplace(0.0, mean_magnitude, (4, 20000))).astype(np.int64)
    index = entropy_coding.laplace_scale_index(np.abs(symbols).mean(axis=1))
    coded = entropy_coding.encode_laplace_table([(symbols, np.repeat(index[:, None], symbols.shape[1], axis=1))])
    leak = symbols.size * -np.log2(1 - 2 * entropy_coding.RESIDUAL_LIMIT * 2.0 ** -24)  # not paid here
    assert 8 * len(coded) == pytest.approx(entropy_coding.laplace_bits(symbols, index) - leak, rel=0.01)
