"""The chunk checksums are zlib's CRC-32 values, whichever library computes them: chunks written by
earlier versions (zlib) and by this one (ISA-L) check alike."""

from __future__ import annotations

import zlib

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from numcodec_plugin.checksums import crc32


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=5000), start=st.integers(0, 2**32 - 1))
def test_crc32_is_zlibs_on_any_bytes_and_any_start(data: bytes, start: int) -> None:
    assert crc32(data, start) == zlib.crc32(data, start)
    assert crc32(memoryview(data)[1:]) == zlib.crc32(data[1:])


def test_crc32_of_an_array_is_that_of_its_bytes_in_memory_order() -> None:
    symbols = np.random.default_rng(0).integers(-3, 4, (12, 128, 128)).astype("<i4")  # a tile's megabytes
    assert crc32(symbols) == zlib.crc32(symbols.tobytes())
