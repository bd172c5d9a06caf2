"""The compiled inner loops (:mod:`numcodec_plugin._kernels`) in the build this CPU runs fastest.

``setup.py`` compiles one source twice on x86-64: ``_kernels`` for the baseline instruction set
(SSE2) and ``_kernels_avx2`` for AVX2, four doubles per instruction where the baseline has two. Both
are compiled without floating-point contraction and add and multiply in the same order, so they
compute the same bits (``tests/test_kernels.py`` checks both): which one runs changes the speed,
never a decoded value. ``TERRACODEC_KERNELS=baseline`` in the environment forces the baseline.
"""

from __future__ import annotations

import os
from types import ModuleType

from numcodec_plugin import _kernels

#: the builds this machine can run, fastest last
AVAILABLE: dict[str, ModuleType] = {"baseline": _kernels}
if _kernels.cpu_has_avx2():
    try:
        from numcodec_plugin import _kernels_avx2
    except ImportError:  # built without it (not x86-64, or an MSVC build)
        pass
    else:
        AVAILABLE["avx2"] = _kernels_avx2

#: the name of the build in use
SELECTED = "baseline" if os.environ.get("TERRACODEC_KERNELS") == "baseline" else list(AVAILABLE)[-1]
_BUILD = AVAILABLE[SELECTED]


def __getattr__(name: str):
    """The kernel ``name`` of the selected build (``kernels.synthesise`` and so on)."""
    return getattr(_BUILD, name)
