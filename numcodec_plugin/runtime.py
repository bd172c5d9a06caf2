"""Process-wide knobs for where and how the engine runs the network, and its recovery from OOM.

Chunk bytes never depend on these settings: tiles are coded independently, so any batch size,
device slot or retry gives the same stream. They only trade speed for memory.

* ``device``: torch device of the models (``"cuda:1"``, ``"cpu"``); ``None`` = automatic (CUDA when
  present). Kept in ``$TERRACODEC_DEVICE``, which the model registry reads, so it also reaches
  child processes.
* ``batch_size``: tiles per network call for every engine call in this process; ``None`` keeps each
  caller's own (the engine's default is 16).
* ``max_concurrency``: network calls that may run at once on one device. Zarr runs codec calls
  concurrently (``async.concurrency``, default 10), which on a GPU multiplies activation memory;
  ``None`` = 1 on CUDA devices, unlimited on CPU.
* ``max_batch_pixels``: the largest batch (tiles x tile height x tile width) a device may take; a
  larger batch fails as a CUDA out-of-memory error would, and is halved. A memory ceiling for a
  shared GPU, and the way to exercise the recovery on a machine without one.
* ``oom_retry``: on out-of-memory, halve the batch and retry (down to one tile); the batch size that
  worked is remembered per device and tile size until the settings change.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import torch

from numcodec_plugin.errors import ConfigurationError

DEVICE_VARIABLE = "TERRACODEC_DEVICE"
T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class RuntimeSettings:
    """The knobs of the module docstring (immutable; change them with :func:`configure`)."""

    device: str | None = None
    batch_size: int | None = None
    max_concurrency: int | None = None
    max_batch_pixels: int | None = None
    oom_retry: bool = True

    def __post_init__(self) -> None:
        for name in ("batch_size", "max_concurrency", "max_batch_pixels"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ConfigurationError(f"runtime setting {name} must be a positive integer or None, got {value!r}")
        if self.device is not None:
            torch.device(self.device)  # raises on a malformed device string


@dataclasses.dataclass
class DeviceStats:
    """What happened on one device since the settings last changed (for benchmarks and tests)."""

    batches: int = 0
    oom_halvings: int = 0
    in_flight: int = 0
    peak_concurrency: int = 0


_lock = threading.Lock()
_settings = RuntimeSettings(device=os.environ.get(DEVICE_VARIABLE) or None)
_slots: dict[str, threading.BoundedSemaphore] = {}
_learned_batch: dict[tuple[str, int], int] = {}
_stats: dict[str, DeviceStats] = {}


def settings() -> RuntimeSettings:
    """The settings in force."""
    return _settings


def configure(**changes: Any) -> RuntimeSettings:
    """Change some settings (fields of :class:`RuntimeSettings`); returns the previous ones.

    Learned batch sizes, device slots and statistics start afresh, since they depend on the settings.
    """
    global _settings
    unknown = set(changes) - {f.name for f in dataclasses.fields(RuntimeSettings)}
    if unknown:
        raise ConfigurationError(f"unknown runtime setting(s) {sorted(unknown)}; known: "
                                 f"{[f.name for f in dataclasses.fields(RuntimeSettings)]}")
    with _lock:
        previous, _settings = _settings, dataclasses.replace(_settings, **changes)
        if _settings.device is None:
            os.environ.pop(DEVICE_VARIABLE, None)
        else:
            os.environ[DEVICE_VARIABLE] = _settings.device
        _slots.clear()
        _learned_batch.clear()
        _stats.clear()
    return previous


@contextlib.contextmanager
def configured(**changes: Any) -> Iterator[RuntimeSettings]:
    """Apply :func:`configure` for the duration of a block, then restore the previous settings."""
    previous = configure(**changes)
    try:
        yield _settings
    finally:
        configure(**dataclasses.asdict(previous))


def stats(device: str | torch.device) -> DeviceStats:
    """A copy of the statistics of ``device`` (e.g. ``"cpu"``, ``"cuda:0"``)."""
    with _lock:
        return dataclasses.replace(_stats.get(str(device), DeviceStats()))


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is an allocator failure (CUDA OOM, or a backend's 'out of memory' RuntimeError)."""
    return isinstance(error, torch.OutOfMemoryError) or (isinstance(error, RuntimeError) and "out of memory" in str(error))


def run_batches(device: torch.device, count: int, batch_size: int, tile_pixels: int,
                run: Callable[[int, int], T]) -> list[T]:
    """``[run(start, stop), ...]`` over consecutive batches covering ``range(count)``.

    Applies the batch size, the device's concurrency slot, the pixel ceiling and the halving of
    batches on out-of-memory described in the module docstring. ``tile_pixels`` is one tile's
    height x width.
    """
    key = str(device)
    size = _settings.batch_size or batch_size
    size = min(size, _learned_batch.get((key, tile_pixels), size))
    results: list[T] = []
    start = 0
    while start < count:
        stop = min(count, start + size)
        try:
            with _device_slot(key):
                _check_pixel_budget(stop - start, tile_pixels)
                results.append(run(start, stop))
        except Exception as error:
            if not (_settings.oom_retry and is_out_of_memory(error)) or stop - start == 1:
                raise
            size = (stop - start) // 2
            _record_halving(key, tile_pixels, size)
            if device.type == "cuda":
                torch.cuda.empty_cache()
            log.warning("out of memory on %s with %d tiles of %d pixels; retrying in batches of %d",
                        key, stop - start, tile_pixels, size)
            continue
        start = stop
    return results


def _check_pixel_budget(tiles: int, tile_pixels: int) -> None:
    limit = _settings.max_batch_pixels
    if limit is not None and tiles * tile_pixels > limit:
        raise torch.OutOfMemoryError(
            f"batch of {tiles} tiles x {tile_pixels} pixels exceeds the runtime setting max_batch_pixels={limit}"
        )


def _record_halving(key: str, tile_pixels: int, size: int) -> None:
    with _lock:
        _learned_batch[(key, tile_pixels)] = size
        _stats.setdefault(key, DeviceStats()).oom_halvings += 1


@contextlib.contextmanager
def _device_slot(key: str) -> Iterator[None]:
    """Hold one of the device's concurrency slots while a batch runs; count batches and concurrency."""
    with _lock:
        limit = _settings.max_concurrency or (1 if key.startswith("cuda") else None)
        slot = _slots.setdefault(key, threading.BoundedSemaphore(limit)) if limit else None
    with slot or contextlib.nullcontext():
        with _lock:
            entry = _stats.setdefault(key, DeviceStats())
            entry.batches += 1
            entry.in_flight += 1
            entry.peak_concurrency = max(entry.peak_concurrency, entry.in_flight)
        try:
            yield
        finally:
            with _lock:
                entry.in_flight -= 1
