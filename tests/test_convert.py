"""terracodec convert: STAC, GeoTIFF and Zarr sources into resumable archives, checked value by value.

The test model is deterministic, so an archive must hold exactly what ``da.tec.roundtrip`` gives
for the source (the same chunks, edge chunks padded with no-data as Zarr does).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

pytest.importorskip("pystac_client")
pytest.importorskip("odc.stac")
pytestmark = [pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning"),
              pytest.mark.filterwarnings("ignore:The 'shapely.ops.transform:DeprecationWarning")]

from numcodec_plugin import ConfigurationError  # noqa: E402
from numcodec_plugin.models.bands import L2A_BANDS  # noqa: E402
from numcodec_plugin.models.registry import load_model  # noqa: E402
from tests._stac_api import ACQUISITIONS, EPSG, ORIGIN, free_port, scl_of, series, stac_api  # noqa: E402,F401
from tests.conftest import TEST_MODEL  # noqa: E402
from xr_terracodec.cli import main  # noqa: E402
from xr_terracodec.convert import convert  # noqa: E402

MAIN_TIMES = np.array([acq.datetime.rstrip("Z") for acq in ACQUISITIONS if acq.collection == "sentinel-2-l2a"],
                      dtype="datetime64[ns]")
OPTIONS = {"model": TEST_MODEL, "progress": False}


def expected(values: np.ndarray) -> np.ndarray:
    """What a TerraCodec archive of (time, band, y, x) ``values`` must give back."""
    da = xr.DataArray(values, dims=("time", "band", "y", "x"), coords={"band": list(L2A_BANDS)})
    return da.tec.roundtrip(model=TEST_MODEL).values


def snapshot(path: Path) -> dict[str, bytes] | None:
    """Every file under ``path`` with its bytes (None if ``path`` does not exist)."""
    if not path.exists():
        return None
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def assert_same_archive(a: Path | str, b: Path | str, same_sources: bool = True) -> None:
    """Same values, coordinates and record (the list of sources differs after an append)."""
    left, right = xr.open_zarr(a, consolidated=True), xr.open_zarr(b, consolidated=True)
    xr.testing.assert_identical(left.drop_attrs().load(), right.drop_attrs().load())
    record_a, record_b = dict(left.attrs["terracodec"]), dict(right.attrs["terracodec"])
    if not same_sources:
        del record_a["sources"], record_b["sources"]
    assert record_a == record_b


def test_stac_search_to_archive_and_back(stac_api: str, series: np.ndarray, tmp_path: Path) -> None:
    dest = tmp_path / "s2.zarr"
    summary = convert(stac_api, dest, masks=["scl"], **OPTIONS)

    ds = xr.open_zarr(dest, consolidated=True)
    np.testing.assert_array_equal(ds["reflectance"].values, expected(series))
    np.testing.assert_array_equal(ds["scl"].values, np.stack([scl_of(frame) for frame in series]))
    np.testing.assert_array_equal(ds["time"].values, MAIN_TIMES)
    assert ds["band"].values.tolist() == list(L2A_BANDS)
    assert "UTM zone 33N" in ds["spatial_ref"].attrs["crs_wkt"] and int(ds["spatial_ref"]) == EPSG
    assert float(ds["x"][0]) == ORIGIN[0] + 5

    record = ds.attrs["terracodec"]
    assert record["state"] == "complete" and record["done"] == [0, 1, 2, 3]
    assert record["layout"]["codec"]["model"] == TEST_MODEL
    assert record["layout"]["codec"]["digest"] == load_model(TEST_MODEL, None, "cpu").identity.digest.hex()
    assert record["sources"][0]["source"]["type"] == "stac"
    assert len(record["sources"][0]["source"]["items"]) == 4

    array = zarr.open_group(dest, mode="r")["reflectance"]
    assert array.serializer.to_dict()["name"] == "terracodec"
    assert array.shards == (1, 12, 512, 512) and array.chunks == (1, 12, 256, 256)
    assert summary.written == summary.time_steps == 4
    assert summary.ratio > 2 and summary.sampled_chunks == 3 and np.isfinite(summary.psnr_db)


def _write_geotiff(path: Path, cube: np.ndarray, descriptions: list[str] | None) -> None:
    import rasterio
    from rasterio.transform import from_origin

    profile = {"driver": "GTiff", "width": cube.shape[-1], "height": cube.shape[-2], "count": len(cube),
               "dtype": "uint16", "crs": f"EPSG:{EPSG}", "transform": from_origin(*ORIGIN, 10, 10), "nodata": 0,
               "tiled": True, "compress": "deflate"}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(cube)
        for index, name in enumerate(descriptions or [], start=1):
            dst.set_band_description(index, name)


def test_geotiffs_one_file_per_date_to_zarr_v2(series: np.ndarray, tmp_path: Path) -> None:
    folder = tmp_path / "tifs"
    folder.mkdir()
    from xr_terracodec.band_names import BAND_ALIASES

    # named bands in another order plus one the model does not code; then unnamed bands in model order
    names = [BAND_ALIASES[band][0] for band in reversed(L2A_BANDS)] + ["cirrus"]
    _write_geotiff(folder / "S2_20230614T101559.tif", np.concatenate([series[0][::-1], series[0][:1]]), names)
    _write_geotiff(folder / "S2_2023-06-24.tif", series[1], None)

    dest = tmp_path / "v2.zarr"
    assert main(["convert", str(folder), str(dest), "--model", TEST_MODEL, "--zarr-format", "2", "--no-progress"]) == 0
    ds = xr.open_zarr(dest)
    np.testing.assert_array_equal(ds["reflectance"].values, expected(series[:2]))
    np.testing.assert_array_equal(ds["time"].values, np.array(["2023-06-14T10:15:59", "2023-06-24"], dtype="datetime64[ns]"))
    assert (dest / ".zgroup").is_file() and (dest / ".zmetadata").is_file()
    assert json.loads((dest / "reflectance" / ".zarray").read_text())["compressor"]["id"] == "terracodec"


@pytest.mark.filterwarnings("ignore:Consolidated metadata is currently not part:UserWarning")
def test_zarr_store_with_other_names_to_an_fsspec_destination(series: np.ndarray, tmp_path: Path) -> None:
    source = tmp_path / "other-tool.zarr"
    order = [5, 0, 11, 3, 1, 2, 4, 6, 7, 8, 9, 10]
    xr.Dataset(
        {"bands": (("time", "b", "lat", "lon"), series[:2, order]), "other": (("time",), [1, 2])},
        coords={"b": np.array([L2A_BANDS[i].lower() for i in order], dtype=object), "time": MAIN_TIMES[:2]},
    ).to_zarr(source, zarr_format=3)

    dest = f"memory://terracodec-tests/{time.time_ns()}.zarr"
    summary = convert(source, dest, **OPTIONS)
    ds = xr.open_zarr(dest)
    assert ds["reflectance"].dims == ("time", "band", "lat", "lon")
    np.testing.assert_array_equal(ds["reflectance"].values, expected(series[:2]))
    assert summary.stored_bytes > 0 and ds.attrs["terracodec"]["sources"][0]["source"]["type"] == "zarr"


@pytest.mark.filterwarnings("ignore:Consolidated metadata is currently not part:UserWarning")
def test_refinement_steps_are_kept_in_the_record_and_reach_the_chunks(series: np.ndarray, tmp_path: Path) -> None:
    source = tmp_path / "source.zarr"
    xr.Dataset({"bands": (("time", "band", "y", "x"), series[:2])},
               coords={"band": np.array(L2A_BANDS, dtype=object), "time": MAIN_TIMES[:2]}).to_zarr(source, zarr_format=3)
    dest = tmp_path / "refined.zarr"
    assert main(["convert", str(source), str(dest), "--model", TEST_MODEL, "--refinement-steps", "2", "--no-progress"]) == 0
    ds = xr.open_zarr(dest)
    assert ds.attrs["terracodec"]["layout"]["codec"]["refinement_steps"] == 2
    refined = ds["reflectance"].values
    assert refined.shape == series[:2].shape and not np.array_equal(refined, expected(series[:2]))


MOMENTS = {
    "as the store appears": lambda dest, before: dest.exists(),
    "while creating the arrays": lambda dest, before: _record(dest).get("state") == "creating",
    "after the first step": lambda dest, before: len(_record(dest).get("done", [])) > before,
    "after the first appended step": lambda dest, before: len(_record(dest).get("done", [])) > before,
}


@pytest.mark.parametrize("moment", list(MOMENTS))
def test_killed_conversion_resumes_to_the_same_archive(stac_api: str, tmp_path: Path, moment: str) -> None:
    reference = tmp_path / "reference.zarr"
    convert(stac_api, reference, masks=["scl"], **OPTIONS)
    dest = tmp_path / "killed.zarr"
    command = [sys.executable, "-m", "xr_terracodec.cli", "convert", stac_api, str(dest), "--model", TEST_MODEL,
               "--masks", "scl", "--no-progress"]
    written_before = 0
    if moment == "after the first appended step":
        convert(stac_api, dest, datetime="2023-01-01/2023-05-31", masks=["scl"], **OPTIONS)
        command += ["--datetime", "2023-06-01/2023-12-31", "--append"]
        written_before = 2

    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _kill_when(process, lambda: MOMENTS[moment](dest, written_before))
    done = _record(dest).get("done", [])
    if moment.startswith("after"):
        assert written_before < len(done) < 4, f"killed {moment}, but steps {done} were written"
    step_files = {p: p.stat().st_mtime_ns for i in done for p in dest.glob(f"*/c/{i}/**/*") if p.is_file()}

    finished = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    assert_same_archive(dest, reference, same_sources=not written_before)
    assert {p: p.stat().st_mtime_ns for p in step_files} == step_files  # complete steps were not rewritten


def _kill_when(process: subprocess.Popen, ready: Callable[[], bool]) -> None:
    """Kill -9 ``process`` as soon as ``ready()``."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"conversion ended before it could be killed: {process.stderr.read().decode()[-2000:]}")
        if ready():
            process.kill()
            process.wait()
            return
        time.sleep(0.002)
    process.kill()
    pytest.fail("conversion did not get there in time")


def _record(dest: Path) -> dict:
    """The archive's ``terracodec`` record as stored right now ({} if there is none yet)."""
    try:
        return json.loads((dest / "zarr.json").read_text())["attributes"]["terracodec"]
    except (OSError, KeyError, ValueError):
        return {}


def test_append_adds_only_new_dates(stac_api: str, tmp_path: Path) -> None:
    dest, reference = tmp_path / "appended.zarr", tmp_path / "reference.zarr"
    convert(stac_api, reference, masks=["scl"], **OPTIONS)
    convert(stac_api, dest, datetime="2023-01-01/2023-05-31", masks=["scl"], **OPTIONS)
    summary = convert(stac_api, dest, datetime="2023-06-01/2023-12-31", masks=["scl"], append=True, progress=False)
    assert summary.written == 2 and summary.time_steps == 4
    assert_same_archive(dest, reference, same_sources=False)
    assert len(xr.open_zarr(dest).attrs["terracodec"]["sources"]) == 2

    before = snapshot(dest)
    with pytest.raises(ConfigurationError, match="1 date.* already in"):
        convert(stac_api, dest, datetime="2023-10-01/2023-12-31", masks=["scl"], append=True, progress=False)
    assert snapshot(dest) == before


def test_temporal_archive_is_written_and_appended_in_whole_time_chunks(stac_api: str, series: np.ndarray,
                                                                      tmp_path: Path) -> None:
    temporal = "test-fixed-seed-temporal"
    dest, reference = tmp_path / "temporal.zarr", tmp_path / "reference.zarr"
    common = ["--model", temporal, "--time-chunk", "2", "--masks", "scl", "--no-progress"]
    assert main(["convert", stac_api, str(reference), "--temporal", *common]) == 0
    ds = xr.open_zarr(reference)
    assert ds["reflectance"].encoding["chunks"][0] == 2 and ds["scl"].encoding["chunks"][0] == 2
    assert ds.attrs["terracodec"]["layout"]["codec"]["time_chunk"] == 2
    da = xr.DataArray(series, dims=("time", "band", "y", "x"), coords={"band": list(L2A_BANDS)})
    np.testing.assert_array_equal(ds["reflectance"].values, da.tec.roundtrip(model=temporal, time_chunk=2).values)

    # two dates, then two more: every chunk written whole, the same archive as in one go
    assert main(["convert", stac_api, str(dest), "--datetime", "2023-01-01/2023-05-31", *common]) == 0
    assert main(["convert", stac_api, str(dest), "--datetime", "2023-06-01/2023-12-31", "--append", "--masks", "scl",
                 "--no-progress"]) == 0
    assert_same_archive(dest, reference, same_sources=False)

    # an archive ending inside a time chunk refuses appends, before writing anything
    partial = tmp_path / "partial.zarr"
    convert(stac_api, partial, datetime="2023-01-01/2023-05-31", model=temporal, time_chunk=4, progress=False)
    before = snapshot(partial)
    with pytest.raises(ConfigurationError, match="ends inside a time chunk of 4"):
        convert(stac_api, partial, datetime="2023-06-01/2023-12-31", append=True, progress=False)
    assert snapshot(partial) == before
    with pytest.raises(ConfigurationError, match="temporal coding needs a temporal model"):
        convert(stac_api, tmp_path / "image.zarr", temporal=True, **OPTIONS)


def _foreign_group(path: Path) -> None:
    zarr.open_group(path, mode="w").create_array("something", shape=(4,), dtype="uint8")


@pytest.mark.parametrize(("case", "kwargs", "message"), [
    ("unreachable API", {"source": "dead"}, "cannot open a STAC API"),
    ("empty search", {"datetime": "2010-01-01/2010-12-31"}, "no items"),
    ("missing bands", {"collection": "no-swir22"}, "no asset for band.*B12"),
    ("other dates", {"datetime": "2023-01-01/2023-05-31"}, "holds an archive of 4 time step"),
    ("other grid", {"bbox": "half"}, "grid"),
    ("other codec", {"quality": 1.0}, "codec.quality"),
    ("other refinement", {"refinement_steps": 2}, "codec.refinement_steps"),
    ("append to nothing", {"append": True, "dest": "fresh"}, "--append .* none"),
    ("foreign Zarr group", {"dest": "foreign"}, "not a terracodec archive"),
])
def test_errors_leave_the_destination_as_it_was(stac_api: str, tmp_path: Path, case: str, kwargs: dict,
                                                message: str) -> None:
    dest = tmp_path / "archive.zarr"
    what = kwargs.pop("dest", "archive")
    if what == "archive":
        convert(stac_api, dest, masks=["scl"], **OPTIONS)
    elif what == "foreign":
        _foreign_group(dest)
    source = f"http://127.0.0.1:{free_port()}" if kwargs.pop("source", None) == "dead" else stac_api
    if kwargs.get("bbox") == "half":
        from xr_terracodec import stac

        west, south, east, north = stac.search(stac_api, max_items=1)[0].bbox
        kwargs["bbox"] = (west, south, (west + east) / 2, north)
    before = snapshot(dest)
    with pytest.raises(ConfigurationError, match=message):
        convert(source, dest, masks=["scl"], **{**OPTIONS, **kwargs})
    assert snapshot(dest) == before


def test_dry_run_prints_the_plan_and_writes_nothing(stac_api: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    dest = tmp_path / "planned.zarr"
    assert main(["convert", stac_api, str(dest), "--model", TEST_MODEL, "--max-cloud", "30", "--masks", "scl",
                 "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "plan: create" in out and "3 time step(s)" in out and "scl" in out and "dry run" in out
    assert not dest.exists()
    assert main(["convert", f"http://127.0.0.1:{free_port()}", str(dest), "--dry-run"]) == 2
    assert "terracodec: error: cannot open a STAC API" in capsys.readouterr().err


def test_dask_scheduler_address(stac_api: str, series: np.ndarray, tmp_path: Path) -> None:
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster:
        convert(stac_api, tmp_path / "dask.zarr", max_items=2, scheduler=cluster.scheduler_address, **OPTIONS)
    np.testing.assert_array_equal(xr.open_zarr(tmp_path / "dask.zarr")["reflectance"].values, expected(series[:2]))
