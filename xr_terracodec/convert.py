"""From a source of Sentinel-2 data to a resumable TerraCodec archive (``terracodec convert``).

:func:`plan` opens the source lazily (:mod:`xr_terracodec.sources`) and reads the destination,
and decides what to do: create an archive, resume an interrupted one, append new dates, or
nothing (already complete). Every error (unreachable API, empty search, missing bands, a
destination holding something else or an archive of another layout, dates already present) is
raised there, before anything is written. :func:`run` then writes time step by time step
(:mod:`xr_terracodec.archive` says why that survives ``kill -9``) with a progress bar, and
returns a :class:`Summary`: sizes, ratio, and PSNR / spectral angle against the source on a few
sampled chunks. :func:`convert` is both.

Work runs on Dask: its threaded scheduler by default, or a ``distributed`` cluster made by
:func:`xr_terracodec.cluster` when a scheduler address or GPUs are given.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from tqdm.auto import tqdm

from numcodec_plugin.engine import DEFAULT_DN_SCALE
from numcodec_plugin.errors import ConfigurationError
from numcodec_plugin.models.registry import is_temporal, load_model, temporal_model
from numcodec_plugin.settings import normalise_settings
from xr_terracodec import archive, metrics
from xr_terracodec.archive import COMPLETE, CREATING, WRITING, Destination, Record
from xr_terracodec.encoding import DEFAULT_TIME_CHUNK, chunk_for_writing
from xr_terracodec.sources import open_source
from xr_terracodec.stac import DEFAULT_COLLECTION, REFLECTANCE

SAMPLE_CHUNKS = 3
SAMPLE_SIDE = 256


@dataclass(frozen=True)
class Plan:
    """What a conversion will do; :meth:`describe` is what ``--dry-run`` prints."""

    action: str  # "create", "resume", "append" or "complete"
    destination: Destination
    record: Record  # the record as the run starts writing
    first: int  # archive index of the source's first time step
    pending: tuple[int, ...]  # source time indices still to write
    cube: xr.Dataset
    encoding: dict
    source: dict[str, Any]

    @property
    def zarr_format(self) -> int:
        return int(self.record.layout["codec"]["zarr_format"])

    @property
    def step_bytes(self) -> int:
        """Uncompressed bytes of one time step."""
        return sum(var.nbytes // self.cube.sizes["time"] for var in self.cube.data_vars.values())

    def describe(self) -> str:
        layout, codec, cube = self.record.layout, self.record.layout["codec"], self.cube
        labels = archive.time_labels(cube["time"].values)
        y, x = cube[REFLECTANCE].shape[-2:]
        verb = {"create": "create", "resume": "resume", "append": "append to", "complete": "nothing to do in"}[self.action]
        lines = [
            f"plan: {verb} {self.destination.url} (Zarr v{self.zarr_format})",
            f"source: {_describe_source(self.source)}: {len(labels)} time step(s), {labels[0]} .. {labels[-1]}",
            f"grid: {y} x {x} pixels, CRS {_crs_name(layout['grid']['crs'])}; bands {' '.join(layout['bands'])}",
            f"codec: {codec['model']} (weights {codec['digest']}), {_quality_text(codec)}",
        ]
        for name, var in layout["variables"].items():
            storage = "TerraCodec" if name == REFLECTANCE else "zstd (lossless)"
            shards = f", shards {tuple(var['shards'])}" if var["shards"] else ""
            lines.append(f"variable: {name} {tuple(var['dims'])} {var['dtype']}, {storage}, chunks {tuple(var['chunks'])}{shards}")
        done = len(self.record.done)
        lines.append(f"steps: {len(self.pending)} to write ({_bytes(len(self.pending) * self.step_bytes)} raw); "
                     f"archive: {len(self.record.times)} step(s), {done} already written")
        return "\n".join(lines)


@dataclass(frozen=True)
class Summary:
    """Closing numbers of a conversion; ``str()`` is what the CLI prints."""

    destination: str
    time_steps: int
    written: int
    raw_bytes: int
    stored_bytes: int
    seconds: float
    psnr_db: float
    sam_deg: float
    sampled_chunks: int

    @property
    def ratio(self) -> float:
        return self.raw_bytes / self.stored_bytes if self.stored_bytes else math.inf

    @property
    def written_raw_rate(self) -> float:
        """Raw bytes per second written by this run."""
        return self.raw_bytes / self.time_steps * self.written / max(self.seconds, 1e-9)

    def __str__(self) -> str:
        rate = f", {_bytes(self.written_raw_rate)}/s raw" if self.written else ""
        lines = [
            f"archive: {self.destination}: {self.time_steps} time step(s), {self.written} written now in {self.seconds:.1f} s{rate}",
            f"size: {_bytes(self.raw_bytes)} raw -> {_bytes(self.stored_bytes)} stored, ratio {self.ratio:.1f}:1",
            f"quality: PSNR {self.psnr_db:.2f} dB (peak {metrics.REFLECTANCE_PEAK:g} DN), SAM {self.sam_deg:.3f} deg "
            f"on {self.sampled_chunks} sampled chunk(s) vs the source",
        ]
        return "\n".join(lines)


def plan(source: str | Path | Sequence[str | Path] | xr.Dataset, dest: str | Path, *, collection: str = DEFAULT_COLLECTION,
         bbox: Sequence[float] | None = None, datetime: str | None = None, max_cloud: float | None = None,
         max_items: int | None = None, sign: bool | None = None, masks: Sequence[str] = (), variable: str | None = None,
         model: str | None = None, quality: float | None = None, zarr_format: int | None = None, append: bool = False,
         storage_options: Mapping[str, Any] | None = None, max_error: float | Sequence[float] | None = None,
         temporal: bool = False, time_chunk: int | None = None, refinement_steps: int | None = None) -> Plan:
    """Open ``source``, read ``dest`` and decide the work; writes nothing.

    Parameters
    ----------
    source:
        STAC API URL, GeoTIFF folder / file list, Zarr store, or Dataset (:func:`xr_terracodec.sources.open_source`).
    dest:
        Local path or fsspec URL (``memory://``, ``s3://bucket/archive.zarr``); ``storage_options``
        go to fsspec (for the source too, when it is a Zarr URL).
    collection, bbox, datetime, max_cloud, max_items, sign:
        STAC search (:func:`xr_terracodec.stac.search`).
    masks:
        Extra variables stored losslessly (STAC assets such as ``scl``, or Zarr variables).
    variable:
        The banded variable of a Zarr source, when it has several.
    model, quality, zarr_format:
        Codec and format; default: those of the existing archive, else the bundled model at its
        middle quality and Zarr v3 (sharded).
    append:
        Add the source's dates to an existing complete archive; dates already present are refused.
    max_error:
        Per-pixel bound in DN (0 = lossless; docs/guarantees.md); default: the archive's, else none.
    temporal, time_chunk:
        Code ``time_chunk`` dates per chunk jointly (default 4) with a temporal model (the bundled
        temporal mode unless ``model`` names one); default: the archive's. Such an archive is written
        a time chunk at a time, and dates are appended only where it ends on a chunk boundary.
    refinement_steps:
        Latent-refinement steps per tile at encode (image models; fewer bits, slower writes); default:
        the archive's, else 0.
    """
    destination = Destination(str(dest), storage_options)
    existing = destination.read()
    codec = _codec(existing, model, quality, zarr_format, max_error, temporal, time_chunk, refinement_steps)
    query = {"collection": collection, "bbox": tuple(bbox) if bbox is not None else None, "datetime": datetime,
             "max_cloud": max_cloud, "max_items": max_items}
    opened = open_source(source, model=codec["model"], query=query, masks=masks, variable=variable, sign=sign,
                         storage_options=storage_options)
    encoding = archive.archive_encoding(opened.cube, codec)
    cube = chunk_for_writing(opened.cube, {name: encoding[name] for name in opened.cube.data_vars})
    layout = archive.layout_of(cube, encoding, codec)
    times = archive.time_labels(cube["time"].values)
    added = {"source": opened.description, "times": [times[0], times[-1]], "count": len(times)}
    action, record, first = _decide(existing, layout, times, append, destination.url, added)
    if action == "append" and first % codec.get("time_chunk", 1):
        raise ConfigurationError(
            f"{destination.url} holds {first} dates, which ends inside a time chunk of {codec['time_chunk']}; appending "
            "would decode and re-encode that chunk's earlier dates (compounding their loss). Append to an archive that "
            "ends on a chunk boundary, or write the series to a new archive")
    done = set(record.done)
    pending = tuple(i for i in range(len(times)) if first + i not in done)
    return Plan(action, destination, record, first, pending, cube, encoding, opened.description)


def _quality_text(codec: Mapping[str, Any]) -> str:
    quality = "quality chosen per chunk" if codec["quality"] is None else f"quality {codec['quality']:g}"
    return quality if codec.get("max_error") is None else f"{quality}, max error {codec['max_error']} DN"


def _codec(existing: Record | None, model: str | None, quality: float | None, zarr_format: int | None,
           max_error: float | Sequence[float] | None, temporal: bool = False, time_chunk: int | None = None,
           refinement_steps: int | None = None) -> dict[str, Any]:
    """Codec settings: given ones, else the archive's, else defaults; with the model's weights digest."""
    stored = existing.layout["codec"] if existing is not None else {}
    model = model or stored.get("model")
    if temporal:
        model = temporal_model(model)
    if quality is None and model == stored.get("model"):
        quality = stored.get("quality")
    if max_error is None:
        max_error = stored.get("max_error")
    zarr_format = zarr_format or stored.get("zarr_format") or 3
    if zarr_format not in (2, 3):
        raise ConfigurationError(f"zarr_format must be 2 or 3, got {zarr_format!r}")
    if refinement_steps is None:
        refinement_steps = stored.get("refinement_steps", 0)
    settings = normalise_settings(model, quality, None, DEFAULT_DN_SCALE, max_error, refinement_steps)
    identity = load_model(settings.model, settings.quality, "cpu").identity
    codec = {"model": settings.model, "digest": identity.digest.hex(), "quality": settings.quality,
             "dn_scale": settings.dn_scale, "zarr_format": int(zarr_format)}
    if settings.max_error is not None:
        codec["max_error"] = list(settings.max_error) if isinstance(settings.max_error, tuple) else settings.max_error
    if settings.refinement_steps:
        codec["refinement_steps"] = settings.refinement_steps
    if is_temporal(settings.model):
        codec["time_chunk"] = int(time_chunk or stored.get("time_chunk") or DEFAULT_TIME_CHUNK)
    return codec


def _decide(existing: Record | None, layout: dict, times: list[str], append: bool, url: str,
            added: dict[str, Any]) -> tuple[str, Record, int]:
    """(action, record as writing starts, archive index of the first source step); raises on any conflict.

    ``added`` is the entry describing this run's source, recorded when it creates or appends.
    """
    if existing is None:
        if append:
            raise ConfigurationError(f"--append adds dates to an existing archive, but there is none at {url}")
        return "create", Record(layout, list(times), sources=[added]), 0
    differences = archive.layout_differences(existing.layout, layout)
    if differences:
        raise ConfigurationError(f"{url} holds an archive that this source does not fit: {'; '.join(differences)}")
    if existing.state == CREATING and not append and existing.times == times:
        return "create", Record(layout, list(times), sources=[added]), 0
    if not append:
        if existing.times != times:
            raise ConfigurationError(_dates_message(url, existing.times, times))
        return ("complete" if existing.state == COMPLETE else "resume"), existing, 0
    tail = len(existing.times) - len(times)
    if existing.state == WRITING and tail > 0 and existing.times[tail:] == times:
        return "resume", existing, tail  # an interrupted append of these very dates
    present = sorted(set(existing.times) & set(times))
    if present:
        raise ConfigurationError(f"{len(present)} date(s) already in {url}: {', '.join(present[:5])}"
                                 f"{' ...' if len(present) > 5 else ''}; --append adds only new dates")
    if existing.state != COMPLETE:
        raise ConfigurationError(f"{url} holds an unfinished conversion ({len(existing.done)} of {len(existing.times)} "
                                 "steps written); finish it by rerunning its command before appending")
    extended = replace(existing, times=existing.times + list(times), sources=[*existing.sources, added])
    return "append", extended, len(existing.times)


def _dates_message(url: str, stored: list[str], given: list[str]) -> str:
    new, missing = sorted(set(given) - set(stored)), sorted(set(stored) - set(given))
    parts = [f"{url} holds an archive of {len(stored)} time step(s) but the source gives {len(given)}"]
    if new:
        parts.append(f"not in the archive: {', '.join(new[:3])}{' ...' if len(new) > 3 else ''}")
    if missing:
        parts.append(f"not in the source: {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}")
    return "; ".join(parts) + " (add new dates with --append; choose another destination for another archive)"


def run(job: Plan, *, scheduler: str | None = None, gpus: int | None = None, progress: bool = True) -> Summary:
    """Carry out ``job`` (see :func:`plan`); returns the :class:`Summary`."""
    start = time.perf_counter()
    destination, fmt, record = job.destination, job.zarr_format, job.record
    with _dask(scheduler, gpus, record.layout["codec"]):
        if job.action == "create":
            record = archive.create(destination, job.cube, job.encoding, record, fmt)
        elif job.action == "append":
            destination.drop_consolidated(fmt)
            record = replace(record, state=WRITING)
            destination.save(record)
        if job.action == "append" or (job.action == "resume" and job.first > 0):
            archive.extend(destination, record, job.cube["time"].values, fmt)
        done = set(record.done)
        with tqdm(total=len(job.pending) * job.step_bytes, unit="B", unit_scale=True, unit_divisor=1024,
                  desc="encoding", file=sys.stderr, disable=not progress or not job.pending) as bar:
            for group in _write_groups(job.pending, job.first, record.layout["codec"].get("time_chunk", 1)):
                steps = job.cube.isel(time=slice(group[0], group[-1] + 1))
                archive.write_steps(destination, steps, job.first + group[0], fmt)
                done.update(job.first + index for index in group)
                record = replace(record, done=sorted(done))
                destination.save(record)
                bar.update(job.step_bytes * len(group))
                bar.set_postfix_str(f"{len(done)}/{len(record.times)} steps")
    if record.state != COMPLETE:
        record = replace(record, state=COMPLETE)
        destination.save(record)
    destination.consolidate(fmt)
    psnr, sam, sampled = _sample_quality(job)
    return Summary(destination.url, len(record.times), len(job.pending), job.step_bytes * len(record.times),
                   destination.nbytes(), time.perf_counter() - start, psnr, sam, sampled)


def _write_groups(pending: Sequence[int], first: int, span: int) -> list[list[int]]:
    """Pending source steps grouped by the archive's time chunks of ``span`` dates (archive index = first + step).

    A group is written and recorded as one, so an interrupted run resumes at a chunk boundary and
    no chunk is ever written in parts (which would re-encode a temporal chunk's decoded dates).
    """
    groups: dict[int, list[int]] = {}
    for index in pending:
        groups.setdefault((first + index) // span, []).append(index)
    return list(groups.values())


def convert(source: str | Path | Sequence[str | Path] | xr.Dataset, dest: str | Path, *, scheduler: str | None = None,
            gpus: int | None = None, progress: bool = True, **options: Any) -> Summary:
    """Convert ``source`` into the archive ``dest``, resuming or appending as :func:`plan` decides.

    ``options`` are those of :func:`plan`; ``scheduler`` (a Dask scheduler address) or ``gpus``
    (local GPU workers) run the work on :func:`xr_terracodec.cluster`, else Dask's threads.
    """
    return run(plan(source, dest, **options), scheduler=scheduler, gpus=gpus, progress=progress)


@contextlib.contextmanager
def _dask(scheduler: str | None, gpus: int | None, codec: Mapping[str, Any]) -> Iterator[None]:
    """A ``distributed`` cluster for the duration of the writes when asked for, else nothing (threads)."""
    if scheduler is None and not gpus:
        yield
        return
    from xr_terracodec.dask import cluster, gpu_tasks

    client = cluster(scheduler, gpus, model=codec["model"], quality=codec["quality"])
    try:
        with gpu_tasks() if gpus else contextlib.nullcontext():
            yield
    finally:
        client.close()
        if scheduler is None:
            client.cluster.close()


def _sample_quality(job: Plan) -> tuple[float, float, int]:
    """PSNR and SAM of the archive against the source on up to :data:`SAMPLE_CHUNKS` chunk-sized windows."""
    steps = job.pending or tuple(range(job.cube.sizes["time"]))
    source = job.cube[REFLECTANCE]
    y_dim, x_dim = source.dims[-2:]
    height, width = source.shape[-2:]
    rng = np.random.default_rng(0)
    stored = xr.open_zarr(job.destination.store(read_only=True))[REFLECTANCE]
    nodata = job.cube[REFLECTANCE].attrs.get("nodata", 0)
    originals, restored = [], []
    for step in rng.choice(steps, size=SAMPLE_CHUNKS):
        y0 = int(rng.integers(0, max(height - SAMPLE_SIDE, 0) + 1))
        x0 = int(rng.integers(0, max(width - SAMPLE_SIDE, 0) + 1))
        window = {y_dim: slice(y0, y0 + SAMPLE_SIDE), x_dim: slice(x0, x0 + SAMPLE_SIDE)}
        originals.append(np.moveaxis(source.isel(time=int(step), **window).values, 0, -1).astype(np.float64))
        restored.append(np.moveaxis(stored.isel(time=job.first + int(step), **window).values, 0, -1).astype(np.float64))
    a, b = np.stack(originals), np.stack(restored)
    valid = a != nodata
    psnr = metrics.psnr(metrics.mse(a[valid], b[valid])) if valid.any() else math.inf
    angles = metrics.spectral_angles(a, b, band_axis=-1, valid=valid.all(axis=-1))
    return psnr, float(angles.mean()) if angles.size else 0.0, len(originals)


def _describe_source(source: Mapping[str, Any]) -> str:
    if source["type"] == "stac":
        return f"STAC {source['url']} collection {source['collection']} ({len(source['items'])} items)"
    if source["type"] == "geotiff":
        return f"{len(source['files'])} GeoTIFF file(s)"
    if source["type"] == "zarr":
        return f"Zarr {source['url']}"
    return "in-memory Dataset"


def _crs_name(wkt: str | None) -> str:
    return wkt.split('"')[1] if wkt and '"' in wkt else "none"


def _bytes(count: float) -> str:
    """``count`` bytes in binary units (``"1.5 MiB"``)."""
    exponent = min(int(math.log(max(count, 1), 1024)), 4)
    return f"{count / 1024 ** exponent:.1f} {('B', 'KiB', 'MiB', 'GiB', 'TiB')[exponent]}"
