# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compiled kernels for vectorizing: connected components of equal values, and their boundary rings.

Both run over a chunk without the GIL, so Dask's worker threads polygonize
chunks in parallel. Rings follow pixel edges with the component on the
right-hand side of the direction of travel (pixel coordinates: x to the right,
y down), so in those coordinates every exterior ring has a positive shoelace
area and every hole a negative one. The trace prefers right turns, which keeps
it tight around the component's pixels; where it comes back to a vertex at
which the component touches itself diagonally, it has closed a loop, and the
loop is cut off there as a ring of its own. No ring touches itself, so the
polygons are valid (an exterior and a hole may touch at one point, as OGC allows).
"""

import numpy as np

from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t

ctypedef fused code_t:
    uint8_t
    uint16_t
    int64_t


cdef inline int32_t _find(int32_t[::1] parent, int32_t a) noexcept nogil:
    cdef int32_t root = a, nxt
    while parent[root] != root:
        root = parent[root]
    while parent[a] != root:  # path compression
        nxt = parent[a]
        parent[a] = root
        a = nxt
    return root


cdef inline int32_t _join(int32_t[::1] parent, int32_t a, int32_t b) noexcept nogil:
    """Union of two provisional labels; returns the smaller root."""
    cdef int32_t ra = _find(parent, a), rb = _find(parent, b)
    if ra < rb:
        parent[rb] = ra
        return ra
    if rb < ra:
        parent[ra] = rb
    return rb


def label_values(code_t[:, ::1] codes, const uint8_t[::1] skip, bint diagonal):
    """Connected components of pixels with equal codes (4- or, with ``diagonal``, 8-connected).

    Pixels whose code is flagged (non-zero) in ``skip`` get label 0. Labels are 1..n in the
    raster order of each component's first pixel. Returns the label image, the
    code of each label and its pixel count (index 0: unlabelled pixels).
    """
    cdef Py_ssize_t h = codes.shape[0], w = codes.shape[1], y, x
    out = np.zeros((h, w), dtype=np.int32)
    cdef int32_t[:, ::1] labels = out
    parent_arr = np.empty(h * w + 1, dtype=np.int32)
    cdef int32_t[::1] parent = parent_arr
    cdef int32_t n = 0, lab, t, m = 0, i, r, f
    cdef code_t v
    with nogil:
        parent[0] = 0
        for y in range(h):
            for x in range(w):
                v = codes[y, x]
                if skip[v]:
                    continue
                lab = 0
                if x > 0 and codes[y, x - 1] == v:
                    lab = labels[y, x - 1]
                if y > 0:
                    if codes[y - 1, x] == v:
                        t = labels[y - 1, x]
                        lab = t if lab == 0 else _join(parent, lab, t)
                    if diagonal:
                        if x > 0 and codes[y - 1, x - 1] == v:
                            t = labels[y - 1, x - 1]
                            lab = t if lab == 0 else _join(parent, lab, t)
                        if x < w - 1 and codes[y - 1, x + 1] == v:
                            t = labels[y - 1, x + 1]
                            lab = t if lab == 0 else _join(parent, lab, t)
                if lab == 0:
                    n += 1
                    parent[n] = n
                    lab = n
                labels[y, x] = lab
        # Final labels, numbered in the order of their roots. Parents always point to smaller
        # labels, so walking up, a label's parent is already numbered (stored negated).
        m = 0
        for i in range(1, n + 1):
            r = parent[i]
            if r == i:
                m += 1
                parent[i] = -m
            else:
                parent[i] = parent[r]
    code_arr = np.zeros(m + 1, dtype=np.int64)
    count_arr = np.zeros(m + 1, dtype=np.int64)
    cdef int64_t[::1] label_code = code_arr
    cdef int64_t[::1] counts = count_arr
    with nogil:
        for y in range(h):
            for x in range(w):
                lab = labels[y, x]
                if lab:
                    f = -parent[lab]
                    labels[y, x] = f
                    label_code[f] = <int64_t>codes[y, x]
                    counts[f] += 1
                else:
                    counts[0] += 1
    return out, code_arr, count_arr


cdef inline int32_t _at(const int32_t[:, ::1] labels, Py_ssize_t y, Py_ssize_t x) noexcept nogil:
    if y < 0 or x < 0 or y >= labels.shape[0] or x >= labels.shape[1]:
        return 0
    return labels[y, x]


cdef inline bint _edge_of(const int32_t[:, ::1] labels, Py_ssize_t x, Py_ssize_t y, int d,
                          int32_t lab) noexcept nogil:
    """Whether the pixel edge leaving vertex (x, y) in direction d (E, S, W, N) has ``lab`` on its right only."""
    cdef int32_t r, left
    if d == 0:
        r, left = _at(labels, y, x), _at(labels, y - 1, x)
    elif d == 1:
        r, left = _at(labels, y, x - 1), _at(labels, y, x)
    elif d == 2:
        r, left = _at(labels, y - 1, x - 1), _at(labels, y, x - 1)
    else:
        r, left = _at(labels, y - 1, x), _at(labels, y - 1, x - 1)
    return r == lab and left != lab


cdef inline bint _pinch(const int32_t[:, ::1] labels, Py_ssize_t x, Py_ssize_t y, int32_t lab) noexcept nogil:
    """Whether ``lab`` touches itself only diagonally at vertex (x, y)."""
    cdef bint nw = _at(labels, y - 1, x - 1) == lab, ne = _at(labels, y - 1, x) == lab
    cdef bint sw = _at(labels, y, x - 1) == lab, se = _at(labels, y, x) == lab
    return (nw and se and not ne and not sw) or (ne and sw and not nw and not se)


def trace_rings(const int32_t[:, ::1] labels):
    """Every boundary ring of every label, as closed vertex lists (turns only).

    Returns the vertex x and y arrays, the ring offsets into them (n_rings + 1)
    and each ring's label.
    """
    cdef Py_ssize_t h = labels.shape[0], w = labels.shape[1], y, x, x0, y0
    cdef int64_t n_edges = 0, n_top = 0
    cdef int32_t lab
    with nogil:
        for y in range(h):
            for x in range(w):
                lab = labels[y, x]
                if lab == 0:
                    continue
                if y == 0 or labels[y - 1, x] != lab:
                    n_edges += 1
                    n_top += 1
                if y == h - 1 or labels[y + 1, x] != lab:
                    n_edges += 1
                if x == 0 or labels[y, x - 1] != lab:
                    n_edges += 1
                if x == w - 1 or labels[y, x + 1] != lab:
                    n_edges += 1
    # vertices: at most one per turn (<= edges), plus per ring a closing vertex and a cut pinch
    xs_arr = np.empty(n_edges + 2 * n_top, dtype=np.int32)
    ys_arr = np.empty(n_edges + 2 * n_top, dtype=np.int32)
    off_arr = np.empty(n_top + 1, dtype=np.int64)  # every ring has at least one eastward (top) edge
    lab_arr = np.empty(n_top, dtype=np.int32)
    tx_arr = np.empty(n_edges + 1, dtype=np.int32)  # the ring being traced
    ty_arr = np.empty(n_edges + 1, dtype=np.int32)
    visited_arr = np.zeros((h, w), dtype=np.uint8)  # top edges already traced (travelling east)
    stamp_arr = np.full((h + 1, w + 1), -1, dtype=np.int64)  # the trace that passed a pinch vertex ...
    at_arr = np.zeros((h + 1, w + 1), dtype=np.int64)  # ... and where in its vertex list
    cdef int32_t[::1] xs = xs_arr, ys = ys_arr, ring_label = lab_arr, tx = tx_arr, ty = ty_arr
    cdef int64_t[::1] offsets = off_arr
    cdef uint8_t[:, ::1] visited = visited_arr
    cdef int64_t[:, ::1] stamp = stamp_arr, at = at_arr
    cdef int64_t nv = 0, nr = 0, trace = 0, n, p, i
    cdef int d, nd, k
    cdef int dx[4]
    cdef int dy[4]
    dx[:] = [1, 0, -1, 0]
    dy[:] = [0, 1, 0, -1]
    with nogil:
        offsets[0] = 0
        for y0 in range(h):
            for x0 in range(w):
                lab = labels[y0, x0]
                if lab == 0 or visited[y0, x0] or (y0 > 0 and labels[y0 - 1, x0] == lab):
                    continue
                # a new ring: leave vertex (x0, y0) eastward along the top of pixel (y0, x0);
                # the ring arrives there from the south, so (x0, y0) is a turn
                trace += 1
                tx[0] = <int32_t>x0
                ty[0] = <int32_t>y0
                n = 1
                if _pinch(labels, x0, y0, lab):
                    stamp[y0, x0] = trace
                    at[y0, x0] = 0
                x = x0
                y = y0
                d = 0
                while True:
                    if d == 0:
                        visited[y, x] = 1
                    x += dx[d]
                    y += dy[d]
                    nd = (d + 1) % 4  # prefer the right turn, then straight on, then left
                    for k in range(3):
                        nd = (d + 5 - k) % 4
                        if _edge_of(labels, x, y, nd, lab):
                            break
                    if x == x0 and y == y0 and nd == 0:
                        break
                    if nd != d:
                        if stamp[y, x] == trace:  # back at a pinch: cut the loop off
                            p = at[y, x]
                            for i in range(p, n):
                                xs[nv] = tx[i]
                                ys[nv] = ty[i]
                                nv += 1
                            xs[nv] = <int32_t>x
                            ys[nv] = <int32_t>y
                            nv += 1
                            ring_label[nr] = lab
                            nr += 1
                            offsets[nr] = nv
                            n = p + 1
                            stamp[y, x] = -1
                        else:
                            if _pinch(labels, x, y, lab):
                                stamp[y, x] = trace
                                at[y, x] = n
                            tx[n] = <int32_t>x
                            ty[n] = <int32_t>y
                            n += 1
                    d = nd
                for i in range(n):
                    xs[nv] = tx[i]
                    ys[nv] = ty[i]
                    nv += 1
                xs[nv] = <int32_t>x0  # close the ring
                ys[nv] = <int32_t>y0
                nv += 1
                ring_label[nr] = lab
                nr += 1
                offsets[nr] = nv
    return xs_arr[:nv], ys_arr[:nv], off_arr[: nr + 1], lab_arr[:nr]
