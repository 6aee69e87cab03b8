/* Philox4x32-10 (Salmon, Moraes, Dror, Shaw: "Parallel random numbers: as easy as
 * 1, 2, 3", SC'11; constants and round as in Random123's philox.h).
 *
 * A counter-based generator: the output is a pure function of (counter, key), so a
 * dropout mask does not depend on how the elements are split over threads, chunks or
 * SIMD lanes.
 *
 * fastopt's dropout keys it as
 *     counter = (element / 4, layer index, step mod 2^32, step / 2^32)
 *     key     = (seed mod 2^32, (seed / 2^32) mod 2^32)
 * and element e takes output word e mod 4 of its block.
 *
 * philox_fill: out[4k + w] = word w of block (first + k) (the raw words; the KAT tests
 * and the mask's unaligned path use it). With AVX2 it runs 2 x 8 blocks per step in
 * registers. Hard-won: gcc does vectorize the plain loop over blocks, but as 4 x 64-bit
 * lanes with interleaved stores: 9.6 ns per block on this AMD EPYC (Zen 3, AVX2), no
 * better than scalar. The AVX2 path does the 32x32->64 products with vpmuludq on
 * even/odd lanes: 2.7 ns per block vs 9.6 scalar.
 *
 * The dropout mask (below) skips the raw words: four groups of 8 blocks run as
 * independent chains (fully unrolled), and each output register is compared with the
 * threshold and packed by movemask straight into the mask's bit layout: 0.46 ns per
 * word on one core (2 groups: 0.55; 1 group: 0.81, bound by the round latency;
 * measured with a standalone C loop over 3 * 2^19 words while choosing the design;
 * benchmarks/bench_dropout.py times the kept version through dropout.mask_bits).
 * Tried and slower: blocks in 64-bit lanes (fewer blends, 0.74 ns: more shifts on the
 * two shift pipes), and interleaving scalar blocks on the integer pipes.
 * Every path computes the same function, so masks do not depend on the SIMD width.
 */
#ifndef FASTOPT_PHILOX_H
#define FASTOPT_PHILOX_H

#include <stdint.h>

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

#define PHILOX_ROUND(x0, x1, x2, x3, k0, k1)                         \
    do {                                                              \
        uint64_t p0_ = (uint64_t)PHILOX_M0 * (uint64_t)(x0);          \
        uint64_t p1_ = (uint64_t)PHILOX_M1 * (uint64_t)(x2);          \
        uint32_t y0_ = (uint32_t)(p1_ >> 32) ^ (x1) ^ (k0);           \
        uint32_t y2_ = (uint32_t)(p0_ >> 32) ^ (x3) ^ (k1);           \
        (x1) = (uint32_t)p1_;                                         \
        (x3) = (uint32_t)p0_;                                         \
        (x0) = y0_;                                                   \
        (x2) = y2_;                                                   \
    } while (0)

/* One block: out[0..3] = Philox4x32-10(ctr, key). */
static inline void philox4x32_10(const uint32_t ctr[4], const uint32_t key[2],
                                 uint32_t out[4])
{
    uint32_t x0 = ctr[0], x1 = ctr[1], x2 = ctr[2], x3 = ctr[3];
    uint32_t k0 = key[0], k1 = key[1];
    int r;
    for (r = 0; r < 10; r++) {
        PHILOX_ROUND(x0, x1, x2, x3, k0, k1);
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
    out[0] = x0; out[1] = x1; out[2] = x2; out[3] = x3;
}

/* Scalar blocks; the reference for the SIMD path and its tail. */
static inline void philox_fill_scalar(uint32_t *restrict out, uint32_t first,
                                      int n_blocks, uint32_t c1, uint32_t c2,
                                      uint32_t c3, uint32_t k0, uint32_t k1)
{
    int b;
    uint32_t ctr[4], key[2];
    key[0] = k0; key[1] = k1;
    ctr[1] = c1; ctr[2] = c2; ctr[3] = c3;
    for (b = 0; b < n_blocks; b++) {
        ctr[0] = first + (uint32_t)b;
        philox4x32_10(ctr, key, out + 4 * b);
    }
}

#if defined(__AVX2__)
#include <immintrin.h>

/* hi and lo 32-bit halves of m * x for 8 lanes (vpmuludq works on even lanes). */
#define PHILOX_MULHILO8(m, x, hi, lo)                                           \
    do {                                                                        \
        __m256i ev_ = _mm256_mul_epu32((x), (m));                               \
        __m256i od_ = _mm256_mul_epu32(_mm256_srli_epi64((x), 32), (m));        \
        (lo) = _mm256_blend_epi32(ev_, _mm256_slli_epi64(od_, 32), 0xAA);       \
        (hi) = _mm256_blend_epi32(_mm256_srli_epi64(ev_, 32), od_, 0xAA);       \
    } while (0)

#define PHILOX_ROUND8(x0, x1, x2, x3, ka, kb)                                  \
    do {                                                                        \
        __m256i h0_, l0_, h1_, l1_;                                             \
        PHILOX_MULHILO8(m0, x0, h0_, l0_);                                      \
        PHILOX_MULHILO8(m1, x2, h1_, l1_);                                      \
        (x0) = _mm256_xor_si256(_mm256_xor_si256(h1_, x1), ka);                 \
        (x2) = _mm256_xor_si256(_mm256_xor_si256(h0_, x3), kb);                 \
        (x1) = l1_;                                                             \
        (x3) = l0_;                                                             \
    } while (0)

/* Four registers of 8 blocks' words -> out[0..31] in block-major order. */
static inline void philox_store8(uint32_t *out, __m256i x0, __m256i x1, __m256i x2,
                                 __m256i x3)
{
    __m256i t0 = _mm256_unpacklo_epi32(x0, x1);
    __m256i t1 = _mm256_unpackhi_epi32(x0, x1);
    __m256i t2 = _mm256_unpacklo_epi32(x2, x3);
    __m256i t3 = _mm256_unpackhi_epi32(x2, x3);
    __m256i u0 = _mm256_unpacklo_epi64(t0, t2);   /* blocks 0 | 4 */
    __m256i u1 = _mm256_unpackhi_epi64(t0, t2);   /* blocks 1 | 5 */
    __m256i u2 = _mm256_unpacklo_epi64(t1, t3);   /* blocks 2 | 6 */
    __m256i u3 = _mm256_unpackhi_epi64(t1, t3);   /* blocks 3 | 7 */
    _mm256_storeu_si256((__m256i *)(out + 0), _mm256_permute2x128_si256(u0, u1, 0x20));
    _mm256_storeu_si256((__m256i *)(out + 8), _mm256_permute2x128_si256(u2, u3, 0x20));
    _mm256_storeu_si256((__m256i *)(out + 16), _mm256_permute2x128_si256(u0, u1, 0x31));
    _mm256_storeu_si256((__m256i *)(out + 24), _mm256_permute2x128_si256(u2, u3, 0x31));
}

/* Sixteen blocks per step as two independent groups of eight: one group alone is
 * bound by the latency of the round chain (multiply, shift, blend, xor). */
static inline void philox_fill(uint32_t *restrict out, uint32_t first, int n_blocks,
                               uint32_t c1, uint32_t c2, uint32_t c3,
                               uint32_t k0, uint32_t k1)
{
    const __m256i m0 = _mm256_set1_epi32((int)PHILOX_M0);
    const __m256i m1 = _mm256_set1_epi32((int)PHILOX_M1);
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i eight = _mm256_set1_epi32(8);
    const __m256i v1 = _mm256_set1_epi32((int)c1);
    const __m256i v2 = _mm256_set1_epi32((int)c2);
    const __m256i v3 = _mm256_set1_epi32((int)c3);
    __m256i ka[10], kb[10];
    int r, b = 0;
    for (r = 0; r < 10; r++) {
        ka[r] = _mm256_set1_epi32((int)(k0 + (uint32_t)r * PHILOX_W0));
        kb[r] = _mm256_set1_epi32((int)(k1 + (uint32_t)r * PHILOX_W1));
    }
    for (; b + 16 <= n_blocks; b += 16) {
        __m256i a0 = _mm256_add_epi32(_mm256_set1_epi32((int)(first + (uint32_t)b)), lane);
        __m256i a1 = v1, a2 = v2, a3 = v3;
        __m256i b0 = _mm256_add_epi32(a0, eight);
        __m256i b1 = v1, b2 = v2, b3 = v3;
        for (r = 0; r < 10; r++) {
            PHILOX_ROUND8(a0, a1, a2, a3, ka[r], kb[r]);
            PHILOX_ROUND8(b0, b1, b2, b3, ka[r], kb[r]);
        }
        philox_store8(out + 4 * b, a0, a1, a2, a3);
        philox_store8(out + 4 * b + 32, b0, b1, b2, b3);
    }
    for (; b + 8 <= n_blocks; b += 8) {
        __m256i a0 = _mm256_add_epi32(_mm256_set1_epi32((int)(first + (uint32_t)b)), lane);
        __m256i a1 = v1, a2 = v2, a3 = v3;
        for (r = 0; r < 10; r++)
            PHILOX_ROUND8(a0, a1, a2, a3, ka[r], kb[r]);
        philox_store8(out + 4 * b, a0, a1, a2, a3);
    }
    philox_fill_scalar(out + 4 * b, first + (uint32_t)b, n_blocks - b, c1, c2, c3, k0, k1);
}
#else
/* out[4k + w] = word w of Philox4x32-10((first + k, c1, c2, c3), (k0, k1)). */
static inline void philox_fill(uint32_t *restrict out, uint32_t first, int n_blocks,
                               uint32_t c1, uint32_t c2, uint32_t c3,
                               uint32_t k0, uint32_t k1)
{
    philox_fill_scalar(out, first, n_blocks, c1, c2, c3, k0, k1);
}
#endif

/* ---- dropout masks built on the generator ----
 *
 * Element e of a layer's (N, d) activation (e = row * d + column) is kept when
 * word(e) < threshold, threshold = floor(keep * 2^32) < 2^32 (the Python side treats
 * a threshold of 2^32, keep = 1, as no dropout at all).
 *
 * Masks are stored as bits, one uint32 per 32 columns of a row. Column 32g + t of row
 * i is bit 8 * (t % 4) + t / 4 of bits[i * words_per_row + g]: when the row's first
 * element is a multiple of 4 (d % 4 == 0), the group's 32 elements are exactly 8
 * Philox blocks and word w of block k lands on bit 8w + k, which is what one compare
 * and one movemask per output word give with no transposition. The layout is private
 * to these helpers: every path, SIMD or not, writes and reads the same bits.
 */

typedef struct {
    uint32_t layer, step_lo, step_hi;
    uint32_t threshold;        /* < 2^32: a keep probability of 1 never reaches here */
    uint32_t k0, k1;           /* key = (seed mod 2^32, seed / 2^32 mod 2^32) */
    uint32_t round_k0[10], round_k1[10];    /* the key schedule, made once per call */
} dropout_key;

static inline dropout_key dropout_make_key(uint64_t seed, uint64_t step, uint32_t layer,
                                           uint32_t threshold)
{
    dropout_key k;
    int r;
    k.layer = layer;
    k.step_lo = (uint32_t)step;
    k.step_hi = (uint32_t)(step >> 32);
    k.threshold = threshold;
    k.k0 = (uint32_t)seed;
    k.k1 = (uint32_t)(seed >> 32);
    for (r = 0; r < 10; r++) {
        k.round_k0[r] = k.k0 + (uint32_t)r * PHILOX_W0;
        k.round_k1[r] = k.k1 + (uint32_t)r * PHILOX_W1;
    }
    return k;
}

enum { DROPOUT_CHUNK = 128 };  /* columns per chunk call: four 32-column groups */

/* Bit position of column t (0 <= t < 32) of a group. */
#define DROPOUT_BIT(t) (8 * ((t) & 3) + ((t) >> 2))

/* Any alignment, any n <= DROPOUT_CHUNK: raw words, then one compare per element.
 * Writes ceil(n / 32) words; bits of columns >= n are zero. */
static inline void dropout_bits_general(uint32_t *bits, uint64_t e0, int n,
                                        const dropout_key *k)
{
    uint32_t raw[4 * (DROPOUT_CHUNK / 4 + 2)];
    int off = (int)(e0 & 3), nb = (off + n + 3) >> 2, t;
    philox_fill(raw, (uint32_t)(e0 >> 2), nb, k->layer, k->step_lo, k->step_hi,
                k->k0, k->k1);
    for (t = 0; t < (n + 31) / 32; t++)
        bits[t] = 0;
    for (t = 0; t < n; t++)
        bits[t >> 5] |= (uint32_t)(raw[off + t] < k->threshold) << DROPOUT_BIT(t & 31);
}

#if defined(__AVX2__)
/* The group's bits from the four output registers of 8 blocks (lane k = block k). */
static inline uint32_t dropout_group_word(__m256i x0, __m256i x1, __m256i x2, __m256i x3,
                                          __m256i thr)
{
    /* unsigned u < threshold as a signed compare of both with the sign flipped */
    const __m256i flip = _mm256_set1_epi32((int)0x80000000u);
#define DROPOUT_KEEP8(x) ((uint32_t)_mm256_movemask_ps(_mm256_castsi256_ps(      \
        _mm256_cmpgt_epi32(thr, _mm256_xor_si256((x), flip)))))
    return DROPOUT_KEEP8(x0) | DROPOUT_KEEP8(x1) << 8 | DROPOUT_KEEP8(x2) << 16
           | DROPOUT_KEEP8(x3) << 24;
#undef DROPOUT_KEEP8
}
#endif

#if defined(__AVX2__)
/* Words of `groups` (<= 4) consecutive groups, the first block aligned_first: the
 * groups run as independent chains (one alone waits on the round latency; four
 * measured 0.46 ns per word on the AMD EPYC here, two 0.55). */
static inline void dropout_groups_avx2(uint32_t *bits, uint32_t aligned_first, int groups,
                                       const dropout_key *k)
{
    const __m256i m0 = _mm256_set1_epi32((int)PHILOX_M0);
    const __m256i m1 = _mm256_set1_epi32((int)PHILOX_M1);
    const __m256i thr = _mm256_set1_epi32((int)(k->threshold ^ 0x80000000u));
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    __m256i x0[4], x1[4], x2[4], x3[4];
    int r, g;
    for (g = 0; g < 4; g++) {
        x0[g] = _mm256_add_epi32(_mm256_set1_epi32((int)(aligned_first + 8u * (uint32_t)g)),
                                 lane);
        x1[g] = _mm256_set1_epi32((int)k->layer);
        x2[g] = _mm256_set1_epi32((int)k->step_lo);
        x3[g] = _mm256_set1_epi32((int)k->step_hi);
    }
    if (groups == 4) {
#pragma GCC unroll 10
        for (r = 0; r < 10; r++) {
            const __m256i ka = _mm256_set1_epi32((int)k->round_k0[r]);
            const __m256i kb = _mm256_set1_epi32((int)k->round_k1[r]);
#pragma GCC unroll 4
            for (g = 0; g < 4; g++)
                PHILOX_ROUND8(x0[g], x1[g], x2[g], x3[g], ka, kb);
        }
    } else {
        for (r = 0; r < 10; r++) {
            const __m256i ka = _mm256_set1_epi32((int)k->round_k0[r]);
            const __m256i kb = _mm256_set1_epi32((int)k->round_k1[r]);
            for (g = 0; g < groups; g++)
                PHILOX_ROUND8(x0[g], x1[g], x2[g], x3[g], ka, kb);
        }
    }
    for (g = 0; g < groups; g++)
        bits[g] = dropout_group_word(x0[g], x1[g], x2[g], x3[g], thr);
}
#endif

/* Bits for columns c0 .. c0 + n - 1 of a row (c0 a multiple of 32, n <= DROPOUT_CHUNK),
 * e0 = the element index of column c0; ceil(n / 32) words. Block indices e / 4 are
 * taken mod 2^32 (the caller keeps N * d below 2^34). */
static inline void dropout_chunk_bits(uint32_t *bits, uint64_t e0, int n,
                                      const dropout_key *k)
{
#if defined(__AVX2__)
    if ((e0 & 3) == 0 && n >= 32) {
        int full = n / 32;
        dropout_groups_avx2(bits, (uint32_t)(e0 >> 2), full, k);
        if (n > 32 * full)
            dropout_bits_general(bits + full, e0 + 32u * (uint64_t)full, n - 32 * full, k);
        return;
    }
#endif
    dropout_bits_general(bits, e0, n, k);
}

/* m[t] = scale where column t's bit is set, else 0, for t < 8 * ceil(n / 8) (float)
 * or 4 * ceil(n / 4) (double): m has room for that many. */
static inline void dropout_expand_f(float *restrict m, const uint32_t *bits, int n,
                                    float scale)
{
    int q;
#if defined(__AVX2__)
    /* lane t of an 8-column quarter q of a group: bit 8 * (t % 4) + 2q + t / 4 */
    const __m256i sel = _mm256_setr_epi32(1, 1 << 8, 1 << 16, 1 << 24,
                                          2, 2 << 8, 2 << 16, 2 << 24);
    const __m256 s = _mm256_set1_ps(scale);
    for (q = 0; q * 8 < n; q++) {
        __m256i v = _mm256_set1_epi32((int)(bits[q >> 2] >> (2 * (q & 3))));
        __m256i on = _mm256_cmpeq_epi32(_mm256_and_si256(v, sel), sel);
        _mm256_storeu_ps(m + 8 * q, _mm256_and_ps(_mm256_castsi256_ps(on), s));
    }
#else
    for (q = 0; q < n; q++)
        m[q] = ((bits[q >> 5] >> DROPOUT_BIT(q & 31)) & 1u) ? scale : 0.0f;
#endif
}

static inline void dropout_expand_d(double *restrict m, const uint32_t *bits, int n,
                                    double scale)
{
    int p;
#if defined(__AVX2__)
    /* lane t of a 4-column part p of a group: bit 8t + p */
    const __m256i sel = _mm256_setr_epi64x(1, 1 << 8, 1 << 16, 1 << 24);
    const __m256d s = _mm256_set1_pd(scale);
    for (p = 0; p * 4 < n; p++) {
        __m256i v = _mm256_set1_epi64x((long long)(bits[p >> 3] >> (p & 7)));
        __m256i on = _mm256_cmpeq_epi64(_mm256_and_si256(v, sel), sel);
        _mm256_storeu_pd(m + 4 * p, _mm256_and_pd(_mm256_castsi256_pd(on), s));
    }
#else
    for (p = 0; p < n; p++)
        m[p] = ((bits[p >> 5] >> DROPOUT_BIT(p & 31)) & 1u) ? scale : 0.0;
#endif
}

#endif
