"""Errors raised by the codec. Every failure to encode or decode is a :class:`TerraCodecError`."""

from __future__ import annotations


class TerraCodecError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigurationError(TerraCodecError, ValueError):
    """A codec parameter, chunking or input array cannot be coded as asked."""


class ModelNotFoundError(TerraCodecError, LookupError):
    """A model name is unknown, or its weights are nowhere the loader looked."""


class BitstreamError(TerraCodecError, ValueError):
    """Bytes that are not a TerraCodec chunk: foreign, truncated or corrupt."""


class ModelMismatchError(TerraCodecError):
    """A chunk was encoded by a model whose identity differs from the one available to decode it."""


class EntropyModelMismatchError(TerraCodecError):
    """Decoded symbols differ from the encoded ones: the entropy model disagrees with the encoder's
    (other device, other library version, other weights) or the payload is corrupt."""
