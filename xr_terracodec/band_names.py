"""Sentinel-2 band names of the common catalogues, mapped onto the codec models' band order.

One table, :data:`BAND_ALIASES`, holds every spelling we accept for each band:

* Planetary Computer asset keys are the band ids themselves (``B01`` ... ``B12``, ``B8A``);
* ESA EOPF Zarr products use the same ids in lower case (``b01``, ``b8a``);
* Earth Search v1 (Element 84) uses common names (``coastal``, ``blue``, ... ``nir08``, ``swir22``).

Matching ignores case. Data loaded from any of these catalogues can be put into the order a
model expects with :func:`to_model_order` (or ``ds.tec.to_model_order()``).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence

from numcodec_plugin.errors import ConfigurationError
from numcodec_plugin.models.bands import BAND_SETS

#: band id -> the other names catalogues give it (Earth Search v1 common names)
BAND_ALIASES: dict[str, tuple[str, ...]] = {
    "B01": ("coastal",),
    "B02": ("blue",),
    "B03": ("green",),
    "B04": ("red",),
    "B05": ("rededge1",),
    "B06": ("rededge2",),
    "B07": ("rededge3",),
    "B08": ("nir",),
    "B8A": ("nir08",),
    "B09": ("nir09",),
    "B10": ("cirrus",),
    "B11": ("swir16",),
    "B12": ("swir22",),
}

_LOOKUP: dict[str, str] = {
    spelling.lower(): band for band, aliases in BAND_ALIASES.items() for spelling in (band, *aliases)
}


def band_id(name: Hashable) -> str | None:
    """The band id (``"B8A"``) for any accepted spelling (``"nir08"``, ``"b8a"``), else ``None``."""
    return _LOOKUP.get(name.lower()) if isinstance(name, str) else None


def are_band_names(names: Iterable[Hashable]) -> bool:
    """Whether ``names`` is a non-empty list of distinct Sentinel-2 bands (e.g. a band coordinate)."""
    ids = [band_id(name) for name in names]
    return bool(ids) and None not in ids and len(set(ids)) == len(ids)


def to_model_order(names: Sequence[Hashable], band_set: str | Sequence[str] = "S2L2A") -> list[int]:
    """Positions in ``names`` of the bands of ``band_set``, in the model's order.

    ``band_set`` is a band-set name of :data:`numcodec_plugin.models.bands.BAND_SETS` or a list of
    band ids. ``[names[i] for i in to_model_order(names)]`` is the data's bands in model order;
    bands the model does not code (e.g. ``cirrus`` for an L2A model) are left out. Raises
    :class:`ConfigurationError` naming the missing bands, or bands given twice.
    """
    wanted = _band_set(band_set)
    ids = [band_id(name) for name in names]
    repeated = sorted({i for i in ids if i is not None and ids.count(i) > 1})
    if repeated:
        raise ConfigurationError(f"bands given more than once: {', '.join(repeated)} (names {list(names)})")
    missing = [band for band in wanted if band not in ids]
    if missing:
        unknown = [name for name, i in zip(names, ids) if i is None]
        hint = f"; names not recognised as bands: {unknown}" if unknown else ""
        raise ConfigurationError(
            f"the model codes bands {', '.join(wanted)}; missing from the data: {', '.join(missing)} "
            f"(data has {list(names)}{hint})"
        )
    return [ids.index(band) for band in wanted]


def _band_set(band_set: str | Sequence[str]) -> tuple[str, ...]:
    if isinstance(band_set, str):
        if band_set not in BAND_SETS:
            raise ConfigurationError(f"unknown band set {band_set!r}; known: {', '.join(BAND_SETS)}")
        return BAND_SETS[band_set]
    return tuple(band_set)
