"""The benchmarked codecs behind one interface: (12, y, x) uint16 in, byte streams out, and back.

Each coder is one codec at one setting. ``encode`` returns every byte the decoder needs (side
information included) as a list of streams, so the rate is simply :func:`coded_bits`.

* :class:`Jpeg2000`: OpenJPEG via imagecodecs, all bands as the components of one J2K codestream
  (irreversible 9/7 wavelet, no colour transform); ``level`` is OpenJPEG's fixed-quality target,
  a PSNR in dB relative to the 16-bit range, so higher = more bits.
* :class:`Jpeg2000Lossless`: the same codestream layout with the reversible 5/3 wavelet, lossless.
* :class:`KltJpeg2000`: the same after a per-image spectral KLT (principal components of the
  bands); the transform travels as a second stream.
* :class:`JpegXl`: libjxl via imagecodecs, each band its own grayscale 16-bit image; ``distance``
  is the Butteraugli distance, lower = more bits, and distance 0 is lossless (libjxl's modular
  mode, as ``cjxl -d 0``).
* :class:`TerraCodec`: this project's codec through its public numcodecs configuration, optionally
  error-bounded (``max_error``).
"""

from __future__ import annotations

import functools
import math
import struct
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import imagecodecs
import numcodecs
import numpy as np
from numcodecs.abc import Codec as NumcodecsCodec

from numcodec_plugin import DEFAULT_MODEL, quality_range, tile_pool
from numcodec_plugin.models.registry import trained_quality_range

Streams = list[bytes]


class Coder(Protocol):
    """A codec at one setting."""

    @property
    def family(self) -> str:
        """Codec name shared by all settings (a curve in the plots)."""

    @property
    def setting(self) -> str:
        """The setting, for tables."""

    def encode(self, image: np.ndarray) -> Streams:
        """Code a (band, y, x) uint16 image."""

    def decode(self, streams: Streams) -> np.ndarray:
        """The (band, y, x) uint16 image back."""


def coded_bits(streams: Streams) -> int:
    """Total size of ``streams`` in bits."""
    return 8 * sum(len(s) for s in streams)


def limit_threads(threads: int) -> None:
    """Let our codec code ``threads`` tiles at once (the imagecodecs coders take theirs as a field).

    The codec runs torch single-threaded per tile for reproducibility and parallelises over tiles.
    """
    tile_pool.set_workers(threads)


def jpeg2k_encode(image: np.ndarray, level: float | None, threads: int) -> bytes:
    """One J2K codestream with the bands of (band, y, x) ``image`` as its components.

    ``level`` None codes losslessly (reversible 5/3 wavelet, every bit plane); otherwise it is the
    fixed-quality target of the irreversible 9/7 wavelet.
    """
    return imagecodecs.jpeg2k_encode(np.ascontiguousarray(image), level=level, codecformat="J2K", planar=True,
                                     reversible=level is None, mct=False, numthreads=threads)


def jpeg2k_decode(data: bytes, threads: int) -> np.ndarray:
    """(band, y, x) array of a J2K codestream."""
    return imagecodecs.jpeg2k_decode(data, planar=True, numthreads=threads)


@dataclass(frozen=True)
class Jpeg2000:
    """JPEG 2000 at fixed-quality target ``level`` (dB)."""

    level: float
    threads: int = 2
    family: ClassVar[str] = "JPEG 2000"

    @property
    def setting(self) -> str:
        return f"level {self.level:g}"

    def encode(self, image: np.ndarray) -> Streams:
        return [jpeg2k_encode(image, self.level, self.threads)]

    def decode(self, streams: Streams) -> np.ndarray:
        return jpeg2k_decode(streams[0], self.threads)


@dataclass(frozen=True)
class Jpeg2000Lossless:
    """Lossless JPEG 2000: reversible 5/3 wavelet, all bands in one codestream."""

    threads: int = 2
    family: ClassVar[str] = "JPEG 2000"
    setting: ClassVar[str] = "lossless (5/3)"

    def encode(self, image: np.ndarray) -> Streams:
        return [jpeg2k_encode(image, None, self.threads)]

    def decode(self, streams: Streams) -> np.ndarray:
        return jpeg2k_decode(streams[0], self.threads)


@dataclass(frozen=True)
class SpectralTransform:
    """``bands = basis.T @ (components / scale) + offset``, per pixel; stored as float32."""

    basis: np.ndarray  # (C, C), rows = principal components, strongest first
    offset: np.ndarray  # (C,)
    scale: float

    @classmethod
    def fit(cls, image: np.ndarray) -> tuple[SpectralTransform, np.ndarray]:
        """The KLT of (band, y, x) ``image`` and its components quantised to uint16.

        Each component is shifted to start at 0; ``scale`` (at most 1) shrinks them all alike
        where the widest would overflow 16 bits, so squared errors still map one to one to
        the bands' (the basis is orthonormal).
        """
        pixels = image.reshape(image.shape[0], -1).astype(np.float64)
        mean = pixels.mean(axis=1)
        eigenvalues, eigenvectors = np.linalg.eigh(np.cov(pixels))
        basis = eigenvectors[:, np.argsort(eigenvalues)[::-1]].T.astype(np.float32)
        components = basis.astype(np.float64) @ (pixels - mean[:, None])
        low = components.min(axis=1)
        widest = float((components.max(axis=1) - low).max())
        scale = float(np.float32(min(1.0, 65535.0 / max(widest, 1.0))))
        quantised = np.clip(np.rint((components - low[:, None]) * scale), 0, 65535).astype(np.uint16)
        transform = cls(basis, (basis.T.astype(np.float64) @ low + mean).astype(np.float32), scale)
        return transform, quantised.reshape(image.shape)

    def invert(self, components: np.ndarray) -> np.ndarray:
        """(C, y, x) uint16 components -> (C, y, x) uint16 bands (rounded, clipped to uint16)."""
        flat = components.reshape(components.shape[0], -1).astype(np.float64) / self.scale
        bands = self.basis.T.astype(np.float64) @ flat + self.offset.astype(np.float64)[:, None]
        return np.clip(np.rint(bands), 0, 65535).astype(np.uint16).reshape(components.shape)

    def to_bytes(self) -> bytes:
        """Band count (u8), then basis, offset and scale as little-endian float32."""
        values = np.concatenate([self.basis.ravel(), self.offset, [self.scale]]).astype("<f4")
        return struct.pack("<B", len(self.offset)) + values.tobytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> SpectralTransform:
        """Inverse of :meth:`to_bytes`."""
        count = data[0]
        values = np.frombuffer(data, dtype="<f4", offset=1)
        return cls(values[:count * count].reshape(count, count), values[count * count:-1], float(values[-1]))


@dataclass(frozen=True)
class KltJpeg2000(Jpeg2000):
    """JPEG 2000 of the image's spectral principal components, the transform sent along."""

    family: ClassVar[str] = "JPEG 2000 + KLT"

    def encode(self, image: np.ndarray) -> Streams:
        transform, components = SpectralTransform.fit(image)
        return [transform.to_bytes(), jpeg2k_encode(components, self.level, self.threads)]

    def decode(self, streams: Streams) -> np.ndarray:
        return SpectralTransform.from_bytes(streams[0]).invert(jpeg2k_decode(streams[1], self.threads))


@dataclass(frozen=True)
class JpegXl:
    """JPEG XL at Butteraugli ``distance`` (0 = lossless), one grayscale image per band."""

    distance: float
    threads: int = 2
    family: ClassVar[str] = "JPEG XL"

    @property
    def setting(self) -> str:
        return "lossless" if self.distance == 0 else f"distance {self.distance:g}"

    def encode(self, image: np.ndarray) -> Streams:
        # libjxl's lossy mode at distance 0 is not lossless: distance 0 selects the lossless mode
        options = {"lossless": True} if self.distance == 0 else {"distance": self.distance}
        return [imagecodecs.jpegxl_encode(np.ascontiguousarray(band), numthreads=self.threads, **options)
                for band in image]

    def decode(self, streams: Streams) -> np.ndarray:
        return np.stack([imagecodecs.jpegxl_decode(s, numthreads=self.threads) for s in streams])


@dataclass(frozen=True)
class TerraCodec:
    """TerraCodec via ``numcodecs.get_codec`` (threads: see :func:`limit_threads`).

    ``quality`` None is the codec's default, or, under a ``max_error`` bound (DN), the quality the
    codec picks per chunk. ``refinement_steps`` > 0 is a family of its own (the same decoder, another
    encoder).
    """

    quality: float | None = None
    model: str | None = None
    max_error: float | None = None
    refinement_steps: int = 0

    @property
    def family(self) -> str:
        refined = f", {self.refinement_steps} refinement steps" if self.refinement_steps else ""
        return f"TerraCodec ({self.model or DEFAULT_MODEL}{refined})"

    @property
    def setting(self) -> str:
        parts = [] if self.quality is None else [f"quality {self.quality:g}"]
        parts += [] if self.max_error is None else [f"max_error {self.max_error:g}"]
        return ", ".join(parts) or "default quality"

    @property
    def config(self) -> dict[str, Any]:
        """The numcodecs configuration."""
        config: dict[str, Any] = {"id": "terracodec"}
        for name in ("quality", "model", "max_error", "refinement_steps"):
            if getattr(self, name) is not None:
                config[name] = getattr(self, name)
        return config

    @functools.cached_property
    def _codec(self) -> NumcodecsCodec:
        return numcodecs.get_codec(self.config)

    def encode(self, image: np.ndarray) -> Streams:
        return [bytes(self._codec.encode(image))]

    def decode(self, streams: Streams) -> np.ndarray:
        return self._codec.decode(streams[0])


def default_quality(model: str | None = None) -> float:
    """The quality TerraCodec uses when its configuration gives none."""
    return float(numcodecs.get_codec({"id": "terracodec", "model": model}).get_config()["quality"])


def quality_sweep(model: str | None, count: int) -> list[float]:
    """``count`` qualities spread evenly over the model's trained quality range (rounded to 0.01), after the
    whole qualities below it and the lowest valid one, and before those above it and the highest valid one,
    where the range extends beyond the trained levels."""
    low, high = trained_quality_range(model)
    lowest, highest = quality_range(model)
    below = sorted({lowest, *range(math.ceil(lowest), math.ceil(low))}) if lowest < low else []
    above = sorted({highest, *range(math.floor(high) + 1, math.floor(highest) + 1)}) if highest > high else []
    trained = [round(float(q), 2) for q in np.linspace(low, high, count)]
    return [float(q) for q in below] + trained + [float(q) for q in above]


def match_jpeg2k_rate(image: np.ndarray, target_bits: int, threads: int, levels: tuple[float, float] = (20.0, 100.0),
                      steps: int = 8) -> Jpeg2000:
    """The :class:`Jpeg2000` whose level codes ``image`` in about ``target_bits`` (bisection on the level)."""
    low, high = levels
    for _ in range(steps):
        middle = (low + high) / 2
        if coded_bits(Jpeg2000(middle, threads).encode(image)) < target_bits:
            low = middle
        else:
            high = middle
    return Jpeg2000(round((low + high) / 2, 2), threads)

