"""Distortion metrics on DN = reflectance x 10000, their aggregation, and the Bjontegaard delta rate.

Conventions:

* rate: coded bits per pixel per band (bits / (bands x pixels));
* PSNR: ``10 log10(peak^2 / MSE)`` with the MSE over all bands and pixels of a tile, nothing
  clipped; peak 10000 (reflectance 1.0) is the headline, peak 65535 (the uint16 range, the
  TerraCodec paper's convention) is the same number shifted by 20 log10(6.5535) = 16.33 dB;
* SAM: spectral angle between original and decoded 12-band pixel vectors, in degrees, over
  the pixels where both vectors are non-zero;
* over several tiles: rate = total bits / total band-pixels, PSNR = mean of the tiles' PSNRs,
  SAM = mean over all pixels, maximum absolute error = the largest of any tile.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.interpolate import PchipInterpolator

from xr_terracodec.metrics import REFLECTANCE_PEAK, UINT16_PEAK, psnr, spectral_angles

#: PSNR interval of the BD-rates (peak 10000), intersected with the curves' common range.
BD_PSNR_RANGE = (30.0, 50.0)


@dataclass(frozen=True)
class TileResult:
    """Rate and distortion of one coded tile."""

    bits: int
    samples: int  # bands x pixels
    mse: float
    angle_sum: float  # sum of spectral angles, degrees
    angle_count: int
    max_abs_error: float


def evaluate(original: np.ndarray, decoded: np.ndarray, bits: int) -> TileResult:
    """Rate and distortion of ``decoded`` against ``original`` (both (band, y, x)) coded in ``bits``."""
    if decoded.shape != original.shape:
        raise ValueError(f"decoded shape {decoded.shape} differs from the original's {original.shape}")
    error = decoded.astype(np.float64) - original.astype(np.float64)
    angles = spectral_angles(original, decoded)
    return TileResult(bits, original.size, float(np.mean(error ** 2)), float(angles.sum()), angles.size,
                      float(np.abs(error).max()))


@dataclass(frozen=True)
class RatePoint:
    """One codec setting's rate and distortion over all tiles."""

    codec: str
    setting: str
    bpp: float
    psnr: float  # peak 10000
    sam: float
    max_abs_error: float

    @property
    def psnr_uint16(self) -> float:
        """PSNR with peak 65535."""
        return self.psnr + 20.0 * math.log10(UINT16_PEAK / REFLECTANCE_PEAK)


def aggregate(codec: str, setting: str, results: Sequence[TileResult]) -> RatePoint:
    """Combine the tiles' results as described in the module docstring."""
    return RatePoint(
        codec=codec,
        setting=setting,
        bpp=sum(r.bits for r in results) / sum(r.samples for r in results),
        psnr=float(np.mean([psnr(r.mse) for r in results])),
        sam=sum(r.angle_sum for r in results) / max(1, sum(r.angle_count for r in results)),
        max_abs_error=max(r.max_abs_error for r in results),
    )


def pareto_front(points: Sequence[RatePoint]) -> list[RatePoint]:
    """The points that no other point beats in both rate and PSNR, by increasing rate."""
    front: list[RatePoint] = []
    for point in sorted(points, key=lambda p: (p.bpp, -p.psnr)):
        if math.isfinite(point.psnr) and (not front or point.psnr > front[-1].psnr):
            front.append(point)
    return front


@dataclass(frozen=True)
class BdRate:
    """Average rate difference of ``test`` against ``anchor`` at equal PSNR over ``psnr_range``."""

    test: str
    anchor: str
    percent: float | None  # None where the curves share no PSNR interval in BD_PSNR_RANGE
    psnr_range: tuple[float, float] | None


def bd_rate(test: Sequence[RatePoint], anchor: Sequence[RatePoint],
            psnr_limits: tuple[float, float] = BD_PSNR_RANGE) -> BdRate:
    """Bjontegaard delta rate (%, negative = fewer bits than the anchor) with PCHIP interpolation.

    Log-rate is interpolated as a function of PSNR over each codec's Pareto front and integrated
    over the PSNR interval both curves cover, intersected with ``psnr_limits``.
    """
    curves = [pareto_front(points) for points in (test, anchor)]
    names = (test[0].codec, anchor[0].codec)
    if min(len(curve) for curve in curves) < 2:
        return BdRate(*names, None, None)
    low = max([psnr_limits[0]] + [curve[0].psnr for curve in curves])
    high = min([psnr_limits[1]] + [curve[-1].psnr for curve in curves])
    if high <= low:
        return BdRate(*names, None, None)
    mean_log_rate = [
        PchipInterpolator([p.psnr for p in curve], np.log([p.bpp for p in curve])).integrate(low, high) / (high - low)
        for curve in curves
    ]
    return BdRate(*names, float((math.exp(mean_log_rate[0] - mean_log_rate[1]) - 1.0) * 100.0), (low, high))
