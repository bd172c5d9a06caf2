"""The TerraCodec chunk format, versions 1 to 6 (specified in ``docs/format.md``).

A chunk is self-describing: the header says which model and quality coded it, the array's
shape and dtype, the no-data value and the tile grid, so any reader with the model can decode
it without the codec configuration. Layout (little-endian)::

    magic "TECZ" | version u8 (1; 2 when flag bit 4 is set; 3 when bit 5 is; 4 when bit 6 is; 5 when bit 7 is;
    |   6 when tiles follow and the quality is below 1) | flags u8 | dtype u8 | ndim u8 | shape u32*ndim
    | model name (u8 length + UTF-8) | model digest 8 bytes | quality f32 | nodata f64
    | dn_scale f32 | tile height u16 | tile width u16 | streams per tile u8
    | [mask: varint length + zlib(packbits(mask))]      (flag bit 0; bit 3: one mask for all bands;
    |                                                     bit 2: no tiles follow, see residual_only)
    | [residual layer: max_error u16*bands | reconstruction CRC-32 u32 | result CRC-32 u32
    |  | scale index u8*(frames*bands*subbands*3) | shift, predictor u8 and weight i8, each *(frames*bands*subbands)
    |  | high, low, exceptions: varint length + bytes each]  (flag bit 1)
    | per tile, row-major over (frames, tile rows, tile columns):
    |     symbol checksum u32 | DC offsets: zigzag varint * bands
    |     | [low-pass correction: block log2 u8 (0: none) | if not 0: step index u8 | scale index u8*bands
    |     |  | varint length + bytes]                   (flag bit 5)
    |     | [spectral correction: step log2 u8 (0: none) | if not 0: scale index u8*(bands+1)
    |     |  | varint length + bytes]                   (flag bit 7)
    |     | per stream: varint length + bytes
    | CRC-32 of everything before it, u32

Flag bit 4 (temporal): the tiles at one position form a sequence over the chunk's frames, and
decoding tile (f, r, c) needs tiles (0..f-1, r, c). Such chunks are written as version 2, so a
reader that predates temporal chunks refuses them instead of misreading them. Flag bit 5 (low-pass
corrections, :mod:`numcodec_plugin.lowpass`) makes a chunk version 3, for the same reason. Flag
bit 6 (scale table): the latent streams are coded against the fixed scale table
(:class:`~numcodec_plugin.models.entropy_coding.ScaleTable`) instead of one discretised Gaussian per
element; such chunks are version 4. Flag bit 7 (spectral corrections, :mod:`numcodec_plugin.spectral`)
makes a chunk version 5. A chunk with tiles coded at a quality below 1 (a model's gain units
extrapolated below its lowest trained level; readers before version 6 would clamp the quality and
decode wrongly) is version 6, whatever its flags.

This module only packs and unpacks bytes; it knows nothing about networks.
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass

import numpy as np

from numcodec_plugin import wavelet
from numcodec_plugin.checksums import crc32
from numcodec_plugin.errors import BitstreamError
from numcodec_plugin.lowpass import BLOCK_SIZES, LowpassCorrection
from numcodec_plugin.models.base import CodedTile
from numcodec_plugin.residual import ResidualLayer
from numcodec_plugin.subband_coding import CONTEXTS, CodedSubbands
from numcodec_plugin.spectral import SpectralCorrection

MAGIC = b"TECZ"
VERSION = 1
TEMPORAL_VERSION = 2
LOWPASS_VERSION = 3
SCALE_TABLE_VERSION = 4
SPECTRAL_VERSION = 5
EXTRAPOLATED_QUALITY_VERSION = 6
#: a chunk with tiles coded at a quality below this is version 6
LOWEST_TRAINED_QUALITY = 1.0
FLAG_MASK = 0x01
FLAG_RESIDUAL = 0x02
FLAG_RESIDUAL_ONLY = 0x04  # no learned layer: the residual layer codes the values themselves
FLAG_PIXEL_MASK = 0x08  # the mask is the same in every band and stored once per pixel
FLAG_TEMPORAL = 0x10  # tiles at one position are coded as a sequence over the frames
FLAG_LOWPASS = 0x20  # every tile carries a low-pass correction field (possibly empty)
FLAG_SCALE_TABLE = 0x40  # latent streams are coded against the fixed scale table
FLAG_SPECTRAL = 0x80  # every tile carries a spectral correction (possibly empty)
KNOWN_FLAGS = (FLAG_MASK | FLAG_RESIDUAL | FLAG_RESIDUAL_ONLY | FLAG_PIXEL_MASK | FLAG_TEMPORAL | FLAG_LOWPASS | FLAG_SCALE_TABLE
               | FLAG_SPECTRAL)
DTYPES: dict[int, np.dtype] = {1: np.dtype("uint16"), 2: np.dtype("int16"), 3: np.dtype("float32")}
DTYPE_CODES = {dtype: code for code, dtype in DTYPES.items()}
MAX_ELEMENTS = 1 << 32
_FIXED = struct.Struct("<f d f H H B")


@dataclass(frozen=True)
class ChunkHeader:
    shape: tuple[int, ...]
    dtype: np.dtype
    model_name: str
    model_digest: bytes
    quality: float
    nodata: float
    dn_scale: float
    tile_shape: tuple[int, int]
    streams_per_tile: int
    temporal: bool = False
    scale_table: bool = False  # latents coded against the fixed scale table (format 4)

    @property
    def tile_grid(self) -> tuple[int, int, int]:
        """(frames, tile rows, tile columns): frames are all leading axes before (band, y, x) flattened."""
        frames = math.prod(self.shape[:-3])
        return frames, -(-self.shape[-2] // self.tile_shape[0]), -(-self.shape[-1] // self.tile_shape[1])

    @property
    def tile_count(self) -> int:
        return math.prod(self.tile_grid)


@dataclass(frozen=True)
class Chunk:
    header: ChunkHeader
    mask: np.ndarray | None  # bool, header.shape; True where the value is no-data
    tiles: list[CodedTile]
    residual: ResidualLayer | None = None  # the error-bounded layer, if any

    @property
    def residual_only(self) -> bool:
        """No learned layer: the residual layer codes the values against a reconstruction of zeros."""
        return self.residual is not None and not self.tiles


def varint(n: int) -> bytes:
    """``n`` as an unsigned LEB128 varint (7 bits per byte, low first)."""
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def signed_varint(n: int) -> bytes:
    """``n`` zigzag-mapped (0, -1, 1, -2, ... to 0, 1, 2, 3, ...) as a :func:`varint`."""
    return varint((n << 1) ^ (n >> 63))


class Reader:
    """Reads a chunk's (or a stream's) fields in order; a field past the end raises :class:`BitstreamError`."""

    def __init__(self, data: memoryview) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int, what: str) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise BitstreamError(f"truncated chunk: {what} needs {n} bytes at offset {self.pos}, {len(self.data) - self.pos} left")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: struct.Struct | str, what: str) -> tuple:
        fmt = fmt if isinstance(fmt, struct.Struct) else struct.Struct(fmt)
        return fmt.unpack(self.take(fmt.size, what))

    def varint(self, what: str) -> int:
        value, shift = 0, 0
        while True:
            (byte,) = self.take(1, what)
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7
            if shift > 35:
                raise BitstreamError(f"corrupt chunk: {what} length is not a valid varint")

    def signed_varint(self, what: str) -> int:
        value = self.varint(what)
        return (value >> 1) ^ -(value & 1)


def pack(chunk: Chunk) -> bytes:
    """Serialise a chunk to bytes."""
    h = chunk.header
    name = h.model_name.encode()
    out = bytearray(MAGIC)
    flags = (FLAG_MASK if chunk.mask is not None else 0) | (FLAG_RESIDUAL if chunk.residual is not None else 0)
    if chunk.residual_only:
        flags |= FLAG_RESIDUAL_ONLY
    if h.temporal:
        flags |= FLAG_TEMPORAL
    if h.scale_table:
        flags |= FLAG_SCALE_TABLE
    if any(tile.correction is not None for tile in chunk.tiles):
        flags |= FLAG_LOWPASS
    if any(tile.spectral is not None for tile in chunk.tiles):
        flags |= FLAG_SPECTRAL
    mask = chunk.mask
    if mask is not None and (mask == mask[..., :1, :, :]).all():  # no-data is usually whole pixels
        flags |= FLAG_PIXEL_MASK
        mask = mask[..., 0, :, :]
    version = _version(flags, h.quality, has_tiles=not chunk.residual_only)
    out += struct.pack("<BBBB", version, flags, DTYPE_CODES[np.dtype(h.dtype)], len(h.shape))
    out += struct.pack(f"<{len(h.shape)}I", *h.shape)
    out += struct.pack("<B", len(name)) + name + h.model_digest
    out += _FIXED.pack(h.quality, h.nodata, h.dn_scale, *h.tile_shape, h.streams_per_tile)
    if mask is not None:
        packed = zlib.compress(np.packbits(mask.reshape(-1)).tobytes(), 9)
        out += varint(len(packed)) + packed
    if chunk.residual is not None:
        r = chunk.residual
        out += struct.pack(f"<{len(r.max_error)}HII", *r.max_error, r.reconstruction_crc, r.result_crc)
        c = r.subbands
        out += c.scale_index.astype(np.uint8).tobytes() + c.shift.astype(np.uint8).tobytes()
        out += c.predictor.astype(np.uint8).tobytes() + c.weight.astype(np.int8).tobytes()
        for part in (c.high, c.low, r.exceptions):
            out += varint(len(part)) + part
    for tile in chunk.tiles:
        out += pack_tile(tile, h.shape[-3], lowpass=bool(flags & FLAG_LOWPASS), spectral=bool(flags & FLAG_SPECTRAL))
    out += struct.pack("<I", crc32(out))
    return bytes(out)


def pack_tile(tile: CodedTile, bands: int, lowpass: bool, spectral: bool) -> bytes:
    """One tile's bytes in a chunk of ``bands`` bands (``lowpass``, ``spectral``: the chunk has flag bit 5,
    7); what :func:`pack` writes for it, and what the encoder counts when it compares two codings of a tile."""
    if len(tile.offsets) != bands:
        raise ValueError(f"tile has {len(tile.offsets)} DC offsets for {bands} bands")
    out = bytearray(struct.pack("<I", tile.checksum))
    for value in tile.offsets:
        out += signed_varint(value)
    if lowpass:
        out += _pack_correction(tile.correction)
    if spectral:
        out += _pack_spectral(tile.spectral)
    for stream in tile.streams:
        out += varint(len(stream)) + stream
    return bytes(out)


def _version(flags: int, quality: float, *, has_tiles: bool) -> int:
    """The oldest format version that has every feature of a chunk with these ``flags``, ``quality`` and
    tiles (or none)."""
    if has_tiles and quality < LOWEST_TRAINED_QUALITY:
        return EXTRAPOLATED_QUALITY_VERSION
    if flags & FLAG_SPECTRAL:
        return SPECTRAL_VERSION
    if flags & FLAG_SCALE_TABLE:
        return SCALE_TABLE_VERSION
    if flags & FLAG_LOWPASS:
        return LOWPASS_VERSION
    return TEMPORAL_VERSION if flags & FLAG_TEMPORAL else VERSION


def _pack_correction(correction: LowpassCorrection | None) -> bytes:
    if correction is None:
        return b"\0"
    c = correction
    return struct.pack(f"<BB{len(c.scale_index)}B", c.block_log2, c.step_index, *c.scale_index) + varint(len(c.symbols)) + c.symbols


def _unpack_correction(r: Reader, header: ChunkHeader) -> LowpassCorrection | None:
    (block_log2,) = r.unpack("<B", "low-pass correction")
    if block_log2 == 0:
        return None
    block = 1 << block_log2
    if block not in BLOCK_SIZES or header.tile_shape[0] % block or header.tile_shape[1] % block:
        raise BitstreamError(f"corrupt chunk: low-pass block of 2**{block_log2} pixels does not fit the "
                             f"{header.tile_shape[0]}x{header.tile_shape[1]} tiles")
    bands = header.shape[-3]
    step_index, *scale_index = r.unpack(f"<B{bands}B", "low-pass correction")
    return LowpassCorrection(block_log2, step_index, tuple(scale_index),
                             bytes(r.take(r.varint("low-pass correction"), "low-pass correction")))


def _pack_spectral(correction: SpectralCorrection | None) -> bytes:
    if correction is None:
        return b"\0"
    c = correction
    return struct.pack(f"<B{len(c.scale_index)}B", c.step_log2, *c.scale_index) + varint(len(c.symbols)) + c.symbols


def _unpack_spectral(r: Reader, header: ChunkHeader) -> SpectralCorrection | None:
    (step_log2,) = r.unpack("<B", "spectral correction")
    if step_log2 == 0:
        return None
    if step_log2 > 31:
        raise BitstreamError(f"corrupt chunk: spectral coefficient step 2**-{step_log2} out of range")
    scale_index = r.unpack(f"<{header.shape[-3] + 1}B", "spectral correction")
    return SpectralCorrection(step_log2, tuple(scale_index),
                              bytes(r.take(r.varint("spectral correction"), "spectral correction")))


def unpack(data: bytes | bytearray | memoryview | np.ndarray) -> Chunk:
    """Parse and verify a chunk; raises :class:`BitstreamError` on anything that is not a valid chunk."""
    view = memoryview(np.ascontiguousarray(np.frombuffer(data, dtype=np.uint8)) if isinstance(data, np.ndarray) else data).cast("B")
    if len(view) < len(MAGIC) or bytes(view[:4]) != MAGIC:
        raise BitstreamError("not a TerraCodec chunk: magic bytes 'TECZ' missing (foreign or empty data)")
    if len(view) < 12:
        raise BitstreamError(f"truncated chunk: {len(view)} bytes is shorter than any header")
    (stored_crc,) = struct.unpack("<I", view[-4:])
    if crc32(view[:-4]) != stored_crc:
        raise BitstreamError("corrupt or truncated chunk: CRC-32 does not match its contents")
    r = Reader(view[:-4])
    r.take(4, "magic")
    version, flags, dtype_code, ndim = r.unpack("<BBBB", "header")
    if not VERSION <= version <= EXTRAPOLATED_QUALITY_VERSION:
        raise BitstreamError(f"chunk format version {version} is not supported by this reader (supports {VERSION} to "
                             f"{EXTRAPOLATED_QUALITY_VERSION}); upgrade xr-terracodec")
    if flags & ~KNOWN_FLAGS:
        raise BitstreamError(f"corrupt chunk: flags {flags:#04x} do not match format version {version}")
    if dtype_code not in DTYPES:
        raise BitstreamError(f"corrupt chunk: unknown dtype code {dtype_code}")
    if not 3 <= ndim <= 8:
        raise BitstreamError(f"corrupt chunk: {ndim} dimensions (expected 3..8)")
    shape = r.unpack(f"<{ndim}I", "shape")
    if min(shape) < 1 or math.prod(shape) > MAX_ELEMENTS:
        raise BitstreamError(f"corrupt chunk: implausible shape {shape}")
    (name_length,) = r.unpack("<B", "model name")
    try:
        name = bytes(r.take(name_length, "model name")).decode()
    except UnicodeDecodeError as exc:
        raise BitstreamError("corrupt chunk: model name is not UTF-8") from exc
    digest = bytes(r.take(8, "model digest"))
    quality, nodata, dn_scale, tile_h, tile_w, streams = r.unpack(_FIXED, "coding parameters")
    if tile_h < 1 or tile_w < 1 or streams < 1:
        raise BitstreamError(f"corrupt chunk: tile {tile_h}x{tile_w} with {streams} streams")
    if _version(flags, quality, has_tiles=not flags & FLAG_RESIDUAL_ONLY) != version:
        raise BitstreamError(f"corrupt chunk: flags {flags:#04x} and quality {quality:g} do not match format version {version}")
    header = ChunkHeader(tuple(shape), DTYPES[dtype_code], name, digest, quality, nodata, dn_scale, (tile_h, tile_w), streams,
                         bool(flags & FLAG_TEMPORAL), bool(flags & FLAG_SCALE_TABLE))
    mask = None
    if flags & FLAG_MASK:
        packed = r.take(r.varint("mask"), "mask")
        stored = shape[:-3] + shape[-2:] if flags & FLAG_PIXEL_MASK else shape
        n = math.prod(stored)
        inflater = zlib.decompressobj()
        try:
            raw = inflater.decompress(packed, (n + 7) // 8 + 1)
        except zlib.error as exc:
            raise BitstreamError(f"corrupt chunk: no-data mask does not inflate ({exc})") from exc
        if len(raw) != (n + 7) // 8:
            raise BitstreamError("corrupt chunk: no-data mask has the wrong size")
        mask = np.unpackbits(np.frombuffer(raw, np.uint8), count=n).astype(bool).reshape(stored)
        if flags & FLAG_PIXEL_MASK:
            mask = np.broadcast_to(np.expand_dims(mask, -3), shape)
    residual = _unpack_residual(r, header) if flags & FLAG_RESIDUAL else None
    if flags & FLAG_RESIDUAL_ONLY and residual is None:
        raise BitstreamError("corrupt chunk: flagged residual-only without a residual layer")
    tiles = []
    for _ in range(0 if flags & FLAG_RESIDUAL_ONLY else header.tile_count):
        (checksum,) = r.unpack("<I", "tile checksum")
        offsets = tuple(r.signed_varint("tile offset") for _ in range(header.shape[-3]))
        correction = _unpack_correction(r, header) if flags & FLAG_LOWPASS else None
        spectral = _unpack_spectral(r, header) if flags & FLAG_SPECTRAL else None
        streams_of_tile = tuple(bytes(r.take(r.varint("tile stream"), "tile stream")) for _ in range(streams))
        tiles.append(CodedTile(streams_of_tile, checksum, offsets, correction, spectral))
    if r.pos != len(r.data):
        raise BitstreamError(f"corrupt chunk: {len(r.data) - r.pos} unexpected bytes after the last tile")
    return Chunk(header, mask, tiles, residual)


def _unpack_residual(r: Reader, header: ChunkHeader) -> ResidualLayer:
    bands, frames = header.shape[-3], header.tile_grid[0]
    *max_error, reconstruction_crc, result_crc = r.unpack(f"<{bands}HII", "residual layer")
    subbands = 1 + 3 * wavelet.levels_for(header.shape[-2], header.shape[-1])
    shape, n = (frames, bands, subbands), frames * bands * subbands
    scale_index = np.frombuffer(r.take(n * CONTEXTS, "residual scales"), np.uint8).reshape(shape + (CONTEXTS,))
    shift = np.frombuffer(r.take(n, "residual shifts"), np.uint8).reshape(shape)
    predictor = np.frombuffer(r.take(n, "residual predictors"), np.uint8).reshape(shape)
    weight = np.frombuffer(r.take(n, "residual weights"), np.int8).reshape(shape)
    if shift.max(initial=0) > 24:
        raise BitstreamError("corrupt chunk: residual shift out of range")
    high, low, exceptions = (bytes(r.take(r.varint("residual stream"), "residual stream")) for _ in range(3))
    return ResidualLayer(tuple(max_error), reconstruction_crc, result_crc,
                         CodedSubbands(scale_index, shift, predictor, weight, high, low), exceptions)
