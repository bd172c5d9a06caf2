"""Sentinel-2 band sets the codec models know, in the order the models expect.

The L2A set is TerraCodec's / SSL4EO-S12's 12-band order; the L1C set adds the cirrus
band B10 between B09 and B11. Data in DN = reflectance x 10000, *harmonised*: for L2A
products of processing baseline >= 04.00 the +1000 BOA offset must be removed by the
data's producer (or the STAC loader) before encoding; the codec does not guess it.
"""

from __future__ import annotations

L2A_BANDS: tuple[str, ...] = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")
L1C_BANDS: tuple[str, ...] = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")

BAND_SETS: dict[str, tuple[str, ...]] = {"S2L2A": L2A_BANDS, "S2L1C": L1C_BANDS}
