# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compiled inner loops of the transform coder (:mod:`numcodec_plugin.transform_coding`).

Each function computes exactly what the numpy expression in its docstring computes, element by
element in the same order of IEEE operations (the extension is compiled without floating-point
contraction, ``setup.py``), so the bytes a chunk decodes to do not depend on this module being
compiled or on the machine: the release fixtures (``tests/data/release``) pin them. It exists only
for speed: the numpy versions made a 12 x 256 x 256 tile cost 4-10 numpy passes per element.
``setup.py`` compiles this source twice, for the x86-64 baseline (``_kernels``) and for AVX2
(``_kernels_avx2``, which only includes this file); :mod:`numcodec_plugin.kernels` picks the build.
"""

import numpy as np

from cython cimport floating
from libc.math cimport fabs, floor, rint
from libc.stdint cimport int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcpy, memset
from libcpp.algorithm cimport nth_element
from libcpp.vector cimport vector

cdef extern from *:
    """
    static int cpu_has_avx2_impl(void) {
    #if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2");  /* false where the OS does not save the AVX registers */
    #else
        return 0;
    #endif
    }
    """
    int cpu_has_avx2_impl() nogil

#: lifting steps of the irreversible 9/7 (predict, update, predict, update) and its scaling of the two halves
CDF97_STEPS = (-1.586134342059924, -0.052980118572961, 0.882911075530934, 0.443506852043971)
CDF97_SCALE = 1.230174104914001
cdef double _STEPS[4]
cdef double _SCALE = CDF97_SCALE
for _i in range(4):
    _STEPS[_i] = CDF97_STEPS[_i]


def cpu_has_avx2() -> bool:
    """Whether this CPU (and its OS) runs AVX2 code: where it does, ``_kernels_avx2`` is the faster build."""
    return bool(cpu_has_avx2_impl())


cdef enum:
    _BLOCK = 512
    _SPECTRAL_BLOCK = 256


cdef inline Py_ssize_t _min(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    return a if a < b else b


cdef inline Py_ssize_t _max(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    return a if a > b else b


cdef void _predict(double* low, double* high, Py_ssize_t ne, Py_ssize_t no, Py_ssize_t length,
                   Py_ssize_t stride, double weight, int sign) noexcept nogil:
    """high[n] +/-= (low[n] + low[min(n + 1, ne - 1)]) * weight for the ``no`` odd samples (vectors of ``length``)."""
    cdef Py_ssize_t n, j, inner = _min(no, ne - 1)
    cdef double* a
    cdef double* b
    cdef double* h
    if length == 1 and stride == 1:  # one contiguous line: a loop the compiler vectorises
        if sign > 0:
            for n in range(inner):
                high[n] = high[n] + (low[n] + low[n + 1]) * weight
        else:
            for n in range(inner):
                high[n] = high[n] - (low[n] + low[n + 1]) * weight
        if inner < no:
            n = no - 1
            high[n] = high[n] + (low[ne - 1] + low[ne - 1]) * weight if sign > 0 else high[n] - (low[ne - 1] + low[ne - 1]) * weight
        return
    for n in range(no):
        a = low + n * stride
        b = low + _min(n + 1, ne - 1) * stride
        h = high + n * stride
        if sign > 0:
            for j in range(length):
                h[j] = h[j] + (a[j] + b[j]) * weight
        else:
            for j in range(length):
                h[j] = h[j] - (a[j] + b[j]) * weight


cdef void _update(double* low, double* high, Py_ssize_t ne, Py_ssize_t no, Py_ssize_t length,
                  Py_ssize_t stride, double weight, int sign) noexcept nogil:
    """low[n] +/-= (high[max(n - 1, 0)] + high[min(n, no - 1)]) * weight for the ``ne`` even samples."""
    cdef Py_ssize_t n, j
    cdef double* a
    cdef double* b
    cdef double* e
    if length == 1 and stride == 1:
        low[0] = low[0] + (high[0] + high[0]) * weight if sign > 0 else low[0] - (high[0] + high[0]) * weight
        if sign > 0:
            for n in range(1, no):
                low[n] = low[n] + (high[n - 1] + high[n]) * weight
        else:
            for n in range(1, no):
                low[n] = low[n] - (high[n - 1] + high[n]) * weight
        if ne > no:
            n = ne - 1
            low[n] = low[n] + (high[no - 1] + high[no - 1]) * weight if sign > 0 else low[n] - (high[no - 1] + high[no - 1]) * weight
        return
    for n in range(ne):
        a = high + _max(n - 1, 0) * stride
        b = high + _min(n, no - 1) * stride
        e = low + n * stride
        if sign > 0:
            for j in range(length):
                e[j] = e[j] + (a[j] + b[j]) * weight
        else:
            for j in range(length):
                e[j] = e[j] - (a[j] + b[j]) * weight


cdef void _lift_forward(double* low, double* high, Py_ssize_t ne, Py_ssize_t no, Py_ssize_t length,
                        Py_ssize_t stride) noexcept nogil:
    """The 9/7 analysis of one line of ``ne`` even (``low``) and ``no`` odd (``high``) samples, in place:
    ``wavelet._forward_1d``'s lifting, mirrored at both ends; a line of one sample is left as it is."""
    cdef Py_ssize_t j
    if no == 0:
        return
    for j in range(2):
        _predict(low, high, ne, no, length, stride, _STEPS[2 * j], 1)
        _update(low, high, ne, no, length, stride, _STEPS[2 * j + 1], 1)
    for j in range(ne):
        _scale_line(low + j * stride, length, 0)
    for j in range(no):
        _scale_line(high + j * stride, length, 1)


cdef void _lift_inverse(double* low, double* high, Py_ssize_t ne, Py_ssize_t no, Py_ssize_t length,
                        Py_ssize_t stride) noexcept nogil:
    """Inverse of :func:`_lift_forward`, in place."""
    cdef Py_ssize_t j
    if no == 0:
        return
    for j in range(ne):
        _scale_line(low + j * stride, length, 1)
    for j in range(no):
        _scale_line(high + j * stride, length, 0)
    for j in range(1, -1, -1):
        _update(low, high, ne, no, length, stride, _STEPS[2 * j + 1], -1)
        _predict(low, high, ne, no, length, stride, _STEPS[2 * j], -1)


cdef inline void _scale_line(double* x, Py_ssize_t length, int up) noexcept nogil:
    """x *= CDF97_SCALE (``up``) or x /= CDF97_SCALE."""
    cdef Py_ssize_t j
    if up:
        for j in range(length):
            x[j] = x[j] * _SCALE
    else:
        for j in range(length):
            x[j] = x[j] / _SCALE


def forward97(const double[:, :, ::1] image):
    """One level of the 9/7 analysis of (planes, y, x) ``image``: ``(ll, hl, lh, hh)``, as
    ``wavelet.forward`` names them (rows split first, then the columns of each half). Each row is
    split and lifted straight into its subbands' row, whose columns are then lifted in place."""
    cdef Py_ssize_t planes = image.shape[0], height = image.shape[1], width = image.shape[2]
    cdef Py_ssize_t ew = (width + 1) // 2, ow = width // 2, eh = (height + 1) // 2, oh = height // 2
    ll, lh = np.empty((planes, eh, ew)), np.empty((planes, oh, ew))
    hl, hh = np.empty((planes, eh, ow)), np.empty((planes, oh, ow))
    cdef double[:, :, ::1] ll_ = ll, lh_ = lh, hl_ = hl, hh_ = hh
    cdef Py_ssize_t k, y, x
    cdef const double* source
    cdef double* even
    cdef double* odd
    if height == 0 or width == 0:
        return ll, hl, lh, hh
    with nogil:
        for k in range(planes):
            for y in range(height):
                source = &image[k, y, 0]
                even = &ll_[k, y >> 1, 0] if (y & 1) == 0 else &lh_[k, y >> 1, 0]
                odd = <double*>NULL if not ow else (&hl_[k, y >> 1, 0] if (y & 1) == 0 else &hh_[k, y >> 1, 0])
                for x in range(ow):
                    even[x] = source[2 * x]
                    odd[x] = source[2 * x + 1]
                if ew > ow:
                    even[ow] = source[2 * ow]
                if ow:
                    _lift_forward(even, odd, ew, ow, 1, 1)
            if oh:
                _lift_forward(&ll_[k, 0, 0], &lh_[k, 0, 0], eh, oh, ew, ew)
                if ow:
                    _lift_forward(&hl_[k, 0, 0], &hh_[k, 0, 0], eh, oh, ow, ow)
    return ll, hl, lh, hh


cdef inline void _load(const double* values, const int32_t* symbols, Py_ssize_t plane, Py_ssize_t n, double step,
                       double reconstruction, double* out) noexcept nogil:
    """The ``n`` coefficients of plane ``plane`` into ``out``: copied from ``values``, or dequantised from
    ``symbols`` where given (neither: the subband is empty)."""
    if symbols != NULL:
        _dequantise_into(symbols + plane * n, n, step, reconstruction, out)
    elif values != NULL:
        memcpy(out, values + plane * n, n * sizeof(double))


cdef inline const double* _doubles(const double[:, :, ::1] a) noexcept nogil:
    return &a[0, 0, 0] if a.shape[0] * a.shape[1] * a.shape[2] else <const double*>NULL


cdef inline const int32_t* _symbols(const int32_t[:, :, ::1] a) noexcept nogil:
    return &a[0, 0, 0] if a.shape[0] * a.shape[1] * a.shape[2] else <const int32_t*>NULL


def inverse97(ll, hl, lh, hh, steps=None, double reconstruction=0.0):
    """Inverse of :func:`forward97` (C-contiguous (planes, y, x) subbands; not modified): ``ll`` float64;
    the details float64 too, or, with ``steps`` (of ``hl``, ``lh``, ``hh``), int32 quantiser symbols that
    are dequantised as :func:`dequantise` does on their way into the lifting (one pass less over them)."""
    cdef const double[:, :, ::1] ll_ = ll
    cdef const double[:, :, ::1] detail
    cdef const double* values[3]
    cdef const int32_t* symbols[3]
    cdef double step[3]
    cdef Py_ssize_t j
    for j, band in enumerate((hl, lh, hh)):
        values[j] = NULL
        symbols[j] = NULL
        step[j] = 1.0
        if steps is None:
            detail = band
            values[j] = _doubles(detail)
        else:
            symbols[j], step[j] = _symbols(band), steps[j]
    cdef Py_ssize_t planes = ll.shape[0], eh = ll.shape[1], ew = ll.shape[2], oh = lh.shape[1], ow = hl.shape[2]
    cdef Py_ssize_t height = eh + oh, width = ew + ow, k, y, x, row
    out = np.empty((planes, height, width))
    if height == 0 or width == 0:
        return out
    cdef double[:, :, ::1] image = out
    cdef double[::1] scratch = np.empty(height * width)
    cdef double* low = &scratch[0]  # the plane's rows of (LL; LH), then those of (HL; HH)
    cdef double* high = low + height * ew
    cdef double* even
    cdef double* odd
    cdef double* target
    with nogil:
        for k in range(planes):
            memcpy(low, &ll_[k, 0, 0], eh * ew * sizeof(double))
            _load(values[1], symbols[1], k, oh * ew, step[1], reconstruction, low + eh * ew)
            _load(values[0], symbols[0], k, eh * ow, step[0], reconstruction, high)
            _load(values[2], symbols[2], k, oh * ow, step[2], reconstruction, high + eh * ow)
            if oh:
                _lift_inverse(low, low + eh * ew, eh, oh, ew, ew)
                _lift_inverse(high, high + eh * ow, eh, oh, ow, ow)
            for y in range(height):  # row y is even row y // 2 or odd row y // 2 of the column split
                row, target = (y >> 1) + (eh if y & 1 else 0), &image[k, y, 0]
                even, odd = low + row * ew, high + row * ow
                if ow:
                    _lift_inverse(even, odd, ew, ow, 1, 1)
                for x in range(ow):
                    target[2 * x] = even[x]
                    target[2 * x + 1] = odd[x]
                if ew > ow:
                    target[2 * ow] = even[ow]
    return out


def quantise(const double[:, :, ::1] coefficients, double step, double rounding):
    """``(sign(c) * floor(|c| / step + rounding)).astype(int32)``: the dead-zone quantiser (symbols of
    coefficients below 2**31 steps: a tile's quantised subbands are int32 throughout)."""
    out = np.empty((coefficients.shape[0], coefficients.shape[1], coefficients.shape[2]), np.int32)
    cdef int32_t[:, :, ::1] q = out
    cdef Py_ssize_t k, y, x
    cdef double c
    cdef int64_t magnitude
    with nogil:
        for k in range(q.shape[0]):
            for y in range(q.shape[1]):
                for x in range(q.shape[2]):
                    c = coefficients[k, y, x]
                    magnitude = <int64_t>floor(fabs(c) / step + rounding)  # sign(c) * floor(...), exactly
                    q[k, y, x] = <int32_t>(-magnitude if c < 0 else magnitude)
    return out


def dequantise(const int32_t[:, :, ::1] symbols, double step, double reconstruction):
    """``sign(q) * (|q| + reconstruction) * step`` in float64."""
    out = np.empty((symbols.shape[0], symbols.shape[1], symbols.shape[2]))
    cdef double[:, :, ::1] c = out
    cdef Py_ssize_t n = symbols.shape[0] * symbols.shape[1] * symbols.shape[2]
    if n:
        with nogil:
            _dequantise_into(&symbols[0, 0, 0], n, step, reconstruction, &c[0, 0, 0])
    return out


cdef inline void _dequantise_into(const int32_t* symbols, Py_ssize_t n, double step, double reconstruction,
                                  double* out) noexcept nogil:
    """``out[i] = sign(q) * (|q| + reconstruction) * step`` for the ``n`` symbols ``q``, in float64."""
    cdef Py_ssize_t i
    cdef int32_t q
    for i in range(n):
        q = symbols[i]  # branch-free: the signs of quantised coefficients are unpredictable
        out[i] = <double>((q > 0) - (q < 0)) * (<double>((q ^ (q >> 31)) - (q >> 31)) + reconstruction) * step


cdef void _accumulate(double* total, const double** sources, Py_ssize_t offset, const double* weights,
                      Py_ssize_t stride, Py_ssize_t terms, Py_ssize_t count) noexcept nogil:
    """``total[i] = total[i] + weights[k * stride] * sources[k][offset + i]`` for ``k = 0, 1, ...`` in
    order: per element the IEEE operations of one loop per term, but four terms per pass over
    ``total`` (a quarter of its loads and stores)."""
    cdef Py_ssize_t k = 0, i
    cdef const double* a
    cdef const double* b
    cdef const double* c
    cdef const double* d
    cdef double wa, wb, wc, wd
    while k + 4 <= terms:
        a, b, c, d = sources[k] + offset, sources[k + 1] + offset, sources[k + 2] + offset, sources[k + 3] + offset
        wa, wb, wc, wd = weights[k * stride], weights[(k + 1) * stride], weights[(k + 2) * stride], weights[(k + 3) * stride]
        for i in range(count):
            total[i] = total[i] + wa * a[i] + wb * b[i] + wc * c[i] + wd * d[i]  # left to right, as C adds
        k += 4
    while k < terms:
        a, wa = sources[k] + offset, weights[k * stride]
        for i in range(count):
            total[i] = total[i] + wa * a[i]
        k += 1


def synthesise(const double[:, :, ::1] components, const int64_t[::1] means, const double[:, ::1] weights):
    """Bands ``means[b] + sum_k weights[k, b] * components[k]``, the terms added in ``k`` order in
    float64, stored as float32 (the precision the engine takes reconstructions in)."""
    cdef Py_ssize_t kept = components.shape[0], pixels = components.shape[1] * components.shape[2]
    cdef Py_ssize_t bands = means.shape[0], b, k, i, block, start, count
    out = np.empty((bands, components.shape[1], components.shape[2]), np.float32)
    if pixels == 0:
        return out
    cdef float[:, :, ::1] result = out
    cdef double[_BLOCK] sums
    cdef const double** sources = <const double**>malloc(kept * sizeof(double*))
    cdef float* row
    for k in range(kept):
        sources[k] = &components[k, 0, 0]
    with nogil:
        for block in range((pixels + _BLOCK - 1) // _BLOCK):  # blocks of pixels that stay in the L1 cache
            start = block * _BLOCK
            count = _min(_BLOCK, pixels - start)
            for b in range(bands):
                for i in range(count):
                    sums[i] = <double>means[b]
                _accumulate(sums, sources, start, &weights[0, b], bands, kept, count)
                row = &result[b, 0, 0] + start
                for i in range(count):
                    row[i] = <float>sums[i]
    free(sources)
    return out


cdef double _interpolated(int64_t a, int64_t b, double virtual, Py_ssize_t below) noexcept nogil:
    """numpy's ``_lerp`` of the order statistics ``a <= b`` at ``virtual`` (``below`` = its floor)."""
    cdef double gamma = virtual - <double>below, diff = <double>(b - a)
    if gamma >= 0.5:
        return <double>b - diff * (1 - gamma)
    return <double>a + diff * gamma


cdef int64_t* _histogram(const int64_t* values, Py_ssize_t n, int64_t largest) noexcept nogil:
    """The counts (calloc'd, ``largest + 1`` of them) of the ``n`` values in ``0..largest``, from four
    interleaved histograms summed at the end: in one, each increment of a run of equal values (mostly
    zeros at low rates) would wait for the one before."""
    cdef Py_ssize_t i, size = largest + 1
    cdef int64_t* counts = <int64_t*>calloc(4 * size, sizeof(int64_t))
    for i in range(0, n - 3, 4):
        counts[values[i]] += 1
        counts[size + values[i + 1]] += 1
        counts[2 * size + values[i + 2]] += 1
        counts[3 * size + values[i + 3]] += 1
    for i in range(n - n % 4, n):
        counts[values[i]] += 1
    for i in range(size):
        counts[i] += counts[size + i] + counts[2 * size + i] + counts[3 * size + i]
    return counts


cdef void _terciles(const int64_t* values, Py_ssize_t n, int64_t* scratch, double* thresholds) noexcept nogil:
    """``np.quantile(values, [1/3, 2/3])`` (linear interpolation between order statistics, numpy's
    operations in numpy's order) of ``n`` non-negative integers, by a histogram where their range is
    small (as for quantised coefficients) and by selection otherwise. ``scratch``: room for ``n``."""
    cdef Py_ssize_t i, q
    cdef Py_ssize_t below[2]
    cdef double virtual[2]
    cdef int64_t largest = 0, a, b, v, seen
    cdef int64_t* counts
    for i in range(n):
        if values[i] > largest:
            largest = values[i]
    if n == 1 or largest == 0:
        thresholds[0] = thresholds[1] = <double>values[0] if n == 1 else 0.0
        return
    for q in range(2):
        virtual[q] = <double>(n - 1) * ((1.0 / 3.0) if q == 0 else (2.0 / 3.0))
        below[q] = <Py_ssize_t>floor(virtual[q])
    if largest < n:
        counts = _histogram(values, n, largest)
        for q in range(2):
            seen, v = 0, 0  # the values of ranks below and below + 1: the first whose cumulative count passes each
            while seen + counts[v] <= below[q]:
                seen += counts[v]
                v += 1
            a = v
            if seen + counts[v] <= below[q] + 1:
                seen += counts[v]
                v += 1
                while counts[v] == 0:
                    v += 1
            thresholds[q] = _interpolated(a, v, virtual[q], below[q])
        free(counts)
        return
    memcpy(scratch, values, n * sizeof(int64_t))
    for q in range(2):
        nth_element(scratch, scratch + below[q], scratch + n)
        a, b = scratch[below[q]], scratch[below[q] + 1]
        for i in range(below[q] + 2, n):
            if scratch[i] < b:
                b = scratch[i]
        thresholds[q] = _interpolated(a, b, virtual[q], below[q])


def context_classes(parent, siblings, Py_ssize_t height, Py_ssize_t width, bint wide):
    """``subband_coding._contexts``: (planes, height, width) uint8 classes 0..2, the terciles per plane
    of the magnitude ``M`` of each coefficient: its parent's magnitude (upsampled, edge-extended;
    with ``wide``, the parent's 3 x 3 neighbourhood sum, edges replicated) plus 9 times each
    sibling's magnitude at the same place (edge-extended). ``parent``, ``siblings``: int32
    C-contiguous (planes, y, x) arrays (``parent`` may be None)."""
    cdef Py_ssize_t planes = len(siblings[0]) if parent is None else parent.shape[0]
    cdef Py_ssize_t k, j, i, n = height * width, count = len(siblings)
    out = np.zeros((planes, height, width), np.uint8)
    if n == 0:
        return out
    if count > 2:
        raise ValueError("at most two siblings (HL and LH for HH)")
    cdef uint8_t[:, :, ::1] classes = out
    # one plane at a time, so that its magnitudes stay in the cache through every pass
    cdef int64_t[::1] magnitude = np.empty(n, np.int64)
    cdef int64_t[::1] scratch = np.empty(n, np.int64)
    cdef const int32_t[:, :, ::1] source
    cdef const int32_t[:, :, ::1] first
    cdef const int32_t[:, :, ::1] second
    cdef int64_t[::1] spread
    cdef const int32_t* sibling_data[2]
    cdef Py_ssize_t sibling_height[2]
    cdef Py_ssize_t sibling_width[2]
    cdef bint has_parent = parent is not None
    cdef Py_ssize_t hp = 0, wp = 0
    if has_parent:
        source = parent
        hp, wp = source.shape[1], source.shape[2]
        spread = np.empty(hp * wp, np.int64)
    if count >= 1:
        first = siblings[0]
        sibling_data[0], sibling_height[0], sibling_width[0] = &first[0, 0, 0], first.shape[1], first.shape[2]
    if count == 2:
        second = siblings[1]
        sibling_data[1], sibling_height[1], sibling_width[1] = &second[0, 0, 0], second.shape[1], second.shape[2]
    cdef double thresholds[2]
    cdef int64_t low, high  # the thresholds floored: for whole m, m > t exactly when m > floor(t)
    cdef int64_t* m = &magnitude[0]
    cdef uint8_t* c
    with nogil:
        for k in range(planes):
            if has_parent:
                _parent_spread(&source[k, 0, 0], hp, wp, wide, &spread[0])
                _upsample_into(&spread[0], hp, wp, m, height, width)
            else:
                memset(m, 0, n * sizeof(int64_t))
            for j in range(count):
                _add_sibling(sibling_data[j] + k * sibling_height[j] * sibling_width[j], sibling_height[j],
                             sibling_width[j], m, height, width)
            c = &classes[k, 0, 0]
            _terciles(m, n, &scratch[0], thresholds)
            low, high = <int64_t>floor(thresholds[0]), <int64_t>floor(thresholds[1])
            for i in range(n):
                c[i] = (m[i] > low) + (m[i] > high)
    return out


cdef inline int64_t _abs(int64_t v) noexcept nogil:
    return (v ^ (v >> 63)) - (v >> 63)


cdef void _parent_spread(const int32_t* parent, Py_ssize_t hp, Py_ssize_t wp, bint wide, int64_t* spread) noexcept nogil:
    """``|parent|``, or with ``wide`` its 3 x 3 neighbourhood sums (edges replicated), separably:
    along x into ``spread``, then along y in place through one saved row."""
    cdef Py_ssize_t y, x
    cdef const int32_t* row
    cdef int64_t* out
    cdef int64_t above, current
    for y in range(hp):
        row, out = parent + y * wp, spread + y * wp
        if not wide:
            for x in range(wp):
                out[x] = _abs(row[x])
            continue
        for x in range(wp):
            out[x] = _abs(row[_max(x - 1, 0)]) + _abs(row[x]) + _abs(row[_min(x + 1, wp - 1)])
    if not wide:
        return
    cdef int64_t* saved = <int64_t*>malloc(wp * sizeof(int64_t))  # the row above, before its update
    memcpy(saved, spread, wp * sizeof(int64_t))
    for y in range(hp):
        out = spread + y * wp
        for x in range(wp):
            above, current = saved[x], out[x]
            saved[x] = current
            out[x] = above + current + (out + wp)[x] if y + 1 < hp else above + current + current
    free(saved)


cdef void _upsample_into(const int64_t* spread, Py_ssize_t hp, Py_ssize_t wp, int64_t* magnitude, Py_ssize_t height,
                         Py_ssize_t width) noexcept nogil:
    """magnitude[y, x] = spread[min(y // 2, hp - 1), min(x // 2, wp - 1)]: each parent row widened once,
    then copied to the rows below it that share it."""
    cdef Py_ssize_t y, x, pairs = _min(width // 2, wp)
    cdef const int64_t* row
    cdef int64_t* out
    for y in range(height):
        out = magnitude + y * width
        if y and _min(y // 2, hp - 1) == _min((y - 1) // 2, hp - 1):
            memcpy(out, out - width, width * sizeof(int64_t))
            continue
        row = spread + _min(y // 2, hp - 1) * wp
        for x in range(pairs):
            out[2 * x] = row[x]
            out[2 * x + 1] = row[x]
        for x in range(2 * pairs, width):
            out[x] = row[_min(x >> 1, wp - 1)]


cdef void _add_sibling(const int32_t* sibling, Py_ssize_t hs, Py_ssize_t ws, int64_t* magnitude, Py_ssize_t height,
                       Py_ssize_t width) noexcept nogil:
    """magnitude[y, x] += 9 |sibling[min(y, hs - 1), min(x, ws - 1)]|."""
    cdef Py_ssize_t y, x, inner = _min(width, ws)
    cdef const int32_t* row
    cdef int64_t* out
    for y in range(height):
        row, out = sibling + _min(y, hs - 1) * ws, magnitude + y * width
        for x in range(inner):
            out[x] += 9 * _abs(row[x])
        for x in range(inner, width):
            out[x] += 9 * _abs(row[ws - 1])


def class_entries(const uint8_t[:, ::1] table, const uint8_t[:, :, ::1] classes):
    """``table[k, classes[k, y, x]]``: each coefficient's scale byte from its plane's bytes per class."""
    out = np.empty((classes.shape[0], classes.shape[1], classes.shape[2]), np.uint8)
    cdef uint8_t[:, :, ::1] entries = out
    cdef Py_ssize_t k, y, x
    with nogil:
        for k in range(classes.shape[0]):
            for y in range(classes.shape[1]):
                for x in range(classes.shape[2]):
                    entries[k, y, x] = table[k, classes[k, y, x]]
    return out


def class_magnitudes(const int32_t[:, :, ::1] values, const uint8_t[:, :, ::1] classes, Py_ssize_t count):
    """Per plane and class 0..count-1: the sum of ``|values|`` and the number of coefficients (int64 each)."""
    sums, counts = np.zeros((values.shape[0], count), np.int64), np.zeros((values.shape[0], count), np.int64)
    cdef int64_t[:, ::1] s = sums
    cdef int64_t[:, ::1] c = counts
    cdef Py_ssize_t k, y, x
    cdef uint8_t cls
    cdef int64_t v
    for k in range(values.shape[0]):
        for y in range(values.shape[1]):
            for x in range(values.shape[2]):
                cls = classes[k, y, x]
                if cls >= count:
                    raise ValueError(f"class {cls} out of 0..{count - 1}")
                v = values[k, y, x]
                s[k, cls] += v if v >= 0 else -v
                c[k, cls] += 1
    return sums, counts


def group_by_entry(const uint8_t[::1] entries):
    """``np.argsort(entries, kind="stable")`` and ``np.bincount(entries, minlength=256)``, by one counting sort."""
    counts = np.zeros(256, np.int64)
    order = np.empty(entries.shape[0], np.int64)
    cdef int64_t[::1] c = counts
    cdef int64_t[::1] o = order
    cdef int64_t[256] start
    cdef Py_ssize_t i
    cdef int64_t total = 0
    with nogil:
        for i in range(entries.shape[0]):
            c[entries[i]] += 1
        for i in range(256):
            start[i] = total
            total += c[i]
        for i in range(entries.shape[0]):
            o[start[entries[i]]] = i
            start[entries[i]] += 1
    return order, counts


def grouped_bins(const int64_t[::1] values, const int64_t[::1] order, const int64_t[::1] counts,
                 const int32_t[::1] radii):
    """The coder's symbols of raster ``values`` taken in the grouped ``order`` (``counts`` per entry, as
    :func:`group_by_entry` gives them): the bin ``v + radius`` of the entry's law, or the escape bin
    ``2 radius + 1`` where ``|v| > radius``; and the escaped values, in the same order."""
    cdef Py_ssize_t n = order.shape[0], entry, i = 0, j = 0, end = 0, escapes = 0
    bins = np.empty(n, np.int32)
    cdef int32_t[::1] b = bins
    cdef int64_t[::1] e = np.empty(n, np.int64)
    cdef int64_t v, r
    with nogil:
        for entry in range(counts.shape[0]):
            r = radii[entry]
            end = end + counts[entry]
            while i < end:
                v = values[order[i]]
                if v > r or v < -r:
                    b[i] = <int32_t>(2 * r + 1)
                    e[escapes] = v
                    escapes += 1
                else:
                    b[i] = <int32_t>(v + r)
                i += 1
    return bins, np.asarray(e[:escapes]).copy()


def grouped_values(const int32_t[::1] bins, const int64_t[::1] counts, const int32_t[::1] radii,
                   const int64_t[::1] order):
    """Inverse of :func:`grouped_bins` but for the escaped values: int32 raster values (escapes hold 0)
    and the raster positions of the escapes, in grouped order."""
    cdef Py_ssize_t n = order.shape[0], entry, i = 0, end = 0, escapes = 0
    values = np.empty(n, np.int32)
    cdef int32_t[::1] out = values
    cdef int64_t[::1] positions = np.empty(n, np.int64)
    cdef int64_t r
    with nogil:
        for entry in range(counts.shape[0]):
            r = radii[entry]
            end = end + counts[entry]
            while i < end:
                if bins[i] == 2 * r + 1:
                    out[order[i]] = 0
                    positions[escapes] = order[i]
                    escapes += 1
                else:
                    out[order[i]] = <int32_t>(bins[i] - r)
                i += 1
    return values, np.asarray(positions[:escapes]).copy()


def spectral_map(const floating[:, :, ::1] reconstruction, const double[:, ::1] weights, const double[::1] offsets,
                 double scale, const double[::1] centre, double limit):
    """``R - (rint(scale * (K @ (R - c))) + b)`` with ``R = clip(rint(reconstruction), -limit, limit)``
    per pixel, in float64 (bands, y, x): the spectral layer's map. Every product and sum is of whole
    numbers far below 2**53, so exact in any order (as numpy's matrix product is too)."""
    cdef Py_ssize_t bands = reconstruction.shape[0], pixels = reconstruction.shape[1] * reconstruction.shape[2]
    cdef Py_ssize_t block, start, count, b, j, i
    out = np.empty((bands, reconstruction.shape[1], reconstruction.shape[2]))
    cdef double[:, :, ::1] result = out
    cdef double[:, ::1] rounded = np.empty((bands, _SPECTRAL_BLOCK))
    cdef double[:, ::1] centred = np.empty((bands, _SPECTRAL_BLOCK))
    cdef double[_SPECTRAL_BLOCK] total
    cdef double value, offset
    cdef double* row
    cdef double* source
    cdef const double** sources = <const double**>malloc(bands * sizeof(double*))
    for j in range(bands):
        sources[j] = &centred[j, 0]
    with nogil:
        for block in range((pixels + _SPECTRAL_BLOCK - 1) // _SPECTRAL_BLOCK):
            start = block * _SPECTRAL_BLOCK
            count = _min(_SPECTRAL_BLOCK, pixels - start)
            for j in range(bands):
                for i in range(count):
                    value = rint(<double>(&reconstruction[j, 0, 0])[start + i])
                    value = -limit if value < -limit else (limit if value > limit else value)
                    rounded[j, i] = value
                    centred[j, i] = value - centre[j]
            for b in range(bands):  # per pixel the terms are added in band order, in loops over pixels
                for i in range(count):
                    total[i] = 0.0
                _accumulate(total, sources, 0, &weights[b, 0], 1, bands, count)
                row, source, offset = &result[b, 0, 0] + start, &rounded[b, 0], offsets[b]
                for i in range(count):
                    row[i] = source[i] - (rint(total[i] * scale) + offset)
    free(sources)
    return out


ctypedef fused whole_number:
    uint16_t
    int16_t


def round_into(const floating[:, :, ::1] values, whole_number[:, :, ::1] out, double low, double high, double nodata):
    """``out[...] = clip(rint(values), low, high)`` (``np.clip(np.rint(values), low, high).astype(out.dtype)``),
    then every value equal to ``nodata`` moved one step inside the range (``nodata + 1``, or ``- 1`` at
    the top) so that a valid value never reads as no-data; NaN becomes ``low``."""
    cdef Py_ssize_t i, n = values.shape[0] * values.shape[1] * values.shape[2]
    if (out.shape[0], out.shape[1], out.shape[2]) != (values.shape[0], values.shape[1], values.shape[2]):
        raise ValueError("round_into: out has another shape")
    if n == 0:
        return
    cdef const floating* source = &values[0, 0, 0]
    cdef whole_number* target = &out[0, 0, 0]
    cdef double v, moved = nodata + 1 if nodata < high else nodata - 1
    with nogil:
        for i in range(n):
            v = rint(<double>source[i])
            v = v if v <= high else high
            v = v if v >= low else low  # NaN too
            target[i] = <whole_number>(moved if v == nodata else v)


ctypedef fused signed_integer:
    int32_t
    int64_t


def largest_magnitudes(const signed_integer[:, :, ::1] planes):
    """``np.abs(planes).max(axis=(-2, -1))``, 0 for empty planes (int64)."""
    out = np.zeros(planes.shape[0], np.int64)
    cdef int64_t[::1] largest = out
    cdef Py_ssize_t k, i, n = planes.shape[1] * planes.shape[2]
    cdef const signed_integer* values
    cdef int64_t v, m
    with nogil:
        for k in range(planes.shape[0]):
            if n == 0:
                continue
            values = &planes[k, 0, 0]
            m = 0
            for i in range(n):
                v = values[i]
                v = (v ^ (v >> 63)) - (v >> 63)
                m = v if v > m else m
            largest[k] = m
    return out


# --- rANS: the subband coder of klt-wavelet-v3 -------------------------------------------------------
# 64-bit state, 32-bit words, probabilities in 24-bit fixed point (the layout of constriction's ANS
# coder, written here so that the decoder can look up each symbol's law from its context class as it goes).
# The encoder starts from state 0, so the first 32 bits of information cost no word of their own; it
# emits a word only from a state of 2**40 or more, after which the state stays at 2**32 or above. The
# stream ends with the final state's two words (high first), one if it is below 2**32, none if 0; the
# decoder refills below 2**32 while words remain and must end at state 0 with every word read.
# A law is a cumulative table ``cdf[0..n]`` (cdf[0] = 0, cdf[n] = 2**24, every frequency >= 1) over the
# symbols 0, -1, +1, -2, +2, ..., -R, +R and an escape (index 2R + 1), most probable first; an escaped
# value follows as 16 uniform bits (its zigzag code).

cdef enum:
    RANS_PRECISION = 24
    _ESCAPE_BITS = 16
cdef uint64_t _RANS_LOW = (<uint64_t>1) << 32
cdef uint32_t _RANS_MASK = ((<uint32_t>1) << RANS_PRECISION) - 1


cdef inline uint32_t _zigzag(int64_t v) noexcept nogil:
    return <uint32_t>((v << 1) ^ (v >> 63))


cdef inline int64_t _unzigzag(uint32_t z) noexcept nogil:
    return <int64_t>(z >> 1) ^ -(<int64_t>(z & 1))


cdef inline void _rans_push(uint64_t* state, vector[uint32_t]* words, uint32_t start, uint32_t frequency) noexcept nogil:
    cdef uint64_t x = state[0]
    if x >= ((_RANS_LOW >> RANS_PRECISION) << 32) * frequency:
        words.push_back(<uint32_t>x)
        x >>= 32
    state[0] = ((x // frequency) << RANS_PRECISION) + (x % frequency) + start


def rans_encode(list pieces, const uint32_t[::1] cdf, const int64_t[::1] offsets, const int32_t[::1] radii):
    """The rANS stream of ``pieces``: (values (planes, y, x) int32, classes (planes, y, x) uint8, table
    (planes, classes) uint8) in decoding order, each value coded under the law of scale byte
    ``table[plane, class]`` (``cdf[offsets[byte]:]``, radius ``radii[byte]``); byte 0 codes nothing
    (every value of such a class must be 0). Raises ValueError on a value the format cannot hold."""
    cdef vector[uint32_t] words
    cdef uint64_t state = 0
    cdef Py_ssize_t p, i, n, planes, width
    cdef int64_t v
    cdef uint32_t z, index, radius
    cdef uint8_t entry
    cdef const int32_t[:, :, ::1] values
    cdef const uint8_t[:, :, ::1] classes
    cdef const uint8_t[:, ::1] table
    cdef const int32_t* row
    cdef const uint8_t* row_classes
    cdef const uint32_t* law
    cdef int bad = 0
    for piece in reversed(pieces):
        values, classes, table = piece
        planes, n, width = values.shape[0], values.shape[1] * values.shape[2], table.shape[1]
        with nogil:
            for p in range(planes - 1, -1, -1):
                row, row_classes = &values[p, 0, 0], &classes[p, 0, 0]
                for i in range(n - 1, -1, -1):
                    entry = table[p, row_classes[i]] if row_classes[i] < width else 0
                    v = row[i]
                    if entry == 0:
                        bad |= v != 0
                        continue
                    if v <= -(1 << 15) or v >= (1 << 15):
                        bad = 1
                        continue
                    radius = <uint32_t>radii[entry]
                    law = &cdf[offsets[entry]]
                    z = _zigzag(v)
                    if z > 2 * radius:
                        _rans_push(&state, &words, z << (RANS_PRECISION - _ESCAPE_BITS), 1 << (RANS_PRECISION - _ESCAPE_BITS))
                        index = 2 * radius + 1
                    else:
                        index = z
                    _rans_push(&state, &words, law[index], law[index + 1] - law[index])
        if bad:
            raise ValueError("a value outside +-2**15, a class beyond its table, or a non-zero value in an all-zero class")
    if state:
        words.push_back(<uint32_t>state)
    if state >= _RANS_LOW:
        words.push_back(<uint32_t>(state >> 32))
    out = np.empty(words.size(), "<u4")
    cdef uint32_t[::1] view = out
    for i in range(<Py_ssize_t>words.size()):
        view[i] = words[words.size() - 1 - i]
    return out.tobytes()


cdef class RansDecoder:
    """Reads a :func:`rans_encode` stream piece by piece, in the order it was encoded, so the classes of
    a later piece may depend on the values of earlier ones. Any byte string decodes to some values
    without reading out of bounds (no word is read past the end); :meth:`finished` says whether it
    was a complete, exact stream."""

    cdef const uint32_t[::1] _words
    cdef Py_ssize_t _position
    cdef uint64_t _state

    def __init__(self, const uint32_t[::1] words):
        self._words = words
        self._position = 0
        self._state = 0
        if words.shape[0] == 1:
            self._state = self._next()
        elif words.shape[0] > 1:
            self._state = (<uint64_t>self._next() << 32) | self._next()

    cdef inline uint64_t _refilled(self, uint64_t x) noexcept nogil:
        """``x`` with the next word shifted in, where it is below 2**32 and a word remains."""
        if x < _RANS_LOW and self._position < self._words.shape[0]:
            self._position += 1
            return (x << 32) | self._words[self._position - 1]
        return x

    cdef inline uint32_t _next(self) noexcept nogil:
        self._position += 1
        return self._words[self._position - 1]

    def decode(self, const uint8_t[:, :, ::1] classes, const uint8_t[:, ::1] table, const uint32_t[::1] cdf,
               const int64_t[::1] offsets, const int32_t[::1] radii):
        """The next piece: (planes, y, x) int32 values of the context ``classes`` under ``table`` (each plane's
        laws looked up once per class). A symbol is searched for among the first few of its law one by
        one: the branches are mostly predicted (most values are 0 or +-1), which keeps them off the chain
        from one state to the next, where a branch-free comparison of several would sit (slower here)."""
        cdef Py_ssize_t planes = classes.shape[0], n = classes.shape[1] * classes.shape[2]
        cdef Py_ssize_t width = _min(table.shape[1], 256)
        out = np.zeros((planes, classes.shape[1], classes.shape[2]), np.int32)  # the zeros of classes of zeros
        cdef int32_t[:, :, ::1] values = out
        cdef Py_ssize_t p, i, c, low, high, middle
        cdef uint64_t x = self._state
        cdef uint32_t slot, s
        cdef uint8_t cls
        cdef uint8_t[256] entry
        cdef const uint32_t* law_of[256]
        cdef uint32_t[256] escape_of
        cdef const uint32_t* law
        cdef const uint8_t* row_classes
        cdef int32_t* row
        with nogil:
            for p in range(planes):
                for c in range(width):  # this plane's law per class
                    entry[c] = table[p, c]
                    law_of[c], escape_of[c] = &cdf[offsets[entry[c]]], 2 * <uint32_t>radii[entry[c]] + 1
                row, row_classes = &values[p, 0, 0], &classes[p, 0, 0]
                for i in range(n):
                    cls = row_classes[i]
                    if cls >= width or entry[cls] == 0:  # a class of zeros: nothing coded
                        continue
                    law = law_of[cls]
                    slot = <uint32_t>x & _RANS_MASK
                    s = 0
                    while s < 8 and s < escape_of[cls] and law[s + 1] <= slot:  # most values are among the first few
                        s += 1
                    if s == 8 and law[s + 1] <= slot:
                        low, high = s + 1, escape_of[cls]  # the symbol is the last index in [low, high] with law[.] <= slot
                        while low < high:
                            middle = (low + high + 1) >> 1
                            if law[middle] <= slot:
                                low = middle
                            else:
                                high = middle - 1
                        s = <uint32_t>low
                    x = self._refilled((law[s + 1] - law[s]) * (x >> RANS_PRECISION) + slot - law[s])
                    if s == escape_of[cls]:  # escape: 16 uniform bits follow
                        slot = <uint32_t>x & _RANS_MASK
                        row[i] = <int32_t>_unzigzag(slot >> (RANS_PRECISION - _ESCAPE_BITS))
                        x = self._refilled((x >> RANS_PRECISION) * (1 << (RANS_PRECISION - _ESCAPE_BITS))
                                           + (slot & ((1 << (RANS_PRECISION - _ESCAPE_BITS)) - 1)))
                    else:
                        row[i] = <int32_t>_unzigzag(s)
        self._state = x
        return out

    def finished(self) -> bool:
        """Whether every word was read and the state is back where the encoder began (0)."""
        return self._position == self._words.shape[0] and self._state == 0
