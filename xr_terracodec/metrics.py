"""Distortion metrics on DN = reflectance x 10000, shared by the accessor, the converter and the benchmarks.

* PSNR: ``10 log10(peak^2 / MSE)``, MSE over all bands and pixels, nothing clipped; peak 10000
  (reflectance 1.0) is our headline, peak 65535 (uint16 range) is TerraCodec's convention.
* SAM: angle between original and decoded pixel spectra, degrees, over pixels where neither
  spectrum is all zero.
"""

from __future__ import annotations

import math

import numpy as np

REFLECTANCE_PEAK = 10000.0
UINT16_PEAK = 65535.0


def mse(original: np.ndarray, decoded: np.ndarray) -> float:
    """Mean squared error in float64."""
    return float(np.mean((np.asarray(decoded, np.float64) - np.asarray(original, np.float64)) ** 2))


def psnr(mse_value: float, peak: float = REFLECTANCE_PEAK) -> float:
    """Peak signal-to-noise ratio in dB from a mean squared error (infinite for a lossless result)."""
    return math.inf if mse_value == 0 else 10.0 * math.log10(peak * peak / mse_value)


def spectral_angles(original: np.ndarray, decoded: np.ndarray, band_axis: int = 0,
                    valid: np.ndarray | None = None) -> np.ndarray:
    """Per-pixel spectral angles in degrees; ``valid`` (pixel shape, without the band axis) selects pixels."""
    bands = original.shape[band_axis]
    a = np.moveaxis(np.asarray(original, np.float64), band_axis, -1).reshape(-1, bands)
    b = np.moveaxis(np.asarray(decoded, np.float64), band_axis, -1).reshape(-1, bands)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    keep = norms > 0 if valid is None else (norms > 0) & np.asarray(valid).reshape(-1)
    cosine = np.clip((a[keep] * b[keep]).sum(axis=1) / norms[keep], -1.0, 1.0)
    return np.degrees(np.arccos(cosine))
