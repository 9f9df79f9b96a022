# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compiled per-tile kernels of prediction: normalising a tile, and folding a tile's logits into its block.

Both run without the GIL, so Dask's worker threads overlap them with reads
and forward passes. The arithmetic is fixed (float32 normalisation and
softmax, fixed-point votes rounded half to even), so every tile's votes are
the same whichever block, batch or worker runs it.
"""

from libc.math cimport rint
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memset
from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t

cdef extern from "_blend_votes.h" nogil:
    void geoseg_ring_votes(const float* v, const float* w, Py_ssize_t n, int k, int32_t* acc, Py_ssize_t plane,
                           int with_weight, float* scratch)

DEF RUN = 256  # pixels per vectorized run of votes

ctypedef fused pixel_t:
    uint8_t
    int8_t
    uint16_t
    int16_t
    uint32_t
    int32_t
    uint64_t
    int64_t
    float
    double


def normalize(const pixel_t[:, :, ::1] data, const uint8_t[:, ::1] valid, const float[::1] mean,
              const float[::1] scale, float[:, :, ::1] out, Py_ssize_t y, Py_ssize_t x, Py_ssize_t h, Py_ssize_t w):
    """``out[:h, :w, c] = (float32(data[c, y:y+h, x:x+w]) - mean[c]) * scale[c]``, 0 where not valid.

    ``out`` is one tile in channels-last order ``(T, T, C)``, the memory layout the model runs in.
    """
    cdef Py_ssize_t c, i, j, nc = out.shape[2]
    cdef float m, s
    if (data.shape[0] != nc or mean.shape[0] < nc or scale.shape[0] < nc or h > out.shape[0] or w > out.shape[1]
            or y < 0 or x < 0 or y + h > data.shape[1] or x + w > data.shape[2]
            or valid.shape[0] != data.shape[1] or valid.shape[1] != data.shape[2]):
        raise ValueError("window outside the data or the tile")
    cdef float* o
    with nogil:
        for i in range(h):
            for c in range(nc):
                m, s, o = mean[c], scale[c], &out[i, 0, c]
                for j in range(w):
                    o[j * nc] = ((<float>data[c, y + i, x + j]) - m) * s if valid[y + i, x + j] else 0.0


cdef inline int _argmax(const float* v, int k) noexcept nogil:
    """First index of the largest value; a NaN counts as largest (as ``torch.argmax``)."""
    cdef int best = 0, c
    cdef float b = v[0]
    cdef bint nan = b != b
    for c in range(1, k):  # branch-free: compiled to conditional moves
        best = c if v[c] > b else best
        b = v[c] if v[c] > b else b
        nan |= v[c] != v[c]
    if nan:
        for c in range(k):
            if v[c] != v[c]:
                return c
    return best


cdef inline void _ring_run(const float* row, const float* wrow, Py_ssize_t j0, Py_ssize_t j1, int k,
                           int32_t* acc0, Py_ssize_t plane, bint with_weight, float* scratch) noexcept nogil:
    """Add the votes of pixels ``[j0, j1)`` of one tile row to the accumulator row at ``acc0``."""
    cdef Py_ssize_t j, n
    for j in range(j0, j1, RUN):
        n = min(RUN, j1 - j)
        geoseg_ring_votes(row + j * k, wrow + j, n, k, acc0 + j, plane, with_weight, scratch)


def fold_tile(const float[:, :, ::1] logits, const float[:, ::1] weights, Py_ssize_t y, Py_ssize_t x,
              Py_ssize_t h, Py_ssize_t w, Py_ssize_t ey0, Py_ssize_t ey1, Py_ssize_t ex0, Py_ssize_t ex1,
              uint8_t[:, ::1] classes, int32_t[:, :, ::1] acc, int32_t[:, :, ::1] acc_cols,
              const Py_ssize_t[::1] slot, uint8_t[:, :, ::1] probs=None):
    """Fold one tile's ``(T, T, K)`` logits into its block at ``(y, x)``, over the tile's ``h x w`` part.

    Inside the exclusive rectangle ``[ey0, ey1) x [ex0, ex1)`` no other tile
    votes, so the class is the argmax of the logits (and, with ``probs``, the
    uint8 probability ``rint(vote * 255 / rint(weight))``). Elsewhere the
    tile's fixed-point votes are added to the accumulators, and, when they
    have a plane more than there are classes, the rounded weight to that
    plane: tile rows outside ``[ey0, ey1)`` (the horizontal overlap bands) to
    ``acc`` at their block position, the left and right parts of the other
    rows (vertical bands) to ``acc_cols`` at columns ``slot[x + j]``.
    """
    cdef Py_ssize_t i, j, jj, c, n
    cdef int k = logits.shape[2]
    cdef bint with_weight = acc.shape[0] > k, with_probs = probs is not None
    cdef Py_ssize_t plane = acc.shape[1] * acc.shape[2], pplane = 0, cplane = acc_cols.shape[1] * acc_cols.shape[2]
    cdef Py_ssize_t sl = 0, sr = 0
    cdef int32_t* q = NULL
    cdef double f
    cdef const float* row
    cdef const float* wrow
    cdef int32_t* arow
    cdef uint8_t* crow
    cdef uint8_t* prow = NULL
    if k < 1 or k > 256 or acc.shape[0] < k or (with_probs and probs.shape[0] != k):
        raise ValueError("between 1 and 256 classes, and accumulators for each")
    if (h > logits.shape[0] or w > logits.shape[1] or weights.shape[0] < h or weights.shape[1] < w
            or y < 0 or x < 0 or y + h > acc.shape[1] or x + w > acc.shape[2]
            or classes.shape[0] != acc.shape[1] or classes.shape[1] != acc.shape[2]
            or (with_probs and (probs.shape[1] != acc.shape[1] or probs.shape[2] != acc.shape[2]))):
        raise ValueError("tile outside its block")
    ex0, ex1 = max(0, min(ex0, w)), max(0, min(ex1, w))
    if acc_cols.shape[0] != acc.shape[0] or acc_cols.shape[1] != acc.shape[1] or slot.shape[0] != acc.shape[2]:
        raise ValueError("accumulators of different blocks")
    if ey0 < ey1 and ex1 > ex0:  # the side parts of the middle rows must map to whole runs of slots
        if ex0 > 0:
            sl = slot[x]
            if sl < 0 or slot[x + ex0 - 1] != sl + ex0 - 1 or sl + ex0 > acc_cols.shape[2]:
                raise ValueError("left overlap outside the vertical bands")
        if ex1 < w:
            sr = slot[x + ex1]
            if sr < 0 or slot[x + w - 1] != sr + w - 1 - ex1 or sr + w - ex1 > acc_cols.shape[2]:
                raise ValueError("right overlap outside the vertical bands")
    if with_probs:
        pplane = probs.shape[1] * probs.shape[2]
    cdef float* scratch = <float*>malloc((k + 2) * RUN * sizeof(float))
    if with_probs:
        q = <int32_t*>calloc(k * RUN, sizeof(int32_t))  # the exclusive part's votes, a run at a time
    if scratch == NULL or (with_probs and q == NULL):
        free(scratch)
        free(q)
        raise MemoryError()
    with nogil:
        for i in range(h):
            row = &logits[i, 0, 0]
            wrow = &weights[i, 0]
            arow = &acc[0, y + i, x]
            if not (ey0 <= i < ey1) or ex1 <= ex0:
                _ring_run(row, wrow, 0, w, k, arow, plane, with_weight, scratch)
                continue
            if ex0 > 0:
                _ring_run(row, wrow, 0, ex0, k, &acc_cols[0, y + i, sl], cplane, with_weight, scratch)
            if ex1 < w:
                _ring_run(row + ex1 * k, wrow + ex1, 0, w - ex1, k, &acc_cols[0, y + i, sr], cplane, with_weight,
                          scratch)
            crow = &classes[y + i, x]
            for j in range(ex0, ex1):
                crow[j] = <uint8_t>_argmax(row + j * k, k)
            if with_probs:
                prow = &probs[0, y + i, x]
                for j in range(ex0, ex1, RUN):
                    n = min(RUN, ex1 - j)
                    memset(q, 0, k * RUN * sizeof(int32_t))
                    geoseg_ring_votes(row + j * k, wrow + j, n, k, q, RUN, 0, scratch)
                    for jj in range(n):
                        f = 255.0 / rint(wrow[j + jj])
                        for c in range(k):
                            prow[c * pplane + j + jj] = <uint8_t>rint(q[c * RUN + jj] * f)
    free(scratch)
    free(q)


def argmax_votes(const int32_t[:, :, ::1] acc, Py_ssize_t k, Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t c0,
                 Py_ssize_t c1, uint8_t[:, ::1] classes, Py_ssize_t dc=0):
    """``classes[r0:r1, c0+dc:c1+dc] = argmax(acc[:k, r0:r1, c0:c1], axis=0)``, first index on ties."""
    cdef Py_ssize_t i, j, c, best
    cdef int32_t b
    if (not 0 <= r0 <= r1 <= min(acc.shape[1], classes.shape[0]) or not 0 <= c0 <= c1 <= acc.shape[2]
            or c0 + dc < 0 or c1 + dc > classes.shape[1] or not 1 <= k <= acc.shape[0]):
        raise ValueError("window outside the votes or the classes")
    with nogil:
        for i in range(r0, r1):
            for j in range(c0, c1):
                b, best = acc[0, i, j], 0
                for c in range(1, k):
                    if acc[c, i, j] > b:
                        b, best = acc[c, i, j], c
                classes[i, j + dc] = <uint8_t>best
