# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""PNG row reconstruction for benchmark label images, compiled.

Benchmarks read thousands of full-size label PNGs (a Cityscapes frame is 2048 x 1024): zlib (or libdeflate)
inflates them, and this kernel undoes the per-row filters in one pass without the GIL, so the readers
decode images on threads. ``geoseg/benchmarks/images.py`` calls it.
"""

import numpy as np

from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy
from libc.stdlib cimport abs as iabs


cdef inline int _paeth(int a, int b, int c) noexcept nogil:
    cdef int pa = iabs(b - c), pb = iabs(a - c), pc = iabs(a + b - 2 * c)
    if pa <= pb and pa <= pc:
        return a
    if pb <= pc:
        return b
    return c


cdef inline uint64_t _load8(const void* p) noexcept nogil:
    cdef uint64_t w
    memcpy(&w, p, 8)  # an unaligned 8-byte load
    return w


cdef inline uint64_t _pairs(int u0, int u1) noexcept nogil:
    """8 bytes holding the byte pair (u0, u1) four times, in memory order."""
    cdef uint64_t w
    cdef uint8_t* q = <uint8_t*>&w
    q[0] = q[2] = q[4] = q[6] = <uint8_t>u0
    q[1] = q[3] = q[5] = q[7] = <uint8_t>u1
    return w


# Sub and Paeth rows depend on the byte one pixel to the left: the reconstructed bytes are carried
# in registers (one chain per byte of a pixel, interleaved for 16-bit samples), not re-read from
# the row just stored, which would wait on store-to-load forwarding at every byte. Label images are
# mostly flat, so 8 bytes at a time are first tested for the flat case (no difference in the row,
# for Paeth also a flat prior row), where every byte repeats the pixel to its left.

cdef inline void _sub_row(uint8_t* dst, const uint8_t* cur, Py_ssize_t n, int bpp) noexcept nogil:
    cdef Py_ssize_t x = 0, j, end, ch
    cdef uint8_t a0 = 0, a1 = 0
    cdef uint64_t w
    if bpp <= 2:
        while x < n:
            end = x + 8 if x + 8 <= n else n
            if end == x + 8 and _load8(cur + x) == 0:  # flat: repeat the left pixel
                w = _pairs(a0, a0) if bpp == 1 else _pairs(a0, a1)
                memcpy(dst + x, &w, 8)
            elif bpp == 1:
                for j in range(x, end):
                    a0 = a0 + cur[j]
                    dst[j] = a0
            else:
                for j in range(x, end - 1, 2):
                    a0 = a0 + cur[j]
                    a1 = a1 + cur[j + 1]
                    dst[j] = a0
                    dst[j + 1] = a1
            x = end
        return
    # wider pixels (RGB): in row order, each byte after the one a pixel to its left, because ``dst``
    # lies just before ``cur`` in the same buffer and must never pass a byte not yet read
    for x in range(bpp):
        dst[x] = cur[x]
    for x in range(bpp, n):
        dst[x] = cur[x] + dst[x - bpp]


cdef inline void _paeth_row(uint8_t* dst, const uint8_t* cur, const uint8_t* prev, Py_ssize_t n,
                            int bpp) noexcept nogil:
    cdef Py_ssize_t x = 0, j, end, ch
    cdef int a0 = 0, c0 = 0, a1 = 0, c1 = 0, b0, b1
    cdef uint64_t w
    if bpp <= 2:
        while x < n:
            end = x + 8 if x + 8 <= n else n
            if bpp == 1:
                c1 = c0  # one channel: both halves of each pair are the same byte
            if end == x + 8 and _load8(cur + x) == 0 and _load8(prev + x) == _pairs(c0, c1):
                # a flat prior row (b == c everywhere): Paeth predicts the left pixel
                w = _pairs(a0, a0) if bpp == 1 else _pairs(a0, a1)
                memcpy(dst + x, &w, 8)
            elif bpp == 1:
                for j in range(x, end):
                    b0 = prev[j]
                    a0 = (cur[j] + _paeth(a0, b0, c0)) & 0xFF
                    dst[j] = <uint8_t>a0
                    c0 = b0
            else:
                for j in range(x, end - 1, 2):
                    b0 = prev[j]
                    b1 = prev[j + 1]
                    a0 = (cur[j] + _paeth(a0, b0, c0)) & 0xFF
                    a1 = (cur[j + 1] + _paeth(a1, b1, c1)) & 0xFF
                    dst[j] = <uint8_t>a0
                    dst[j + 1] = <uint8_t>a1
                    c0 = b0
                    c1 = b1
            x = end
        return
    for x in range(bpp):  # wider pixels: in row order (see _sub_row)
        dst[x] = <uint8_t>((cur[x] + prev[x]) & 0xFF)  # Paeth(0, b, 0) = b
    for x in range(bpp, n):
        dst[x] = <uint8_t>((cur[x] + _paeth(dst[x - bpp], prev[x], prev[x - bpp])) & 0xFF)


def png_unfilter(uint8_t[::1] buf, Py_ssize_t height, Py_ssize_t rowbytes, int bpp, bint swap16):
    """Reconstruct a non-interlaced PNG's image bytes in place.

    ``buf`` holds the inflated IDAT stream: ``height`` rows of a filter byte and ``rowbytes`` bytes
    (``bpp`` bytes per pixel). Afterwards its first ``height * rowbytes`` bytes are the image, row
    after row: each row is written just before the filtered bytes it comes from, which have been
    read by then, so no second image-sized buffer is needed. ``swap16``: the samples are 16-bit
    (big-endian in PNG); each row is swapped to little-endian once the next row no longer needs it
    as its prior row. Raises ValueError on a filter type outside 0..4.
    """
    cdef Py_ssize_t y, x
    cdef int f, bad = -1
    cdef uint8_t* dst
    cdef uint8_t* prev
    cdef const uint8_t* cur
    if buf.shape[0] != height * (rowbytes + 1):
        raise ValueError(f"image data holds {buf.shape[0]} bytes, not {height * (rowbytes + 1)}")
    if height == 0 or rowbytes == 0:
        return
    cdef uint8_t* base = &buf[0]
    with nogil:
        for y in range(height):
            f = base[y * (rowbytes + 1)]
            cur = base + y * (rowbytes + 1) + 1
            dst = base + y * rowbytes  # before cur: every byte written has been read
            prev = dst - rowbytes if y else NULL  # plain pointer loops: the compiler vectorizes None and Up
            if f == 0 or (y == 0 and f == 2):
                for x in range(rowbytes):
                    dst[x] = cur[x]
            elif f == 1 or (y == 0 and f == 4):  # Paeth with no prior row is Sub
                _sub_row(dst, cur, rowbytes, bpp)
            elif f == 2:
                for x in range(rowbytes):
                    dst[x] = cur[x] + prev[x]
            elif f == 3:
                if y == 0:
                    for x in range(bpp):
                        dst[x] = cur[x]
                    for x in range(bpp, rowbytes):
                        dst[x] = cur[x] + (dst[x - bpp] >> 1)
                else:
                    for x in range(bpp):
                        dst[x] = cur[x] + (prev[x] >> 1)
                    for x in range(bpp, rowbytes):
                        dst[x] = cur[x] + <uint8_t>(((<int>dst[x - bpp]) + prev[x]) >> 1)
            elif f == 4:
                _paeth_row(dst, cur, prev, rowbytes, bpp)
            else:
                bad = f
                break
            if swap16 and y > 0:
                _swap_pairs(prev, rowbytes)
        if swap16 and bad < 0:
            _swap_pairs(base + (height - 1) * rowbytes, rowbytes)
    if bad >= 0:
        raise ValueError(f"unknown PNG filter type {bad}")


cdef inline void _swap_pairs(uint8_t* row, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t x
    cdef uint8_t t
    for x in range(0, n - 1, 2):
        t = row[x]
        row[x] = row[x + 1]
        row[x + 1] = t


def rgb_ids(const uint8_t[:, :, ::1] rgb):
    """Segment ids ``R + 256 G + 256² B`` of an (h, w, 3) uint8 image (COCO panoptic PNGs), as uint32, in one
    pass without the GIL (a strided numpy assignment takes several times longer)."""
    cdef Py_ssize_t h = rgb.shape[0], w = rgb.shape[1], i, n
    if rgb.shape[2] != 3:
        raise ValueError("an RGB image has 3 channels")
    out = np.empty((h, w), dtype=np.uint32)
    cdef uint32_t[:, ::1] o = out
    cdef const uint8_t* p
    cdef uint32_t* q
    n = h * w
    if n == 0:
        return out
    p = &rgb[0, 0, 0]
    q = &o[0, 0]
    with nogil:
        for i in range(n):
            q[i] = p[3 * i] | (<uint32_t>p[3 * i + 1] << 8) | (<uint32_t>p[3 * i + 2] << 16)
    return out
