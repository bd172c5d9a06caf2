"""The compiled rANS coder of klt-wavelet-v3's subbands: exact round trips, zero classes, escapes,
tables every machine builds alike, and damaged streams refused without reading out of bounds."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from numcodec_plugin.errors import BitstreamError
from numcodec_plugin.models import laplace_rans
from numcodec_plugin.models.entropy_coding import LAPLACE_RADII, laplace_table_probabilities


def _pieces(seed: int, count: int = 4) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Laplace values under random classes and scale bytes; plane 0's class 1 all zeros (byte 0); a few
    values beyond their law's radius, up to the format's +-(2**15 - 1)."""
    rng = np.random.default_rng(seed)
    pieces = []
    for _ in range(count):
        classes = rng.integers(0, 3, (3, 17, 29)).astype(np.uint8)
        table = rng.integers(1, 256, (3, 3)).astype(np.uint8)
        table[1] = rng.integers(40, 110, 3)  # small scales: escapes are frequent
        values = np.rint(rng.laplace(0.0, 4.0, classes.shape)).astype(np.int64)
        table[0, 1] = 0
        values[0][classes[0] == 1] = 0
        values[1, 0, :3] = (2 ** 15 - 1, -(2 ** 15 - 1), 900)
        pieces.append((values, classes, table))
    return pieces


def _decode(data: bytes, pieces) -> list[np.ndarray]:
    decoder = laplace_rans.Decoder(data)
    decoded = [decoder.decode(classes, table) for _, classes, table in pieces]
    decoder.finish()
    return decoded


@pytest.mark.parametrize("seed", range(5))
def test_pieces_round_trip_exactly(seed: int) -> None:
    pieces = _pieces(seed)
    for decoded, (values, _, _) in zip(_decode(laplace_rans.encode(pieces), pieces), pieces):
        np.testing.assert_array_equal(decoded, values)


def test_a_class_of_zeros_costs_nothing_and_a_non_zero_value_in_it_is_refused() -> None:
    classes = np.zeros((2, 64, 64), np.uint8)
    values = np.zeros(classes.shape, np.int64)
    empty = laplace_rans.encode([(values, classes, np.zeros((2, 3), np.uint8))])
    assert empty == b""  # the state never left 0: nothing to flush
    values[1, -1, -1] = 1  # the first value the encoder codes: the 8191 zeros before it cost bits under a law
    assert len(laplace_rans.encode([(values, classes, np.full((2, 3), 100, np.uint8))])) > 8
    with pytest.raises(ValueError, match="all-zero class"):
        laplace_rans.encode([(values, classes, np.zeros((2, 3), np.uint8))])
    with pytest.raises(ValueError, match=r"\+-2\*\*15"):
        laplace_rans.encode([(values * 2 ** 15, classes, np.ones((2, 3), np.uint8))])


def test_the_rate_is_the_laws_information_content() -> None:
    """The stream's bits are within 0.3% (and 8 bytes of flush) of the float laws' information content:
    the fixed point costs next to nothing."""
    rng = np.random.default_rng(7)
    index = 120
    values = np.rint(rng.laplace(0.0, 2.0 ** ((index - 96) / 16), (4, 128, 128))).astype(np.int64)
    probabilities = laplace_table_probabilities(index)
    radius = int(LAPLACE_RADII[index])
    assert np.abs(values).max() <= radius
    bits = -np.log2(probabilities[values + radius]).sum()
    data = laplace_rans.encode([(values, np.zeros(values.shape, np.uint8), np.full((4, 3), index, np.uint8))])
    assert bits <= 8 * len(data) <= 1.003 * bits + 64


def test_every_law_sums_to_the_fixed_point_and_the_tables_are_pinned() -> None:
    """The tables are part of the format: integer arithmetic on IEEE-exact laws, the same on every
    machine (these digests were recorded on x86-64; a platform that builds other tables fails here)."""
    for index in (0, 1, 96, 200, 255):
        frequencies = laplace_rans.frequencies(index)
        assert frequencies.sum() == 2 ** laplace_rans.PRECISION and frequencies.min() >= 1
        assert len(frequencies) == 2 * LAPLACE_RADII[index] + 2
        assert frequencies[0] == frequencies[:-1].max()  # zero first, the most probable
    cdf, offsets, radii = laplace_rans.tables()
    assert hashlib.sha256(cdf.tobytes() + offsets.tobytes() + radii.tobytes()).hexdigest()[:16] == TABLES_DIGEST


TABLES_DIGEST = "84dcc19ba0f111e8"


@pytest.mark.parametrize("damage", ["flip", "truncate", "extend", "random"])
def test_a_damaged_stream_is_refused(damage: str) -> None:
    pieces = _pieces(11)
    data = bytearray(laplace_rans.encode(pieces))
    if damage == "flip":
        data[len(data) // 3] ^= 0x10
    elif damage == "truncate":
        data = data[:-8]
    elif damage == "extend":
        data += b"\0\0\0\1"
    else:
        data = bytearray(np.random.default_rng(3).integers(0, 256, len(data), dtype=np.uint8).tobytes())
    with pytest.raises(BitstreamError, match="rANS"):
        _decode(bytes(data), pieces)
    with pytest.raises(BitstreamError, match="whole rANS stream"):
        laplace_rans.Decoder(bytes(data[:6]))
