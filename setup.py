"""Builds the compiled inner loops of the transform coder (numcodec_plugin/_kernels.pyx); the rest of
the project's metadata is in pyproject.toml.

Floating-point contraction (fused multiply-add) is off, so the kernels compute every value with
the same IEEE operations on every machine (the format's decoded values must not depend on the CPU).
"""

import sys

from Cython.Build import cythonize
from setuptools import Extension, setup

NO_CONTRACTION = ["/fp:precise"] if sys.platform == "win32" else ["-O3", "-ffp-contract=off"]

setup(ext_modules=cythonize(
    [Extension("numcodec_plugin._kernels", ["numcodec_plugin/_kernels.pyx"], language="c++",
               extra_compile_args=NO_CONTRACTION)],
    language_level=3,
))
