"""Encode and decode TerraCodec stores with Dask, on CPUs or GPUs.

* :func:`cluster`: a ``distributed.Client`` set up for the codec (GPU workers carry the ``GPU``
  resource; every worker loads the model once and gets thread settings that do not oversubscribe).
* :class:`TerraCodecWorker`: the worker plugin doing that setup; :func:`configure_process` is the
  same setup for the process you are in (e.g. with Dask's local threaded scheduler).
* :func:`gpu_tasks`: ``dask.annotate(resources={"GPU": 1})``, so encode/decode tasks built or
  computed inside it run only on GPU workers.
* :func:`write`: ``to_zarr`` with the TerraCodec encoding, one task per shard, optional progress bar.

Where the work happens: a Dask task writing (or reading) one shard hands its chunks to Zarr,
which runs the codec in *Zarr's* thread pool (``threading.max_workers``), up to
``async.concurrency`` chunks at a time; the codec then codes tiles in one process-wide pool
(:mod:`numcodec_plugin.tile_pool`), each with one torch thread. That pool's size bounds the cores
the network uses, whatever the Zarr and Dask thread counts; on a GPU, the runtime's
per-device slot (:mod:`numcodec_plugin.runtime`) keeps concurrent network calls from filling its
memory. See docs/dask-gpus.md.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Hashable, Mapping
from typing import Any

import dask
import torch
import xarray as xr
import zarr
from dask.diagnostics import ProgressBar
from distributed import Client, LocalCluster, WorkerPlugin, get_client, progress as distributed_progress

from numcodec_plugin import runtime, tile_pool
from numcodec_plugin.errors import ConfigurationError
from numcodec_plugin.models.registry import load_model
from xr_terracodec.encoding import chunk_for_writing, encoding as build_encoding, zarr_format_of

GPU_RESOURCE = "GPU"


def configure_process(*, tile_threads: int | None = None, zarr_threads: int | None = None,
                      zarr_batch_size: int | None = None, **runtime_changes: Any) -> None:
    """Thread, batching and device settings of this process; ``None`` leaves a setting alone.

    ``tile_threads``: tiles coded side by side (the codec runs torch with one intra-op thread per
    tile, see :mod:`numcodec_plugin.tile_pool`). ``zarr_threads``: Zarr's codec
    thread pool (takes effect only before Zarr's first use in the process). ``zarr_batch_size``:
    chunks Zarr hands to one codec call (their tiles share network batches; 16 = a whole default
    shard). Other keywords go to :func:`numcodec_plugin.runtime.configure` (``device``,
    ``batch_size``, ``max_concurrency``, ``max_batch_pixels``, ``oom_retry``).
    """
    if tile_threads is not None:
        tile_pool.set_workers(tile_threads)
    zarr_changes = {key: value for key, value in (("threading.max_workers", zarr_threads),
                                                  ("codec_pipeline.batch_size", zarr_batch_size)) if value is not None}
    if zarr_changes:
        zarr.config.set(zarr_changes)
    if runtime_changes:
        runtime.configure(**runtime_changes)


class TerraCodecWorker(WorkerPlugin):
    """Worker plugin: apply :func:`configure_process` and load the model once, before any task runs.

    With ``spread_gpus=True`` (several GPUs, all visible to every worker) worker ``i`` of a
    ``LocalCluster`` uses ``cuda:i`` (modulo the GPU count); ``dask_cuda`` workers instead see only
    their own GPU, as ``cuda``.
    """

    name = "terracodec"

    def __init__(self, model: str | None = None, quality: float | None = None, *, spread_gpus: bool = False,
                 **settings: Any) -> None:
        self.model, self.quality, self.spread_gpus, self.settings = model, quality, spread_gpus, settings

    def setup(self, worker: Any) -> None:
        settings = dict(self.settings)
        if self.spread_gpus and torch.cuda.is_available():
            index = int(worker.name) if str(worker.name).isdigit() else 0
            settings["device"] = f"cuda:{index % torch.cuda.device_count()}"
        configure_process(**settings)
        load_model(self.model, self.quality, runtime.settings().device)


def cluster(scheduler: str | None = None, gpus: int | None = None, n_workers: int | None = None,
            threads_per_worker: int | None = None, *, model: str | None = None, quality: float | None = None,
            **cluster_kwargs: Any) -> Client:
    """A ``distributed.Client`` fit for encoding and decoding, with :class:`TerraCodecWorker` registered.

    * ``scheduler``: address of a running scheduler to connect to (its workers are left as they
      are, apart from loading the model; the local-cluster arguments are refused);
    * otherwise a local cluster: with GPUs (``gpus``, default ``torch.cuda.device_count()``) one
      worker per GPU carrying ``resources={"GPU": 1}``, a ``dask_cuda.LocalCUDACluster`` when that is
      installed; without, ``n_workers`` (default 1) CPU workers and no GPU resource.

    Each worker runs ``threads_per_worker`` Dask threads (default: its share of the cores), as many
    Zarr codec threads, and a tile pool of ``cores / workers`` threads, so the machine is not
    oversubscribed. ``cluster_kwargs`` go to the cluster class
    (e.g. ``processes=False``, ``dashboard_address=None``).
    """
    if scheduler is not None:
        local_only = {"gpus": gpus, "n_workers": n_workers, "threads_per_worker": threads_per_worker, **cluster_kwargs}
        given = sorted(name for name, value in local_only.items() if value is not None)
        if given:
            raise ConfigurationError(f"{', '.join(given)} only apply to a local cluster, not to the running "
                                     f"scheduler {scheduler}; configure its workers where they are started")
        client = Client(scheduler)
        client.register_plugin(TerraCodecWorker(model, quality))
        return client
    gpus = torch.cuda.device_count() if gpus is None else gpus
    cores = os.cpu_count() or 1
    n_workers = n_workers or gpus or 1
    threads_per_worker = threads_per_worker or max(1, cores // n_workers)
    settings: dict[str, Any] = {}
    if cluster_kwargs.get("processes", True):  # threads of in-process workers are the caller's to set
        settings = {"tile_threads": max(1, cores // n_workers), "zarr_threads": threads_per_worker}
    if gpus:
        cluster_kwargs.setdefault("resources", {GPU_RESOURCE: 1})
    use_dask_cuda = bool(gpus) and importlib.util.find_spec("dask_cuda") is not None
    if use_dask_cuda:
        from dask_cuda import LocalCUDACluster

        local = LocalCUDACluster(n_workers=n_workers, threads_per_worker=threads_per_worker, **cluster_kwargs)
    else:
        local = LocalCluster(n_workers=n_workers, threads_per_worker=threads_per_worker, **cluster_kwargs)
    client = Client(local)
    client.register_plugin(TerraCodecWorker(model, quality, spread_gpus=bool(gpus) and not use_dask_cuda, **settings))
    return client


def gpu_tasks() -> contextlib.AbstractContextManager:
    """``dask.annotate(resources={"GPU": 1})``: tasks built, or computed, inside run on GPU workers only.

    Wrap ``ds.to_zarr(..., compute=False)`` or a ``.compute()`` of data read with ``xr.open_zarr``.
    """
    return dask.annotate(resources={GPU_RESOURCE: 1})


def write(ds: xr.Dataset, store: Any, encoding: Mapping[Hashable, Mapping[str, Any]] | None = None, *,
          progress: bool = False, gpu: bool | None = None, **to_zarr_kwargs: Any) -> None:
    """Write ``ds`` to a Zarr store with TerraCodec, one Dask task per shard (or chunk).

    ``encoding`` defaults to :func:`xr_terracodec.encoding` of ``ds``; ``zarr_format`` follows it.
    Uses the current ``distributed`` client if there is one, else Dask's local scheduler.
    ``progress``: Dask's ``ProgressBar`` locally; with a client, its progress bar and dashboard link.
    ``gpu``: place encode tasks on GPU workers (:func:`gpu_tasks`); default: when the client has
    any. ``to_zarr_kwargs`` go to ``Dataset.to_zarr`` (``mode``, ``append_dim``, ``region``...).
    """
    encoding = build_encoding(ds) if encoding is None else encoding
    to_zarr_kwargs.setdefault("zarr_format", zarr_format_of(encoding))
    client = _current_client()
    on_gpus = _gpu_workers(client) > 0 if gpu is None else gpu
    if on_gpus and client is not None and _gpu_workers(client) == 0:
        raise ConfigurationError(f"gpu=True but no worker of {client} offers the {GPU_RESOURCE!r} resource; "
                                 "the tasks would never run (start workers with resources={'GPU': 1})")
    ds = chunk_for_writing(ds, encoding)
    with gpu_tasks() if on_gpus else contextlib.nullcontext():
        delayed = ds.to_zarr(store, encoding=dict(encoding), compute=False, **to_zarr_kwargs)
        if client is None:
            with ProgressBar() if progress else contextlib.nullcontext():
                delayed.compute()
            return
        future = client.compute(delayed)
        if progress:
            print(_dashboard_line(client))
            distributed_progress(future)
        future.result()


def _current_client() -> Client | None:
    try:
        return get_client()
    except ValueError:
        return None


def _dashboard_line(client: Client) -> str:
    if not client.scheduler_info().get("services", {}).get("dashboard"):
        return "Dask dashboard: not running"
    if importlib.util.find_spec("bokeh") is None:
        return f"Dask dashboard: {client.dashboard_link} (its pages need bokeh: pip install bokeh)"
    return f"Dask dashboard: {client.dashboard_link}"


def _gpu_workers(client: Client | None) -> int:
    if client is None:
        return 0
    workers = client.scheduler_info().get("workers", {}).values()
    return sum(1 for info in workers if info.get("resources", {}).get(GPU_RESOURCE, 0) > 0)
