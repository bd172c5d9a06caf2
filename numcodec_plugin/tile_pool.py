"""Run per-tile work in parallel threads while torch itself runs single-threaded.

A convolution's floating-point result depends on how its work is split over threads and on the
batch it runs in. Entropy decoding needs the decoder to compute exactly the encoder's
probability parameters, and reproducible decoding needs the same output whatever the machine's
core count, so the network parts that both sides evaluate run one tile at a time with one
intra-op thread (see :func:`numcodec_plugin.scoped_determinism.deterministic_torch`). Cores are
used by running tiles side by side here instead; torch releases the GIL inside its kernels.

``TERRACODEC_TILE_THREADS`` sets the pool size (default: the number of CPUs).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch

from numcodec_plugin.scoped_determinism import pin_thread

T = TypeVar("T")
R = TypeVar("R")

_pool: ThreadPoolExecutor | None = None
_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            workers = int(os.environ.get("TERRACODEC_TILE_THREADS", 0)) or os.cpu_count() or 1
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="terracodec-tile")
        return _pool


def set_workers(workers: int) -> None:
    """Use ``workers`` threads for tiles from now on (e.g. to give each Dask worker thread a share)."""
    global _pool
    os.environ["TERRACODEC_TILE_THREADS"] = str(workers)
    with _lock:
        old, _pool = _pool, None
    if old is not None:
        old.shutdown(wait=True)


def map_tiles(function: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """``[function(item) for item in items]`` under ``torch.inference_mode``, in the shared pool, in order,
    each item on a thread pinned to our single intra-op thread (:func:`~numcodec_plugin.scoped_determinism.pin_thread`).

    (Grad mode is thread-local in torch, so the workers set inference mode themselves.)
    """
    def run(item: T) -> R:
        pin_thread()
        with torch.inference_mode():
            return function(item)

    items = list(items)
    if len(items) <= 1 or threading.current_thread().name.startswith("terracodec-tile"):
        return [run(item) for item in items]
    return list(_executor().map(run, items))
