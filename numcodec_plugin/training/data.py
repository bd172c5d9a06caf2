"""Training data: Sentinel-2 images from ``../shared/data/s2`` as random augmented crops.

Every image with the 12 L2A bands is used (L1C images contribute their 12 shared bands, B10
dropped). The README's suggested validation split is held out by :data:`VALIDATION`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from numcodec_plugin.models.bands import L2A_BANDS

VALIDATION: frozenset[str] = frozenset(
    {"l2a_timeseries/ssl4eo_0121563", "l2a_scenes/majortom_199U_1099R", "l2a_patches/hydro_10000", "l1c_scenes/dsen2_T49JGM"}
)


def _l2a_arrays(root: Path, split: str, pattern: str) -> list[tuple[str, np.ndarray]]:
    """(key, (..., 12, H, W)) of every file of ``split`` matching ``pattern`` that holds the 12 L2A bands."""
    arrays = []
    for path in sorted(root.glob(pattern)):
        key = f"{path.parent.name}/{path.stem}"
        if (key in VALIDATION) != (split == "validation"):
            continue
        archive = np.load(path)
        bands = [str(b) for b in archive["bands"]]
        if set(L2A_BANDS) <= set(bands):
            data = archive["data"]
            arrays.append((key, np.ascontiguousarray(data[..., [bands.index(b) for b in L2A_BANDS], :, :])))
    if not arrays:
        raise FileNotFoundError(f"no 12-band Sentinel-2 data matching {pattern} for split {split!r} under {root}")
    return arrays


def load_images(root: Path, split: str, min_size: int = 0) -> list[tuple[str, np.ndarray]]:
    """(name, (12, H, W) uint16) for every image of ``split`` ("train" or "validation") under ``root``."""
    images = []
    for key, data in _l2a_arrays(root, split, "*/*.npz"):
        for i, image in enumerate(data.reshape((-1,) + data.shape[-3:])):
            if min(image.shape[-2:]) >= min_size:
                images.append((f"{key}[{i}]", image))
    return images


@dataclass
class BandStatistics:
    mean: np.ndarray
    std: np.ndarray
    rotation: np.ndarray  # orthonormal KLT of the standardised bands, rows = components

    def to_json(self) -> str:
        return json.dumps({k: np.asarray(v).tolist() for k, v in self.__dict__.items()})


def band_statistics(images: list[tuple[str, np.ndarray]], samples_per_image: int = 20000, seed: int = 0) -> BandStatistics:
    """Per-band mean/std and the spectral KLT, from a pixel sample of every image."""
    rng = np.random.default_rng(seed)
    pixels = []
    for _, image in images:
        flat = image.reshape(image.shape[0], -1)
        pixels.append(flat[:, rng.integers(0, flat.shape[1], samples_per_image)].astype(np.float64))
    pixels = np.concatenate(pixels, axis=1)
    mean, std = pixels.mean(1), pixels.std(1)
    standardised = (pixels - mean[:, None]) / std[:, None]
    eigenvalues, eigenvectors = np.linalg.eigh(np.cov(standardised))
    rotation = eigenvectors[:, np.argsort(eigenvalues)[::-1]].T
    return BandStatistics(mean.astype(np.float32), std.astype(np.float32), rotation.astype(np.float32))


def _augment(tile: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random rotation by a multiple of 90 degrees and a random flip of the last two axes."""
    tile = np.rot90(tile, rng.integers(4), axes=(-2, -1))
    return tile[..., ::-1] if rng.integers(2) else tile


class CropSampler:
    """Random crops with random flips and 90-degree rotations, area-weighted over images."""

    def __init__(self, images: list[tuple[str, np.ndarray]], crop: int, seed: int = 0) -> None:
        self.images = [image for _, image in images if min(image.shape[-2:]) >= crop]
        areas = np.array([image.shape[-1] * image.shape[-2] for image in self.images], dtype=np.float64)
        self.weights = areas / areas.sum()
        self.crop = crop
        self.rng = np.random.default_rng(seed)

    def batch(self, size: int) -> np.ndarray:
        out = np.empty((size, self.images[0].shape[0], self.crop, self.crop), dtype=np.float32)
        for i, k in enumerate(self.rng.choice(len(self.images), size=size, p=self.weights)):
            image = self.images[k]
            y = self.rng.integers(0, image.shape[1] - self.crop + 1)
            x = self.rng.integers(0, image.shape[2] - self.crop + 1)
            out[i] = _augment(image[:, y:y + self.crop, x:x + self.crop], self.rng)
        return out
