# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compiled one-pass pixel counters for scoring label images.

Benchmarks score thousands of full-size label images (a Cityscapes frame is 2048 x 1024), where
numpy's chain of look-ups, casts and ``bincount`` costs several passes over every pixel. Each
kernel here is one pass, runs without the GIL (the benchmark readers score images on threads), and
counts into a few interleaved histograms, so runs of one label value (the common case in label
images) do not wait on one counter. ``geoseg/evaluation/metrics.py`` calls them.
"""

import numpy as np

from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy

ctypedef fused label_t:
    uint8_t
    uint16_t

ctypedef fused label2_t:
    uint8_t
    uint16_t


cdef inline uint64_t _load8(const void* p) noexcept nogil:
    cdef uint64_t w
    memcpy(&w, p, 8)  # an unaligned 8-byte load
    return w


cdef inline bint _same8(const label_t* p) noexcept nogil:
    """Whether the 8 values from ``p`` on are all equal."""
    cdef uint64_t b
    if label_t is uint8_t:
        return _load8(p) == <uint64_t>p[0] * 0x0101010101010101ULL
    else:
        b = <uint64_t>p[0] * 0x0001000100010001ULL
        return _load8(p) == b and _load8(p + 4) == b


# Label images are mostly runs of one value, so both counters first test whether a block of 8 pixels
# is uniform in both images (two or three 8-byte compares) and count it at once; other blocks are
# counted pixel by pixel.

def coded_histogram(const label_t[::1] ref, const label2_t[::1] pred, const uint16_t[::1] rows,
                    const uint16_t[::1] cols, Py_ssize_t k):
    """Counts of ``rows[ref] * (k + 1) + cols[pred]`` over all pixels: a ``(k + 2) x (k + 1)`` int64 matrix.

    ``rows`` and ``cols`` cover every value of the label type (65,536 entries), with rows up to
    ``k + 1`` and columns up to ``k``.
    """
    cdef Py_ssize_t n = ref.shape[0], i = 0, j, bins = (k + 2) * (k + 1)
    if pred.shape[0] != n:
        raise ValueError("the two label images differ in size")
    if rows.shape[0] < 65536 or cols.shape[0] < 65536:
        raise ValueError("look-up tables must cover 65,536 values")
    parts = np.zeros((4, bins), dtype=np.int64)  # interleaved counters: a run does not wait on one
    cdef int64_t[:, ::1] h = parts
    cdef Py_ssize_t stride = k + 1
    with nogil:
        while i + 8 <= n:
            if _same8(&ref[i]) and _same8(&pred[i]):
                h[(i >> 3) & 3, rows[ref[i]] * stride + cols[pred[i]]] += 8
            else:
                for j in range(i, i + 8):
                    h[j & 3, rows[ref[j]] * stride + cols[pred[j]]] += 1
            i += 8
        for j in range(i, n):
            h[0, rows[ref[j]] * stride + cols[pred[j]]] += 1
    return parts.sum(axis=0).reshape(k + 2, k + 1)


def instance_counts(const label_t[::1] inst, const label2_t[::1] pred, const uint8_t[:, ::1] same_category,
                    int32_t min_id):
    """Per instance id (ids above ``min_id`` only, label = id // 1000): its pixels, the pixels predicted as
    its label, and those predicted as any label of its category (``same_category[label, predicted]``,
    labels past the table's last row read its last row). Three int64 arrays of 65,536 entries.
    """
    cdef Py_ssize_t n = inst.shape[0], i = 0, j
    if pred.shape[0] != n:
        raise ValueError("the two label images differ in size")
    if same_category.shape[1] < 65536:
        raise ValueError("the category table must cover 65,536 predicted values")
    size = np.zeros(65536, dtype=np.int64)
    hit = np.zeros(65536, dtype=np.int64)
    cat = np.zeros(65536, dtype=np.int64)
    cdef int64_t[::1] s = size, h = hit, c = cat
    cdef int v, lab, p, last = same_category.shape[0] - 1
    cdef Py_ssize_t tstride = same_category.shape[1]
    cdef bint same
    with nogil:
        while i + 8 <= n:
            v = inst[i]
            same = _same8(&inst[i])
            if same and v <= min_id:  # no instance in the block
                i += 8
                continue
            if same and _same8(&pred[i]):
                lab = v // 1000
                p = pred[i]
                s[v] += 8
                h[v] += 8 * (p == lab)
                c[v] += 8 * same_category[lab if lab < last else last, p]
            else:
                for j in range(i, i + 8):
                    _count_instance(inst[j], pred[j], min_id, &s[0], &h[0], &c[0], &same_category[0, 0], tstride,
                                    last)
            i += 8
        for j in range(i, n):
            _count_instance(inst[j], pred[j], min_id, &s[0], &h[0], &c[0], &same_category[0, 0], tstride, last)
    return size, hit, cat


cdef inline void _count_instance(int v, int p, int min_id, int64_t* s, int64_t* h, int64_t* c,
                                 const uint8_t* same_category, Py_ssize_t tstride, int last) noexcept nogil:
    cdef int lab
    if v > min_id:
        lab = v // 1000
        s[v] += 1
        h[v] += p == lab
        c[v] += same_category[(lab if lab < last else last) * tstride + p]


ctypedef fused segment_t:
    uint32_t
    uint64_t


def pair_runs(const segment_t[::1] a, const segment_t[::1] b):
    """Runs of equal ``(a, b)`` pairs along two segment-id images (flattened): their values and lengths.

    Panoptic scoring counts the pixels of every (reference segment, predicted segment) pair. Segment
    images are long runs of one pair, so one pass that emits a run only where either id changes
    leaves numpy a few hundredths of the pixels to aggregate (``geoseg.evaluation.panoptic``).
    Returns ``(run_a, run_b, run_length)``.
    """
    cdef Py_ssize_t n = a.shape[0], i, m = 0, start = 0, cap = 1024
    if b.shape[0] != n:
        raise ValueError("the two segment images differ in size")
    dtype = np.uint32 if segment_t is uint32_t else np.uint64
    if n == 0:
        return np.zeros(0, dtype), np.zeros(0, dtype), np.zeros(0, np.int64)
    ra_arr = np.empty(cap, dtype)
    rb_arr = np.empty(cap, dtype)
    rn_arr = np.empty(cap, np.int64)
    cdef segment_t[::1] ra = ra_arr
    cdef segment_t[::1] rb = rb_arr
    cdef int64_t[::1] rn = rn_arr
    cdef segment_t va = a[0], vb = b[0]
    cdef bint full
    i = 1
    while True:
        full = False
        with nogil:
            while i < n:
                if a[i] != va or b[i] != vb:
                    if m == cap:
                        full = True
                        break
                    ra[m] = va
                    rb[m] = vb
                    rn[m] = i - start
                    m += 1
                    start = i
                    va = a[i]
                    vb = b[i]
                i += 1
        if not full:
            break
        cap *= 2  # grow (with the GIL) and go on from the same pixel
        ra_arr = np.resize(ra_arr, cap)
        rb_arr = np.resize(rb_arr, cap)
        rn_arr = np.resize(rn_arr, cap)
        ra, rb, rn = ra_arr, rb_arr, rn_arr
    if m == cap:
        cap += 1
        ra_arr = np.resize(ra_arr, cap)
        rb_arr = np.resize(rb_arr, cap)
        rn_arr = np.resize(rn_arr, cap)
        ra, rb, rn = ra_arr, rb_arr, rn_arr
    ra[m] = va
    rb[m] = vb
    rn[m] = n - start
    m += 1
    return ra_arr[:m], rb_arr[:m], rn_arr[:m]
