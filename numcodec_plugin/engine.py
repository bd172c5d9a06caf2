"""The tensor engine: a chunk array in, TerraCodec bytes out, and back.

Encode, top to bottom:

1. check dtype and band count against the model;
2. find no-data values (kept exactly by a lossless mask) and fill them with the band's mean of
   valid values, so they never reach the network;
3. convert to DN (floats are multiplied by ``dn_scale``) and standardise with the model's statistics;
4. cut every frame into equal tiles whose sides are multiples the architecture needs, padding the
   edges by replication;
5. code the tiles in batches, under ``torch.inference_mode`` and scoped deterministic settings
   (a temporal model codes each tile position as one sequence over the chunk's frames,
   :func:`_unit_order`);
6. measure each tile's DC offsets, low-pass and spectral corrections against the decoder's
   reconstruction (:func:`_with_corrections`);
7. pack header, mask and tile streams (:mod:`numcodec_plugin.bitstream`).

Decode reverses it, checks the model identity and each tile's symbol checksum, rounds and clips
to the dtype, and puts the no-data values back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch

from numcodec_plugin import bitstream, kernels, lowpass, runtime, spectral
from numcodec_plugin.errors import BitstreamError, ConfigurationError, EntropyModelMismatchError, ModelMismatchError
from numcodec_plugin.models.base import MIN_TEMPORAL_FRAMES, AnyCoder, CodedTile
from numcodec_plugin.models.registry import (
    CLASSICAL_MODELS,
    DEFAULT_MODEL,
    HYBRID_MODELS,
    check_quality,
    check_refinement,
    default_quality,
    hybrid_members,
    load_model,
    supports_refinement,
    trained_quality_range,
)
from numcodec_plugin.residual import apply_residual, check_max_error, encode_residual
from numcodec_plugin.scoped_determinism import deterministic_torch
from numcodec_plugin.tile_pool import map_tiles

SUPPORTED_DTYPES = tuple(bitstream.DTYPE_CODES)
DEFAULT_DN_SCALE = 10000.0
DEFAULT_BATCH_SIZE = 16


@dataclass(frozen=True)
class EncodeSettings:
    """Everything that decides the bytes of a chunk (besides the pixels)."""

    model: str | None = None
    quality: float | None = None
    nodata: float | None = None
    dn_scale: float = DEFAULT_DN_SCALE
    #: per-pixel bound in DN (one value or one per band); None = no bound, 0 = lossless
    max_error: float | tuple[float, ...] | None = None
    #: gradient steps that refine each tile's latents before coding (encoder only; see
    #: :mod:`numcodec_plugin.models.latent_refinement`); 0 codes the analysis transform's latents
    refinement_steps: int = 0


def default_nodata(dtype: np.dtype) -> float:
    """Sentinel-2's no-data value 0 for integers, NaN for floats."""
    return float("nan") if np.dtype(dtype).kind == "f" else 0.0


def check_array(shape: tuple[int, ...], dtype: np.dtype, coder_or_bands: AnyCoder | int) -> None:
    """Raise :class:`ConfigurationError` if arrays of ``shape``/``dtype`` cannot be coded by the model."""
    bands = coder_or_bands if isinstance(coder_or_bands, int) else len(coder_or_bands.identity.bands)
    if np.dtype(dtype) not in SUPPORTED_DTYPES:
        raise ConfigurationError(f"dtype {np.dtype(dtype)} is not supported; use one of {', '.join(map(str, SUPPORTED_DTYPES))}")
    if len(shape) < 3:
        raise ConfigurationError(f"chunks must have shape (..., band, y, x); got {len(shape)} dimension(s) {tuple(shape)}")
    if shape[-3] != bands:
        raise ConfigurationError(
            f"chunk has {shape[-3]} bands on axis -3 but the model codes {bands}; chunk the band axis whole "
            f"(e.g. chunks=(1, {bands}, 256, 256)) and give the model's band set in order"
        )
    if not isinstance(coder_or_bands, int) and coder_or_bands.temporal:
        check_frames(shape, coder_or_bands.identity.name)


def check_frames(shape: tuple[int, ...], model: str) -> None:
    """Raise :class:`ConfigurationError` unless chunks of ``shape`` hold enough time steps for temporal ``model``."""
    frames = math.prod(shape[:-3])
    if frames < MIN_TEMPORAL_FRAMES:
        raise ConfigurationError(
            f"{model} is a temporal model: it codes the time steps of a chunk together and needs at least "
            f"{MIN_TEMPORAL_FRAMES} of them on the axes before (band, y, x), but chunks of shape {tuple(shape)} hold {frames}. "
            "Chunk the time axis by several dates (xr_terracodec.encoding(ds, temporal=True, time_chunk=4)) "
            "or choose an image model"
        )


def plan_tiles(height: int, width: int, tile_size: int, multiple: int) -> tuple[int, int]:
    """Equal tile sides (multiples of ``multiple``, at most about ``tile_size``) covering the frame.

    For 264 x 264 with tile 256 that is two 160-pixel tiles per axis rather than one 256 tile plus
    a mostly padded one: padding is spread thinly.
    """
    def side(n: int) -> int:
        count = -(-n // tile_size)
        return -(-n // count // multiple) * multiple if n > multiple else multiple
    return side(height), side(width)


def _to_tiles(frames: np.ndarray, tile: tuple[int, int], mode: str = "edge") -> np.ndarray:
    """(F, C, H, W) -> (F * rows * cols, C, th, tw), padding the bottom/right edges (``np.pad`` mode)."""
    f, c, h, w = frames.shape
    rows, cols = -(-h // tile[0]), -(-w // tile[1])
    padded = np.pad(frames, ((0, 0), (0, 0), (0, rows * tile[0] - h), (0, cols * tile[1] - w)), mode=mode)
    tiles = padded.reshape(f, c, rows, tile[0], cols, tile[1]).transpose(0, 2, 4, 1, 3, 5)
    return np.ascontiguousarray(tiles.reshape(f * rows * cols, c, tile[0], tile[1]))


def _from_tiles(tiles: np.ndarray, frames: int, height: int, width: int) -> np.ndarray:
    n, c, th, tw = tiles.shape
    rows, cols = -(-height // th), -(-width // tw)
    out = tiles.reshape(frames, rows, cols, c, th, tw).transpose(0, 3, 1, 4, 2, 5).reshape(frames, c, rows * th, cols * tw)
    return out[:, :, :height, :width]


def _nodata_mask(array: np.ndarray, nodata: float) -> np.ndarray:
    return np.isnan(array) if math.isnan(nodata) else array == np.asarray(nodata).astype(array.dtype)


def _fill(dn: np.ndarray, mask: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """Replace masked values by the mean of the valid values of the same frame and band."""
    valid = ~mask
    counts = valid.sum(axis=(-2, -1), keepdims=True)
    sums = np.where(valid, dn, 0).sum(axis=(-2, -1), keepdims=True, dtype=np.float64)
    means = np.where(counts > 0, sums / np.maximum(counts, 1), fallback[:, None, None]).astype(np.float32)
    return np.where(mask, means, dn)


def encode(array: np.ndarray, settings: EncodeSettings = EncodeSettings(), *, device: str | None = None,
           batch_size: int = DEFAULT_BATCH_SIZE) -> bytes:
    """Code one chunk of shape (..., bands, y, x) to TerraCodec bytes."""
    return encode_many([array], settings, device=device, batch_size=batch_size)[0]


def encode_many(arrays: list[np.ndarray], settings: EncodeSettings = EncodeSettings(), *, device: str | None = None,
                batch_size: int = DEFAULT_BATCH_SIZE) -> list[bytes]:
    """Code several chunks, batching the tiles of all of them through the network together.

    With ``max_error`` set and no ``quality``, each chunk is coded at a few qualities spread over
    the model's range, and without a learned layer at all, and the smallest result is kept
    (:func:`bounded_quality_candidates`). A hybrid model (:func:`~numcodec_plugin.models.registry.hybrid_members`)
    codes each chunk with each of its members whose range holds the quality asked for and keeps the coding of lowest
    ``lambda * D + R`` (:func:`_chunk_cost`; the members share their lambdas).
    """
    settings = replace(settings, model=settings.model or DEFAULT_MODEL)  # the default may be a hybrid
    if settings.max_error is not None and settings.quality is None:
        trials = [encode_many(arrays, replace(settings, quality=q), device=device, batch_size=batch_size)
                  for q in bounded_quality_candidates(settings.model)]
        trials.append([_encode_residual_only(np.asarray(array), settings) for array in arrays])
        return [min(options, key=len) for options in zip(*trials)]
    if settings.model not in HYBRID_MODELS:
        return [data for data, _ in _encode_costed(arrays, settings, device, batch_size, with_costs=False)]
    check_refinement(settings.model, settings.refinement_steps)
    quality = settings.quality if settings.quality is not None else default_quality(settings.model)
    check_quality(settings.model, quality)
    members = hybrid_members(settings.model, quality)
    codings = [_encode_costed(arrays, replace(settings, model=member, quality=quality, refinement_steps=settings.refinement_steps
                                              if supports_refinement(member) else 0), device, batch_size,
                              with_costs=len(members) > 1)
               for member in members]
    return [min(options, key=lambda option: option[1])[0] for options in zip(*codings)]


def _encode_costed(arrays: list[np.ndarray], settings: EncodeSettings, device: str | None, batch_size: int,
                   with_costs: bool) -> list[tuple[bytes, float]]:
    """Every chunk's bytes coded with ``settings.model`` (not a hybrid) and, ``with_costs``, its
    ``lambda * D + R`` (:func:`_chunk_cost`; NaN otherwise)."""
    quality = settings.quality if settings.quality is not None else default_quality(settings.model)
    check_quality(settings.model, quality)
    check_refinement(settings.model, settings.refinement_steps)
    coder = load_model(settings.model, quality, device)
    prepared = [_prepare(np.asarray(array), settings, coder) for array in arrays]
    rate_lambda = coder.rate_lambda(quality)
    # per chunk: (quality the network coded it at, corrected tiles, standardised reconstruction)
    options = [[(q, tiles, decoded) for tiles, decoded in zip(*_code_chunks(coder, prepared, q, rate_lambda, settings,
                                                                             batch_size))]
               for q in network_qualities(settings.model, quality)]
    costs = [[_chunk_cost(tiles, decoded, p, coder, rate_lambda) for _, tiles, decoded in chunk_options]
             if with_costs or len(options) > 1 else [math.nan]
             for p, chunk_options in zip(prepared, zip(*options))]
    out = []
    for array, p, chunk_options, chunk_costs in zip(arrays, prepared, zip(*options), costs):
        best = int(np.argmin(chunk_costs))
        network_quality, tiles, decoded = chunk_options[best]
        header = bitstream.ChunkHeader(
            shape=p.shape, dtype=p.dtype, model_name=coder.identity.name.split("/")[0],
            model_digest=coder.identity.digest, quality=float(network_quality), nodata=p.nodata,
            dn_scale=float(settings.dn_scale), tile_shape=p.tile_shape, streams_per_tile=coder.streams(network_quality),
            temporal=coder.temporal, scale_table=coder.latent_scale_table,
        )
        layer = None
        if p.max_error is not None:
            reconstruction = _reconstruct(header, decoded, tiles, coder)
            frames_mask = None if p.mask is None else p.mask.reshape(reconstruction.shape)
            layer = encode_residual(np.asarray(array).reshape(reconstruction.shape), reconstruction, frames_mask,
                                    p.max_error, p.nodata)
        out.append((bitstream.pack(bitstream.Chunk(header, p.mask, tiles, layer)), chunk_costs[best]))
    return out


def network_qualities(model: str | None, quality: float) -> list[float]:
    """The qualities the network codes a chunk at when ``quality`` is asked for: that one, and below the
    model's lowest trained quality also the lowest trained one and every whole quality in between,
    highest first. The corrections trade at ``quality``'s lambda in every coding, and :func:`encode_many`
    keeps per chunk the coding of lower ``lambda * D + R``
    (:data:`~numcodec_plugin.models.registry.EXTRAPOLATED_LEVELS` says why). A classical coder's step
    law holds at any lambda: it codes at ``quality`` only."""
    lowest = trained_quality_range(model)[0]
    if quality >= lowest or model in CLASSICAL_MODELS:
        return [quality]
    return [float(q) for q in range(int(lowest), math.floor(quality), -1)] + [float(quality)]


def _code_chunks(coder: AnyCoder, prepared: list[_PreparedChunk], quality: float, rate_lambda: float,
                 settings: EncodeSettings, batch_size: int) -> tuple[list[list[CodedTile]], list[np.ndarray]]:
    """Every prepared chunk's corrected tiles (frame-major) and their standardised reconstruction, the
    network at ``quality`` and the corrections at ``rate_lambda``; the tiles of all chunks of one tile
    shape and span go through the network together."""
    coded: list[list[CodedTile]] = [[] for _ in prepared]
    reconstructed: list[np.ndarray] = [np.empty(0) for _ in prepared]
    orders = [_unit_order(p.shape, p.tile_shape, coder.temporal) for p in prepared]
    groups: dict[tuple[tuple[int, int], int], list[int]] = {}
    for index, (p, (_, span)) in enumerate(zip(prepared, orders)):
        groups.setdefault((p.tile_shape, span), []).append(index)
    # refined latents are chosen per tile against the analysed ones, by the cost after the corrections
    latent_choices = (0, settings.refinement_steps) if settings.refinement_steps else (0,)
    for (_, span), members in groups.items():
        units = np.concatenate([prepared[i].tiles[orders[i][0]] for i in members])
        candidates = [_compress_units(coder, units, span, quality, batch_size, steps, settings.max_error is not None)
                      for steps in latent_choices]
        offset = 0
        for i in members:
            order, _ = orders[i]
            frame_major = np.argsort(order) + offset
            codings = [(_with_corrections([tiles[k] for k in frame_major], decoded[frame_major], prepared[i].tiles,
                                          prepared[i].valid, coder.identity.mean, coder.identity.std, rate_lambda,
                                          coder.lowpass_correction),
                        decoded[frame_major]) for tiles, decoded in candidates]
            coded[i], reconstructed[i] = _cheapest_per_tile(codings, prepared[i].tiles, prepared[i].valid,
                                                            coder.identity.mean, coder.identity.std, rate_lambda)
            offset += len(order)
    return coded, reconstructed


def _encode_residual_only(array: np.ndarray, settings: EncodeSettings) -> bytes:
    """A bounded chunk without learned layer: the residual layer codes the values against zeros.

    Where the learned reconstruction is too coarse to help, this is the cheapest way to meet a
    bound; it reduces to a wavelet coder with spectral prediction (and lossless at ``max_error=0``).
    """
    coder = load_model(settings.model, None, "cpu")
    check_array(array.shape, array.dtype, coder)
    nodata = float(settings.nodata) if settings.nodata is not None else default_nodata(array.dtype)
    frames = array.reshape((-1,) + array.shape[-3:])
    mask = _nodata_mask(frames, nodata)
    max_error = check_max_error(settings.max_error, array.dtype, array.shape[-3])
    header = bitstream.ChunkHeader(
        shape=tuple(array.shape), dtype=array.dtype, model_name=coder.identity.name.split("/")[0],
        model_digest=coder.identity.digest, quality=0.0, nodata=nodata, dn_scale=float(settings.dn_scale),
        tile_shape=plan_tiles(array.shape[-2], array.shape[-1], coder.tile_size, coder.size_multiple),
        streams_per_tile=1,  # no tiles follow
    )
    layer = encode_residual(frames, np.zeros_like(frames), mask if mask.any() else None, max_error, nodata)
    return bitstream.pack(bitstream.Chunk(header, mask.reshape(array.shape) if mask.any() else None, [], layer))


def bounded_quality_candidates(model: str | None) -> list[float]:
    """Qualities tried per chunk under an error bound: the three lowest, the middle and the highest.

    Low qualities win when the learned layer is coarse relative to the bound (the residual layer
    then carries the detail more cheaply); high ones when the network reconstructs finely.
    """
    lo, hi = trained_quality_range(model)
    return sorted({float(q) for q in (lo, lo + 1, lo + 2, round((lo + hi) / 2), hi) if q <= hi})


OFFSET_STEP = 2.0  # DN per unit of a tile's stored DC offset


def _error_dn(decoded: np.ndarray, original: np.ndarray, std: tuple[float, ...]) -> np.ndarray:
    """A tile's (bands, th, tw) float64 reconstruction error in DN, from its standardised reconstruction
    and original (in place, in the order of ``(decoded - original) * std``)."""
    error = decoded.astype(np.float64)
    error -= original
    error *= np.asarray(std, dtype=np.float64)[:, None, None]
    return error


def _original_dn(original: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """A standardised (bands, th, tw) tile back in DN, float64."""
    return original * np.asarray(std, dtype=np.float64)[:, None, None] + np.asarray(mean, dtype=np.float64)[:, None, None]


def _tile_dn(decoded: np.ndarray, tile: CodedTile, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """One tile's reconstruction in DN as the decoder computes it from the network's standardised output:
    times the band deviations plus the means, minus the DC offsets and the low-pass field (float32, in
    that order), then the spectral map (whole DN, float64). The encoder measures its corrections on it.

    ``decoded`` is never modified; steps that change nothing (unit deviations and zero means, as the
    transform coder's; zero offsets) are skipped, not computed: ``x * 1 + 0`` is ``x`` in IEEE arithmetic
    (up to the sign of a zero, which rounding to whole DN ignores)."""
    dn = decoded
    if any(v != 1 for v in std) or any(v != 0 for v in mean):
        dn = decoded * np.asarray(std, dtype=np.float32)[:, None, None] + np.asarray(mean, dtype=np.float32)[:, None, None]
    if any(tile.offsets):
        dn = dn - np.asarray(tile.offsets, dtype=np.float32)[:, None, None] * OFFSET_STEP
    if tile.correction is not None:
        dn = dn - lowpass.correction_field(tile.correction, dn.shape[0], dn.shape[1:])  # float32, as dn
    if tile.spectral is not None:
        dn = spectral.apply(tile.spectral, dn, spectral.centre_of(mean))
    return dn


def _with_corrections(tiles: list[CodedTile], decoded: np.ndarray, originals: np.ndarray, valid: np.ndarray,
                      mean: tuple[float, ...], std: tuple[float, ...], rate_lambda: float | None,
                      lowpass_correction: bool = True) -> list[CodedTile]:
    """Tiles carrying the engine's corrections of the learned reconstruction, measured against the originals.

    * DC offsets: per band, the mean error (DN) over the tile's valid pixels. A small or briefly
      trained network reconstructs a band's level with a bias of up to a few hundred DN; two bytes
      per band and tile remove it.
    * The low-pass correction (:mod:`numcodec_plugin.lowpass`) of what error remains, where the
      model states its rate-distortion trade-off (``rate_lambda``), takes the correction
      (``lowpass_correction``) and a correction pays for itself.
    * The spectral correction (:mod:`numcodec_plugin.spectral`) of what remains after both, on the
      same terms.

    Tiles are measured side by side in the tile pool.
    """

    def corrected(k: int) -> CodedTile:
        error = _error_dn(decoded[k], originals[k], std)
        weight = valid[k, 0]
        count = int(weight.sum())
        mean_error = (error if count == weight.size else error * weight).sum(axis=(-2, -1)) / max(count, 1)
        steps = np.rint(mean_error / OFFSET_STEP).astype(np.int64)
        error -= steps[:, None, None] * OFFSET_STEP
        tile = replace(tiles[k], offsets=tuple(int(v) for v in steps))
        if rate_lambda is None:
            return tile
        if lowpass_correction:
            tile = replace(tile, correction=lowpass.fit(error, weight, rate_lambda))
        correction = spectral.fit(_tile_dn(decoded[k], tile, mean, std), _original_dn(originals[k], mean, std), weight,
                                  spectral.centre_of(mean), rate_lambda)
        return replace(tile, spectral=correction)

    return map_tiles(corrected, range(len(tiles)))


def _coded_cost(tile: CodedTile, decoded: np.ndarray, original: np.ndarray, valid: np.ndarray,
                mean: tuple[float, ...], std: tuple[float, ...], rate_lambda: float) -> float:
    """``rate_lambda * D + R`` of one corrected tile as the decoder will see it, the trade-off the network
    was trained for: D the mean squared error in reflectance units over the valid pixels after all the
    corrections (:func:`_tile_dn`), R the tile's bytes in the chunk
    (:func:`~numcodec_plugin.bitstream.pack_tile`) in bits per valid pixel and band."""
    error = _tile_dn(decoded, tile, mean, std) - _original_dn(original, mean, std)
    values = max(int(valid.sum()), 1) * error.shape[0]
    squared = float(np.sum(error * error * valid)) / values
    bits = 8 * len(bitstream.pack_tile(tile, error.shape[0], lowpass=True, spectral=True)) / values
    return rate_lambda * squared / lowpass.DN_PER_REFLECTANCE_SQUARED + bits


def _chunk_cost(tiles: list[CodedTile], decoded: np.ndarray, prepared: _PreparedChunk, coder: AnyCoder,
                rate_lambda: float) -> float:
    """The summed :func:`_coded_cost` of a chunk's corrected tiles (frame-major) and their reconstruction."""
    return sum(_coded_cost(tile, decoded[k], prepared.tiles[k], prepared.valid[k, 0], coder.identity.mean,
                           coder.identity.std, rate_lambda) for k, tile in enumerate(tiles))


def _cheapest_per_tile(codings: list[tuple[list[CodedTile], np.ndarray]], originals: np.ndarray, valid: np.ndarray,
                       mean: tuple[float, ...], std: tuple[float, ...],
                       rate_lambda: float) -> tuple[list[CodedTile], np.ndarray]:
    """Of several codings of the same tiles (corrected tiles and their standardised reconstruction each),
    per tile the one of lowest :func:`_coded_cost` (the first on a tie); the coded tiles and the
    reconstruction that goes with them. One coding is returned as it is."""
    if len(codings) == 1:
        return codings[0]
    costs = [map_tiles(lambda k: _coded_cost(tiles[k], decoded[k], originals[k], valid[k, 0], mean, std, rate_lambda),
                       range(len(tiles))) for tiles, decoded in codings]
    choice = np.argmin(costs, axis=0)
    return ([codings[c][0][k] for k, c in enumerate(choice)],
            np.stack([codings[c][1][k] for k, c in enumerate(choice)]))


def _unit_order(shape: tuple[int, ...], tile_shape: tuple[int, int], temporal: bool) -> tuple[np.ndarray, int]:
    """The order in which a chunk's frame-major tiles are coded, and the frames one coding unit spans.

    An image coder codes every tile on its own (span 1, tiles in stored order). A temporal coder
    codes each tile position as one sequence over the chunk's frames (position-major order).
    """
    frames = math.prod(shape[:-3])
    positions = -(-shape[-2] // tile_shape[0]) * -(-shape[-1] // tile_shape[1])
    index = np.arange(frames * positions)
    if not temporal:
        return index, 1
    return index.reshape(frames, positions).T.reshape(-1), frames


def _compress_units(coder: AnyCoder, tiles: np.ndarray, span: int, quality: float, batch_size: int,
                    refinement_steps: int, exact_reconstruction: bool) -> tuple[list[CodedTile], np.ndarray]:
    """Code tiles in unit order (``span`` tiles per unit), in batches of units; returns the coded tiles
    and the decoder's (standardised) reconstruction, both in unit order. Image coders refine each
    tile's latents by ``refinement_steps`` steps (temporal ones take none: :func:`check_refinement`).
    The residual layer of an error-bounded chunk needs the reconstruction bit for bit
    (``exact_reconstruction``); the corrections of a lossy chunk only need it close, so an image coder
    on a GPU may synthesise it there (:meth:`~numcodec_plugin.models.base.TileCoder.compress`).

    Batch size, device slots and OOM halving follow :mod:`numcodec_plugin.runtime`.
    """
    device = next(coder.network.parameters()).device

    def run(start: int, stop: int) -> tuple[list[CodedTile], np.ndarray]:
        x = torch.from_numpy(tiles[start * span:stop * span]).to(device)
        if coder.temporal:
            sequences, x_hat = coder.compress(x.unflatten(0, (stop - start, span)), quality)
            coded, x_hat = [tile for sequence in sequences for tile in sequence], x_hat.flatten(0, 1)
        else:
            coded, x_hat = coder.compress(x, quality, refinement_steps, exact_reconstruction)
        return coded, x_hat.float().cpu().numpy()

    pixels = span * tiles.shape[-2] * tiles.shape[-1]
    with deterministic_torch(), torch.inference_mode():
        batches = runtime.run_batches(device, len(tiles) // span, batch_size, pixels, run)
    return [tile for coded, _ in batches for tile in coded], np.concatenate([x_hat for _, x_hat in batches])


@dataclass(frozen=True)
class _PreparedChunk:
    shape: tuple[int, ...]
    dtype: np.dtype
    nodata: float
    mask: np.ndarray | None
    tile_shape: tuple[int, int]
    tiles: np.ndarray
    valid: np.ndarray  # (tiles, 1, th, tw) bool: pixels inside the frame and not no-data
    max_error: tuple[int, ...] | None


def _prepare(array: np.ndarray, settings: EncodeSettings, coder: AnyCoder) -> _PreparedChunk:
    """Steps 1-4 of the module docstring for one chunk."""
    check_array(array.shape, array.dtype, coder)
    nodata = float(settings.nodata) if settings.nodata is not None else default_nodata(array.dtype)
    frames = array.reshape((-1,) + array.shape[-3:])
    mask = _nodata_mask(frames, nodata)
    dn = frames.astype(np.float32) * (settings.dn_scale if array.dtype.kind == "f" else 1.0)
    if array.dtype.kind == "f" and not np.isfinite(dn[~mask]).all():
        raise ConfigurationError("float chunk holds inf or NaN values that are not its no-data value")
    mean = np.asarray(coder.identity.mean, dtype=np.float32)
    std = np.asarray(coder.identity.std, dtype=np.float32)
    has_nodata = bool(mask.any())
    if has_nodata:
        dn = _fill(dn, mask, mean)
    standardised = (dn - mean[:, None, None]) / std[:, None, None]
    tile_shape = plan_tiles(array.shape[-2], array.shape[-1], coder.tile_size, coder.size_multiple)
    max_error = None if settings.max_error is None else check_max_error(settings.max_error, array.dtype, array.shape[-3])
    return _PreparedChunk(tuple(array.shape), array.dtype, nodata, mask.reshape(array.shape) if has_nodata else None,
                          tile_shape, _to_tiles(standardised, tile_shape),
                          _to_tiles((~mask).all(axis=1, keepdims=True), tile_shape, mode="constant"), max_error)


def decode(data: bytes | memoryview | np.ndarray, *, device: str | None = None, batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
    """Decode TerraCodec bytes to an array of the original shape and dtype."""
    return decode_many([data], device=device, batch_size=batch_size)[0]


def decode_many(buffers: list[bytes | memoryview | np.ndarray], *, device: str | None = None,
                batch_size: int = DEFAULT_BATCH_SIZE) -> list[np.ndarray]:
    """Decode several chunks; tiles of chunks coded with the same model and tile shape share batches."""
    chunks = [bitstream.unpack(data) for data in buffers]
    results: list[np.ndarray | None] = [None] * len(chunks)
    groups: dict[tuple, list[int]] = {}
    for index, chunk in enumerate(chunks):
        h = chunk.header
        if chunk.residual_only:  # needs no model
            frames = (math.prod(h.shape[:-3]),) + h.shape[-3:]
            results[index] = _finish_values(chunk, np.zeros(frames, h.dtype))
            continue
        groups.setdefault((h.model_name, h.quality, h.tile_shape, h.temporal, h.scale_table), []).append(index)
    for (name, quality, tile_shape, temporal, scale_table), members in groups.items():
        coder = load_model(name, quality, device)
        for index in members:
            _check_identity(chunks[index].header, coder)
        orders = {index: _unit_order(chunks[index].header.shape, tile_shape, temporal) for index in members}
        for span in sorted({span for _, span in orders.values()}):
            spanning = [index for index in members if orders[index][1] == span]
            tiles = [chunks[index].tiles[k] for index in spanning for k in orders[index][0]]
            decoded = _decompress_units(coder, tiles, span, tile_shape, quality, scale_table, batch_size)
            offset = 0
            for index in spanning:
                order, _ = orders[index]
                restore = np.argsort(order)
                in_order = bool((restore == np.arange(len(order))).all())  # then a view, not a copy
                results[index] = _finish(chunks[index], decoded[offset:offset + len(order)] if in_order
                                         else decoded[restore + offset], coder)
                offset += len(order)
    return results


def _check_identity(header: bitstream.ChunkHeader, coder: AnyCoder) -> None:
    if header.scale_table and not coder.latent_scale_table:
        raise BitstreamError(f"corrupt chunk: flagged as coded against the scale table, which {coder.identity.name} does not use")
    if coder.identity.digest != header.model_digest:
        raise ModelMismatchError(
            f"chunk was coded by {header.model_name} with weights {header.model_digest.hex()} but the available "
            f"{coder.identity.name} has weights {coder.identity.digest.hex()}; install the model version that wrote it"
        )
    if header.shape[-3] != len(coder.identity.bands):
        raise ModelMismatchError(f"chunk has {header.shape[-3]} bands but {header.model_name} codes {len(coder.identity.bands)}")
    if header.temporal != coder.temporal:
        kind = "a temporal" if header.temporal else "an image"
        raise ModelMismatchError(f"chunk is {kind} chunk but {header.model_name} here is not {kind} model")


def _decompress_units(coder: AnyCoder, tiles: list[CodedTile], span: int, tile_shape: tuple[int, int], quality: float,
                      scale_table: bool, batch_size: int) -> np.ndarray:
    """Decode tiles in unit order (``span`` per unit) in batches of units, verifying every tile's symbol checksum.

    Batch size, device slots and OOM halving follow :mod:`numcodec_plugin.runtime`.
    """
    device = next(coder.network.parameters()).device

    def run(start: int, stop: int) -> np.ndarray:
        batch = tiles[start * span:stop * span]
        streams = [t.streams for t in batch]
        if coder.temporal:
            x_hat, sequences = coder.decompress([streams[k:k + span] for k in range(0, len(streams), span)], tile_shape, quality,
                                                scale_table)
            x_hat, checksums = x_hat.flatten(0, 1), [c for sequence in sequences for c in sequence]
        else:
            x_hat, checksums = coder.decompress(streams, tile_shape, quality, scale_table)
        for index, (tile, checksum) in enumerate(zip(batch, checksums)):
            if tile.checksum != checksum:
                raise EntropyModelMismatchError(
                    f"tile {start * span + index} decodes to other symbols than were encoded "
                    f"(checksum {checksum:08x} != {tile.checksum:08x}): the entropy model here disagrees with the "
                    "encoder's (device, library version or weights) or the chunk is corrupt"
                )
        return x_hat.float().cpu().numpy()

    with deterministic_torch(), torch.inference_mode():
        decoded = runtime.run_batches(device, len(tiles) // span, batch_size, span * tile_shape[0] * tile_shape[1], run)
    return np.concatenate(decoded) if len(decoded) > 1 else decoded[0]


def _finish(chunk: bitstream.Chunk, tiles: np.ndarray, coder: AnyCoder) -> np.ndarray:
    """The chunk from its decoded tiles: reconstruction, error-bound residual, exact no-data."""
    return _finish_values(chunk, _reconstruct(chunk.header, tiles, chunk.tiles, coder))


def _finish_values(chunk: bitstream.Chunk, result: np.ndarray) -> np.ndarray:
    """Residual layer and exact no-data on top of a (frames, bands, y, x) reconstruction."""
    h = chunk.header
    if chunk.residual is not None:
        result = apply_residual(result, chunk.residual)
    result = result.reshape(h.shape)
    if chunk.mask is not None:
        result[chunk.mask] = h.nodata
    return result


def _reconstruct(header: bitstream.ChunkHeader, decoded: np.ndarray, coded: list[CodedTile], coder: AnyCoder) -> np.ndarray:
    """(frames, bands, y, x) learned reconstruction in the chunk's dtype: standardised tiles to DN with
    each tile's corrections (:func:`_tile_dn`), tiles side by side in the tile pool."""
    tiles = np.empty(decoded.shape, dtype=header.dtype)

    def reconstruct_tile(k: int) -> None:
        _to_dtype(_tile_dn(decoded[k], coded[k], coder.identity.mean, coder.identity.std), header, tiles[k])

    map_tiles(reconstruct_tile, range(len(coded)))
    return _from_tiles(tiles, math.prod(header.shape[:-3]), header.shape[-2], header.shape[-1])


def _to_dtype(dn: np.ndarray, header: bitstream.ChunkHeader, out: np.ndarray) -> None:
    """Write DN (float32 or float64, as :func:`_tile_dn` gives) rounded and clipped to the dtype (floats:
    divided by dn_scale) into ``out``; valid values never equal no-data (integers: one compiled pass,
    :func:`numcodec_plugin.kernels.round_into`)."""
    dtype, nodata = header.dtype, header.nodata
    if dtype.kind == "f":
        out[...] = dn / header.dn_scale
        if not math.isnan(nodata):
            out[out == dtype.type(nodata)] = np.nextafter(dtype.type(nodata), dtype.type(np.inf))
        return
    info = np.iinfo(dtype)
    kernels.round_into(dn, out, float(info.min), float(info.max), nodata if info.min <= nodata <= info.max else math.nan)
