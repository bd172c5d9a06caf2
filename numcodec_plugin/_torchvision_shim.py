"""Make ``compressai`` importable when ``torchvision`` is installed but broken.

CompressAI imports ``torchvision.transforms`` at import time only to list transform
names in its registry; nothing on our encode/decode path uses torchvision. On machines
where the installed torchvision wheel does not match torch (for example a CPU-only torch
with the registry's CUDA torchvision, which fails with ``operator torchvision::nms does
not exist``), that import fails and takes compressai down with it.

:func:`ensure_compressai_importable` tries the real import first. Only if it fails does
it replace ``torchvision`` in :data:`sys.modules` with an empty stand-in that has an
empty ``transforms`` submodule, and it logs that it did so. With a working torchvision
(a normal CUDA torch + torchvision install) this module changes nothing.
"""

from __future__ import annotations

import logging
import sys
import types

logger = logging.getLogger(__name__)

_checked = False


def ensure_compressai_importable() -> None:
    """Install the torchvision stand-in if, and only if, ``import torchvision`` fails."""
    global _checked
    if _checked:
        return
    _checked = True
    try:
        import torchvision  # noqa: F401
    except (ImportError, RuntimeError, OSError) as exc:
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        stub = types.ModuleType("torchvision")
        stub.transforms = types.ModuleType("torchvision.transforms")
        stub.__terracodec_stub__ = True
        sys.modules["torchvision"] = stub
        sys.modules["torchvision.transforms"] = stub.transforms
        logger.info("torchvision is not importable (%s); using an empty stand-in for compressai", exc)
