"""Builds the compiled inner loops of the transform coder (numcodec_plugin/_kernels.pyx); the rest of
the project's metadata is in pyproject.toml.

Floating-point contraction (fused multiply-add) is off, so the kernels compute every value with
the same IEEE operations on every machine (the format's decoded values must not depend on the CPU).
On x86-64 with GCC or Clang the same source is compiled a second time for AVX2 (``_kernels_avx2``),
which numcodec_plugin.kernels picks at import where the CPU has it: wider vectors, the same operations.
"""

import platform
import sys

from Cython.Build import cythonize
from setuptools import Extension, setup

MSVC = sys.platform == "win32"
NO_CONTRACTION = ["/fp:precise"] if MSVC else ["-O3", "-ffp-contract=off"]


def kernels(name: str, flags: list[str]) -> Extension:
    return Extension(f"numcodec_plugin.{name}", [f"numcodec_plugin/{name}.pyx"], language="c++",
                     extra_compile_args=NO_CONTRACTION + flags)


extensions = [kernels("_kernels", [])]
if platform.machine().lower() in ("x86_64", "amd64") and not MSVC:  # the CPU check needs GCC's or Clang's builtins
    extensions.append(kernels("_kernels_avx2", ["-mavx2"]))

setup(ext_modules=cythonize(extensions, language_level=3))
