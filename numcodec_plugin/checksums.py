"""CRC-32 (zlib's polynomial and values) of the buffers a chunk checks: its bytes, each tile's symbols,
the error-bounded layer's reconstruction and result.

Computed by ISA-L (``isal``), whose carry-less-multiply CRC gives zlib's values (so chunks written
with either read the same) in a fraction of zlib's time on the megabytes of symbols a
12 x 256 x 256 tile checks (``benchmarks/codec_speed.py``'s stage table gives the time).
"""

from __future__ import annotations

import numpy as np
from isal.isal_zlib import crc32 as _crc32


def crc32(data: bytes | bytearray | memoryview | np.ndarray, value: int = 0) -> int:
    """``zlib.crc32(data, value)``: the CRC-32 of the bytes of ``data`` (any C-contiguous buffer, a numpy
    array's in memory order) continued from ``value``."""
    return _crc32(data, value)
