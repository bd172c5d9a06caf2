"""Deterministic torch settings for the duration of our calls only.

Entropy coding needs encoder and decoder to compute identical probability tables, so our
model calls run with deterministic algorithms, without TF32 and with one intra-op thread (a
convolution's result depends on its thread split; :mod:`numcodec_plugin.tile_pool` uses the
cores by running tiles side by side instead). These are process-global switches in torch;
:func:`deterministic_torch` sets them on entry and restores the caller's values when the last
of our concurrent calls leaves, so a user's own work in the same process is changed only while
a codec call is running.

The thread count needs one more step. OpenMP keeps its team size per OS thread, and torch
sets a thread's team lazily, from the process-wide setting of the moment, at its first parallel
work; :func:`torch.set_num_threads` sets only the calling thread's team (and the process-wide
value). So a tile-pool thread on its first tile, or a Dask or Zarr thread that entered while
another call already held the settings, would run its convolutions with another team size, and
get other bits: the symbol checksum then fails at decode. :func:`pin_thread` gives the calling
thread the single thread, and :func:`numcodec_plugin.tile_pool.map_tiles` calls it before each tile.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

import torch

_lock = threading.RLock()
_depth = 0
_saved: dict = {}


def _snapshot() -> dict:
    return {
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cudnn_tf32": torch.backends.cudnn.allow_tf32,
        "matmul_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cublas_workspace": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
        "threads": torch.get_num_threads(),
    }


def _apply(state: dict) -> None:
    torch.use_deterministic_algorithms(state["deterministic"], warn_only=state["warn_only"])
    torch.backends.cudnn.deterministic = state["cudnn_deterministic"]
    torch.backends.cudnn.benchmark = state["cudnn_benchmark"]
    torch.backends.cudnn.allow_tf32 = state["cudnn_tf32"]
    torch.backends.cuda.matmul.allow_tf32 = state["matmul_tf32"]
    if torch.get_num_threads() != state["threads"]:
        torch.set_num_threads(state["threads"])
    if state["cublas_workspace"] is None:
        os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
    else:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = state["cublas_workspace"]


def pin_thread() -> None:
    """While a :func:`deterministic_torch` block runs anywhere in the process, give the calling OS
    thread a team of one intra-op thread (outside such blocks, do nothing)."""
    with _lock:
        if _depth:
            torch.set_num_threads(1)  # the process-wide value is already 1 here


@contextlib.contextmanager
def deterministic_torch() -> Iterator[None]:
    """Run the block with deterministic torch settings; restore the previous ones afterwards.

    Re-entrant and thread-safe: nested or concurrent uses share one saved state, restored when the
    last one leaves.
    """
    global _depth, _saved
    with _lock:
        if _depth == 0:
            _saved = _snapshot()
            _apply({"deterministic": True, "warn_only": True, "cudnn_deterministic": True, "cudnn_benchmark": False,
                    "cudnn_tf32": False, "matmul_tf32": False, "cublas_workspace": _saved["cublas_workspace"] or ":16:8",
                    "threads": 1})
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                _apply(_saved)
