# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
# The kernels of _kernels.pyx, compiled for AVX2 (setup.py); numcodec_plugin.kernels picks the build.
include "_kernels.pyx"
