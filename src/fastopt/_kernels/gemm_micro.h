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

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define FO_HAVE_X86_VARIANTS 1
#else
#define FO_HAVE_X86_VARIANTS 0
#endif

enum { FO_ISA_PORTABLE = 0, FO_ISA_AVX2 = 1, FO_ISA_AVX512 = 2 };

/* ---- instantiations ---- */

#define FO_TARGET
#define FO_VBYTES 16
#define FO_MR 4
#define FO_T float
#define FO_FN(x) fo_##x##_s_portable
#include "gemm_micro_impl.h"
#undef FO_T
#undef FO_FN
#define FO_T double
#define FO_FN(x) fo_##x##_d_portable
#include "gemm_micro_impl.h"
#undef FO_T
#undef FO_FN
#undef FO_MR
#undef FO_VBYTES
#undef FO_TARGET

#if FO_HAVE_X86_VARIANTS
/* 6 rows × 2 ymm: 12 accumulators + 2 B vectors + 1 broadcast of the 16 ymm registers. */
#define FO_TARGET __attribute__((target("avx2,fma")))
#define FO_VBYTES 32
#define FO_MR 6
#define FO_T float
#define FO_FN(x) fo_##x##_s_avx2
#include "gemm_micro_impl.h"
#undef FO_T
#undef FO_FN
#define FO_T double
#define FO_FN(x) fo_##x##_d_avx2
#include "gemm_micro_impl.h"
#undef FO_T
#undef FO_FN
#undef FO_MR
#undef FO_VBYTES
#undef FO_TARGET

/* 8 rows × 2 zmm: 16 accumulators of the 32 zmm registers. */
#define FO_TARGET __attribute__((target("avx512f,avx2,fma")))
#define FO_VBYTES 64
#define FO_MR 8
#define FO_T float
#define FO_FN(x) fo_##x##_s_avx512
#include "gemm_micro_impl.h"
#undef FO_T
#undef FO_FN
#define FO_T double
#define FO_FN(x) fo_##x##_d_avx512
#include "gemm_micro_impl.h"
#undef FO_T
#undef FO_FN
#undef FO_MR
#undef FO_VBYTES
#undef FO_TARGET
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
