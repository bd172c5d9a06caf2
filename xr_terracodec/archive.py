"""A TerraCodec archive that is written time step by time step and survives being killed.

The archive is a Zarr group (v3 sharded, or v2) holding ``reflectance`` (time, band, y, x)
coded with TerraCodec, optional masks (time, y, x) stored losslessly with Zstandard, and the
coordinates. Its root attribute ``terracodec`` (:class:`Record`) says what it is meant to
hold and how far writing got:

* ``layout``: variables, bands, grid and codec (model name and weights digest): what every run
  adding to the archive must agree with;
* ``times``: every planned time step, in array order; ``done``: the indices written;
* ``state``: ``creating`` (arrays being created), ``writing``, ``complete``;
* ``sources``: one entry per run that added dates (what was read, which dates).

Writing order is what makes a kill at any point harmless: the record (with the plan) is written
before anything else; arrays are created or extended to their full time length; then each time
step is written with a region write and only *afterwards* recorded in ``done``. A rerun
finds the record, checks it against its own plan and writes only the steps not in ``done``;
a step interrupted half-way is not in ``done`` and is simply written again (region writes
replace whole shards). Consolidated metadata is written last, when the archive is complete,
and removed before an archive is extended, so it never describes a stale shape.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Hashable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import fsspec
import numpy as np
import xarray as xr
import zarr
import zarr.errors

from numcodec_plugin.errors import ConfigurationError
from xr_terracodec.encoding import DEFAULT_TIME_CHUNK
from xr_terracodec.encoding import encoding as terracodec_encoding
from xr_terracodec.stac import REFLECTANCE

ATTR = "terracodec"
FORMAT_VERSION = 1
TIME = "time"
#: exact to the millisecond, whatever dates are appended later
TIME_ENCODING = {"units": "milliseconds since 1970-01-01", "dtype": "int64", "calendar": "proleptic_gregorian"}
MASK_ZSTD_LEVEL = 5
CREATING, WRITING, COMPLETE = "creating", "writing", "complete"


def time_labels(times: Any) -> list[str]:
    """ISO labels (millisecond precision) of datetime64 values: how the record names time steps."""
    return [str(label) for label in np.datetime_as_string(np.asarray(times, dtype="datetime64[ms]"), unit="ms")]


@dataclass
class Record:
    """The root attribute ``terracodec`` (see the module docstring)."""

    layout: dict[str, Any]
    times: list[str]
    done: list[int] = field(default_factory=list)
    state: str = CREATING
    sources: list[dict[str, Any]] = field(default_factory=list)
    version: int = FORMAT_VERSION

    def to_attrs(self) -> dict[str, Any]:
        return {ATTR: asdict(self)}

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> "Record":
        value = dict(attrs[ATTR])
        if value.get("version") != FORMAT_VERSION:
            raise ConfigurationError(f"archive record version {value.get('version')!r} is not {FORMAT_VERSION}; "
                                     "use the xr-terracodec version that wrote it")
        return cls(**value)


class Destination:
    """A Zarr store named by a local path or an fsspec URL (``memory://``, ``s3://``...)."""

    def __init__(self, url: str, storage_options: Mapping[str, Any] | None = None) -> None:
        self.url = str(url)
        self.storage_options = dict(storage_options or {})

    def store(self, read_only: bool = False) -> zarr.abc.store.Store:
        """A fresh zarr store object for the destination."""
        if "://" in self.url and not self.url.startswith("file://"):
            return zarr.storage.FsspecStore.from_url(self.url, storage_options=self.storage_options, read_only=read_only)
        return zarr.storage.LocalStore(self.url.removeprefix("file://"), read_only=read_only)

    def _fs(self) -> tuple[fsspec.AbstractFileSystem, str]:
        return fsspec.core.url_to_fs(self.url, **self.storage_options)

    def nbytes(self) -> int:
        """Bytes stored under the destination."""
        fs, path = self._fs()
        return int(fs.du(path)) if fs.exists(path) else 0

    def read(self) -> Record | None:
        """The archive's record; None where nothing (or an empty group) is stored; error for anything else.

        Files ending in ``.partial`` are ignored: they are what an atomic write killed half-way leaves.
        """
        fs, path = self._fs()
        if not fs.exists(path) or (fs.isdir(path) and all(name.endswith(".partial") for name in fs.ls(path, detail=False))):
            return None
        try:
            group = zarr.open_group(self.store(read_only=True), mode="r", use_consolidated=False)
        except zarr.errors.ContainsArrayError:
            raise ConfigurationError(f"{self.url} holds a Zarr array, not a terracodec archive; "
                                     "choose another destination") from None
        except (zarr.errors.NodeNotFoundError, FileNotFoundError, NotADirectoryError):
            raise ConfigurationError(f"{self.url} exists and is not a Zarr store; choose another destination") from None
        if ATTR not in group.attrs:
            members = sorted(name for name, _ in group.members())
            if not members and not dict(group.attrs):
                return None
            raise ConfigurationError(f"{self.url} holds a Zarr group that is not a terracodec archive "
                                     f"(members: {', '.join(members) or 'none'}); choose another destination")
        return Record.from_attrs(group.attrs)

    def save(self, record: Record) -> None:
        """Replace the record (the only attribute write after creation)."""
        group = zarr.open_group(self.store(), mode="r+", use_consolidated=False)
        group.update_attributes(record.to_attrs())

    def drop_consolidated(self, zarr_format: int) -> None:
        """Remove consolidated metadata before the archive's shape changes."""
        if zarr_format == 2:
            fs, path = self._fs()
            if fs.exists(f"{path}/.zmetadata"):
                fs.rm(f"{path}/.zmetadata")
            return
        group = zarr.open_group(self.store(), mode="r+", use_consolidated=False)
        group.update_attributes({})  # rewrites zarr.json from metadata read without consolidation

    def consolidate(self, zarr_format: int) -> None:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
            zarr.consolidate_metadata(self.store(), zarr_format=zarr_format)


def archive_encoding(cube: xr.Dataset, codec: Mapping[str, Any]) -> dict[Hashable, dict[str, Any]]:
    """``to_zarr`` encoding: TerraCodec for ``reflectance``, lossless Zstandard for masks, exact time.

    ``codec``: the archive's codec settings (``model``, ``quality``, ``zarr_format``, ``max_error``,
    ``refinement_steps``).
    """
    zarr_format = codec["zarr_format"]
    result = terracodec_encoding(cube, codec["quality"], codec["model"], zarr_format, variables=[REFLECTANCE],
                                 max_error=codec.get("max_error"), time_chunk=codec.get("time_chunk", DEFAULT_TIME_CHUNK),
                                 refinement_steps=codec.get("refinement_steps", 0))
    coded = result[REFLECTANCE]
    for name in cube.data_vars:
        if name == REFLECTANCE:
            continue
        entry: dict[str, Any] = {"chunks": coded["chunks"][:1] + coded["chunks"][-2:]}
        if zarr_format == 3:
            entry.update(compressors=zarr.codecs.ZstdCodec(level=MASK_ZSTD_LEVEL), fill_value=0)
            if "shards" in coded:
                entry["shards"] = coded["shards"][:1] + coded["shards"][-2:]
        else:
            import numcodecs

            entry["compressors"] = numcodecs.Zstd(level=MASK_ZSTD_LEVEL)
        result[name] = entry
    result[TIME] = dict(TIME_ENCODING)
    return result


def layout_of(cube: xr.Dataset, encoding: Mapping[Hashable, Mapping[str, Any]], codec: Mapping[str, Any]) -> dict[str, Any]:
    """What runs adding to one archive must agree on, as JSON values."""
    variables = {}
    for name, var in cube.data_vars.items():
        entry = encoding[name]
        variables[str(name)] = {"dims": [str(d) for d in var.dims], "shape": list(var.shape[1:]), "dtype": var.dtype.name,
                                "chunks": list(entry["chunks"]), "shards": list(entry["shards"]) if entry.get("shards") else None}
    grid = {"crs": _crs_wkt(cube)}
    for dim in cube[REFLECTANCE].dims[-2:]:
        values = cube[dim].values if dim in cube.coords else np.arange(cube.sizes[dim])
        grid[str(dim)] = [float(values[0]), float(values[-1]), int(values.size)]
    layout = {"variables": variables, "bands": [str(b) for b in cube["band"].values], "grid": grid, "codec": dict(codec)}
    return json.loads(json.dumps(layout))  # exactly what a reread record holds


def _crs_wkt(cube: xr.Dataset) -> str | None:
    if "spatial_ref" not in cube.coords:
        return None
    attrs = cube["spatial_ref"].attrs
    return attrs.get("crs_wkt") or attrs.get("spatial_ref")


def layout_differences(stored: Mapping[str, Any], wanted: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Human-readable differences between two layouts (nested keys joined by dots)."""
    found = []
    for key in sorted(set(stored) | set(wanted)):
        a, b = stored.get(key), wanted.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            found += layout_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            found.append(f"{prefix}{key}: archive has {_short(a)}, this run gives {_short(b)}")
    return found


def _short(value: Any, limit: int = 80) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[:limit] + "..."


def create(destination: Destination, template: xr.Dataset, encoding: Mapping[Hashable, Any], record: Record,
           zarr_format: int) -> Record:
    """Create every array at full size (data left unwritten), with ``record`` as the root attribute."""
    template = template.assign_attrs(record.to_attrs())
    template.to_zarr(destination.store(), mode="w", compute=False, encoding=dict(encoding), consolidated=False,
                     zarr_format=zarr_format)
    record = replace(record, state=WRITING)
    destination.save(record)
    return record


def extend(destination: Destination, record: Record, times: Any, zarr_format: int) -> None:
    """Grow every time-indexed array to ``len(record.times)`` and write the time coordinate (idempotent)."""
    group = zarr.open_group(destination.store(), mode="r+", use_consolidated=False)
    for _, array in group.arrays():
        if _dims(array, zarr_format)[:1] == [TIME] and array.shape[0] != len(record.times):
            array.resize((len(record.times),) + array.shape[1:])
    # region writes skip indexes, so the new time values go as a plain coordinate
    coordinate = xr.Dataset(coords={TIME: np.asarray(times, dtype="datetime64[ns]")}).drop_indexes(TIME)
    coordinate.to_zarr(destination.store(), region={TIME: slice(len(record.times) - len(times), len(record.times))},
                       mode="r+", consolidated=False, zarr_format=zarr_format)


def _dims(array: zarr.Array, zarr_format: int) -> list[str]:
    names = array.metadata.dimension_names if zarr_format == 3 else array.attrs.get("_ARRAY_DIMENSIONS")
    return list(names or [])


def write_steps(destination: Destination, steps: xr.Dataset, index: int, zarr_format: int) -> None:
    """Write consecutive time steps (whole time chunks of the archive) from archive index ``index`` on."""
    steps = steps.drop_vars([name for name, var in steps.variables.items() if TIME not in var.dims])
    steps.attrs = {}
    steps.to_zarr(destination.store(), region={TIME: slice(index, index + steps.sizes[TIME])}, mode="r+",
                  consolidated=False, zarr_format=zarr_format)
