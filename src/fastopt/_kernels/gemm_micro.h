/* Small-GEMM micro-kernel for fastopt: register-blocked, row-major, all four
 * transposition cases, float32 and float64.
 *
 * Why: a BLAS call costs about a microsecond of fixed work (argument checks, buffer
 * set-up, packing both operands) before its first multiply-add; the tiny 32-64-64-1
 * step's GEMMs are a few thousand multiply-adds each, so that fixed cost was most of
 * the step. This kernel packs only op(B) when it must (transposed or ragged panels)
 * and reads A in place.
 *
 * Instruction set: chosen at RUN time. The AVX-512 and AVX2+FMA variants are compiled
 * with target attributes whatever the build's baseline (a portable wheel carries them
 * too) and picked with __builtin_cpu_supports; the portable variant is compiled for the
 * baseline and runs anywhere. fo_gemm_micro_init() must run once (module import)
 * before any call.
 */
#ifndef FASTOPT_GEMM_MICRO_H
#define FASTOPT_GEMM_MICRO_H

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

/* k is summed in chunks of FO_KC terms: one packed panel of op(B) is FO_KC × NR. */
#define FO_KC 256

/* Pack op(A) when A is transposed, has this many rows or more and op(B) more than one
 * panel: its rows are then far apart (lda ≥ m), and reading MR of them per k step thrashed L1 (a 512×256×2048
 * product with a transposed A ran at 65 GFLOP/s unpacked, AVX-512). */
#define FO_PACK_A_ROWS 128

/* Pack even a row-major B's whole-vector panels when C has this many rows or more and B
 * rows are this far apart: read in place, a panel's kc rows then share a few L1 sets
 * (a 512×256×512 tile with a transposed A, ldb 1024: 164-166 GFLOP/s in place, 182-183
 * packed, AVX-512); with 64 rows the copy cost more than it saved (2.4 -> 2.7 µs). */
#define FO_PACK_B_ROWS 128
#define FO_PACK_B_LD 256

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define FO_HAVE_X86_VARIANTS 1
#else
#define FO_HAVE_X86_VARIANTS 0
#endif

/* Full unrolling of the constant-trip loops over a block's rows: what keeps acc[][] in
 * registers. */
#if defined(__clang__)
#define FO_UNROLL _Pragma("unroll")
#elif defined(__GNUC__)
#define FO_UNROLL _Pragma("GCC unroll 16")
#else
#define FO_UNROLL
#endif

enum { FO_ISA_PORTABLE = 0, FO_ISA_AVX2 = 1, FO_ISA_AVX512 = 2 };

/* ---- in-register transposes for packing a transposed B (AVX2 and up) ---- */

#if FO_HAVE_X86_VARIANTS
#include <immintrin.h>

/* d[q·ldd + r] = s[r·lds + q], r, q < 8. The scalar copy cost ~0.5 cycle per element
 * and made the transposed-B case (every forward Z = X·Wᵀ) 25% slower than the others at
 * 64×64×64; this is 24 shuffles per 64 elements. */
static inline __attribute__((always_inline, target("avx2,fma"))) void
fo_transpose8_s(const float* s, ptrdiff_t lds, float* d, ptrdiff_t ldd)
{
    __m256 r0 = _mm256_loadu_ps(s), r1 = _mm256_loadu_ps(s + lds);
    __m256 r2 = _mm256_loadu_ps(s + 2 * lds), r3 = _mm256_loadu_ps(s + 3 * lds);
    __m256 r4 = _mm256_loadu_ps(s + 4 * lds), r5 = _mm256_loadu_ps(s + 5 * lds);
    __m256 r6 = _mm256_loadu_ps(s + 6 * lds), r7 = _mm256_loadu_ps(s + 7 * lds);
    __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
    __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
    __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
    __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
    __m256 u1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
    __m256 u2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
    __m256 u3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
    __m256 u4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0));
    __m256 u5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
    __m256 u6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0));
    __m256 u7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
    _mm256_storeu_ps(d, _mm256_permute2f128_ps(u0, u4, 0x20));
    _mm256_storeu_ps(d + ldd, _mm256_permute2f128_ps(u1, u5, 0x20));
    _mm256_storeu_ps(d + 2 * ldd, _mm256_permute2f128_ps(u2, u6, 0x20));
    _mm256_storeu_ps(d + 3 * ldd, _mm256_permute2f128_ps(u3, u7, 0x20));
    _mm256_storeu_ps(d + 4 * ldd, _mm256_permute2f128_ps(u0, u4, 0x31));
    _mm256_storeu_ps(d + 5 * ldd, _mm256_permute2f128_ps(u1, u5, 0x31));
    _mm256_storeu_ps(d + 6 * ldd, _mm256_permute2f128_ps(u2, u6, 0x31));
    _mm256_storeu_ps(d + 7 * ldd, _mm256_permute2f128_ps(u3, u7, 0x31));
}

/* The same for doubles, 4×4. */
static inline __attribute__((always_inline, target("avx2,fma"))) void
fo_transpose4_d(const double* s, ptrdiff_t lds, double* d, ptrdiff_t ldd)
{
    __m256d r0 = _mm256_loadu_pd(s), r1 = _mm256_loadu_pd(s + lds);
    __m256d r2 = _mm256_loadu_pd(s + 2 * lds), r3 = _mm256_loadu_pd(s + 3 * lds);
    __m256d t0 = _mm256_unpacklo_pd(r0, r1), t1 = _mm256_unpackhi_pd(r0, r1);
    __m256d t2 = _mm256_unpacklo_pd(r2, r3), t3 = _mm256_unpackhi_pd(r2, r3);
    _mm256_storeu_pd(d, _mm256_permute2f128_pd(t0, t2, 0x20));
    _mm256_storeu_pd(d + ldd, _mm256_permute2f128_pd(t1, t3, 0x20));
    _mm256_storeu_pd(d + 2 * ldd, _mm256_permute2f128_pd(t0, t2, 0x31));
    _mm256_storeu_pd(d + 3 * ldd, _mm256_permute2f128_pd(t1, t3, 0x31));
}
#endif

/* ---- instantiations ---- */

#define FO_TARGET
#define FO_VBYTES 16
#define FO_MR 4
#define FO_ISA portable
#include "gemm_micro_isa.h"
#undef FO_ISA
#undef FO_MR
#undef FO_VBYTES
#undef FO_TARGET

#if FO_HAVE_X86_VARIANTS
/* 6 rows × 2 ymm: 12 accumulators + 2 B vectors + 1 broadcast of the 16 ymm registers. */
#define FO_TARGET __attribute__((target("avx2,fma")))
#define FO_VBYTES 32
#define FO_MR 6
#define FO_ISA avx2
#define FO_HAS_TRANSPOSE
#include "gemm_micro_isa.h"
#undef FO_ISA
#undef FO_MR
#undef FO_VBYTES
#undef FO_TARGET

/* 8 rows × 2 zmm: 16 accumulators of the 32 zmm registers. */
#define FO_TARGET __attribute__((target("avx512f,avx2,fma")))
#define FO_VBYTES 64
#define FO_MR 8
#define FO_ISA avx512
#include "gemm_micro_isa.h"
#undef FO_ISA
#undef FO_MR
#undef FO_VBYTES
#undef FO_TARGET
#undef FO_HAS_TRANSPOSE
#endif

/* ---- run-time selection ---- */

typedef void (*fo_sgemm_fn)(int, int, int, int, int, float, const float*, int,
                            const float*, int, float, float*, int);
typedef void (*fo_dgemm_fn)(int, int, int, int, int, double, const double*, int,
                            const double*, int, double, double*, int);

static fo_sgemm_fn fo_sgemm_micro_impl = fo_gemm_s_portable;
static fo_dgemm_fn fo_dgemm_micro_impl = fo_gemm_d_portable;
static int fo_micro_isa = FO_ISA_PORTABLE;

/* The best instruction set this CPU (and OS) runs. */
static int fo_gemm_micro_best_isa(void)
{
#if FO_HAVE_X86_VARIANTS
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f"))
        return FO_ISA_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return FO_ISA_AVX2;
#endif
    return FO_ISA_PORTABLE;
}

/* Select `isa`, or the best below it that the CPU runs; returns the one selected. */
static int fo_gemm_micro_set_isa(int isa)
{
    int best = fo_gemm_micro_best_isa();
    if (isa > best)
        isa = best;
#if FO_HAVE_X86_VARIANTS
    if (isa == FO_ISA_AVX512) {
        fo_sgemm_micro_impl = fo_gemm_s_avx512;
        fo_dgemm_micro_impl = fo_gemm_d_avx512;
    } else if (isa == FO_ISA_AVX2) {
        fo_sgemm_micro_impl = fo_gemm_s_avx2;
        fo_dgemm_micro_impl = fo_gemm_d_avx2;
    } else
#endif
    {
        isa = FO_ISA_PORTABLE;
        fo_sgemm_micro_impl = fo_gemm_s_portable;
        fo_dgemm_micro_impl = fo_gemm_d_portable;
    }
    fo_micro_isa = isa;
    return isa;
}

static void fo_gemm_micro_init(void) { fo_gemm_micro_set_isa(FO_ISA_AVX512); }

static int fo_gemm_micro_isa(void) { return fo_micro_isa; }

static inline void fo_sgemm_micro(int ta, int tb, int m, int n, int k, float alpha,
                                  const float* a, int lda, const float* b, int ldb,
                                  float beta, float* c, int ldc)
{
    fo_sgemm_micro_impl(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

static inline void fo_dgemm_micro(int ta, int tb, int m, int n, int k, double alpha,
                                  const double* a, int lda, const double* b, int ldb,
                                  double beta, double* c, int ldc)
{
    fo_dgemm_micro_impl(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

#endif
