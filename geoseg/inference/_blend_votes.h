/* Fixed-point softmax votes for a run of pixels, written so that the compiler vectorizes it.
 *
 * Every loop runs over pixels with the same IEEE float operations in the same
 * order for each pixel (no reassociation: the build does not use -ffast-math),
 * so a pixel's votes are the same whether it lands in a vector lane or in the
 * scalar remainder of a loop, whichever run it is part of.
 */
#ifndef GEOSEG_BLEND_VOTES_H
#define GEOSEG_BLEND_VOTES_H

#include <math.h>
#include <stdint.h>

/* Round to nearest, ties to even (the default rounding mode), to int32: GCC turns this into one
 * vector conversion; lrintf returns a long, which does not vectorize. */
#if defined(__GNUC__) && !defined(__clang__)
#define GEOSEG_IRINT(x) __builtin_irintf(x)
#else
#define GEOSEG_IRINT(x) ((int32_t)lrintf(x))
#endif

/* exp(x) for x <= 0 to about 1 ulp (Cephes' expf polynomial), branch-free; underflows below -87. */
static inline float geoseg_exp(float x) {
    float n, r, p;
    union { int32_t i; float f; } scale;
    x = x > -87.0f ? x : -87.0f;
    n = (float)(int32_t)(x * 1.44269504088896341f - 0.5f); /* round(x / ln 2), x <= 0 */
    r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    scale.i = ((int32_t)n + 127) << 23; /* 2^n, n >= -126 */
    return p * scale.f;
}

/* For pixels j < n of a row of class-last logits v[j * k + c] with weights w[j]:
 * acc[c * plane + j] += rint(softmax(v[j])[c] * w[j]), and, with with_weight,
 * acc[k * plane + j] += rint(w[j]). scratch holds (k + 2) * n floats. */
static void geoseg_ring_votes(const float *v, const float *w, ptrdiff_t n, int k, int32_t *acc, ptrdiff_t plane,
                              int with_weight, float *scratch) {
    float *mx = scratch, *tot = scratch + n, *e = scratch + 2 * n;
    ptrdiff_t j;
    int c;
    for (j = 0; j < n; j++) /* classes first, so that every loop below reads contiguously */
        for (c = 0; c < k; c++)
            e[c * n + j] = v[j * k + c];
    for (j = 0; j < n; j++) {
        mx[j] = e[j];
        tot[j] = 0.0f;
    }
    for (c = 1; c < k; c++) {
        const float *ec = e + c * n;
        for (j = 0; j < n; j++)
            mx[j] = ec[j] > mx[j] ? ec[j] : mx[j];
    }
    for (c = 0; c < k; c++) {
        float *ec = e + c * n;
        for (j = 0; j < n; j++) {
            ec[j] = geoseg_exp(ec[j] - mx[j]);
            tot[j] += ec[j];
        }
    }
    for (j = 0; j < n; j++)
        tot[j] = w[j] / tot[j];
    for (c = 0; c < k; c++) {
        const float *ec = e + c * n;
        int32_t *a = acc + c * plane;
        for (j = 0; j < n; j++)
            a[j] += GEOSEG_IRINT(ec[j] * tot[j]);
    }
    if (with_weight) {
        int32_t *a = acc + (ptrdiff_t)k * plane;
        for (j = 0; j < n; j++)
            a[j] += GEOSEG_IRINT(w[j]);
    }
}

#endif
