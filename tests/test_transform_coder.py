"""The classical transform coder (klt-wavelet-v3, and v2 with constriction) and the hybrid tec-s2-hybrid-v2, on real pixels."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

from numcodec_plugin import bitstream, engine, subband_coding, transform_coding, wavelet
from numcodec_plugin.errors import BitstreamError, EntropyModelMismatchError
from numcodec_plugin.models.registry import load_model


def _psnr(decoded: np.ndarray, original: np.ndarray) -> float:
    return float(10 * np.log10(1e8 / np.mean((decoded.astype(np.float64) - original) ** 2)))


@pytest.mark.parametrize("model", ["klt-wavelet-v3", "klt-wavelet-v2"])
def test_transform_coder_rate_and_psnr_rise_with_quality(model: str, s2_scene: np.ndarray) -> None:
    chunk = np.ascontiguousarray(s2_scene[:, :256, :256])
    points = []
    for quality in (1.0, 4.0, 8.0):
        data = engine.encode(chunk, engine.EncodeSettings(model=model, quality=quality))
        assert bitstream.unpack(data).header.model_name == model
        points.append((len(data), _psnr(engine.decode(data), chunk)))
    assert [p[0] for p in points] == sorted(p[0] for p in points)
    assert [p[1] for p in points] == sorted(p[1] for p in points)
    assert points[-1][1] > 45


def test_the_engine_fits_no_low_pass_correction_to_the_transform_coder(s2_scene: np.ndarray) -> None:
    """The transform coder declines the low-pass layer (its LL subband codes the low frequencies); the
    network takes it on the same tile and quality, and the spectral layer stays open to both."""
    assert not load_model("klt-wavelet-v3").lowpass_correction and load_model("tec-s2-gain-v3").lowpass_correction
    chunk = np.ascontiguousarray(s2_scene[:, :256, :256])
    tiles = bitstream.unpack(engine.encode(chunk, engine.EncodeSettings(model="klt-wavelet-v3", quality=5.0))).tiles
    assert all(tile.correction is None for tile in tiles) and any(tile.spectral is not None for tile in tiles)
    network = bitstream.unpack(engine.encode(chunk, engine.EncodeSettings(model="tec-s2-gain-v3", quality=5.0))).tiles
    assert any(tile.correction is not None for tile in network)


@pytest.mark.parametrize("model", ["klt-wavelet-v3", "klt-wavelet-v2"])
def test_a_damaged_transform_coded_tile_is_refused(model: str, s2_scene: np.ndarray) -> None:
    """A flipped bit inside the tile's coded coefficients, under a valid chunk CRC: the symbol checksum
    (or the stream's own structure) refuses it instead of returning other values."""
    chunk = np.ascontiguousarray(s2_scene[:, :256, :256])
    data = engine.encode(chunk, engine.EncodeSettings(model=model, quality=5.0))
    stream = bitstream.unpack(data).tiles[0].streams[0]
    body = bytearray(data[:-4])
    body[data.index(stream) + 3 * len(stream) // 4] ^= 0x40
    with pytest.raises((BitstreamError, EntropyModelMismatchError)):
        engine.decode(bytes(body) + struct.pack("<I", zlib.crc32(body)))


def test_v3_codes_the_same_tiles_as_v2_in_as_many_bytes(s2_scene: np.ndarray) -> None:
    """The rANS coder of klt-wavelet-v3 codes v2's symbols under v2's laws: every chunk decodes to v2's
    array, and its size is v2's within 0.5% (the fixed point and the stream's flush differ)."""
    chunk = np.ascontiguousarray(s2_scene[:, :256, :512])
    for quality in (-3.0, 1.0, 5.0, 8.0):
        v2, v3 = (engine.encode(chunk, engine.EncodeSettings(model=m, quality=quality)) for m in ("klt-wavelet-v2", "klt-wavelet-v3"))
        np.testing.assert_array_equal(engine.decode(v3), engine.decode(v2))
        assert abs(len(v3) - len(v2)) <= max(16, 0.005 * len(v2)), (quality, len(v3), len(v2))


def test_the_hybrid_keeps_one_members_coding_per_chunk(s2_scene: np.ndarray) -> None:
    """Each chunk is exactly one member's coding at the quality asked for; at the top quality, where the
    network's reconstruction saturates, the transform coder's (lower lambda * D + R) is kept."""
    chunk = np.ascontiguousarray(s2_scene[:, :256, :256])
    for quality in (1.0, 8.0):
        hybrid = engine.encode(chunk, engine.EncodeSettings(model="tec-s2-hybrid-v2", quality=quality))
        members = {m: engine.encode(chunk, engine.EncodeSettings(model=m, quality=quality))
                   for m in ("tec-s2-gain-v3", "klt-wavelet-v2")}
        name = bitstream.unpack(hybrid).header.model_name
        assert hybrid == members[name]
    assert name == "klt-wavelet-v2"


def test_only_the_components_with_coefficients_are_coded(s2_scene: np.ndarray) -> None:
    """At a coarse step the weak spectral components quantise to nothing and are left out with their
    basis rows (the header's third byte counts the coded ones); the decoder rebuilds the same tile."""
    tile = s2_scene[:, :256, :256].astype(np.float64)
    coarse, _, reconstruction = transform_coding.encode(tile, 8192.0)
    fine, _, _ = transform_coding.encode(tile, 16.0)
    assert 1 <= coarse[2] < fine[2] == tile.shape[0]
    decoded, _ = transform_coding.decode(coarse, tile.shape[0], tile.shape[1:])
    np.testing.assert_array_equal(decoded, reconstruction)
    assert 10 * np.log10(1e8 / np.mean((np.rint(decoded) - tile) ** 2)) > 25


def test_wide_contexts_code_real_subbands_in_fewer_bytes_and_decode_exactly(s2_scene: np.ndarray) -> None:
    """Classing a coefficient by its parent's neighbourhood and its coded siblings too (what klt-wavelet-v2
    does) costs fewer bytes than by its parent alone, on a real tile's spectral components quantised as
    the coder does at a low rate (where the side information matters, about 1-4% fewer), and the decoder
    rebuilds the same integers."""
    tile = s2_scene[:, :256, :256].astype(np.float64)
    means, basis = transform_coding._basis(tile)
    components = np.linalg.inv(basis.T / transform_coding.BASIS_SCALE) @ (tile.reshape(12, -1) - means[:, None])
    subbands = wavelet.forward(components.reshape(1, 12, 256, 256), transform_coding.LEVELS, irreversible=True)
    symbols = [np.trunc(b / s).astype(np.int64) for b, s in zip(subbands, transform_coding._subband_steps(1024.0, 256, 256))]
    sizes = {}
    for wide in (False, True):
        coded = subband_coding.encode_subbands(symbols, predict=False, tabled=True, wide_contexts=wide)
        sizes[wide] = len(coded.high)
        decoded = subband_coding.decode_subbands(coded, [b.shape for b in symbols], tabled=True, wide_contexts=wide)
        assert all(np.array_equal(a, b) for a, b in zip(decoded, symbols))
    assert sizes[True] < sizes[False], sizes


@pytest.mark.parametrize("quality", [2.0, 5.0, 8.0])
def test_rate_distortion_quantisation_lowers_the_cost_it_minimises(s2_scene: np.ndarray, quality: float) -> None:
    """With the tile's lambda the quantiser zeroes the +-1s whose bits cost more than the distortion they
    save: lambda * D + R (D: mean squared error in reflectance, R: bits per value) drops against the
    plain dead-zone quantiser at the same step, fewer bits for a little more error, and the same decoder
    rebuilds exactly the encoder's reconstruction."""
    coder = load_model("klt-wavelet-v3")
    tile = s2_scene[:, 256:512, :256].astype(np.float64)
    step, rate_lambda = coder.step(quality), coder.rate_lambda(quality)
    costs, sizes, errors = [], [], []
    for lam in (None, rate_lambda):
        data, symbols, reconstruction = transform_coding.encode(tile, step, True, lam)
        decoded, decoded_symbols = transform_coding.decode(data, tile.shape[0], tile.shape[1:], True)
        np.testing.assert_array_equal(decoded, reconstruction)
        error = float(np.mean((reconstruction.astype(np.float64) - tile) ** 2)) / 1e8
        costs.append(rate_lambda * error + 8 * len(data) / tile.size)
        sizes.append(len(data))
        errors.append(error)
    assert costs[1] < costs[0]
    assert sizes[1] < sizes[0] and errors[1] > errors[0]
