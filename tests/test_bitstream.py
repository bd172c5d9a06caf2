"""The chunk format: round trip, overhead, and refusal of foreign, truncated or corrupt bytes."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from numcodec_plugin import BitstreamError, TerraCodecError, bitstream, engine
from numcodec_plugin.lowpass import LowpassCorrection
from numcodec_plugin.spectral import SpectralCorrection
from numcodec_plugin.models.base import CodedTile
from tests.conftest import TEST_MODEL


def _chunk(mask: bool, corrections: bool = False, scale_table: bool = False, spectral: bool = False,
           quality: float = 4.5) -> bitstream.Chunk:
    header = bitstream.ChunkHeader((2, 12, 300, 200), np.dtype("uint16"), "tec-s2-gain-v1", b"12345678", quality, 0.0,
                                   10000.0, (160, 224), 2, scale_table=scale_table)
    offsets = (0, 1, -1, 63, -64, 64, -65, 1000, -1000, 2**20, -(2**20), 7)
    correction = LowpassCorrection(5, 40, tuple(range(90, 102)), b"grid" * 30)
    spectral_map = SpectralCorrection(10, tuple(range(80, 93)), b"map" * 40)
    tiles = [CodedTile((bytes([i]) * (100 + i), b"z" * 7), 0xDEADBEEF - i, offsets,
                       correction if corrections and i % 2 else None, spectral_map if spectral and i % 3 else None)
             for i in range(header.tile_count)]
    m = np.zeros(header.shape, bool)
    m[0, :, :3, :5] = True
    return bitstream.Chunk(header, m if mask else None, tiles)


@pytest.mark.parametrize(("mask", "corrections", "scale_table", "spectral", "version"), [
    (False, False, False, False, bitstream.VERSION), (True, False, False, False, bitstream.VERSION),
    (True, True, False, False, bitstream.LOWPASS_VERSION), (True, True, True, False, bitstream.SCALE_TABLE_VERSION),
    (False, False, True, False, bitstream.SCALE_TABLE_VERSION), (True, True, True, True, bitstream.SPECTRAL_VERSION),
    (False, False, True, True, bitstream.SPECTRAL_VERSION)])
def test_pack_unpack_round_trip(mask: bool, corrections: bool, scale_table: bool, spectral: bool, version: int) -> None:
    chunk = _chunk(mask, corrections, scale_table, spectral)
    data = bitstream.pack(chunk)
    assert data[4] == version
    back = bitstream.unpack(data)
    assert back.header == chunk.header
    assert back.tiles == chunk.tiles
    assert (back.mask is None) == (not mask)
    if mask:
        np.testing.assert_array_equal(back.mask, chunk.mask)


@pytest.mark.parametrize("quality", [0.75, 0.0, -1.5])
def test_qualities_below_one_make_version_6(quality: float) -> None:
    """A chunk coded at an extrapolated quality is version 6 whatever its features, and refused relabelled as
    the version its flags alone would give (a reader before version 6 would clamp the quality and decode wrongly)."""
    chunk = _chunk(mask=True, corrections=True, scale_table=True, spectral=True, quality=quality)
    data = bytearray(bitstream.pack(chunk))
    assert data[4] == bitstream.EXTRAPOLATED_QUALITY_VERSION
    assert bitstream.unpack(bytes(data)).header == chunk.header
    data[4] = bitstream.SPECTRAL_VERSION
    with pytest.raises(BitstreamError, match="quality -?[0-9.]+ do not match format version 5"):
        bitstream.unpack(_with_crc(data))
    at_one = bytearray(bitstream.pack(_chunk(mask=True, corrections=True, scale_table=True, spectral=True, quality=1.0)))
    assert at_one[4] == bitstream.SPECTRAL_VERSION
    at_one[4] = bitstream.EXTRAPOLATED_QUALITY_VERSION
    with pytest.raises(BitstreamError, match="do not match format version 6"):
        bitstream.unpack(_with_crc(at_one))


def test_residual_only_chunks_keep_their_version() -> None:
    """Chunks without a learned layer record quality 0 but have no gains to extrapolate: not version 6."""
    data = engine.encode(np.arange(12 * 16 * 16, dtype=np.uint16).reshape(12, 16, 16),
                         engine.EncodeSettings(model=TEST_MODEL, max_error=0, quality=None))
    assert bitstream.unpack(data).residual_only and data[4] < bitstream.EXTRAPOLATED_QUALITY_VERSION


def test_header_overhead_is_small() -> None:
    """A 12 x 256 x 256 chunk without no-data: header, one tile's record and trailer stay under 1% of 12 KB."""
    header = bitstream.ChunkHeader((1, 12, 256, 256), np.dtype("uint16"), "tec-s2-gain-v1", b"12345678", 5.0, 0.0,
                                   10000.0, (256, 256), 2)
    tile = CodedTile((b"y" * 11500, b"z" * 500), 1, (3, -5, 12, 0, 7, -60, 2, 1, 0, -1, 40, 9))
    overhead = len(bitstream.pack(bitstream.Chunk(header, None, [tile]))) - 12000
    assert overhead < 120, overhead  # 12 KB = 0.125 bits per pixel per band


def test_foreign_bytes_are_refused() -> None:
    with pytest.raises(BitstreamError, match="magic"):
        bitstream.unpack(b"\x89PNG\r\n\x1a\n" + b"\0" * 100)
    with pytest.raises(BitstreamError, match="magic"):
        bitstream.unpack(b"")


def test_every_truncation_is_refused() -> None:
    data = bitstream.pack(_chunk(mask=True, corrections=True, spectral=True))
    for n in range(len(data)):
        with pytest.raises(BitstreamError):
            bitstream.unpack(data[:n])


def test_newer_version_names_the_problem() -> None:
    data = bytearray(bitstream.pack(_chunk(mask=False)))
    data[4] = 9
    with pytest.raises(BitstreamError, match="version 9"):
        bitstream.unpack(_with_crc(data))


def _with_crc(data: bytearray) -> bytes:
    data[-4:] = struct.pack("<I", zlib.crc32(bytes(data[:-4])))
    return bytes(data)


@pytest.mark.parametrize(("scale_table", "position", "value"), [
    (False, 4, bitstream.VERSION), (False, 4, bitstream.TEMPORAL_VERSION), (False, 5, 0x80 | 0x21),
    (True, 4, bitstream.LOWPASS_VERSION), (False, 4, bitstream.SCALE_TABLE_VERSION),
    (False, 4, bitstream.SPECTRAL_VERSION)])
def test_flags_must_match_the_version(scale_table: bool, position: int, value: int) -> None:
    """A chunk relabelled as another version than its features need, or with an unknown flag, is refused;
    so is a version 5 chunk (spectral corrections) relabelled as version 4."""
    data = bytearray(bitstream.pack(_chunk(mask=True, corrections=True, scale_table=scale_table)))
    data[position] = value
    with pytest.raises(BitstreamError, match="do not match format version"):
        bitstream.unpack(_with_crc(data))
    spectral = bytearray(bitstream.pack(_chunk(mask=False, scale_table=True, spectral=True)))
    spectral[4] = bitstream.SCALE_TABLE_VERSION
    with pytest.raises(BitstreamError, match="do not match format version 4"):
        bitstream.unpack(_with_crc(spectral))


@pytest.fixture(scope="module")
def encoded(s2_series: np.ndarray) -> bytes:
    x = s2_series[0, :, :64, :96].copy()
    x[:, :4, :4] = 0
    return engine.encode(x, engine.EncodeSettings(model=TEST_MODEL, quality=2))


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_chunks_raise_terracodec_errors(encoded: bytes, data: st.DataObject) -> None:
    """Random flips, truncations, insertions and garbage: a TerraCodecError or a correct decode, nothing else."""
    buf = bytearray(encoded)
    action = data.draw(st.sampled_from(["flip", "truncate", "insert", "garbage", "splice"]))
    if action == "flip":
        for _ in range(data.draw(st.integers(1, 8))):
            i = data.draw(st.integers(0, len(buf) - 1))
            buf[i] ^= 1 << data.draw(st.integers(0, 7))
    elif action == "truncate":
        buf = buf[: data.draw(st.integers(0, len(buf) - 1))]
    elif action == "insert":
        i = data.draw(st.integers(0, len(buf)))
        buf[i:i] = data.draw(st.binary(min_size=1, max_size=16))
    elif action == "garbage":
        buf = bytearray(b"TECZ" + data.draw(st.binary(max_size=300)))
    else:
        buf = buf[:12] + bytearray(data.draw(st.binary(max_size=64))) + buf[12:]
    try:
        engine.decode(bytes(buf))
    except TerraCodecError:
        return
    assert bytes(buf) == encoded, "altered bytes decoded without an error"


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_corrupt_payload_with_valid_crc_never_crashes(encoded: bytes, data: st.DataObject) -> None:
    """Payload damage that the chunk CRC cannot see (CRC recomputed) reaches the entropy decoder:
    it must still end in a TerraCodecError or in exactly the original decode, never a crash."""
    import struct
    import zlib

    reference = engine.decode(encoded)
    body = bytearray(encoded[:-4])
    first_payload = len(body) - sum(len(s) for t in bitstream.unpack(encoded).tiles for s in t.streams)
    for _ in range(data.draw(st.integers(1, 6))):
        i = data.draw(st.integers(first_payload, len(body) - 1))
        body[i] ^= 1 << data.draw(st.integers(0, 7))
    buf = bytes(body) + struct.pack("<I", zlib.crc32(bytes(body)))
    try:
        decoded = engine.decode(buf)
    except TerraCodecError:
        return
    np.testing.assert_array_equal(decoded, reference)
