"""Dask and runtime: lazy decode per chunk, threads, batching and OOM recovery, a distributed cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
import zarr
from distributed import Client, LocalCluster, Worker, get_task_stream

import xr_terracodec
from numcodec_plugin import ConfigurationError, engine, runtime, tile_pool
from numcodec_plugin.models.registry import resolve_device
from tests.conftest import TEST_MODEL
from tests.test_encoding import QUALITY, ds, in_memory, quiet_encoding  # noqa: F401  (ds, in_memory: fixtures)
from xr_terracodec.dask import cluster, configure_process, gpu_tasks, write

DEVICE = str(resolve_device())
TILE = 256 * 256


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, ds: xr.Dataset) -> Path:
    """A sharded v3 store of ``ds`` (shards of two 256 x 250 chunks), written with Dask's local scheduler."""
    path = tmp_path_factory.mktemp("dask") / "cube.zarr"
    write(ds, path, quiet_encoding(ds))
    return path


def read(path: Path, **compute_kwargs) -> np.ndarray:
    return xr.open_zarr(path).reflectance.compute(**compute_kwargs).values


def test_write_locally_shows_a_progress_bar(tmp_path: Path, ds: xr.Dataset, in_memory: np.ndarray,
                                            capsys: pytest.CaptureFixture) -> None:
    write(ds, tmp_path / "p.zarr", quiet_encoding(ds, shard=False), progress=True)
    assert "100% Completed" in capsys.readouterr().out
    np.testing.assert_array_equal(read(tmp_path / "p.zarr"), in_memory)


def test_fresh_process_with_only_xarray_decodes_lazily_one_chunk_per_task(store: Path, in_memory: np.ndarray,
                                                                          tmp_path: Path) -> None:
    script = textwrap.dedent("""
        import json, sys
        import numpy as np
        import xarray as xr
        data = xr.open_zarr(sys.argv[1]).reflectance.data
        np.save(sys.argv[2], data.compute())
        print(json.dumps({"chunks": data.chunks, "modules": sorted(m.split(".")[0] for m in sys.modules
                                                                   if m.startswith(("numcodec_plugin", "xr_terracodec")))}))
    """)
    out = subprocess.run([sys.executable, "-c", script, str(store), str(tmp_path / "values.npy")],
                         capture_output=True, text=True, check=True, timeout=300)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["chunks"] == [[1, 1], [12], [256, 8], [250]]
    assert set(report["modules"]) == {"numcodec_plugin"}  # found by its entry point, no xr_terracodec
    np.testing.assert_array_equal(np.load(tmp_path / "values.npy"), in_memory)

    lazy = xr.open_zarr(store).reflectance.data
    with runtime.configured():  # fresh statistics
        block = lazy.blocks[1, 0, 1, 0].compute()
        assert runtime.stats(DEVICE).batches == 1  # one chunk's tiles, not the shard's
    np.testing.assert_array_equal(block, in_memory[1:2, :, 256:, :])


def test_eight_threads_decoding_one_store_match_a_serial_decode(store: Path) -> None:
    serial = read(store, scheduler="synchronous")
    start = threading.Barrier(8)

    def decode(_: int) -> np.ndarray:
        start.wait()
        return read(store, scheduler="threads")

    with runtime.configured(max_concurrency=1):
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(decode, range(8)))
        assert runtime.stats(DEVICE).peak_concurrency == 1  # the per-device slot held
    for result in results:
        np.testing.assert_array_equal(result, serial)
    with ThreadPoolExecutor(8) as pool:  # and without a slot limit (CPU default)
        for result in pool.map(decode, range(8)):
            np.testing.assert_array_equal(result, serial)


def chunks_of(s2_series: np.ndarray, count: int = 4) -> list[np.ndarray]:
    """``count`` one-tile chunks (12, 256, 256) of real pixels."""
    return [np.ascontiguousarray(s2_series[i % 2, :, :256, :256][:, ::1 if i < 2 else -1]) for i in range(count)]


def test_oom_halves_the_batch_and_keeps_the_bytes(s2_series: np.ndarray) -> None:
    settings = engine.EncodeSettings(TEST_MODEL, QUALITY)
    chunks = chunks_of(s2_series)
    reference = engine.encode_many(chunks, settings)
    with runtime.configured(max_batch_pixels=3 * TILE):  # 4 tiles do not fit, 2 do
        coded = engine.encode_many(chunks, settings)
        assert runtime.stats(DEVICE).oom_halvings == 1
        assert runtime.stats(DEVICE).batches == 3  # 4 tiles refused, then 2 + 2
        decoded = engine.decode_many(coded)
        assert runtime.stats(DEVICE).oom_halvings == 1  # the working size was remembered
    assert coded == reference
    for got, want in zip(decoded, engine.decode_many(reference)):
        np.testing.assert_array_equal(got, want)


def test_oom_that_halving_cannot_fix_is_raised(s2_series: np.ndarray) -> None:
    settings = engine.EncodeSettings(TEST_MODEL, QUALITY)
    with runtime.configured(max_batch_pixels=TILE - 1):
        with pytest.raises(torch.OutOfMemoryError, match="max_batch_pixels=65535"):
            engine.encode(chunks_of(s2_series, 1)[0], settings)
    with runtime.configured(max_batch_pixels=TILE, oom_retry=False):
        with pytest.raises(torch.OutOfMemoryError, match="2 tiles x 65536 pixels"):
            engine.encode_many(chunks_of(s2_series, 2), settings)


def test_store_under_a_memory_ceiling_reads_the_same(store: Path, in_memory: np.ndarray) -> None:
    with zarr.config.set({"codec_pipeline.batch_size": 8}), runtime.configured(max_batch_pixels=TILE):
        whole_shards = zarr.open_array(store / "reflectance", mode="r")[...]  # a shard's 2 chunks in one call
        np.testing.assert_array_equal(whole_shards, in_memory)
        assert runtime.stats(DEVICE).oom_halvings >= 1


def test_batch_size_changes_neither_bytes_nor_decoded_values(tmp_path: Path, ds: xr.Dataset, s2_series: np.ndarray) -> None:
    settings = engine.EncodeSettings(TEST_MODEL, QUALITY)
    chunks = chunks_of(s2_series)
    one_by_one = engine.encode_many(chunks, settings, batch_size=1)
    assert one_by_one == engine.encode_many(chunks, settings, batch_size=3)
    for a, b in zip(engine.decode_many(one_by_one, batch_size=4), engine.decode_many(one_by_one, batch_size=1)):
        np.testing.assert_array_equal(a, b)

    stores = {}
    for size in (1, 8):  # the runtime knob applies to the Zarr codec's calls; shards' chunks share calls
        with zarr.config.set({"codec_pipeline.batch_size": 8}), runtime.configured(batch_size=size):
            stores[size] = tmp_path / f"batch{size}.zarr"
            write(ds, stores[size], quiet_encoding(ds))
    shard_files = sorted(p.relative_to(stores[1]) for p in stores[1].rglob("c/*/*/*/*"))
    assert shard_files
    for name in shard_files:
        assert (stores[1] / name).read_bytes() == (stores[8] / name).read_bytes()
    with runtime.configured(batch_size=1):
        np.testing.assert_array_equal(read(stores[8]), read(stores[1]))


def test_configure_process_sets_threads_zarr_batching_and_runtime() -> None:
    zarr_batch, settings = zarr.config.get("codec_pipeline.batch_size"), runtime.settings()
    try:
        configure_process(tile_threads=1, zarr_batch_size=16, batch_size=4)
        assert os.environ["TERRACODEC_TILE_THREADS"] == "1"
        assert zarr.config.get("codec_pipeline.batch_size") == 16
        assert runtime.settings().batch_size == 4
        with pytest.raises(ConfigurationError, match="unknown runtime setting"):
            configure_process(batchsize=4)
    finally:
        tile_pool.set_workers(os.cpu_count() or 1)
        zarr.config.set({"codec_pipeline.batch_size": zarr_batch})
        runtime.configure(**vars(settings))


def test_distributed_cluster_runs_encoding_and_annotated_decoding_on_gpu_workers(
        tmp_path: Path, ds: xr.Dataset, in_memory: np.ndarray, capsys: pytest.CaptureFixture) -> None:
    """One worker offering the GPU resource (as on a GPU machine) beside one without: tasks go to the first."""
    client = cluster(n_workers=1, threads_per_worker=2, processes=False, resources={"GPU": 1},
                     dashboard_address=None, model=TEST_MODEL, quality=QUALITY)
    cpu_worker = client.sync(lambda: Worker(client.scheduler.address, nthreads=1))
    try:
        workers = client.scheduler_info()["workers"]
        gpu_worker = next(address for address, info in workers.items() if info["resources"])
        assert len(workers) == 2
        assert all(client.run(lambda dask_worker: "terracodec" in dask_worker.plugins).values())
        with get_task_stream() as stream:
            write(ds, tmp_path / "d.zarr", quiet_encoding(ds), progress=True)  # GPU placement by default
        printed = capsys.readouterr().out
        assert "Dask dashboard: " in printed and "100% Completed" in printed
        assert {task["worker"] for task in stream.data if "store" in str(task["key"])} == {gpu_worker}

        lazy = xr.open_zarr(tmp_path / "d.zarr").reflectance
        with get_task_stream() as stream, gpu_tasks():
            values = lazy.compute().values
        assert {task["worker"] for task in stream.data} == {gpu_worker}
        np.testing.assert_array_equal(values, in_memory)
    finally:
        client.sync(cpu_worker.close)
        client.close()
        client.cluster.close()


def test_gpu_placement_without_gpu_workers_is_refused_before_writing(tmp_path: Path, ds: xr.Dataset) -> None:
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as local, Client(local):
        with pytest.raises(ConfigurationError, match="no worker .* offers the 'GPU' resource"):
            xr_terracodec.write(ds, tmp_path / "never.zarr", quiet_encoding(ds), gpu=True)
    assert not (tmp_path / "never.zarr").exists()


def test_local_cluster_arguments_are_refused_with_a_scheduler_address() -> None:
    with pytest.raises(ConfigurationError, match="n_workers, processes only apply to a local cluster"):
        cluster("tcp://127.0.0.1:1", n_workers=2, processes=False)
